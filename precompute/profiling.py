"""Wall time, throughput and peak memory of each stage of one checkpoint (table ``stage_timings``).

Peak memory is the device's: CUDA memory allocated by torch on a GPU; on the CPU, the process's peak resident
memory during the stage (Linux: VmHWM, reset before each stage through /proc/self/clear_refs; None elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import torch

#: The columns of ``stage_timings`` a timer fills (the writer adds run_id and checkpoint).
TIMING_SCHEMA = {"stage": pl.Utf8, "seconds": pl.Float64, "tokens_per_s": pl.Float64, "peak_mem_mb": pl.Float64}


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux: VmHWM via /proc/self/clear_refs); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float | None:
    """Peak resident memory of this process since the last reset (VmHWM), in MiB; None where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class StageTimer:
    """Times the stages of one checkpoint; ``frame()`` gives the rows of ``stage_timings``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rows: list[dict] = []

    def record(self, name: str, seconds: float, tokens: int | None = None, peak_mem_mb: float | None = None) -> None:
        """A stage timed elsewhere (the checkpoint's load, before the timer's device is known)."""
        self.rows.append(
            {
                "stage": name,
                "seconds": seconds,
                "tokens_per_s": tokens / seconds if tokens and seconds > 0 else None,
                "peak_mem_mb": peak_mem_mb,
            }
        )

    @contextmanager
    def stage(self, name: str, tokens: int | None = None) -> Iterator[None]:
        """Time the block as stage ``name``; ``tokens``: how many it processed (for tokens_per_s)."""
        host = self.device.type == "cpu" and _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _peak_rss_mib() if host else None
        self.record(name, seconds, tokens, peak)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=TIMING_SCHEMA)
