"""The GPU check: tuneops' CUDA path end to end on a lent GPU, with its figures, in one run.

    bash benchmarks/gpu_check.sh              # on a machine with a CUDA GPU (under 8 minutes)
    bash benchmarks/gpu_check.sh --dry-run    # the same steps on CPU with tiny models (a minute)

Steps, each printed as it runs:
1. the device: GPU name, torch and CUDA versions, bf16 support, the precision tuneops picks;
2. fine-tuning through ``finetune`` (tuneops' own loop: bf16 autocast, fused AdamW, dynamic
   padding) of a MiniLM-sized and a BERT-base-sized encoder at sequence length 128, with the
   model FLOPs utilisation the loop itself reports (``mfu_minilm``, ``mfu_bert_base``; goal 40%);
3. the same loop as one data-parallel process (``training.processes`` through the launcher's
   worker entry, world size 1: DDP, NCCL on GPU);
4. inference through ``Predictor`` on the GPU against a bare fp32 ``torch.no_grad()`` forward
   loop on the same texts, batches of 32 (``predictor_vs_bare_torch``);
5. ``benchmarks/bench_training.py`` on the GPU: ``train_vs_trainer_dynamic`` and ``_fixed``.

The models are randomly initialised with the published shapes (MiniLM-L6: 6 layers of 384;
BERT-base: 12 of 768) and a word-level vocabulary built from the demo texts: MFU and speed
depend on the shapes, not on the weights, and a GPU machine here carries no checkpoints.
The closing lines follow benchmarks/figures.py: ``NAME: RATIO x (goal >= G x)``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from figures import figure_line  # noqa: E402  (benchmarks/figures.py, beside this script)

# (layers, hidden, heads, intermediate) of the published encoders; --dry-run shrinks them.
SHAPES = {"minilm": (6, 384, 12, 1536), "bert_base": (12, 768, 12, 3072)}
TINY_SHAPE = (2, 32, 2, 64)
MFU_GOAL = 0.40


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, few steps: checks the script itself")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per fine-tune (GPU)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-bench-training", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneops-gpu-check-") as scratch:
        os.environ["TUNEOPS_HOME"] = str(Path(scratch) / "home")
        return run_check(args, Path(scratch))


def run_check(args, work: Path) -> int:
    """Steps 1-5 of the module docstring, in ``work``; the exit status."""
    import torch

    from tuneops.components.data.demo import generate_reviews
    from tuneops.components.device import precision_for, resolve_device

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu_check: no CUDA device is visible to torch; run with --dry-run to check the script on CPU",
              file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else resolve_device("auto")
    choice = precision_for(device, "auto")
    print(f"1. device {device}" + (f" ({torch.cuda.get_device_name(0)})" if device.startswith("cuda") else "")
          + f"; torch {torch.__version__}, CUDA {torch.version.cuda}; precision {choice.precision}: {choice.reason}",
          flush=True)

    steps = 3 if args.dry_run else args.steps
    batch = 8 if args.dry_run else args.batch_size
    max_length = 16 if args.dry_run else 128
    frame = _long_reviews(generate_reviews(600, seed=5), max_length)
    labels = sorted(frame["label"].unique())
    train, validation = frame.iloc[:500].reset_index(drop=True), frame.iloc[500:].reset_index(drop=True)

    figures: list[str] = []
    checkpoints = {}
    for name, shape in SHAPES.items():
        checkpoints[name] = _random_encoder(work / name, TINY_SHAPE if args.dry_run else shape, frame["text"], labels)
        result = _finetune(train, validation, labels, checkpoints[name], work / f"{name}-run" / "model",
                           steps, batch, max_length, device, processes=1)
        mfu = result.throughput.get("mfu")
        print(f"2. fine-tune {name}: {result.throughput['real_tokens_per_second']:.0f} real tokens/s, "
              f"{result.throughput['model_tflops_per_second']:.2f} model TFLOP/s, {result.throughput['precision']}, "
              f"loss {result.first_loss:.3f} -> {result.last_loss:.3f}, "
              f"MFU {'n/a (CPU)' if mfu is None else f'{mfu:.1%}'}", flush=True)
        if mfu is not None:
            figures.append(figure_line(f"mfu_{name}", mfu / MFU_GOAL, 1.0) + f"  [MFU {mfu:.1%} of a {MFU_GOAL:.0%} goal]")

    parallel = _data_parallel_once(train, validation, labels, checkpoints["minilm"], work / "ddp", steps, batch,
                                   max_length, device)
    print(f"3. data-parallel, 1 process: {parallel['real_tokens_per_second']:.0f} real tokens/s, "
          f"{parallel['processes']} process(es), {parallel['precision']}", flush=True)

    ratio = _predictor_vs_bare(work / "minilm-run" / "model", frame["text"].tolist(), device, max_length)
    print(f"4. inference: Predictor {ratio['predictor']:.0f} texts/s, bare fp32 loop {ratio['bare']:.0f} texts/s",
          flush=True)
    figures.append(figure_line("predictor_vs_bare_torch", ratio["predictor"] / ratio["bare"], 1.5))

    if args.skip_bench_training:
        print("5. bench_training: skipped (--skip-bench-training)")
    else:
        command = [sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--checkpoint",
                   str(checkpoints["minilm"]), "--skip-default-run", "--rounds", "1", "--threads", "1"]
        command += ["--rows", "48", "--max-length", str(max_length), "--batch-size", "8"] if args.dry_run else \
            ["--rows", "2000", "--max-length", "128", "--batch-size", "32"]
        print("5. benchmarks/bench_training.py " + " ".join(command[2:]), flush=True)
        output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if output.returncode != 0:
            print(output.stdout[-2000:] + output.stderr[-3000:], file=sys.stderr)
            return 1
        figures += [line for line in output.stdout.splitlines() if " x (goal >= " in line]
    print()
    for line in figures:
        print(line)
    return 0


def _long_reviews(frame, max_length: int):
    """Demo reviews joined three at a time (same label), so that most texts fill ``max_length``
    tokens: MFU at sequence length 128 needs rows that long."""
    import pandas as pd

    rows = []
    for label, group in frame.groupby("label"):
        texts = group["text"].tolist()
        for start in range(0, len(texts) - 2):
            rows.append({"text": " ".join(texts[start:start + 3] * (1 + max_length // 48)), "label": label})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).head(len(frame)).reset_index(drop=True)


def _random_encoder(directory: Path, shape: tuple[int, int, int, int], texts, labels: list[str]) -> Path:
    """A randomly initialised BERT of ``shape`` with a word-level vocabulary of ``texts``, saved
    as a Hugging Face checkpoint folder (tuneops loads it as a local checkpoint)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    words = sorted({word for text in texts for word in text.lower().replace(",", " ").replace(".", " ").split()})
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    layers, hidden, heads, intermediate = shape
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, num_labels=len(labels))
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _training_config(steps: int, batch: int, max_length: int, device: str, processes: int):
    from tuneops.components.config import TrainingConfig

    return TrainingConfig(max_steps=steps, batch_size=batch, max_length=max_length, learning_rate=5e-5,
                          device="cpu" if device == "cpu" else "cuda", precision="auto", processes=processes,
                          early_stopping_patience=None, eval_every_steps=max(steps, 1),
                          checkpoint_every_steps=10**6, seed=3)


def _finetune(train, validation, labels, checkpoint: Path, output: Path, steps: int, batch: int, max_length: int,
              device: str, processes: int):
    from tuneops.components.tasks.registry import get_task
    from tuneops.components.training.finetune import finetune

    return finetune(train, validation, labels, str(checkpoint),
                    _training_config(steps, batch, max_length, device, processes), output,
                    task=get_task("text-classification"))


def _data_parallel_once(train, validation, labels, checkpoint: Path, work: Path, steps: int, batch: int,
                        max_length: int, device: str) -> dict:
    """The launcher's worker entry (``tuneops.components.training.distributed``, what torchrun
    would start) as a process group of one: DDP wrapping, the collective calls, rank 0's save."""
    from tuneops.components.tasks.registry import get_task
    from tuneops.components.training.launcher import launch_local
    from tuneops.components.training.recipe import recipe_for_run
    from tuneops.components.training.run_setup import RunRequest

    task = get_task("text-classification")
    config = _training_config(steps, batch, max_length, device, processes=1)
    recipe = recipe_for_run(train, str(checkpoint), config, task, None)
    request = RunRequest(train=train, validation=validation, labels=list(labels), checkpoint=str(checkpoint),
                         config=recipe.config, output_dir=work / "model", task=task, champion_dir=None,
                         recipe=recipe.to_json())
    result = launch_local(request)
    return result.throughput


def _predictor_vs_bare(model_dir: Path, texts: list[str], device: str, max_length: int) -> dict:
    """Texts/s of ``Predictor.predict_proba`` (bf16 autocast on GPU, length-sorted passes) and of
    a bare fp32 ``torch.no_grad()`` loop over the same texts in batches of 32."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneops.components.predictor import Predictor

    texts = texts[:256]
    predictor = Predictor.from_dir(model_dir, device=device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bare = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()

    def bare_loop() -> None:
        with torch.no_grad():
            for start in range(0, len(texts), 32):
                batch = tokenizer(texts[start:start + 32], padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt").to(device)
                torch.softmax(bare(**batch).logits, dim=-1).cpu()

    def predictor_loop() -> None:
        predictor.predict_proba(texts, batch_size=32)

    timings = {}
    for name, call in (("bare", bare_loop), ("predictor", predictor_loop)) * 2:
        call()  # warm-up (kernels, allocator), then timed; the second of the interleaved pair is kept
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings[name] = len(texts) / (time.perf_counter() - started)
    return timings


if __name__ == "__main__":
    sys.exit(main())
