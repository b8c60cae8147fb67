"""The one device and precision decision, for training, selection probes and inference.

Each is a small function of what was asked for and what the hardware has, so the GPU paths are
unit-tested on a CPU-only machine: the decision is tested, the hardware only executes it.
"""

from __future__ import annotations

import contextlib

from tuneops.components.errors import ConfigError


def resolve_device(requested: str = "auto", local_rank: int = 0, cuda_available: bool | None = None) -> str:
    """The torch device string for this process: ``cuda:<local rank>`` on GPUs, else ``cpu``.

    ``cuda_available`` defaults to what torch sees; tests pass it to decide without a GPU.
    """
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if requested == "cuda" and not cuda_available:
        raise ConfigError("config: training.device is 'cuda' but no CUDA device is available")
    if requested == "cpu" or not cuda_available:
        return "cpu"
    return f"cuda:{local_rank}"


def select_precision(device: str, requested: str, bf16_supported: bool) -> str:
    """The compute precision: on CUDA bf16 autocast (fp16 where the GPU lacks bf16), on CPU fp32.

    An explicit ``training.precision`` wins where the hardware can do it; bf16 on CPU is allowed
    (autocast supports it, and CPUs with AMX run it fast) but fp16 on CPU is not.
    """
    on_cuda = device.startswith("cuda")
    if requested == "auto":
        if not on_cuda:
            return "fp32"
        return "bf16" if bf16_supported else "fp16"
    if requested == "fp16" and not on_cuda:
        raise ConfigError("config: training.precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    if requested == "bf16" and on_cuda and not bf16_supported:
        raise ConfigError("config: training.precision bf16 is not supported by this GPU; use fp16 or auto")
    return requested


def autocast(device: str, precision: str):
    """The autocast context for ``precision`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def configure_backends(device: str) -> None:
    """Let fp32 matmuls use TF32 tensor cores on CUDA (~8x the fp32 rate on Ampere and later)."""
    import torch

    if device.startswith("cuda"):
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True


def inference_precision(device: str) -> str:
    """Inference runs bf16 autocast on CUDA (no gradients, so no loss scaling to worry about), else fp32."""
    return "bf16" if device.startswith("cuda") else "fp32"
