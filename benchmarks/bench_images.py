"""Image throughput: tuneops' fine-tune and inference paths against plain Hugging Face / torch code.

Same machine, same run, same data (real MNIST digits written as PNG files by ``write_image_demo``),
same checkpoint (``packaged:efficientnet-lite0``), input size, batch size, optimizer steps,
learning rate and thread count:

  fine-tune   tuneops      tuneops.components.training.finetune.finetune: every image decoded and
                           resized once into uint8 arrays, normalised per batch (and lightly augmented:
                           its default, extra work the baseline does not do)
              trainer      transformers.Trainer on a torch Dataset that opens each PNG with PIL and runs
                           the checkpoint's AutoImageProcessor per item, i.e. run_image_classification.py
                           minus torchvision; the whole network trains in both (freeze_stages=0)
  inference   predictor    tuneops' Predictor.predict_proba on the PNG bytes (batched: its one path)
              bare loop    PIL open + AutoImageProcessor + model, one image at a time, torch.inference_mode

Each variant runs in its own process (peak RSS is per variant), in interleaved rounds (rotating who
goes first); each variant's best round is reported. Fine-tune figures are images per second of
training-loop time (tuneops: its own ``throughput.json`` clock, which leaves out the one-off encode,
the final validation pass and saving; Trainer: its ``train_runtime``, which includes the per-item
decode because that is how its loop gets its data) and per CPU-second; the whole call's wall time
(tuneops: ``finetune()`` including encode, validation and save; Trainer: model load + train) is
printed beside them so the one-off encode is not hidden. Inference runs on the model the tuneops
variant trained, the same 256 images for both, after a warm-up; the two must agree on the labels.

Goals (CPU, 1 thread, 64 px): fine-tune tuneops / Trainer >= 1.1x (measured 1.26x full, 1.20-1.33x quick,
2-core shared box: the network's step dominates at 64 px, so decoding once wins back the per-item
processor time and little more, while also augmenting); inference predictor / bare loop >= 2.5x
(measured 3.36-3.40x: batches of 64 instead of 256 one-image forwards). Round-to-round noise on a shared
machine is ~10-15%, hence the margins below the measured figures.

    .venv/bin/python benchmarks/bench_images.py            # ~1,024 train images, 64 steps, 2 rounds (~4 min)
    .venv/bin/python benchmarks/bench_images.py --quick    # 320 images, 10 steps, 1 round (< ~3 min)
"""

from __future__ import annotations

import argparse
import io
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

CHECKPOINT = "packaged:efficientnet-lite0"
TRAIN_VARIANTS = ("tuneops", "trainer")
INFERENCE_VARIANTS = ("predictor", "bare-loop")
VALIDATION_ROWS = 100
FINE_TUNE_GOAL = 1.1
INFERENCE_GOAL = 2.5


def image_task():
    from tuneops.components.tasks.registry import get_task

    return get_task("image-classification")


def demo_splits(args):
    """Train (``args.rows`` images) and validation (100) frames of absolute PNG paths, from one demo folder."""
    from tuneops.components.data.demo_images import write_image_demo
    from tuneops.components.data.image_folder import read_class_folders
    from tuneops.components.sampling import stratified_sample
    from tuneops.components.tasks.image.decode import SUFFIXES

    folder = write_image_demo(Path(args.workdir_root) / "images", args.rows + VALIDATION_ROWS, seed=args.seed)
    frame = read_class_folders(folder, SUFFIXES, "image", "label").frame
    validation = stratified_sample(frame, VALIDATION_ROWS, args.seed)
    train = frame.drop(index=validation.index).reset_index(drop=True)
    labels = sorted(frame["label"].unique())
    return train, validation.reset_index(drop=True), labels


def sized_processor_settings(source: str, side: int) -> dict:
    """The resize / crop settings that give ``side`` x ``side`` inputs, as tuneops sets them
    (``with_side``), so that the baseline's processor makes the same picture geometry."""
    from tuneops.components.tasks.image.inspection import load_image_processor
    from tuneops.components.tasks.image.processing import with_side

    sized = with_side(load_image_processor(source), side)
    return {"size": dict(sized.size), "crop_size": dict(sized.crop_size)}


def hf_processor(source: str, side: int | None):
    """The checkpoint's own AutoImageProcessor (its PIL backend: no torchvision), at ``side`` if given."""
    import warnings

    from transformers import AutoImageProcessor

    settings = sized_processor_settings(source, side) if side else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*requires torchvision.*")
        return AutoImageProcessor.from_pretrained(source, **settings)


# ----------------------------------------------------------------------------------- fine-tune
def run_tuneops(args, workdir: Path) -> dict:
    import torch

    from tuneops.components.config import TrainingConfig
    from tuneops.components.training.finetune import finetune

    torch.set_num_threads(args.threads)
    train, validation, labels = demo_splits(args)
    config = TrainingConfig(
        max_steps=args.steps, epochs=100, batch_size=args.batch_size, learning_rate=args.learning_rate,
        threads=args.threads, image_size=args.image_size, freeze_stages=0, device="cpu", precision="fp32",
        early_stopping_patience=None, checkpoint_every_steps=10**6, eval_every_steps=10**6, seed=args.seed,
    )
    started = time.perf_counter()
    result = finetune(train, validation, labels, CHECKPOINT, config, workdir / "model", task=image_task())
    wall = time.perf_counter() - started
    figures = result.throughput
    images = figures["samples_per_second"] * figures["train_seconds"]
    return {
        "images": round(images),
        "steps": result.steps,
        "train_seconds": figures["train_seconds"],
        "train_cpu_seconds": figures["train_cpu_seconds"],
        "call_seconds": wall,
        "final_train_loss": result.last_loss,
        "validation_accuracy": result.best_validation.get("accuracy"),
        "model_dir": str(result.path),
    }


def run_trainer(args, workdir: Path) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageClassification, Trainer, TrainingArguments, default_data_collator

    from tuneops.components.checkpoints import parse_spec, resolve_source

    torch.set_num_threads(args.threads)
    train, _, labels = demo_splits(args)
    label_ids = {label: index for index, label in enumerate(labels)}
    source = resolve_source(parse_spec(CHECKPOINT))
    started = time.perf_counter()
    processor = hf_processor(source, args.image_size)
    torch.manual_seed(args.seed)
    model = AutoModelForImageClassification.from_pretrained(
        source, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_ids,
        ignore_mismatched_sizes=True)

    class PngDataset(torch.utils.data.Dataset):
        """Opens and processes one PNG per item, as an image-classification example script does."""

        def __init__(self, paths: list[str], targets: list[int]) -> None:
            self.paths, self.targets, self.served = paths, targets, 0

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, index: int) -> dict:
            self.served += 1  # num_workers=0: counted in this process, exactly the images trained on
            with Image.open(self.paths[index]) as image:
                pixels = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]
            return {"pixel_values": pixels, "labels": self.targets[index]}

    dataset = PngDataset(train["image"].tolist(), train["label"].map(label_ids).tolist())
    training_args = TrainingArguments(
        output_dir=str(workdir / "trainer"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=0.01, warmup_steps=0.06, lr_scheduler_type="linear",
        max_grad_norm=1.0, seed=args.seed, eval_strategy="no", save_strategy="no", report_to=[],
        logging_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=default_data_collator)
    cpu_started = time.process_time()
    output = trainer.train()
    cpu_seconds = time.process_time() - cpu_started
    return {
        "images": dataset.served,
        "steps": output.global_step,
        "train_seconds": output.metrics["train_runtime"],
        "train_cpu_seconds": cpu_seconds,
        "call_seconds": time.perf_counter() - started,
        "final_train_loss": output.metrics.get("train_loss"),
        "optimizer": str(training_args.optim),
    }


# ----------------------------------------------------------------------------------- inference
def inference_images(args) -> list[bytes]:
    """The bytes of the first ``args.inference_images`` validation-then-train PNGs (the same list for both)."""
    train, validation, _ = demo_splits(args)
    paths = (validation["image"].tolist() + train["image"].tolist())[:args.inference_images]
    return [Path(path).read_bytes() for path in paths]


def run_predictor(args, model_dir: Path) -> dict:
    import torch

    from tuneops.components.predictor import Predictor

    torch.set_num_threads(args.threads)
    images = inference_images(args)
    predictor = Predictor.from_dir(model_dir, device="cpu")
    predictor.predict_proba(images[:8])  # warm-up: first-call allocations and kernel selection
    cpu_started, started = time.process_time(), time.perf_counter()
    probabilities = predictor.predict_proba(images)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"images": len(images), "seconds": seconds, "cpu_seconds": cpu_seconds,
            "probabilities": probabilities.tolist()}


def run_bare_loop(args, model_dir: Path) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageClassification

    torch.set_num_threads(args.threads)
    images = inference_images(args)
    processor = hf_processor(str(model_dir), None)  # the trained model's processor carries its size
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()

    def one(data: bytes):
        with Image.open(io.BytesIO(data)) as image:
            inputs = processor(image.convert("RGB"), return_tensors="pt")
        return torch.softmax(model(**inputs).logits, dim=-1)[0].numpy()

    with torch.inference_mode():
        for data in images[:8]:
            one(data)
        cpu_started, started = time.process_time(), time.perf_counter()
        probabilities = [one(data).tolist() for data in images]
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"images": len(images), "seconds": seconds, "cpu_seconds": cpu_seconds, "probabilities": probabilities}


# ------------------------------------------------------------------------------------ harness
def child(args) -> None:
    """Run one variant in this process and print its figures as the last line of output."""
    workdir = Path(args.workdir)
    runners = {
        "tuneops": lambda: run_tuneops(args, workdir),
        "trainer": lambda: run_trainer(args, workdir),
        "predictor": lambda: run_predictor(args, Path(args.model_dir)),
        "bare-loop": lambda: run_bare_loop(args, Path(args.model_dir)),
    }
    figures = runners[args.variant]()
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(figures))


def launch(variant: str, args, workdir: Path, model_dir: str | None = None) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--workdir", str(workdir),
               "--workdir-root", args.workdir_root, "--rows", str(args.rows), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
               "--threads", str(args.threads), "--learning-rate", str(args.learning_rate), "--seed", str(args.seed),
               "--inference-images", str(args.inference_images)]
    if model_dir:
        command += ["--model-dir", model_dir]
    # Every variant runs with the OpenMP wait policy tuneops sets for itself, and one tuneops home
    # (the converted EfficientNet folder is written once and shared): the same runtime for all.
    environment = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false",
                       TUNEOPS_HOME=str(Path(args.workdir_root) / "home"),
                       OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", OMP_WAIT_POLICY))
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    if finished.returncode != 0 or not lines:
        sys.exit(f"benchmark: {variant} failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
    figures = json.loads(lines[-1][len("RESULT "):])
    figures["process_seconds"] = time.perf_counter() - started
    return figures


def interleaved(variants: tuple[str, ...], rounds: int, run) -> dict[str, list[dict]]:
    """``rounds`` rounds of every variant, rotating which goes first, so a burst of other work on a
    shared machine hits all of them."""
    results: dict[str, list[dict]] = {variant: [] for variant in variants}
    for index in range(rounds):
        order = list(variants[index % len(variants):] + variants[:index % len(variants)])
        for variant in order:
            results[variant].append(run(variant, index))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="320 images, 10 steps, 1 round (< ~3 min)")
    parser.add_argument("--rows", type=int, default=1024, help="train images (plus 100 for validation)")
    parser.add_argument("--steps", type=int, default=64, help="optimizer steps in both fine-tunes (64: two epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    # One thread by default, as bench_training.py: on a machine shared with other jobs, several
    # threads per process spin against each other and the timings become noise.
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every variant (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best is reported")
    parser.add_argument("--inference-images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--workdir-root", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    if args.quick:
        args.rows, args.steps, args.rounds = 320, 10, 1
    if args.inference_images > args.rows + VALIDATION_ROWS:
        sys.exit(f"benchmark: --inference-images {args.inference_images} is more than the "
                 f"{args.rows + VALIDATION_ROWS} demo images")

    import numpy as np
    import torch

    print(f"machine: CPU ({os.cpu_count()} cores); torch {torch.__version__}; threads per variant: {args.threads}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"model: {CHECKPOINT} at {args.image_size} px; data: ~{args.rows} MNIST train PNGs (+{VALIDATION_ROWS} "
          f"validation), {args.steps} steps of "
          f"batch {args.batch_size}, lr {args.learning_rate:g}; inference on {args.inference_images} images\n")
    with tempfile.TemporaryDirectory(prefix="tuneops-bench-images-") as temporary:
        args.workdir_root = temporary
        root = Path(temporary)
        training = interleaved(TRAIN_VARIANTS, args.rounds,
                               lambda variant, index: launch(variant, args, root / f"{variant}-{index}"))
        for runs in training.values():
            for figures in runs:
                figures["images_per_second"] = figures["images"] / figures["train_seconds"]
                figures["images_per_cpu_second"] = figures["images"] / figures["train_cpu_seconds"]
        best = {variant: max(runs, key=lambda r: r["images_per_second"]) for variant, runs in training.items()}
        header = (f"{'fine-tune':<12}{'images/s':>10}{'img/CPU-s':>11}{'images':>8}{'steps':>7}{'train s':>9}"
                  f"{'call s':>8}{'final loss':>12}{'peak RSS MiB':>14}")
        print(header)
        print("-" * len(header))
        for variant, figures in best.items():
            print(f"{variant:<12}{figures['images_per_second']:>10.1f}{figures['images_per_cpu_second']:>11.1f}"
                  f"{figures['images']:>8}{figures['steps']:>7}{figures['train_seconds']:>9.1f}"
                  f"{figures['call_seconds']:>8.1f}{figures['final_train_loss']:>12.3f}{figures['peak_rss_mib']:>14,.0f}")
        print(f"(best of {args.rounds} interleaved round(s); all rounds: " + "; ".join(
            f"{v} " + "/".join(f"{r['images_per_second']:.1f}" for r in runs) for v, runs in training.items())
            + " images/s)")
        accuracy = best["tuneops"].get("validation_accuracy")
        if accuracy is not None:
            print(f"tuneops validation accuracy after {best['tuneops']['steps']} steps: {accuracy:.3f}")

        model_dir = best["tuneops"]["model_dir"]
        inference = interleaved(INFERENCE_VARIANTS, args.rounds,
                                lambda variant, index: launch(variant, args, root / f"{variant}-{index}", model_dir))
        for runs in inference.values():
            for figures in runs:
                figures["images_per_second"] = figures["images"] / figures["seconds"]
                figures["images_per_cpu_second"] = figures["images"] / figures["cpu_seconds"]
        fastest = {variant: max(runs, key=lambda r: r["images_per_second"]) for variant, runs in inference.items()}
        print()
        header = f"{'inference':<12}{'images/s':>10}{'img/CPU-s':>11}{'images':>8}{'seconds':>9}{'peak RSS MiB':>14}"
        print(header)
        print("-" * len(header))
        for variant, figures in fastest.items():
            print(f"{variant:<12}{figures['images_per_second']:>10.1f}{figures['images_per_cpu_second']:>11.1f}"
                  f"{figures['images']:>8}{figures['seconds']:>9.2f}{figures['peak_rss_mib']:>14,.0f}")
        ours = np.asarray(fastest["predictor"]["probabilities"])
        theirs = np.asarray(fastest["bare-loop"]["probabilities"])
        agreement = float((ours.argmax(1) == theirs.argmax(1)).mean())
        print(f"(best of {args.rounds} round(s)); labels agree on {agreement:.1%} of the images, "
              f"largest probability difference {float(np.abs(ours - theirs).max()):.2e}")
        if agreement < 0.99:
            print("WARNING: the predictor and the bare loop disagree: the preprocessing differs")

        fine_tune = best["tuneops"]["images_per_second"] / best["trainer"]["images_per_second"]
        fine_tune_cpu = best["tuneops"]["images_per_cpu_second"] / best["trainer"]["images_per_cpu_second"]
        serving = fastest["predictor"]["images_per_second"] / fastest["bare-loop"]["images_per_second"]
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
        print(f"fine-tune images per CPU-second: {fine_tune_cpu:.2f} x")
        print(figure_line("image_train_vs_trainer", fine_tune, FINE_TUNE_GOAL))
        print(figure_line("image_serve_vs_bare_torch", serving, INFERENCE_GOAL))


if __name__ == "__main__":
    main()
