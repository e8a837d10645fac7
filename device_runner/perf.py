"""What Linux perf can do on this machine: which events count, whether sampling works."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

# Hardware counters first; on VMs that hide them, the software events still work.
EVENTS = ("cycles", "instructions", "cache-misses", "task-clock", "cpu-clock",
          "context-switches", "page-faults")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


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
        out = _run([perf, "stat", "-x,", "-e", event, "true"])
        line = next((ln for ln in out.stderr.splitlines() if event in ln), "")
        counted = out.returncode == 0 and not ("<not supported>" in line or "<not counted>" in line)
        result["events"][event] = "works" if counted else "not supported"
    with tempfile.NamedTemporaryFile(suffix=".data") as data:
        rec = _run([perf, "record", "-q", "-F", "999", "-g", "-e", "cpu-clock", "-o", data.name, "--", "true"])
        result["record"] = "cpu-clock sampling works" if rec.returncode == 0 else \
            f"perf record failed: {(rec.stderr.strip().splitlines() or ['?'])[-1]}"
    return result
