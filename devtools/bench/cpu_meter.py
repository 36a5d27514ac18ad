"""CPU used by each component of a bench over a measurement window (psutil), in % of one core.

Why per process and not the machine's load: on a small machine every component shares the
same cores, so "what limits the rate" is answered by who used the CPU while it was measured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from types import ModuleType


def _psutil() -> ModuleType:
    """psutil (in the `dev` extra); a one-line error where it is missing."""
    try:
        import psutil
    except ImportError:
        raise RuntimeError("measuring CPU per process needs psutil: pip install -e '.[dev]'") from None
    return psutil


def _cpu_seconds(pid: int) -> float | None:
    psutil = _psutil()
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.user + times.system)


class CpuMeter:
    """`start()` then `stop()`: CPU % per named process between the two (100 = one core busy)."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._start: dict[str, float | None] = {}
        self._machine_start = 0.0
        self._t0 = 0.0
        #: Busy CPU of the whole machine over the window (all processes, ours and others), % of one core.
        self.machine_pct: float | None = None
        #: CPU-seconds (user + system) each process used over the window (None: it was gone).
        self.seconds: dict[str, float | None] = {}

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._machine_start = _machine_busy_seconds()
        self._start = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float | None]:
        wall = max(1e-9, time.monotonic() - self._t0)
        out: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            before, after = self._start.get(name), _cpu_seconds(pid)
            used = None if before is None or after is None else after - before
            self.seconds[name] = used
            out[name] = None if used is None else round(100.0 * used / wall, 1)
        self.machine_pct = round(100.0 * (_machine_busy_seconds() - self._machine_start) / wall, 1)
        return out


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores, all processes) since boot."""
    t = _psutil().cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def cores() -> int:
    return os.cpu_count() or 1


def find_child(name_part: str) -> int | None:
    """The pid of a child process of this one whose executable name contains `name_part`."""
    psutil = _psutil()
    for child in psutil.Process().children(recursive=True):
        try:
            if name_part in child.name():
                return int(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None
