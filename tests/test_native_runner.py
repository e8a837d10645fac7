"""The native C++ runner end to end: built by CMake for SOFIE and TVM, run on local, under
qemu-armv7 and on the loopback ssh device through compile-all, stored like every other run; a runner that crashes, hangs or
is given bad input comes back as a failure with its reason."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import audit_in

pytest.importorskip("sofie")
from device_runner.local import LocalDevice  # noqa: E402
from device_runner.native import NativeProgram, RunnerSettings, run_program  # noqa: E402
from device_runner.qemu import QemuArmv7Device  # noqa: E402

MLP = "zoo:mlp:width=32,depth=2"


def _native_rows(store, run_id):
    run = store.run(run_id)
    ops = [(op.kernel, op.onnx_nodes) for op in store.op_timings(run_id)]
    n = len(store.samples_ns(run_id))
    return run, ops, n


def test_sofie_native_on_local_is_stored_with_per_op_rows(tmp_path):
    store, prepared, (run_id,) = audit_in(tmp_path, MLP, ["sofie"], harness="native")
    run, ops, n = _native_rows(store, run_id)
    assert run["status"] == "ok", run["reason"]
    assert run["device"] == "local" and run["emulated"] == 0
    assert json.loads(run["settings"])["harness"] == "native"
    assert n == 50  # every timed sample kept
    memory = json.loads(run["runtime_memory"])
    assert memory["runner"]["backend"] == "sofie" and memory["runner"]["arch"] == "x86_64"
    assert memory["intermediate_pool_bytes"] > 0  # the MLP keeps its hidden activations in the pool
    assert run["rss_peak_bytes"] > 0 and run["first_us"] > 0
    assert ops, "per-op rows"
    nodes = {n for _, covered in ops for n in covered}
    graph_nodes = {node.name for node in store.nodes(prepared.bundle.model_hash)}
    assert nodes and nodes <= graph_nodes  # every per-op row joins back to the ONNX graph
    a = store.attribution(run_id)
    op_p50 = [r["p50_us"] for r in store.rows("op_timings", run_id)]
    assert a["method"] == "sofie-light-timers" and all(p > 0 for p in op_p50)
    # the ratio from independent rows: per-op medians over the run's median (the ±10 % figure
    # itself is benchmarks/native_runner.py's, on a quiet machine)
    assert a["sum_to_whole"] == pytest.approx(sum(op_p50) / run["p50_us"])
    # chained timers lie inside the instrumented whole: their medians cannot add up to much more
    assert a["per_op_sum_p50_us"] <= 1.05 * a["instrumented_whole_us"]
    # the python harness's run of the same options is another run, not a resume hit
    _, _, (py_id,) = audit_in(tmp_path, MLP, ["sofie"], harness="python")
    assert py_id != run_id and json.loads(store.run(py_id)["settings"])["harness"] == "python"


@pytest.mark.skipif(shutil.which("qemu-arm") is None or shutil.which("arm-linux-gnueabihf-g++") is None,
                    reason="needs qemu-user and g++-arm-linux-gnueabihf")
def test_sofie_on_qemu_armv7_is_emulated_and_correct(tmp_path):
    store, _, run_ids = audit_in(tmp_path, MLP, ["sofie", "onnxruntime", "tvm"], device="qemu-armv7")
    sofie, ort, tvm = (store.run(r) for r in run_ids)
    assert tvm["status"] == "ok" and tvm["emulated"] == 1, tvm["reason"]
    assert json.loads(tvm["runtime_memory"])["runner"]["backend"] == "tvm"
    assert sofie["status"] == "ok", sofie["reason"]
    assert sofie["device"] == "qemu-armv7" and sofie["emulated"] == 1
    assert json.loads(sofie["target"])["name"] == "armv7-cortex-a8"
    assert sofie["verdict"] == "not judged (emulated)"
    assert json.loads(sofie["runtime_memory"])["runner"]["arch"] == "armv7l"
    assert json.loads(sofie["host"])["controller"]["machine"] == "x86_64"
    rows = store.accuracy_rows(sofie["run_id"])
    assert rows and all(r["passed"] == 1 for r in rows)
    # ORT cannot build for the board: recorded as skipped with the reason, the run goes on
    assert ort["status"] == "skipped" and "armv7-cortex-a8" in ort["reason"]


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.parametrize("body, timeout, expect", [
    ("kill -SEGV $$", 30, "SIGSEGV"),
    ("sleep 60", 2, "timed out"),
    ("echo 'auditor-runner: boom' >&2; exit 4", 30, "exit 4: auditor-runner: boom"),
])
def test_runner_failures_come_back_with_their_reason(tmp_path, body, timeout, expect):
    model = tmp_path / "m.bin"
    model.write_bytes(b"x")
    program = NativeProgram(runner=_script(tmp_path / "runner", body), model=model)
    device = LocalDevice()
    try:
        result = run_program(device, program, [np.zeros(3, np.float32)], [],
                             RunnerSettings(runs=5, timeout_s=timeout))
    finally:
        device.close()
    assert result.failure is not None and expect in result.failure
    assert result.outputs == []


@pytest.fixture(scope="module")
def built_runner(tmp_path_factory) -> tuple[Path, Path]:
    """The SOFIE native runner of the MLP and its weights, built by the adapter (once)."""
    tmp_path = tmp_path_factory.mktemp("sofie-runner")
    from ground.targets import TARGETS
    from compilers.sofie_cpp import Sofie
    from auditor.pipeline import ModelRequest, prepare
    from store import Store

    prepared = prepare(ModelRequest(MLP), Store(tmp_path / "r"))
    compiler = Sofie()
    artifact = compiler.compile(prepared.bundle, TARGETS["host"], Sofie.resolve_options({}), tmp_path / "a")
    program = compiler.native_program(artifact)
    return program.runner, program.model


def test_runner_rejects_bad_input_with_one_line(tmp_path, built_runner):
    runner, weights = built_runner
    inputs = tmp_path / "in"
    inputs.mkdir()
    out = tmp_path / "r.json"
    # usage
    done = subprocess.run([runner, "--model", weights], capture_output=True, text=True)
    assert done.returncode == 2 and "--inputs-dir and --json are required" in done.stderr
    # no input files: exit 2, JSON says why
    done = subprocess.run([runner, "--model", weights, "--inputs-dir", inputs, "--json", out],
                          capture_output=True, text=True)
    assert done.returncode == 2 and json.loads(out.read_text())["error"].startswith("no timing_0.npy")
    # wrong dtype
    np.save(inputs / "timing_0.npy", np.zeros((1, 16), np.float64))
    done = subprocess.run([runner, "--model", weights, "--inputs-dir", inputs, "--json", out],
                          capture_output=True, text=True)
    report = json.loads(out.read_text())
    assert done.returncode == 2 and "wants float32" in report["error"] and "holds float64" in report["error"]
    # not a .npy file
    (inputs / "timing_0.npy").write_bytes(b"garbage")
    done = subprocess.run([runner, "--model", weights, "--inputs-dir", inputs, "--json", out],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a .npy file" in json.loads(out.read_text())["error"]
    # a weights file that does not exist: the model does not load (exit 3)
    np.save(inputs / "timing_0.npy", np.zeros((1, 16), np.float32))
    done = subprocess.run([runner, "--model", tmp_path / "missing.dat", "--inputs-dir", inputs,
                           "--json", out], capture_output=True, text=True)
    assert done.returncode == 3 and json.loads(out.read_text())["status"] == 3


def test_runner_sched_fifo_and_pinning_apply_or_say_why(tmp_path, built_runner):
    runner, weights = built_runner
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "timing_0.npy", np.zeros((1, 16), np.float32))
    out = tmp_path / "r.json"
    cpu = sorted(os.sched_getaffinity(0))[-1]
    subprocess.run([runner, "--model", weights, "--inputs-dir", tmp_path / "in", "--json", out,
                    "--runs", "200", "--sched-fifo", "10", "--cpu", str(cpu)], check=True)
    sched = json.loads(out.read_text())["scheduling"]
    if sched["policy"] == "SCHED_FIFO":
        assert sched["priority"] == 10 and sched["cpu"] == cpu
    else:
        assert any("SCHED_FIFO" in n for n in sched["notes"])
    memory = json.loads(out.read_text())["memory"]
    assert len(memory["samples"]) >= 2 and memory["peak_rss_kb"] > 0


def test_sofie_on_the_loopback_ssh_device(tmp_path, ssh_spec):
    """The same runner over ssh: staged, run, fetched; stored with the device's spec and
    facts; then profiled there with the device's perf."""
    store, _, (run_id, tvm_id) = audit_in(tmp_path, MLP, ["sofie", "tvm"], device=ssh_spec)
    tvm = store.run(tvm_id)
    assert tvm["status"] == "ok" and tvm["device"] == ssh_spec, tvm["reason"]
    run = store.run(run_id)
    assert run["status"] == "ok", run["reason"]
    assert run["device"] == ssh_spec and run["emulated"] == 0
    host = json.loads(run["host"])
    assert host["device"] == ssh_spec and "uname" in host and "controller" in host
    assert json.loads(run["settings"])["harness"] == "native"
    assert len(store.op_timings(run_id)) > 0
    if shutil.which("perf") is None:
        pytest.skip("perf is not installed (linux-perf; `make test` installs it): the end-to-end "
                    "`auditor profile` over ssh was not run")
    from tests.conftest import run_cli

    done = run_cli("profile", MLP, "-c", "sofie", "--device", ssh_spec, "--seconds", "1",
                   "-o", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    prof = json.loads(done.stdout)
    assert prof["device"] == ssh_spec and prof["event"] in ("cycles", "cpu-clock")
    assert prof["samples"] > 100 and prof["functions"]
    assert Path(prof["svg_path"]).read_text().startswith("<svg")
    page = (tmp_path / "reports" / f"run-{run_id}.html").read_text()
    assert f"perf profile {prof['profile_id']}" in page and "<svg" in page and "native runner: sofie" in page


def test_profile_refuses_what_it_cannot_do_in_one_line(tmp_path):
    from tests.conftest import run_cli

    for args, expect in ((["--device", "qemu-armv7", "-c", "sofie"], "qemu"),
                         (["-c", "onnxruntime"], "no native runner backend"),
                         (["-c", "sofie,tvm"], "one variant")):
        done = run_cli("profile", MLP, *args, "-o", tmp_path, "--seconds", "0.5")
        assert done.returncode == 2, (args, done.stderr)
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and expect in lines[0], (args, done.stderr)


def test_libtorch_runner_runs_the_torchscript_artifact(tmp_path):
    """The host runner's libtorch backend, linked against the installed torch wheel."""
    store, _, (run_id,) = audit_in(tmp_path, MLP, ["torchscript"], harness="native")
    run = store.run(run_id)
    assert run["status"] == "ok", run["reason"]
    runner = json.loads(run["runtime_memory"])["runner"]
    assert runner["backend"] == "libtorch" and runner["backend_version"].startswith("2.13")
    assert store.attribution(run_id) is None  # no per-op instrument: none claimed
