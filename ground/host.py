"""Facts about the machine a run was measured on (stored with every run, shown by doctor)."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key and key not in info:
                    info[key] = value.strip()
    except OSError:
        pass
    return info


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def host_facts() -> dict:
    cpu = _cpuinfo()
    return {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu.get("model name") or cpu.get("Hardware") or cpu.get("Processor") or "unknown",
        "cpu_flags": (cpu.get("flags") or cpu.get("Features") or "").split(),
        "cores": os.cpu_count(),
        "cpu_mhz": cpu.get("cpu MHz"),
        # which boot measured it: absolute times on a VM move between boots (datasets/README.md)
        "boot_id": _boot_id(),
    }


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def load_facts() -> dict:
    """What else was competing for the CPU when a run started: timings are only comparable
    between runs measured under similar load, so every run keeps this next to its numbers."""
    facts: dict = {"loadavg": list(os.getloadavg())}
    if hasattr(os, "sched_getaffinity"):
        facts["affinity"] = sorted(os.sched_getaffinity(0))
    return facts
