"""Data-parallel fine-tuning: the entry point every process runs (started by torchrun, accelerate
launch, or by ``launch_local`` when ``training.processes > 1``), and that local launcher.

One process per GPU (or per CPU share): each joins the ``torch.distributed`` process group (NCCL on
GPUs, gloo on CPUs), then runs the ordinary ``tuneops.components.training.finetune.finetune``, which takes its share
of every batch and lets DistributedDataParallel average the gradients. Across nodes it is the same
entry under a multi-node torchrun (infra/distributed.md).

    torchrun --nproc_per_node 4 -m tuneops.components.training.distributed \\
        --config tuneops.yaml --checkpoint packaged:all-MiniLM-L6-v2 --output-dir runs/r1/model
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pandas as pd
import yaml

from tuneops.components.config import TrainingConfig, load_config
from tuneops.components.data.loading import LABEL, TEXT, load_data, read_table
from tuneops.components.errors import DataError, StageError, TuneopsError
from tuneops.components.paths import SOURCE_ROOT
from tuneops.components.process_guard import die_with_parent

logger = logging.getLogger(__name__)

INPUTS_DIR = "distributed-inputs"
# How launch_local tells its processes where to meet (a file:// URL); unset under torchrun,
# whose MASTER_ADDR / MASTER_PORT are read through init_method "env://".
INIT_METHOD_VARIABLE = "TUNEOPS_DIST_INIT"


def launch_local(train: pd.DataFrame, validation: pd.DataFrame, labels: list[str], checkpoint: str,
                 config: TrainingConfig, output_dir: Path, champion_dir: Path | None, resume: bool):
    """Run ``finetune`` as ``config.processes`` local processes and return the result.

    The processes are started here, the way torchrun starts them (RANK, LOCAL_RANK, WORLD_SIZE in
    the environment, the same entry point), but they meet through a file store instead of
    torchrun's TCP store: that store listens on every network interface, and a one-machine job
    needs no network listener at all. gloo / NCCL connect the processes over loopback only.
    The splits and settings reach the processes as files beside the model directory.
    """
    from tuneops.components.training.finetune import TrainedModel

    processes = config.processes
    inputs = Path(output_dir).parent / INPUTS_DIR
    inputs.mkdir(parents=True, exist_ok=True)
    train_path, validation_path = inputs / "train.parquet", inputs / "validation.parquet"
    train[[TEXT, LABEL]].astype(str).to_parquet(train_path, index=False)
    validation[[TEXT, LABEL]].astype(str).to_parquet(validation_path, index=False)
    config_path = inputs / "config.yaml"
    config_path.write_text(yaml.safe_dump({"training": config.model_dump(mode="json")}))
    command = [
        sys.executable, "-m", "tuneops.components.training.distributed",
        "--config", str(config_path), "--checkpoint", checkpoint, "--output-dir", str(output_dir),
        "--train", str(train_path), "--validation", str(validation_path), "--labels", ",".join(labels),
    ]
    if champion_dir is not None:
        command += ["--champion-dir", str(champion_dir)]
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


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuneops.components.training.distributed",
                                     description="One process of a data-parallel tuneops fine-tune (start with torchrun).")
    parser.add_argument("--config", help="tuneops YAML config (its data and training sections are used)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    parser.add_argument("--checkpoint", required=True, help="candidate spec, e.g. packaged:all-MiniLM-L6-v2")
    parser.add_argument("--output-dir", required=True, type=Path, help="model directory (checkpoints go beside it)")
    parser.add_argument("--train", type=Path, help="train file with text,label columns; unset = load the config's data")
    parser.add_argument("--validation", type=Path, help="validation file (with --train)")
    parser.add_argument("--labels", help="comma-separated label set; unset = the labels seen in train")
    parser.add_argument("--champion-dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    return parser.parse_args(argv)


def _load_splits(arguments: argparse.Namespace, config) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    if arguments.train is not None:
        if arguments.validation is None:
            raise DataError("data: --train needs --validation too")
        train = read_table(arguments.train)
        validation = read_table(arguments.validation)
        for name, frame in (("train", train), ("validation", validation)):
            if TEXT not in frame or LABEL not in frame:
                raise DataError(f"data: the {name} file needs columns {TEXT!r} and {LABEL!r}")
    else:
        from tuneops.components.paths import demo_dir

        splits = load_data(config.data, demo_dir())
        train, validation = splits.train, splits.validation
    # Rows without text or label cannot train; the pipeline's validation stage reports them, this
    # standalone entry drops them.
    train = train.dropna(subset=[TEXT, LABEL]).astype({TEXT: str, LABEL: str})
    validation = validation.dropna(subset=[TEXT, LABEL]).astype({TEXT: str, LABEL: str})
    if arguments.labels:
        labels = [label.strip() for label in arguments.labels.split(",") if label.strip()]
    else:
        labels = config.data.labels or sorted(set(train[LABEL]))
    return train, validation, labels


def main(argv: list[str] | None = None) -> int:
    """Join the process group torchrun describes in the environment, fine-tune, leave the group."""
    import torch
    import torch.distributed as dist

    from tuneops.components.training.finetune import finetune

    arguments = _parse_arguments(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank{rank} %(name)s %(message)s")
    joined = False
    try:
        config = load_config(arguments.config, arguments.overrides)
        train, validation, labels = _load_splits(arguments, config)
        if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
            use_cuda = config.training.device != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            # A long validation pass on rank 0 must not time out the others' barrier.
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo", init_method=os.environ.get(INIT_METHOD_VARIABLE, "env://"),
                rank=rank, world_size=int(os.environ["WORLD_SIZE"]), timeout=timedelta(minutes=30),
            )
            joined = True
        result = finetune(train, validation, labels, arguments.checkpoint, config.training, arguments.output_dir,
                          champion_dir=arguments.champion_dir, resume=arguments.resume)
        if rank == 0:
            resumed = f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else ""
            print(f"trained {result.steps} steps on {result.world_size} process(es){resumed}: {result.path}")
        return 0
    except TuneopsError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        if joined:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
