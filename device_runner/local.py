"""This machine as a device: commands run as local child processes in a temporary folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from device_runner.device import Completed, Device
from ground.children import run_child


def run_local(argv: list[str], timeout_s: float, cwd: str | None) -> Completed:
    """Run argv here in its own process group, killed as a group at the timeout."""
    done = run_child(argv, cwd=cwd, timeout_s=timeout_s)
    return Completed(done.argv, done.returncode, done.stdout, done.stderr, done.wall_s, done.timed_out)


class LocalDevice(Device):
    """This machine: the measured device of record."""

    target_name = "host"

    def __init__(self, spec: str = "local") -> None:
        super().__init__(spec)
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
        return run_local(argv, timeout_s, cwd)

    def facts(self) -> dict:
        from ground.host import host_facts

        return {"device": self.spec, "emulated": False, **host_facts()}

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
