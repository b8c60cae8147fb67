"""benchmarks/gpu_check.sh, the script to run the day a GPU is lent: its CPU dry run goes through
every step (tiny models, a few steps) and ends with its figures, so the GPU run is not its first."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
FIGURE = re.compile(r"^(\w+): (\d+\.\d\d|n/a) x \(goal >= \d+\.\d\d x\)")


def _run(*arguments: str, timeout: int) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path even where a GPU exists
    return subprocess.run(["bash", str(SCRIPT), *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=environment)


@pytest.mark.slow  # ~50 s of fine-tunes and three benchmark processes: with the slow runs (.ci/run runs them too)
def test_the_gpu_check_dry_run_goes_through_every_step_on_cpu():
    finished = _run("--dry-run", timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = finished.stdout.splitlines()
    for step in ("1. device cpu", "2. fine-tune minilm", "2. fine-tune bert_base", "3. data-parallel, 1 process",
                 "4. inference", "5. benchmarks/bench_training.py"):
        assert any(line.startswith(step) for line in lines), (step, finished.stdout[-3000:])
    # The precision decision is printed with its reason.
    assert "precision fp32" in finished.stdout or "precision bf16" in finished.stdout
    names = [FIGURE.match(line).group(1) for line in lines if FIGURE.match(line)]
    assert names == ["predictor_vs_bare_torch", "train_vs_trainer_fixed", "train_vs_trainer_dynamic"], lines[-6:]
    # MFU needs a GPU's peak: on CPU it is not reported rather than guessed.
    assert "MFU n/a (CPU)" in finished.stdout and "mfu_" not in " ".join(names)


@pytest.mark.parametrize("arguments", [(), ("--steps", "5")])
def test_the_gpu_check_without_a_gpu_says_so_in_one_line(arguments):
    finished = _run(*arguments, timeout=180)
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device is visible to torch; run with --dry-run to check the script on CPU"]
