"""Cost measurements of a candidate: per-item latency at batch 1 and batch 32, the peak memory a
block of code adds, and handing memory back between candidates so each is measured on its own."""

from __future__ import annotations

import gc
import math
import threading
import time
from typing import Any, Callable

# Batch-1 latency is the fastest of this many single-input calls (after 2 warm-up calls): short
# enough (< 1 s for MiniLM on CPU) not to dominate the probe.
LATENCY_SINGLE_CALLS = 16
LATENCY_BATCH = 32
LATENCY_BATCH_REPEATS = 3


def measure_latency(predict_proba: Callable[[list[Any]], Any], inputs: list[Any]) -> tuple[float, float]:
    """Per-item latency in ms at batch 1 and at batch 32 (batch time / 32), the processor's
    encoding of the inputs included.

    Each is the fastest of repeated calls, as ``timeit`` advises: other processes on a shared
    machine only ever add time, so the minimum is the candidate's own cost and is what stays
    comparable between candidates measured a minute apart (medians varied 10x on a busy box).
    """
    if not inputs:
        return math.nan, math.nan
    single = [inputs[i % len(inputs)] for i in range(LATENCY_SINGLE_CALLS)]
    for value in single[:2]:  # warm-up: first calls pay for lazy initialisation
        predict_proba([value])
    timings = []
    for value in single:
        began = time.perf_counter()
        predict_proba([value])
        timings.append(time.perf_counter() - began)
    batch = [inputs[i % len(inputs)] for i in range(LATENCY_BATCH)]
    predict_proba(batch)
    batch_timings = []
    for _ in range(LATENCY_BATCH_REPEATS):
        began = time.perf_counter()
        predict_proba(batch)
        batch_timings.append(time.perf_counter() - began)
    return min(timings) * 1000, min(batch_timings) * 1000 / LATENCY_BATCH


class PeakMemory:
    """Peak memory a block of code adds, in MB: CUDA's allocator peak on a GPU; on CPU the peak
    process RSS above the level at entry, sampled every 10 ms by a background thread."""

    _INTERVAL_SECONDS = 0.01

    def __init__(self, device: str) -> None:
        self.device = device
        self.on_cuda = device.startswith("cuda")  # "cuda" or "cuda:<index>"
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0
        self._peak = 0

    def __enter__(self) -> "PeakMemory":
        if self.on_cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        process = psutil.Process()
        self._start = self._peak = process.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(self._INTERVAL_SECONDS):
                self._peak = max(self._peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, name="tuneops-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.on_cuda:
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            import psutil

            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, psutil.Process().memory_info().rss)
        self.peak_mb = max(0, peak - self._start) / 2**20


def release_memory(device: str) -> None:
    """Free what the last candidate held, so the next one's memory is measured on its own.

    glibc keeps freed heap pages in the process; ``malloc_trim`` hands them back to the OS so
    that an RSS delta reflects the next candidate, not the previous one's leftovers.
    """
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the measure is then an upper bound
        pass
