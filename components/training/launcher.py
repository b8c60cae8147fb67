"""The local multi-process launcher: run a fine-tune as ``training.processes`` data-parallel
processes on this machine and read their result back.

The processes are started here the way torchrun starts them (RANK, LOCAL_RANK, WORLD_SIZE in the
environment, the same entry point, ``tuneops.components.training.distributed``), but they meet
through a file store instead of torchrun's TCP store: that store listens on every network
interface, and a one-machine job needs no network listener at all. gloo / NCCL connect the
processes over loopback only. The splits and the validated settings reach the processes as a
handover folder beside the model directory (``tuneops.components.training.handover``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path


from tuneops.components.errors import StageError
from tuneops.components.paths import SOURCE_ROOT
from tuneops.components.process_guard import die_with_parent
from tuneops.components.training.handover import INIT_METHOD_VARIABLE, HandoverSettings, inputs_dir, write_handover
from tuneops.components.training.outputs import TrainedModel
from tuneops.components.training.run_setup import RunRequest

logger = logging.getLogger(__name__)

WORKER_MODULE = "tuneops.components.training.distributed"


def launch_local(request: RunRequest, *, resume: bool = False) -> TrainedModel:
    """Run the fine-tune as ``request.config.processes`` local processes and return the result.

    Each process logs to ``distributed-inputs/rank<N>.log``; when one fails, the others are stopped
    and a StageError names the process and its last error line.
    """
    processes = request.config.processes
    output_dir = request.output_dir
    inputs = inputs_dir(output_dir)
    champion_dir = str(request.champion_dir) if request.champion_dir is not None else None
    settings = HandoverSettings(task=request.task.name, checkpoint=request.checkpoint, labels=request.labels,
                                training=request.config, champion_dir=champion_dir, recipe=request.recipe)
    write_handover(inputs, settings, request.train, request.validation, request.task.input_column)
    command = [sys.executable, "-m", WORKER_MODULE, "--inputs", str(inputs), "--output-dir", str(output_dir)]
    if resume:
        command.append("--resume")
    # A fresh file per launch: a file store left by a killed launch would hold stale keys.
    rendezvous = inputs / f"rendezvous-{uuid.uuid4().hex}"
    environment = dict(os.environ)
    environment.setdefault("GLOO_SOCKET_IFNAME", "lo")
    environment.setdefault("NCCL_SOCKET_IFNAME", "lo")
    environment.setdefault("OMP_NUM_THREADS", "1")  # each process sets its own share (cpu_threads)
    environment.update({
        INIT_METHOD_VARIABLE: rendezvous.resolve().as_uri(),
        "WORLD_SIZE": str(processes),
        "LOCAL_WORLD_SIZE": str(processes),
    })
    logger.info("launching %d training processes: %s (logs: %s/rank*.log)", processes, " ".join(command), inputs)
    running: list[tuple[subprocess.Popen, Path]] = []
    try:
        for rank in range(processes):
            log_path = inputs / f"rank{rank}.log"
            with open(log_path, "w") as log:
                # This thread waits for them below, so they end with it if tuneops is killed outright.
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, cwd=SOURCE_ROOT,
                    env=environment | {"RANK": str(rank), "LOCAL_RANK": str(rank)}, preexec_fn=die_with_parent,
                )
            running.append((process, log_path))
        failure = _wait_all(running)
    finally:
        for process, _ in running:  # only after a failure or an interrupt are any still running
            if process.poll() is None:
                process.kill()
                process.wait()
        rendezvous.unlink(missing_ok=True)
    if failure is not None:
        rank, code, log_path = failure
        raise StageError(f"training: process {rank} of the {processes}-process run failed (exit {code}); "
                         f"{_last_error_line(log_path)} (full log: {log_path})")
    return TrainedModel.from_dir(output_dir)


def _wait_all(running: list[tuple[subprocess.Popen, Path]]) -> tuple[int, int, Path] | None:
    """Wait until every process has exited; on the first failure return (rank, exit code, log) at
    once, since the others would wait for the failed one at their next collective."""
    while True:
        pending = False
        for rank, (process, log_path) in enumerate(running):
            code = process.poll()
            if code is None:
                pending = True
            elif code != 0:
                return rank, code, log_path
        if not pending:
            return None
        time.sleep(0.2)


def _last_error_line(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or "Error" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"
