"""Host resources, measured one way for every reader (`runner health`, the monitor stage, alerts).

Disk: the share of the filesystem in use as `df` reports it, used / (used + available):
blocks reserved for root (often 5%, on some hosts much more) are neither used nor available,
so `(total - free) / total` would call a quarter-full disk 70% full. `runner health` and the
monitor report now show the same figure.

CPU: the `resource_use` rule is about the host being saturated by *other* work for long enough
to slow the pipeline down. A single half-second sample on a shared machine catches whatever
burst another user's job is in, so the alert fired on every run of a busy host, even a
one-second run with nothing to do. The reading is therefore sustained: the lower of

- the share of the machine other processes used during a short sample (the pipeline's own
  processes, the runner and every kernel it started, taken out), and
- the 5-minute load average over the cores, less the pipeline's own average use over those
  5 minutes (its CPU seconds so far, spread over its lifetime),

so the rule fires only when other processes have kept the machine busy for minutes and still
do. The detail names the busiest other processes (name, pid, user), so the alert says whose
work it is. The pipeline's own CPU is not alarming: using the cores is its job.

Only the standard library and psutil are imported: `runner health` must answer in a second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The load-average window the CPU reading is sustained over (os.getloadavg()[1]: 5 minutes).
SUSTAINED_WINDOW_S = 300.0
#: Other processes named in the CPU detail.
TOP_PROCESSES = 3


@dataclass(frozen=True)
class DiskUse:
    path: str  # the folder measured: the outputs folder, or its nearest existing parent
    share: float  # used / (used + available), as `df` shows it
    total_bytes: int
    used_bytes: int
    free_bytes: int  # available to the pipeline (not root's reserve)

    def text(self) -> str:
        return f"{self.share:.0%} in use, {_gib(self.free_bytes)} free of {_gib(self.used_bytes + self.free_bytes)}"


@dataclass(frozen=True)
class CpuUse:
    share: float  # the sustained reading (the lower of `sample` and `sustained`), 0..1
    sample: float  # other processes' share over the short sample
    sustained: float | None  # 5-minute load average over cores, less the pipeline's own (None: unknown)
    top: list[tuple[str, int, str, float]] = field(default_factory=list)  # (name, pid, user, percent of one core)

    def detail(self) -> str:
        sustained = "n/a" if self.sustained is None else f"{self.sustained:.0%}"
        who = ", ".join(f"{name} (pid {pid}, {user}) {percent:.0f}%" for name, pid, user, percent in self.top)
        return f"used by processes other than this pipeline: {self.sample:.0%} now, {sustained} over 5 min" + (
            f"; busiest: {who}" if who else ""
        )


def nearest_existing(path: str | Path) -> Path:
    """`path`, or its nearest existing parent (same filesystem, as far as anyone can tell)."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    return where


def disk_use(path: str | Path, usage: Callable[[str], Any] = shutil.disk_usage) -> DiskUse:
    """The filesystem holding `path` (or its nearest existing parent), as `df` reports it."""
    where = nearest_existing(path)
    measured = usage(str(where))
    visible = measured.used + measured.free
    share = measured.used / visible if visible else 1.0
    return DiskUse(str(where), share, int(measured.total), int(measured.used), int(measured.free))


def _pipeline_processes(psutil: Any) -> list[Any]:
    """The runner (this kernel's parent) and every process it started, this one included."""
    me = psutil.Process()
    root = me.parent() or me
    found = [root]
    with contextlib.suppress(psutil.Error):
        found += root.children(recursive=True)
    if me.pid not in {p.pid for p in found}:
        found.append(me)
    return found


def _own_cpu_seconds(processes: list[Any], psutil: Any) -> tuple[float, float]:
    """(CPU seconds used by the pipeline so far, seconds since its first process started)."""
    total, started = 0.0, time.time()
    for index, process in enumerate(processes):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
            if index == 0:  # the root also carries the CPU of the kernels it has reaped
                total += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
            started = min(started, process.create_time())
    return total, max(time.time() - started, 1e-6)


def cpu_use(interval_s: float = 0.5) -> CpuUse:
    """The CPU other processes keep busy, sustained (see the module docstring)."""
    import psutil

    own = _pipeline_processes(psutil)
    own_pids = {p.pid for p in own}
    others = []
    for process in psutil.process_iter(["name", "username", "cmdline"]):
        if process.pid in own_pids or process.pid == 0:
            continue
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(None)  # the first call starts each process's measurement
            others.append(process)
    for process in own:
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(None)
    machine = psutil.cpu_percent(interval=interval_s)
    own_now = 0.0
    for process in own:
        with contextlib.suppress(psutil.Error):
            own_now += process.cpu_percent(None)
    cores = psutil.cpu_count() or 1
    sample = _clip((machine - own_now / cores) / 100.0)
    busiest = []
    for process in others:
        with contextlib.suppress(psutil.Error):
            percent = process.cpu_percent(None)
            if percent >= 1.0:
                busiest.append((_command(process.info), process.pid, process.info.get("username") or "?", percent))
    busiest.sort(key=lambda item: item[3], reverse=True)
    sustained = None
    with contextlib.suppress(OSError, AttributeError):
        seconds, alive = _own_cpu_seconds(own, psutil)
        sustained = sustained_share(os.getloadavg()[1], cores, seconds, alive)
    return CpuUse(sample if sustained is None else min(sample, sustained), sample, sustained, busiest[:TOP_PROCESSES])


def sustained_share(
    load5: float, cores: int, own_cpu_seconds: float, own_alive_s: float, window_s: float = SUSTAINED_WINDOW_S
) -> float:
    """Share of the machine other processes kept busy over the load-average window: the 5-minute
    load over the cores, less the pipeline's own use (its CPU seconds spread evenly over its
    lifetime, the part inside the window counted), clipped to 0..1."""
    inside = own_cpu_seconds * min(1.0, window_s / max(own_alive_s, 1e-6))
    return _clip(load5 / max(cores, 1) - inside / (window_s * max(cores, 1)))


def _command(info: dict[str, Any]) -> str:
    """A process as `python -m runner`: its first words, none that could carry a secret (URLs, k=v)."""
    words = [Path(w).name if i == 0 else w for i, w in enumerate((info.get("cmdline") or [])[:5])]
    safe = [w for w in words if not any(mark in w for mark in ("://", "@", "=", ":"))][:3]
    text = " ".join(safe)[:48].strip()
    return text or info.get("name") or "?"


def memory_use() -> float:
    import psutil

    return psutil.virtual_memory().percent / 100.0


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"
