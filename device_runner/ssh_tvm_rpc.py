"""TVM's RPC server on an ssh device, reached through an ssh port forward.

MetaSchedule measures its candidates where the code will run: for a board that is the
board. `TvmRpcServer(device)` checks that the device has Python with TVM's runtime,
starts `python3 -m tvm.exec.rpc_server --host 127.0.0.1` there (no tracker: one server,
bound to the device's loopback) and forwards a free port on this machine's 127.0.0.1 to it
through the device's own ssh connection (paramiko's direct-tcpip, as `ssh -L`), so nothing
listens on the network on either side. A client connects with
`tvm.rpc.connect("127.0.0.1", server.port)`; stop() (or leaving the `with`) kills the
server on the device and closes the forward.

What the device needs: a Python 3 that imports `tvm.rpc` and whose TVM runtime has the RPC
and random-fill functions (`tvm.contrib.random.random_fill_for_measure`, CMake USE_RANDOM).
PyPI's apache-tvm has no armv7 wheel, so on a Bela the runtime is built there (or cross
built): TVM's source, `cmake -DUSE_LLVM=OFF -DUSE_RPC=ON -DUSE_RANDOM=ON`, `make runtime`,
and its `python/` on PYTHONPATH (TVM_LIBRARY_PATH at the build folder). AUDITOR_TVM_RPC_PYTHON
names another interpreter on the device (default `python3`).
"""

from __future__ import annotations

import os
import re
import time

from device_runner.device import DeviceError

PYTHON_ENV = "AUDITOR_TVM_RPC_PYTHON"
FIRST_PORT, LAST_PORT = 9090, 9199  # where the server looks for a free port on the device
READY_S = 120.0  # TVM's import on a Cortex-A8 is slow
NEEDS = ("TVM RPC tuning needs Python 3 with TVM's runtime on the device; PyPI has no armv7 wheel, so on "
         "a Bela build TVM's runtime there (cmake -DUSE_LLVM=OFF -DUSE_RPC=ON -DUSE_RANDOM=ON; make "
         "runtime) and put its python/ on PYTHONPATH, or set AUDITOR_TVM_RPC_PYTHON to an interpreter "
         "that has it")
# one line: the TVM version, or the import error
PROBE = ("import sys\ntry:\n    import tvm, tvm.rpc\nexcept Exception as e:\n"
         "    print('missing', type(e).__name__, str(e).splitlines()[0] if str(e) else ''); sys.exit(3)\n"
         "print('tvm', tvm.__version__)\n")


def device_python() -> str:
    return os.environ.get(PYTHON_ENV) or "python3"


class TvmRpcServer:
    """TVM's RPC server on an ssh device (device_runner.ssh_device.SshDevice) for
    `timeout_s` at most, forwarded to `127.0.0.1:self.port` here."""

    def __init__(self, device, timeout_s: float) -> None:
        self.device = device
        self.timeout_s = timeout_s
        self.python = device_python()
        self.tvm_version: str | None = None  # the device's, once checked
        self.remote_port: int | None = None
        self.port: int | None = None  # on this machine's 127.0.0.1
        self._server = None
        self._forward = None

    def check(self) -> str:
        """The device's TVM version; DeviceError in one line saying what to install."""
        done = self.device.run([self.python, "-c", PROBE], timeout_s=READY_S)
        said = (done.stdout.strip().splitlines() or [""])[-1]
        if done.returncode == 0 and said.startswith("tvm "):
            self.tvm_version = said.split(" ", 1)[1]
            return self.tvm_version
        if done.returncode == 127 or re.search(r"not found|No such file", done.stderr or ""):
            why = f"{self.python} is not on {self.device.where}"
        elif said.startswith("missing"):
            why = f"{self.python} on {self.device.where} cannot import tvm.rpc ({said.removeprefix('missing ').replace(' ', ': ', 1)})"
        else:
            why = f"{self.python} on {self.device.where} failed: {done.failure()}"
        raise DeviceError(f"{why}. {NEEDS}")

    def start(self) -> TvmRpcServer:
        if self.tvm_version is None:
            self.check()
        self._server = self.device.start(
            [self.python, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
             "--port", str(FIRST_PORT), "--port-end", str(LAST_PORT)], timeout_s=self.timeout_s)
        bound = self._server.wait_for(r"bind to 127\.0\.0\.1:(\d+)", READY_S)
        if bound is None:
            tail = [ln for ln in self._server.output.splitlines() if ln.strip()]
            self._server.stop()
            raise DeviceError(f"TVM's RPC server did not start on {self.device.where}: "
                              f"{tail[-1] if tail else f'no output within {READY_S:.0f} s'}")
        self.remote_port = int(bound[1])
        self._await_listening()
        self._forward = self.device.connection.forward("127.0.0.1", self.remote_port)
        self.port = self._forward.port
        return self

    def _await_listening(self) -> None:
        """TVM's server logs "bind to" before it listens: wait until the device's kernel lists
        the port as listening (/proc/net/tcp, state 0A), so the first session is not refused."""
        port = f"{self.remote_port:04X}"
        check = f"grep -q ':{port} 00000000:0000 0A' /proc/net/tcp"
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.device.run(["sh", "-c", check], timeout_s=30).returncode == 0:
                return
            if not self._server.running():
                break
            time.sleep(0.2)
        tail = [ln for ln in self._server.output.splitlines() if ln.strip()]
        self.stop()
        raise DeviceError(f"TVM's RPC server on {self.device.where} bound port {self.remote_port} but is not "
                          f"listening on it: {tail[-1] if tail else 'no output'}")

    def sessions(self) -> int:
        """RPC sessions the server has served so far (its "connected from" log lines)."""
        if self._server is not None:
            self._server.drain()
        return self._output().count("connected from")

    def _output(self) -> str:
        return self._server.output if self._server is not None else self._last_output

    _last_output = ""

    def stop(self) -> None:
        if self._server is not None:
            self._server.drain()
            self._last_output = self._server.output
        if self._forward is not None:
            self._forward.close()
            self._forward = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def describe(self) -> str:
        return (f"TVM RPC server ({self.python}, TVM {self.tvm_version}) on {self.device.where} "
                f"127.0.0.1:{self.remote_port}, reached through an ssh port forward")

    def __enter__(self) -> TvmRpcServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def is_ssh(spec: str) -> bool:
    return bool(re.match(r"^\s*ssh://", spec or ""))
