"""Was the machine quiet while a run was timed? CPU time of every core from /proc/stat
around the timed window, less this process's own, the load average and the CPU affinity.

A run counts as measured under load when, during its timed window, the other processes
kept more than OTHER_BUSY_LIMIT of a core busy on average (what load average cannot say:
it is a minute-long average that includes our own compiles before the window), or when
more processes were runnable at its start than there are CPUs. /proc/stat counts in
jiffies (10 ms), so a window shorter than min_window_s (MIN_WINDOW_S in `dataset build
--quiet`) is stretched by idling to it after the timed loop (the idle tail sees only the
others' CPU use); with no minimum a loop shorter than a jiffy gets no CPU figure (None).
"""

from __future__ import annotations

import os
import time

OTHER_BUSY_LIMIT = 0.25  # cores' worth of CPU used by anything but the measuring process
MIN_WINDOW_S = 0.1
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def _own_ticks() -> int:
    with open("/proc/self/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])  # utime + stime of every thread of this process


def _procs_running() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("procs_running"):
                return int(line.split()[1])
    return 0


class Conditions:
    """`with Conditions() as c: <timed loop>` then c.to_dict(): the measuring conditions."""

    def __init__(self, other_busy_limit: float = OTHER_BUSY_LIMIT, min_window_s: float = 0.0):
        self.limit = other_busy_limit
        self.min_window_s = min_window_s

    def __enter__(self) -> Conditions:
        self.loadavg = [round(v, 2) for v in os.getloadavg()]
        self.running = _procs_running() - 1  # the reader itself is running
        self.affinity = sorted(os.sched_getaffinity(0))
        self.busy0, self.total0 = _cpu_ticks()
        self.own0 = _own_ticks()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.timed_s = time.monotonic() - self.t0
        if self.timed_s < self.min_window_s:
            time.sleep(self.min_window_s - self.timed_s)
        self.busy1, self.total1 = _cpu_ticks()
        self.own1 = _own_ticks()
        self.seconds = time.monotonic() - self.t0

    def to_dict(self) -> dict:
        cpus = os.cpu_count() or 1
        per_cpu = (self.total1 - self.total0) / cpus
        other = max(0, (self.busy1 - self.busy0) - (self.own1 - self.own0))
        other_busy = round(other / per_cpu, 3) if per_cpu > 0 else None
        pinned = len(self.affinity) == 1
        reasons = []
        if other_busy is not None and other_busy > self.limit:
            reasons.append(f"other processes kept {other_busy:.2f} cores busy while timing "
                           f"(limit {self.limit})")
        if self.running > cpus:
            reasons.append(f"{self.running} processes runnable at the start on {cpus} CPUs")
        return {
            "loadavg": self.loadavg, "procs_running_at_start": self.running, "affinity": self.affinity,
            "pinned": pinned, "cpus": cpus, "other_cores_busy": other_busy,
            "timed_s": round(self.timed_s, 4), "window_s": round(self.seconds, 3),
            "window_ticks": round(per_cpu, 1),  # below ~20 jiffies the busy figure is coarse
            "under_load": bool(reasons), "load_reason": "; ".join(reasons),
        }
