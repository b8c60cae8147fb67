"""Serving benchmark: the BentoML service against a bare torch forward loop, same model, same run.

    .venv/bin/python benchmarks/bench_serving.py [--model TAG] [--requests 1200] [--concurrency 1,8,32]
        [--rounds 3] [--torch-threads N]
    .venv/bin/python benchmarks/bench_serving.py --quick     # a few minutes, a model trained for it if none

What is measured, at each concurrency C (clients each sending one-text requests back to back):
- service, adaptive batching on and off: texts/s, p50/p99 latency, non-2xx count, over real
  HTTP on 127.0.0.1 (``tuneops serve --model TAG`` as a subprocess, one per setting), with the
  runtime the model was packaged with (the int8 graph where packaging accepted it);
- service with ``serving.runtime=torch`` (fp32 torch, batching on): what int8 adds;
- bare loop: ``torch.no_grad()`` forward passes in this process on batches of C texts (capped at
  ``--max-batch-size``): what an ideal server that batches C simultaneous requests into one
  forward pass, with no HTTP, JSON, validation or logging, would do. Its p50/p99 are per batch.

The four are measured in interleaved rounds (``--rounds``), so that a burst of other work on the
machine hits all of them alike; the best round of each is reported (the least disturbed), with
the median beside it. ``--torch-threads`` applies to the bare loop and the service alike.

The figures printed at the end (``NAME: RATIO x (goal >= G x)``) are service (batching on) /
bare fp32 loop, batching on / off, and packaged runtime / fp32 service, at the highest
concurrency, i.e. at saturation. The load
generator runs on the same machine and takes CPU from the server, so on a small machine the
ratio understates the service.

The model: ``--model TAG`` from the store under $TUNEOPS_HOME (default: the champion). With no
model at all, ``--quick-train`` fine-tunes MiniLM for a few steps into a temporary home first.
The served process writes its prediction log into a temporary home, not into $TUNEOPS_HOME.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from figures import figure_line  # noqa: E402  (benchmarks/figures.py, beside this script)
from tuneops.components.paths import configure_environment  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model tag; default: the champion")
    parser.add_argument("--quick-train", action="store_true", help="no model? fine-tune one for a few steps")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: --quick-train when there is no model, concurrency 1,32, 300 requests, 1 round")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=1200, help="requests at the highest concurrency")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best is reported")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="intra-op threads, same for the bare loop and the service; 0 = torch's default")
    args = parser.parse_args()
    if args.quick:
        args.quick_train, args.concurrency, args.requests, args.rounds = True, "1,32", 300, 1
    levels = [int(level) for level in args.concurrency.split(",")]

    configure_environment()
    tag = _model_tag(args)
    from tuneops.components import registry

    model_dir = registry.verify_model(tag).model_dir
    texts = _texts(4000)
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print(f"model {tag}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)

    runtime = (json.loads((model_dir / "tuneops.json").read_text()).get("serving_runtime") or {})
    print(f"packaged serving runtime: {runtime.get('runtime', 'torch')} ({runtime.get('reason', 'not recorded')})")
    bare = BareLoop(model_dir)
    names = ["bare loop", "service, batching on", "service, batching off", "service, fp32 torch"]
    rounds: dict[str, dict[int, list[dict]]] = {name: {level: [] for level in levels} for name in names}
    with Server(tag, True, args.max_batch_size, _free_port(), args.torch_threads) as batching_on, \
            Server(tag, False, args.max_batch_size, _free_port(), args.torch_threads) as batching_off, \
            Server(tag, True, args.max_batch_size, _free_port(), args.torch_threads, runtime="torch") as fp32:
        servers = (("service, batching on", batching_on), ("service, batching off", batching_off),
                   ("service, fp32 torch", fp32))
        # Rounds interleave the four, so a burst of other work on the machine hits all of them.
        for level in levels:
            requests = _count(args.requests, level, levels)
            for _ in range(args.rounds):
                rounds["bare loop"][level].append(bare.run(texts, min(level, args.max_batch_size), requests))
                for name, server in servers:
                    rounds[name][level].append(asyncio.run(load(server.url, texts, level, requests)))
                print(f"  concurrency {level}: " + ", ".join(
                    f"{name} {rounds[name][level][-1]['throughput']:.0f}/s" for name in names), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    _report(rounds, levels)
    return 0


class BareLoop:
    """Tokenize + forward + softmax under ``torch.no_grad()``, in this process, no server."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.max_length = json.loads((model_dir / "tuneops.json").read_text())["max_length"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def run(self, texts: list[str], batch_size: int, requests: int) -> dict:
        """Batches of ``batch_size`` texts back to back; latency is per batch."""
        import torch

        batches = max(3, requests // batch_size)
        latencies = []
        with torch.no_grad():
            for _ in range(2):
                _forward(self.model, self.tokenizer, texts[:batch_size], self.max_length)
            started = time.perf_counter()
            for index in range(batches):
                start = (index * batch_size) % (len(texts) - batch_size)
                t0 = time.perf_counter()
                _forward(self.model, self.tokenizer, texts[start:start + batch_size], self.max_length)
                latencies.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - started
        return _summary(latencies, batches * batch_size, elapsed, errors=0)


def _forward(model, tokenizer, batch: list[str], max_length: int):
    import torch

    encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return torch.softmax(model(**encoded).logits, dim=-1).numpy()


async def load(url: str, texts: list[str], concurrency: int, requests: int) -> dict:
    """``concurrency`` clients send one-text requests until ``requests`` are done."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            nonlocal next_index, errors
            while next_index < requests:
                index = next_index
                next_index += 1
                t0 = time.perf_counter()
                async with session.post(f"{url}/classify", json={"texts": [texts[index % len(texts)]]}) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        warm = [session.post(f"{url}/classify", json={"texts": [text]}) for text in texts[:concurrency]]
        for request in asyncio.as_completed([_read(call) for call in warm]):
            await request
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return _summary(latencies, requests, elapsed, errors)


async def _read(call) -> None:
    async with call as response:
        await response.read()


class Server:
    """``tuneops serve --model TAG`` on 127.0.0.1, its prediction log in a temporary home."""

    def __init__(self, tag: str, batching: bool, max_batch_size: int, port: int, torch_threads: int,
                 runtime: str = "auto") -> None:
        self.tag, self.port = tag, port
        self.url = f"http://127.0.0.1:{port}"
        self.overrides = [f"serving.adaptive_batching={str(batching).lower()}", f"serving.runtime={runtime}",
                          f"serving.max_batch_size={max_batch_size}", f"serving.torch_threads={torch_threads}"]
        self.home = tempfile.TemporaryDirectory(prefix="tuneops-bench-")
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        env = {**os.environ, "TUNEOPS_HOME": self.home.name, "BENTOML_HOME": os.environ["BENTOML_HOME"]}
        env.pop("TUNEOPS_API_TOKEN", None)
        command = [sys.executable, "-m", "tuneops.flows.cli", "serve", "--model", self.tag, "--port", str(self.port)]
        for override in self.overrides:
            command += ["--set", override]
        self.log = open(Path(self.home.name) / "server.log", "w")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 180
        import urllib.request

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: {(Path(self.home.name) / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise SystemExit("server did not become ready in 180 s")

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group this script started
                self.process.wait()
        self.log.close()
        self.home.cleanup()


def _summary(latencies: list[float], items: int, elapsed: float, errors: int) -> dict:
    values = np.array(latencies) * 1000
    return {"throughput": items / elapsed, "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)), "errors": errors, "items": items}


def _report(rounds: dict[str, dict[int, list[dict]]], levels: list[int]) -> None:
    """Per configuration and concurrency: the best round (least disturbed by other work on the
    machine) with its latencies, and the median round's throughput."""
    best = {name: {level: max(runs, key=lambda run: run["throughput"]) for level, runs in by_level.items()}
            for name, by_level in rounds.items()}
    print()
    print(f"{'':24} {'concurrency':>11} {'texts/s':>9} {'(median)':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, by_level in rounds.items():
        for level in levels:
            row = best[name][level]
            median = float(np.median([run["throughput"] for run in by_level[level]]))
            errors = sum(run["errors"] for run in by_level[level])
            print(f"{name:24} {level:>11} {row['throughput']:>9.1f} {median:>9.1f} {row['p50_ms']:>8.1f} "
                  f"{row['p99_ms']:>8.1f} {errors:>8}")
    top = levels[-1]
    on, off = best["service, batching on"][top]["throughput"], best["service, batching off"][top]["throughput"]
    bare, fp32 = best["bare loop"][top]["throughput"], best["service, fp32 torch"][top]["throughput"]
    print()
    print(f"at concurrency {top} (saturation): service (its packaged runtime) / bare fp32 loop, batching on / off, "
          "packaged runtime / fp32 torch service")
    print(figure_line("serve_vs_bare_torch", on / bare, 1.5))
    print(figure_line("serve_batching_on_vs_off", on / off, 1.0))
    print(figure_line("serve_packaged_vs_fp32_service", on / fp32, 1.0))


def _count(requests: int, level: int, levels: list[int]) -> int:
    """Fewer requests at low concurrency, where each one is slow to come back."""
    return max(100, int(requests * level / max(levels)))


def _texts(rows: int) -> list[str]:
    from tuneops.components.data.demo import generate_reviews

    return generate_reviews(rows, seed=99)["text"].tolist()


def _model_tag(args) -> str:
    from tuneops.components import registry

    if args.model:
        return args.model
    current = registry.champion()
    if current is not None:
        return current.tag
    if not args.quick_train:
        raise SystemExit("no champion and no --model; pass --quick-train to fine-tune a model for the benchmark")
    return _quick_model()


def _quick_model() -> str:
    """Fine-tune MiniLM for 20 steps on demo reviews and package it (speed, not quality, matters here)."""
    from tuneops.components import registry
    from tuneops.components.config import ServingConfig, TrainingConfig
    from tuneops.components.data.demo import generate_reviews
    from tuneops.components.int8_serving import CALIBRATION_ROWS, choose_serving_runtime
    from tuneops.components.metrics import classification_metrics
    from tuneops.components.predictor import Predictor
    from tuneops.components.tasks.registry import get_task
    from tuneops.components.training.finetune import finetune

    frame = generate_reviews(360, seed=3)
    labels = sorted(frame["label"].unique())
    output = Path(tempfile.mkdtemp(prefix="tuneops-bench-model-"))
    trained = finetune(frame.iloc[:300], frame.iloc[300:], labels, "packaged:all-MiniLM-L6-v2",
                       TrainingConfig(max_steps=20, batch_size=16, max_length=128), output,
                       task=get_task("text-classification"))
    # Packaged as a run packages: the int8 graph where it is as good as fp32 on the held-out rows.
    predictor = Predictor.from_dir(trained.path)
    held_out, truth = frame["text"].iloc[300:].tolist(), frame["label"].iloc[300:].astype(str).tolist()
    fp32_f1 = classification_metrics(truth, predictor.predict_proba(held_out), labels)["macro_f1"]
    choose_serving_runtime(predictor, trained.path, held_out, truth, fp32_f1, ServingConfig().int8_max_f1_drop,
                           frame["text"].iloc[:CALIBRATION_ROWS].tolist())
    reference = frame.iloc[:300].assign(prediction=frame["label"].iloc[:300])
    return registry.package_model(trained.path, {"run_id": "benchmark"}, reference).tag


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
