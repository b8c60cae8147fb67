"""The one device and precision decision, for training, selection probes and inference.

Each is a small function of what was asked for and what the hardware has, so the GPU paths are
unit-tested on a CPU-only machine: the decision is tested, the hardware only executes it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

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


# CPU instruction sets that compute bf16 natively (Intel AMX tiles, AVX512-BF16 dot products).
# Without them torch emulates bf16 by conversion: measured ~20x slower than fp32 for a MiniLM
# training step on an AVX2-only CPU, so "auto" must not pick bf16 there.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The compute precision and, for the run record, why it was chosen."""

    precision: str
    reason: str


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of ``CPU_BF16_FLAGS`` this CPU has, read from ``/proc/cpuinfo`` (``cpuinfo`` in tests);
    [] where the file does not exist (not Linux) or names none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [flag for flag in CPU_BF16_FLAGS if flag in flags]
    return []


def select_precision(device: str, requested: str, bf16_supported: bool, cpu_flags: list[str] | None = None
                     ) -> PrecisionChoice:
    """The compute precision. "auto": bf16 autocast on a GPU that has it (fp16 on one that does
    not); on CPU, bf16 autocast where ``cpu_flags`` (``cpu_bf16_flags()``) name native bf16, else fp32.

    An explicit ``training.precision`` wins where the hardware can do it: bf16 on a CPU without
    native bf16 runs (emulated, slowly), fp16 on CPU is refused.
    """
    on_cuda = device.startswith("cuda")
    cpu_flags = list(cpu_flags or [])
    if requested == "fp16" and not on_cuda:
        raise ConfigError("config: training.precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    if requested == "bf16" and on_cuda and not bf16_supported:
        raise ConfigError("config: training.precision bf16 is not supported by this GPU; use fp16 or auto")
    if requested != "auto":
        slow = requested == "bf16" and not on_cuda and not cpu_flags
        return PrecisionChoice(requested, f"training.precision is {requested}" + (
            " (this CPU has no native bf16: emulated, much slower than fp32)" if slow else ""))
    if on_cuda:
        if bf16_supported:
            return PrecisionChoice("bf16", "auto: bf16 autocast on a GPU with bf16")
        return PrecisionChoice("fp16", "auto: fp16 autocast with loss scaling (this GPU has no bf16)")
    if cpu_flags:
        return PrecisionChoice("bf16", f"auto: bf16 autocast, the CPU computes bf16 natively ({', '.join(cpu_flags)})")
    return PrecisionChoice("fp32", "auto: fp32, the CPU has no native bf16 (neither AMX nor AVX512-BF16)")


def precision_for(device: str, requested: str) -> PrecisionChoice:
    """``select_precision`` for ``device`` with what this machine reports: the GPU's bf16 support,
    or the CPU's native bf16 flags."""
    if device.startswith("cuda"):
        import torch

        return select_precision(device, requested, torch.cuda.is_bf16_supported())
    return select_precision(device, requested, False, cpu_bf16_flags())


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
