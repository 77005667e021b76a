"""What the speed benches record beside their numbers: the machine and its load, and a process's peak RSS.

On a shared machine a figure means little without the load it was measured under; benches read the load
before they start and pass it here at the end.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe(load_before: tuple[float, float, float], threads: int, **versions: str) -> dict:
    """Processor, cores, inference threads, load averages before and now, and the given library versions."""
    return {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        **versions,
    }


def peak_rss_mib() -> int:
    """This process's own peak RSS (VmHWM; ``ru_maxrss`` would carry the parent's peak across the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    raise RuntimeError("no VmHWM in /proc/self/status")
