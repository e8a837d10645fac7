"""Where a native runner runs: this machine, ARMv7 under qemu, or a board over ssh.

A device stages files into a working directory it owns, runs a command there with a
timeout and fetches result files back. Every run stored from a device carries its `spec`
(`local`, `qemu-armv7`, `ssh://user@host:port`), whether its timings are emulated, the
target its artifacts must be compiled for, and the facts it reports about itself.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from auditor.errors import AuditorError


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
        if self.returncode is not None and self.returncode < 0:
            import signal

            try:
                return f"killed by {signal.Signals(-self.returncode).name}; {why}"
            except ValueError:
                pass
        if self.returncode in (128 + 11, 139):
            return f"crashed (SIGSEGV); {why}"
        return f"exit {self.returncode}: {why}"


@dataclass
class Device(ABC):
    """One place a runner can run. Subclasses fill in how files move and commands run."""

    spec: str
    emulated: bool = False
    target_name: str = "host"  # compilers.base.TARGETS key of the code this device runs
    notes: list[str] = field(default_factory=list)

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


def _run_local(argv: list[str], timeout_s: float, cwd: str | None) -> Completed:
    from auditor.children import dies_with_me

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", preexec_fn=dies_with_me(),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return Completed(argv, proc.returncode, out, err, time.perf_counter() - t0)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return Completed(argv, None, out, err, time.perf_counter() - t0, timed_out=True)


class LocalDevice(Device):
    """This machine: the measured device of record."""

    def __init__(self, spec: str = "local") -> None:
        super().__init__(spec=spec, emulated=False, target_name="host")
        self._dir: str | None = None

    def workdir(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="auditor-device-")
        return self._dir

    def put(self, local: Path, remote_name: str) -> str:
        dest = Path(self.workdir()) / remote_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local, dest)
        return str(dest)

    def get(self, remote_path: str, local: Path) -> None:
        shutil.copy2(remote_path, local)

    def run(self, argv, timeout_s, cwd=None):
        return _run_local(argv, timeout_s, cwd)

    def facts(self) -> dict:
        from auditor.host import host_facts

        return {"device": self.spec, "emulated": False, **host_facts()}

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


QEMU_CPU = "cortex-a8"


class QemuArmv7Device(LocalDevice):
    """ARMv7 Cortex-A8 under qemu-arm on this machine. Outputs are real; timings are
    emulated and say nothing about the board (17-185x slower here, +-40% noise)."""

    def __init__(self) -> None:
        super().__init__(spec="qemu-armv7")
        self.emulated = True
        self.target_name = "armv7-cortex-a8"
        self.qemu = shutil.which("qemu-arm")

    def run(self, argv, timeout_s, cwd=None):
        if self.qemu is None:
            raise DeviceError("qemu-arm not found (apt-get install qemu-user)")
        # Dynamically linked ARM binaries find the armhf loader and libraries through
        # multiarch (libc6:armhf); -L would mix in the cross toolchain's loader instead.
        return _run_local([self.qemu, "-cpu", QEMU_CPU, *argv], timeout_s, cwd)

    def which(self, tool: str) -> bool:
        return False  # nothing of the host's runs "on" the emulated board but the runner

    def facts(self) -> dict:
        from auditor.host import host_facts

        version = ""
        if self.qemu:
            done = _run_local([self.qemu, "--version"], 30, None)
            version = done.stdout.splitlines()[0] if done.stdout else ""
        return {"device": self.spec, "emulated": True, "machine": "armv7l",
                "cpu_model": f"qemu-arm -cpu {QEMU_CPU}", "emulator": version,
                "emulator_host": {k: host_facts()[k] for k in ("cpu_model", "machine", "cores")}}


def parse_device(spec: str) -> Device:
    """`local`, `qemu-armv7` or `ssh://user@host[:port]` -> a Device (not yet connected)."""
    if spec == "local":
        return LocalDevice()
    if spec in ("qemu-armv7", "qemu-arm"):
        return QemuArmv7Device()
    if spec.startswith("ssh://"):
        from device_runner.ssh_device import SshDevice

        return SshDevice.from_spec(spec)
    raise AuditorError(f"unknown device {spec!r}: use local, qemu-armv7 or ssh://user@host[:port]")


def host_machine() -> str:
    return platform.machine()
