"""Training throughput: tuneops' fine-tune loop against a plain Hugging Face Trainer script.

Same machine, same run, same model, data, batch size, epochs, learning rate, thread count and
precision (what ``training.precision: auto`` picks here: bf16 on a GPU or a CPU with AMX /
AVX512-BF16, else fp32; the Trainers get ``bf16=True`` exactly then):

  tuneops           tuneops.components.training.finetune.finetune (dynamic padding, length-grouped batches, fused AdamW)
  trainer-fixed     transformers.Trainer with its defaults and every row padded to max_length:
                    the plain script the issue names as the baseline
  trainer-dynamic   transformers.Trainer given dynamic padding (DataCollatorWithPadding) and
                    group_by_length: how much of the gain a Trainer could recover on its own

Each variant runs in its own process (peak RSS is per variant, and one variant's allocator state
does not slow the next), in interleaved rounds. The figure compared is *real* (non-padding) tokens
per second of training time (also per CPU-second, which other jobs on a shared machine disturb
less). The closing lines are ``train_vs_trainer_fixed`` (goal on CPU: >= 1.3x) and
``train_vs_trainer_dynamic`` (goal >= 1.5x), tuneops' real tokens/s over each Trainer. On CUDA the
model FLOPs utilisation is printed too. Finally the default run (demo data, default config:
~2700 rows x 3 epochs) is timed in its own process and its peak RSS printed (goal: < 4 GiB,
the figure ``default_run_memory_budget_over_peak_rss``).

    .venv/bin/python benchmarks/bench_training.py                 # the comparison + the default run
    .venv/bin/python benchmarks/bench_training.py --quick         # 240 rows, 1 round, a few minutes
    .venv/bin/python benchmarks/bench_training.py --rows 2700 --epochs 3 --rounds 1 --skip-default-run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tuneops.components.paths import OMP_WAIT_POLICY  # noqa: E402  (light: no torch import)
from figures import figure_line  # noqa: E402  (benchmarks/figures.py, beside this script)

DEFAULT_CHECKPOINT = "packaged:all-MiniLM-L6-v2"
VARIANTS = ("tuneops", "trainer-fixed", "trainer-dynamic")


def text_task():
    """The task every variant trains (the benchmark compares text-classification loops)."""
    from tuneops.components.tasks.registry import get_task

    return get_task("text-classification")


def demo_splits(rows: int):
    """The demo's train split (first ``rows`` rows) and a small validation split."""
    from tuneops.components.config import DataConfig
    from tuneops.components.data.loading import as_validated, load_data

    home = Path(os.environ.get("TUNEOPS_HOME", tempfile.gettempdir())) / "demo"
    splits = as_validated(load_data(DataConfig(), home, text_task()))
    train = splits.train.head(rows).reset_index(drop=True)
    validation = splits.validation.head(100).reset_index(drop=True)
    return train, validation, splits.labels


def run_tuneops(args, workdir: Path) -> dict:
    import torch

    from tuneops.components.config import TrainingConfig
    from tuneops.components.training.finetune import finetune

    train, validation, labels = demo_splits(args.rows)
    config = TrainingConfig(
        epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.learning_rate,
        threads=args.threads, early_stopping_patience=None, checkpoint_every_steps=10**6, seed=args.seed,
    )
    torch.set_num_threads(args.threads)
    result = finetune(train, validation, labels, args.checkpoint, config, workdir / "tuneops" / "model",
                      task=text_task())
    figures = result.throughput
    return {
        "train_seconds": figures["train_seconds"],
        "train_cpu_seconds": figures["train_cpu_seconds"],
        "real_tokens": figures["real_tokens_per_second"] * figures["train_seconds"],
        "real_tokens_per_second": figures["real_tokens_per_second"],
        "samples_per_second": figures["samples_per_second"],
        "padding_efficiency": figures["padding_efficiency"],
        "mfu": figures.get("mfu"),
        "final_train_loss": result.last_loss,
        "validation_macro_f1": result.history[-1].get("validation_macro_f1"),
    }


def run_trainer(args, workdir: Path, dynamic: bool) -> dict:
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from tuneops.components.checkpoints import load_for_classification, parse_spec

    torch.set_num_threads(args.threads)
    train, _, labels = demo_splits(args.rows)
    label_ids = {label: i for i, label in enumerate(labels)}
    torch.manual_seed(args.seed)
    tokenizer, model = load_for_classification(parse_spec(args.checkpoint), labels, text_task())
    padding = False if dynamic else "max_length"
    encoded = tokenizer(train["text"].tolist(), truncation=True, max_length=args.max_length, padding=padding)
    dataset = datasets.Dataset.from_dict({**encoded, "labels": train["label"].map(label_ids).tolist()})
    real_tokens_per_epoch = sum(sum(mask) for mask in encoded["attention_mask"])
    training_args = TrainingArguments(
        output_dir=str(workdir / ("trainer-dynamic" if dynamic else "trainer-fixed")),
        per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
        weight_decay=0.01, warmup_steps=0.06, lr_scheduler_type="linear", seed=args.seed,
        eval_strategy="no", save_strategy="no", report_to=[], logging_strategy="no", disable_tqdm=True,
        # The precision tuneops' loop picks on this machine (bf16 on GPUs and on CPUs with AMX or
        # AVX512-BF16, else fp32): both loops compute alike.
        use_cpu=not torch.cuda.is_available(), bf16=_tuneops_precision() == "bf16",
        train_sampling_strategy="group_by_length" if dynamic else "random",
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer) if dynamic else None,
    )
    cpu_started = time.process_time()
    output = trainer.train()
    cpu_seconds = time.process_time() - cpu_started
    seconds = output.metrics["train_runtime"]
    real_tokens = real_tokens_per_epoch * args.epochs
    return {
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "real_tokens": real_tokens,
        "real_tokens_per_second": real_tokens / seconds,
        "samples_per_second": output.metrics["train_samples_per_second"],
        "padding_efficiency": None if dynamic else real_tokens_per_epoch / (len(train) * args.max_length),
        "optimizer": str(training_args.optim),
        "final_train_loss": output.metrics.get("train_loss"),
    }


def _tuneops_precision() -> str:
    """What ``training.precision: auto`` picks here."""
    import torch

    from tuneops.components.device import precision_for

    return precision_for("cuda:0" if torch.cuda.is_available() else "cpu", "auto").precision


def run_default(workdir: Path) -> dict:
    """The default pipeline config's fine-tune on the demo data, as ``tuneops run`` would do it."""
    from tuneops.components.config import PipelineConfig
    from tuneops.components.data.loading import as_validated, load_data
    from tuneops.components.training.finetune import finetune

    from tuneops.components.tasks.registry import get_task

    config = PipelineConfig()
    task = get_task(config.task)
    splits = as_validated(load_data(config.data, workdir / "demo", task))
    started = time.perf_counter()
    result = finetune(splits.train, splits.validation, splits.labels, DEFAULT_CHECKPOINT, config.training,
                      workdir / "default" / "model", task=task)
    return {
        "wall_seconds": time.perf_counter() - started,
        "train_rows": len(splits.train),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "best_validation": result.best_validation,
        "real_tokens_per_second": result.throughput["real_tokens_per_second"],
        "threads": json.loads((result.path / "training_args.json").read_text())["threads_per_process"],
    }


def child(args) -> None:
    """Run one variant in this process and print its figures as the last line of output."""
    workdir = Path(args.workdir)
    if args.variant == "tuneops":
        figures = run_tuneops(args, workdir)
    elif args.variant == "default":
        figures = run_default(workdir)
    else:
        figures = run_trainer(args, workdir, dynamic=args.variant == "trainer-dynamic")
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(figures))


def launch(variant: str, args, workdir: Path) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--workdir", str(workdir),
               "--rows", str(args.rows), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--threads", str(args.threads),
               "--learning-rate", str(args.learning_rate), "--seed", str(args.seed), "--checkpoint", args.checkpoint]
    # Every variant runs with the OpenMP wait policy tuneops sets for itself: the same runtime for all.
    environment = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false",
                       TUNEOPS_HOME=str(workdir / "home"),
                       OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", OMP_WAIT_POLICY))
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    if finished.returncode != 0 or not lines:
        sys.exit(f"benchmark: {variant} failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
    figures = json.loads(lines[-1][len("RESULT "):])
    figures["process_seconds"] = time.perf_counter() - started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=800, help="train rows of the demo (default run: 2700)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    # One thread by default: on a machine shared with other jobs, several threads per process spin
    # against each other and the timings become noise (measured: a MiniLM step 3-5x slower with 2
    # threads than with 1 on a loaded 2-core box). --threads N compares at N threads instead.
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every variant (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best is reported")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="the model every variant fine-tunes")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--skip-default-run", action="store_true")
    parser.add_argument("--quick", action="store_true", help="240 rows, 1 round, no default run (a few minutes)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds, args.skip_default_run = 240, 1, True
    if args.variant:
        child(args)
        return

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"machine: {device}; torch {torch.__version__}; threads per variant: {args.threads}; "
          f"precision: {_tuneops_precision()}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"model: {args.checkpoint}; data: {args.rows} demo rows x {args.epochs:g} epochs, batch {args.batch_size}, "
          f"max_length {args.max_length}\n")
    rounds: dict[str, list[dict]] = {variant: [] for variant in args.variants.split(",")}
    with tempfile.TemporaryDirectory(prefix="tuneops-bench-") as temporary:
        workdir = Path(temporary)
        # Rounds interleave the variants (rotating who goes first), so a burst of other work on a
        # shared machine hits all of them; each variant's best round is reported.
        for round_index in range(args.rounds):
            order = list(rounds)
            order = order[round_index % len(order):] + order[:round_index % len(order)]
            for variant in order:
                rounds[variant].append(launch(variant, args, workdir / f"{variant}-{round_index}"))
        results = {variant: max(runs, key=lambda r: r["real_tokens_per_second"]) for variant, runs in rounds.items()}
        for figures in results.values():
            figures["real_tokens_per_cpu_second"] = figures["real_tokens"] / figures["train_cpu_seconds"]
        header = (f"{'variant':<17}{'real tok/s':>11}{'real tok/CPU-s':>15}{'samples/s':>10}{'padding eff':>12}"
                  f"{'train s':>9}{'peak RSS MiB':>13}{'MFU':>7}")
        print(header)
        print("-" * len(header))
        for variant, figures in results.items():
            efficiency = figures.get("padding_efficiency")
            mfu = figures.get("mfu")
            print(f"{variant:<17}{figures['real_tokens_per_second']:>11,.0f}{figures['real_tokens_per_cpu_second']:>15,.0f}"
                  f"{figures['samples_per_second']:>10.1f}"
                  f"{(f'{efficiency:.2f}' if efficiency is not None else '-'):>12}{figures['train_seconds']:>9.1f}"
                  f"{figures['peak_rss_mib']:>13,.0f}{(f'{mfu:.1%}' if mfu is not None else '-'):>7}")
        print(f"(best of {args.rounds} interleaved round(s); all rounds: " + "; ".join(
            f"{v} " + "/".join(f"{r['real_tokens_per_second']:.0f}" for r in runs) for v, runs in rounds.items()) + " tok/s)")
        base = results.get("tuneops")
        figures_out = []
        for other, name, goal in (("trainer-fixed", "train_vs_trainer_fixed", 1.3),
                                  ("trainer-dynamic", "train_vs_trainer_dynamic", 1.5)):
            if base and other in results:
                ratio = base["real_tokens_per_second"] / results[other]["real_tokens_per_second"]
                cpu_ratio = base["real_tokens_per_cpu_second"] / results[other]["real_tokens_per_cpu_second"]
                print(f"tuneops / {other}: {cpu_ratio:.2f}x per CPU-second")
                figures_out.append(figure_line(name, ratio, goal))
        if not args.skip_default_run:
            default = launch("default", args, workdir)
            gib = default["peak_rss_mib"] / 1024
            print(f"\ndefault run ({default['train_rows']} rows, default config, {default['threads']} threads): "
                  f"{default['steps']} steps in {default['wall_seconds']:.0f} s wall, "
                  f"{default['real_tokens_per_second']:,.0f} real tok/s, best validation macro F1 "
                  f"{default['best_validation'].get('macro_f1', float('nan')):.3f}, peak RSS {gib:.2f} GiB "
                  f"(goal < 4 GiB)")
            figures_out.append(figure_line("default_run_memory_budget_over_peak_rss", 4 / gib, 1.0))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("\n".join(figures_out))


if __name__ == "__main__":
    main()
