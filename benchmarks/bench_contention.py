"""Why tuneops sets OMP_WAIT_POLICY=PASSIVE: MiniLM training steps with torch's OpenMP threads
spinning (the runtime's default) vs sleeping while they wait, on an idle machine and while busy
processes compete for the cores, side by side in one run.

    .venv/bin/python benchmarks/bench_contention.py [--busy 4] [--threads 2] [--steps 15]
    .venv/bin/python benchmarks/bench_contention.py --quick     # 5 steps per case, about a minute

Prints milliseconds per optimizer step for each case and ends with ``passive_vs_default_idle``
and ``passive_vs_default_busy``: default ms/step over passive ms/step (> 1: passive is faster;
the goal, >= 1.0, is that passive never costs). The busy processes are this script's own
children and are stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from figures import figure_line  # benchmarks/figures.py, beside this script

REPO = Path(__file__).resolve().parents[1]

STEP_SCRIPT = """
import sys, time, torch
from transformers import AutoModelForSequenceClassification
from tuneops.components.checkpoints import packaged_model_dir
threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
torch.set_num_threads(threads)
model = AutoModelForSequenceClassification.from_pretrained(str(packaged_model_dir("all-MiniLM-L6-v2")), num_labels=3)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
ids, labels = torch.randint(1000, 20000, (32, 28)), torch.randint(0, 3, (32,))
def step():
    model(input_ids=ids, labels=labels).loss.backward(); optimizer.step(); optimizer.zero_grad()
for _ in range(3):
    step()
started = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - started) / steps * 1000)
"""


def milliseconds_per_step(policy: str | None, threads: int, steps: int) -> float:
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy:
        environment["OMP_WAIT_POLICY"] = policy
    environment["TRANSFORMERS_VERBOSITY"] = "error"
    finished = subprocess.run([sys.executable, "-c", STEP_SCRIPT, str(threads), str(steps)], cwd=REPO,
                              env=environment, capture_output=True, text=True, check=True)
    return float(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=4, help="busy processes competing for the cores")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="5 steps per case")
    args = parser.parse_args()
    if args.quick:
        args.steps = 5
    ratios = {}
    print(f"cores: {os.cpu_count()}; torch threads: {args.threads}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'case':<28}{'default ms/step':>16}{'passive ms/step':>16}{'default/passive':>17}")
    for busy in (0, args.busy):
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            default = milliseconds_per_step(None, args.threads, args.steps)
            passive = milliseconds_per_step("PASSIVE", args.threads, args.steps)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
        case = "idle machine" if busy == 0 else f"{busy} busy processes"
        print(f"{case:<28}{default:>16.0f}{passive:>16.0f}{default / passive:>16.2f}x")
        ratios["idle" if busy == 0 else "busy"] = default / passive
    for case, ratio in ratios.items():
        print(figure_line(f"passive_vs_default_{case}", ratio, 1.0))


if __name__ == "__main__":
    main()
