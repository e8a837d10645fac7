"""This machine as a device: commands run as local child processes in a temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from device_runner.device import Completed, Device


def run_local(argv: list[str], timeout_s: float, cwd: str | None) -> Completed:
    """Run argv here in its own process group, killed as a group at the timeout."""
    from ground.children import dies_with_me

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
