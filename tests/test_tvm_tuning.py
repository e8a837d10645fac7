"""The MetaSchedule database's cache key and resume bookkeeping, where tuning may time its
candidates (refused under qemu, the board over TVM's RPC), and the RPC server on the loopback
ssh device. No tuning runs by default: even 8 trials take ~75 s unloaded (tests/test_tvm_relax.py
has that test behind AUDITOR_TVM_TUNE_TEST=1); tuning over RPC on the loopback ssh device is
behind AUDITOR_TVM_RPC_TEST=1."""

import os
from pathlib import Path

import pytest

pytest.importorskip("tvm")

from ground.targets import TARGETS  # noqa: E402
from compilers.tvm_relax import TvmRelax  # noqa: E402
from compilers.tvm_tuning import RECORDS, cost_model_name, records_in, tuning_dir, tvm_version  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_database_lives_under_the_cache_root_keyed_by_model_target_budget_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITOR_CACHE", str(tmp_path))
    options = TvmRelax.resolve_options({"tune_trials": 64})
    path = tuning_dir("abc123", TARGETS["host"], options)
    assert path == tmp_path / "tvm-tuning" / f"abc123-host-64-fuse1-O3-tvm{tvm_version()}"
    assert tuning_dir("abc123", TARGETS["host"], {**options, "tune_trials": 8}) != path


def test_a_record_cut_short_by_a_kill_is_dropped_before_resuming(tmp_path):
    assert records_in(tmp_path) == 0
    (tmp_path / RECORDS).write_text('[0, [[1.0]]]\n[1, [[2.0]]]\n[2, [[3.')
    assert records_in(tmp_path) == 2
    assert (tmp_path / RECORDS).read_text() == '[0, [[1.0]]]\n[1, [[2.0]]]\n'


def test_the_cost_model_is_named():
    name, detail = cost_model_name()
    assert name in ("xgb", "random") and detail


# --- where candidates are timed: the board through TVM's RPC, never an emulator ------------

def test_tuning_under_emulation_is_refused_with_the_reason():
    from compilers.tvm_tuning import tuning_refusal

    arm = TARGETS["armv7-cortex-a8"]
    why = tuning_refusal(8, arm, "qemu-armv7")
    assert why.startswith("tune_trials=8 is refused under qemu-armv7: MetaSchedule keeps the schedules "
                          "that time fastest, and emulated timings"), why
    assert "ssh://user@board" in why
    assert tuning_refusal(0, arm, "qemu-armv7") is None  # untuned tvm runs under qemu as before
    assert "needs the board" in tuning_refusal(8, arm, "local")
    assert tuning_refusal(8, TARGETS["host"], "local") is None  # the host tunes itself
    assert tuning_refusal(8, arm, "ssh://root@192.0.2.7") is None  # timed on the board over RPC
    # the worker asks before compiling: a refusal is a skip with the reason, not a failure
    compiler = TvmRelax(device="qemu-armv7")
    assert compiler.can_compile(_bundle(), arm, {"tune_trials": 8}) == why
    assert compiler.can_compile(_bundle(), arm, {}) is None


def _bundle():
    from types import SimpleNamespace

    return SimpleNamespace(formats=lambda: {"onnx"}, inputs=(), problems={})  # what can_compile reads


def test_a_database_tuned_on_a_device_is_keyed_by_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITOR_CACHE", str(tmp_path))
    options = TvmRelax.resolve_options({"tune_trials": 64})
    here = tuning_dir("abc", TARGETS["armv7-cortex-a8"], options)
    board = tuning_dir("abc", TARGETS["armv7-cortex-a8"], options, "ssh://root@192.168.7.2")
    assert board.name == here.name + "-on-root@192.168.7.2"
    assert tuning_dir("abc", TARGETS["armv7-cortex-a8"], options, "ssh://root@bela.local:2222").name.endswith(
        "-on-root@bela.local_2222")


def test_qemu_tuned_run_is_skipped_with_the_reason(tmp_path, cli):
    import json

    proc = cli("compile-all", "zoo:mlp", "-c", "tvm:tune_trials=8", "--device", "qemu-armv7",
               "--results-dir", tmp_path, "--json")
    assert proc.returncode == 1, proc.stderr  # nothing measured: exit 1, not a crash
    (r,) = json.loads(proc.stdout)["runs"]
    assert r["variant"] == "tvm[tune_trials=8]" and r["status"] == "skipped", r
    assert r["reason"].startswith("tune_trials=8 is refused under qemu-armv7"), r


def test_rpc_server_on_a_device_without_tvm_is_one_line(ssh_spec, monkeypatch):
    """The loopback device's python3 (Debian's) has no TVM: what to install, in one line."""
    from device_runner.devices import parse_device
    from device_runner.device import DeviceError
    from device_runner.ssh_tvm_rpc import TvmRpcServer

    monkeypatch.delenv("AUDITOR_TVM_RPC_PYTHON", raising=False)
    dev = parse_device(ssh_spec)
    try:
        with pytest.raises(DeviceError) as err:
            TvmRpcServer(dev, 60).start()
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("python3 on root@127.0.0.1:") and "cannot import tvm.rpc (ModuleNotFoundError" in message
        assert "PyPI has no armv7 wheel" in message and "-DUSE_RPC=ON" in message and "AUDITOR_TVM_RPC_PYTHON" in message
        monkeypatch.setenv("AUDITOR_TVM_RPC_PYTHON", "/nonexistent/python3")
        with pytest.raises(DeviceError, match=r"^/nonexistent/python3 is not on root@127\.0\.0\.1:\d+\. TVM RPC"):
            TvmRpcServer(dev, 60).start()
    finally:
        dev.close()


def _rpc_servers() -> list[str]:
    """Live TVM RPC servers on this machine (the loopback device), by their command lines."""
    from tests.conftest import processes_where

    return sorted(processes_where(lambda c: "python" in c.split(" ")[0] and "-m tvm.exec.rpc_server" in c))


CLIENT = ("import sys, numpy as np, tvm\nfrom tvm import rpc\n"
          "s = rpc.connect('127.0.0.1', int(sys.argv[1]))\n"
          "print(tvm.runtime.tensor(np.arange(4, dtype='float32'), s.cpu(0)).numpy().tolist())\n")


def test_rpc_server_is_reached_through_the_forward_and_stopped(ssh_spec, monkeypatch):
    """The server binds the device's loopback only; a session through the forward allocates
    on the device; stop() leaves nothing behind, and neither does a dropped connection."""
    import subprocess
    import sys

    import tvm

    from device_runner.devices import parse_device
    from device_runner.ssh_tvm_rpc import TvmRpcServer

    monkeypatch.setenv("AUDITOR_TVM_RPC_PYTHON", sys.executable)  # the loopback device has this venv
    before = _rpc_servers()
    dev = parse_device(ssh_spec)
    try:
        server = TvmRpcServer(dev, 120).start()
        try:
            assert server.tvm_version == tvm.__version__ and 9090 <= server.remote_port <= 9199
            assert server.port != server.remote_port  # a port of this side's 127.0.0.1
            # the client in its own process, as MetaSchedule's runner workers are: TVM's session
            # destructor blocks on the socket holding the GIL, which the forward's threads need
            client = subprocess.run([sys.executable, "-c", CLIENT, str(server.port)], capture_output=True,
                                    text=True, timeout=600)
            assert client.returncode == 0 and client.stdout.split() == ["[0.0,", "1.0,", "2.0,", "3.0]"], client.stderr
            assert server.sessions() == 1
            assert len(_rpc_servers()) > len(before)
        finally:
            server.stop()
        assert _rpc_servers() == before
        dropped = TvmRpcServer(dev, 120).start()  # the tuning process dies: its connection drops
        dev.connection.close()
        import time

        deadline = time.monotonic() + 10
        while _rpc_servers() != before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _rpc_servers() == before
        dropped._server = dropped._forward = None
    finally:
        dev.close()


@pytest.mark.skipif(os.environ.get("AUDITOR_TVM_RPC_TEST") != "1",
                    reason="MetaSchedule takes minutes even for 4 trials here; AUDITOR_TVM_RPC_TEST=1 runs it")
def test_tuning_over_rpc_on_the_loopback_ssh_device(ssh_spec, monkeypatch, tmp_path):
    """4 trials of an MLP's 3 kernels, every candidate timed through the device's RPC server."""
    import json
    import sys

    from auditor.pipeline import ModelRequest, prepare
    from store import Store
    from compilers.tvm_tuning import COMPLETE, RECORDS

    monkeypatch.setenv("AUDITOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUDITOR_TVM_RPC_PYTHON", sys.executable)
    before = _rpc_servers()
    store = Store(tmp_path / "results")
    bundle = prepare(ModelRequest(str(ROOT / "examples" / "blocks.py:mlp")), store).bundle
    store.close()
    options = TvmRelax.resolve_options({"tune_trials": 4})
    artifact = TvmRelax(device=ssh_spec).compile(bundle, TARGETS["host"], options, tmp_path / "w")
    work_dir = tuning_dir(bundle.model_hash, TARGETS["host"], options, ssh_spec)
    assert work_dir.name.endswith("-on-" + ssh_spec.removeprefix("ssh://").replace(":", "_"))
    done = json.loads((work_dir / COMPLETE).read_text())
    assert done["device"] == ssh_spec and done["measured_on"].startswith("TVM RPC server (")
    sessions = int(done["measured_on"].rsplit("(", 1)[1].split()[0])
    assert sessions >= 4  # one RPC session per measured candidate
    records = [json.loads(line) for line in (work_dir / RECORDS).read_text().splitlines()]
    assert len(records) >= 4 and all(r[1][0] for r in records)  # each with its run times
    assert any("candidates timed on TVM RPC server" in n for n in artifact.notes), artifact.notes
    # 4 trials over 3 kernels: 2 each in one round, so the first two kernels get tuned schedules
    tuned = [n for n in artifact.notes if n.endswith(" of 3 kernels took a tuned schedule from the database")]
    assert len(tuned) == 1 and int(tuned[0].split()[0]) >= 2, artifact.notes
    assert _rpc_servers() == before  # the server was stopped
