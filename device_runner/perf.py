"""What Linux perf can do on this machine: which events count, whether sampling works.

`stat_counts` and `sampled` take any `run(argv) -> (returncode, stderr)`, so the same
checks answer for this machine (`probe`) and for a device (device_runner.profile)."""

from __future__ import annotations

import re
import shutil
import tempfile
from typing import Callable

from ground.children import Ended, run_child

# Hardware counters first; on VMs that hide them, the software events still work.
EVENTS = ("cycles", "instructions", "cache-misses", "task-clock", "cpu-clock",
          "context-switches", "page-faults")


def _run(args: list[str]) -> Ended:
    return run_child(args, timeout_s=30)


def probe() -> dict:
    perf = shutil.which("perf")
    result: dict = {"perf": perf, "version": None, "events": {}, "record": None, "paranoid": None}
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            result["paranoid"] = int(f.read())
    except OSError:
        pass
    if perf is None:
        result["record"] = "perf not installed (Debian: linux-perf)"
        return result
    version = _run([perf, "--version"])
    if version.returncode != 0:  # Debian's wrapper says so when no perf matches the kernel
        result["record"] = (version.stderr or version.stdout).strip().splitlines()[0]
        return result
    result["version"] = version.stdout.strip()
    for event in EVENTS:
        counted = stat_counts(_rc_stderr, event, perf)
        result["events"][event] = "works" if counted else "not supported"
    with tempfile.NamedTemporaryFile(suffix=".data") as data:
        rec = _run([perf, "record", "-q", "-F", "999", "-g", "-e", "cpu-clock", "-o", data.name, "--", "true"])
        result["record"] = "cpu-clock sampling works" if rec.returncode == 0 else \
            f"perf record failed: {(rec.stderr.strip().splitlines() or ['?'])[-1]}"
    return result


Runner = Callable[[list[str]], tuple[int | None, str]]


def _rc_stderr(argv: list[str]) -> tuple[int | None, str]:
    out = _run(argv)
    return out.returncode, out.stderr


def stat_counts(run: Runner, event: str, perf: str = "perf") -> bool:
    """Whether `perf stat -e event true` counts the event (VMs say <not supported> for cycles)."""
    returncode, stderr = run([perf, "stat", "-x,", "-e", event, "true"])
    line = next((ln for ln in stderr.splitlines() if event in ln), "")
    return returncode == 0 and not ("<not supported>" in line or "<not counted>" in line)


# Enough shell arithmetic to be on the CPU for tens of milliseconds, even on a Cortex-A8.
BUSY = ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]


def record_flags(version: str) -> list[str]:
    """Options for `perf record` by perf's version ("perf version 6.1.187"): since 5.1 perf
    starts a side-band thread for BPF events that holds every record open ~1 s at the end;
    no BPF program is profiled here, so it is turned off where the option exists."""
    found = re.search(r"(\d+)\.(\d+)", version or "")
    return ["--no-bpf-event"] if found and (int(found[1]), int(found[2])) >= (5, 1) else []


def sampled(run: Runner, event: str, data_path: str, perf: str = "perf",
            flags: list[str] | tuple[str, ...] = ()) -> tuple[int, str]:
    """(samples, perf's last line) from sampling a short busy loop with `event`. A counter can
    count and still never interrupt (no PMU interrupt wired, as on some ARM SoCs): 0 samples.
    flags: record_flags(version)."""
    returncode, stderr = run([perf, "record", *flags, "-e", event, "-F", "999", "-o", data_path, "--", *BUSY])
    found = re.search(r"\((\d+) samples\)", stderr)
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    return (int(found.group(1)) if returncode == 0 and found else 0), last
