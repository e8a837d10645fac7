"""What every device is: the Device interface, its error and what one command did.

A device stages files into a working directory it owns, runs a command there with a
timeout and fetches result files back. Every run stored from a device carries its `spec`
(`local`, `qemu-armv7`, `ssh://user@host:port`), whether its timings are emulated, the
target its artifacts must be compiled for, and the facts it reports about itself.
The kinds of device and the spec that names each are listed in device_runner.devices.
"""

from __future__ import annotations

import re
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ground.children import signal_name
from ground.errors import AuditorError


class DeviceError(AuditorError):
    """The device could not do what was asked (unreachable, auth, disk full, missing tool)."""


@dataclass
class Completed:
    """What one command on a device did."""

    argv: list[str]
    returncode: int | None  # None when it was killed for running past its timeout
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False

    def failure(self) -> str | None:
        """One line saying why the command failed, or None when it exited 0."""
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s"
        if self.returncode == 0:
            return None
        # the dynamic loader: "<program>: error while loading shared libraries: <lib>: cannot open ..."
        missing = re.search(r"(?m)^(?:(.*?): )?error while loading shared libraries: ([^:\s]+):",
                            f"{self.stderr}\n{self.stdout}")
        if missing:
            binary = (missing[1] or "").strip() or (self.argv[0] if self.argv else "the program")
            return f"the device lacks {missing[2]} needed by {binary}"
        old_libc = re.search(r"version `(GLIBC_[0-9.]+)' not found \(required by ([^)]+)\)", self.stderr or "")
        if old_libc:
            return (f"the device's C library is older than {old_libc[1]}, which {old_libc[2]} needs "
                    f"(link it statically or build it against an older glibc)")
        tail = [ln for ln in (self.stderr or self.stdout).strip().splitlines() if ln.strip()]
        why = tail[-1] if tail else "no output"
        killer = signal_name(self.returncode)
        if killer:
            return f"killed by {killer}; {why}"
        if self.returncode in (128 + 11, 139):
            return f"crashed (SIGSEGV); {why}"
        return f"exit {self.returncode}: {why}"


class Device(ABC):
    """One place a runner can run. A subclass says what code it runs (`target_name`), how
    files move and how commands run."""

    emulated: bool = False  # timings come from an emulator and say nothing about the board

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.notes: list[str] = []  # what the device's setup changed about a measurement

    @classmethod
    def from_spec(cls, spec: str) -> Device:
        """The device a spec names (not yet connected); a fixed word needs no parsing."""
        return cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    @property
    @abstractmethod
    def target_name(self) -> str:
        """ground.targets.TARGETS key of the code this device runs (a remote device may
        have to be asked)."""

    @abstractmethod
    def workdir(self) -> str:
        """A directory on the device this session owns (created on first use)."""

    @abstractmethod
    def put(self, local: Path, remote_name: str) -> str:
        """Copy one file into workdir() under remote_name (executable bits kept); its path."""

    @abstractmethod
    def get(self, remote_path: str, local: Path) -> None:
        """Copy one file from the device to local."""

    @abstractmethod
    def run(self, argv: list[str], timeout_s: float, cwd: str | None = None) -> Completed:
        """Run argv (argv[0] a path on the device) with a timeout; never raises for a
        non-zero exit or a timeout, only for not reaching the device at all."""

    def which(self, tool: str) -> bool:
        """Whether a tool (e.g. perf) is on the device's PATH."""
        done = self.run(["sh", "-c", f"command -v {shlex.quote(tool)}"], timeout_s=30)
        return done.returncode == 0

    def run_syscall_traced(self, argv: list[str], trace_path: str, timeout_s: float,
                           cwd: str | None = None) -> tuple[Completed, str, bool] | None:
        """Run argv with every system call it makes written to trace_path (on the device), each
        with a thread (or process) id first; returns what ran, how it was traced and whether the
        trace tells threads apart, or None when the device has no tracer. Default: strace
        (ptrace) when it is on the device's PATH."""
        if not self.which("strace"):
            return None
        done = self.run(["strace", "-f", "-qq", "-o", trace_path, *argv], timeout_s=timeout_s, cwd=cwd)
        return done, "strace -f (ptrace: every system call of every thread, exact)", True

    def facts(self) -> dict:
        """What the device says about itself (stored with every run measured there)."""
        done = self.run(["sh", "-c", "uname -srm; grep -m1 -E 'model name|Hardware|Processor' "
                         "/proc/cpuinfo; nproc; ldd --version 2>&1 | head -1"], timeout_s=30)
        lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
        facts = {"device": self.spec, "emulated": self.emulated}
        if lines:
            facts["uname"] = lines[0]
            facts["machine"] = lines[0].split()[-1]
        if len(lines) > 1:
            facts["cpu_model"] = lines[1].split(":", 1)[-1].strip()
        if len(lines) > 2 and lines[2].strip().isdigit():
            facts["cores"] = int(lines[2])
        if len(lines) > 3:
            facts["libc"] = lines[3].strip()
        return facts

    def close(self) -> None:
        """Remove what this session staged."""
