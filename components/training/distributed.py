"""The entry point every process of a data-parallel fine-tune runs (started by torchrun, accelerate
launch, or by ``tuneops.components.training.launcher.launch_local`` when ``training.processes > 1``).

One process per GPU (or per CPU share): each reads the handover folder (the splits and the
validated settings, ``tuneops.components.training.handover``), joins the ``torch.distributed``
process group (NCCL on GPUs, gloo on CPUs), then runs the in-process engine, which takes its share
of every batch and lets DistributedDataParallel average the gradients. Across nodes it is the same
entry under a multi-node torchrun (infra/distributed.md). By hand, write the handover first:

    python -m tuneops.components.training.prepare --config tuneops.yaml \\
        --checkpoint packaged:all-MiniLM-L6-v2 --output-dir runs/r1/model
    torchrun --nproc_per_node 4 -m tuneops.components.training.distributed --output-dir runs/r1/model
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from tuneops.components.device import resolve_device
from tuneops.components.errors import TuneopsError
from tuneops.components.training.engine import train_in_process
from tuneops.components.training.run_setup import RunRequest
from tuneops.components.training.handover import INIT_METHOD_VARIABLE, inputs_dir, read_settings, read_splits

logger = logging.getLogger(__name__)


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tuneops.components.training.distributed",
        description="One process of a data-parallel tuneops fine-tune (start with torchrun).",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="model directory (checkpoints go beside it)")
    parser.add_argument("--inputs", type=Path,
                        help="handover folder (handover.json, train/validation.parquet); "
                             "unset = distributed-inputs beside the model directory")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Join the process group torchrun describes in the environment, fine-tune, leave the group."""
    import torch
    import torch.distributed as dist

    from tuneops.components.tasks.registry import get_task  # a process entry picks its task, like a flow

    arguments = _parse_arguments(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank{rank} %(name)s %(message)s")
    joined = False
    try:
        handover = arguments.inputs or inputs_dir(arguments.output_dir)
        settings = read_settings(handover)
        task = get_task(settings.task)
        train, validation = read_splits(handover, task.input_column)
        if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            device = resolve_device(settings.training.device, local_rank, torch.cuda.is_available())
            if device.startswith("cuda"):
                torch.cuda.set_device(device)
            # A long validation pass on rank 0 must not time out the others' barrier.
            dist.init_process_group(
                backend="nccl" if device.startswith("cuda") else "gloo",
                init_method=os.environ.get(INIT_METHOD_VARIABLE, "env://"),
                rank=rank, world_size=int(os.environ["WORLD_SIZE"]), timeout=timedelta(minutes=30),
            )
            joined = True
        champion_dir = Path(settings.champion_dir) if settings.champion_dir else None
        request = RunRequest(train=train, validation=validation, labels=settings.labels, checkpoint=settings.checkpoint,
                             config=settings.training, output_dir=Path(arguments.output_dir), task=task,
                             champion_dir=champion_dir, recipe=settings.recipe)
        result = train_in_process(request, resume=arguments.resume)
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
