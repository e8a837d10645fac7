"""The native runner's TVM backend: the adapter's model.so run by the C++ runner on the host
(the wheels' shared runtime) and, cross-built with TVM's runtime compiled from the wheels'
sources, under qemu-arm -cpu cortex-a8. Outputs against the reference, per-op kernel names
against the adapter's kernel_map, and the runner's failure path for a file that is no module.

The armv7 runner's first build compiles TVM's runtime (about 3 CPU-minutes here); it is
cached in ~/.cache/auditor/runners (AUDITOR_CACHE) and reused afterwards.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")

from auditor.pipeline import ModelRequest, prepare  # noqa: E402
from store import Store  # noqa: E402
from compilers.tvm_relax import TvmRelax, runner_build_inputs  # noqa: E402
from device_runner.build import cached_runner  # noqa: E402
from device_runner.local import LocalDevice  # noqa: E402
from device_runner.native import RunnerSettings, run_program  # noqa: E402
from device_runner.qemu import QemuArmv7Device  # noqa: E402
from ground.targets import TARGETS  # noqa: E402

from tests.conftest import audit_in, write_factory  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PER_OP_RUNS = 20
ARM_CXX = TARGETS["armv7-cortex-a8"].cxx

TWO_HEADS = """
class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 8)
        self.b = nn.Linear(16, 4)

    def forward(self, x):
        return torch.sigmoid(self.b(x)), torch.relu(self.a(x))


def make():
    torch.manual_seed(0)
    return TwoHeads().eval(), (torch.randn(1, 16),)
"""


def _compiled(tmp: Path, spec: str, target: str):
    """(artifact, program, example inputs, reference outputs) of one model for one target."""
    prepared = prepare(ModelRequest(spec), Store(tmp / "results"))
    workdir = tmp / f"artifact-{target}"
    workdir.mkdir()
    compiler = TvmRelax()
    artifact = compiler.compile(prepared.bundle, TARGETS[target], TvmRelax.resolve_options({}), workdir)
    program = compiler.native_program(artifact)
    inputs = np.load(prepared.data_dir / "inputs.npz")
    reference = np.load(prepared.data_dir / "reference.npz")
    n_in = len(prepared.bundle.inputs)
    n_out = len([k for k in reference.files if k.startswith("e0_")])
    example = [inputs[f"e0_{i}"] for i in range(n_in)]
    expected = [reference[f"e0_{j}"] for j in range(n_out)]
    return artifact, program, example, expected


def _check(result, artifact, expected, arch: str):
    assert result.failure is None, result.failure
    report = result.report
    runner = report["runner"]
    assert runner["backend"] == "tvm" and runner["arch"] == arch
    assert runner["instrument_method"] == "tvm-timed-callees"
    assert runner["backend_version"] == artifact.compiler_version  # the wheel's version
    assert report["error"] is None and report["samples_ns"]
    assert [o["name"] for o in report["outputs"]] == [f"output_{j}" for j in range(len(expected))]
    assert [o["shape"] for o in report["outputs"]] == [list(e.shape) for e in expected]
    for got, want in zip(result.outputs[0], expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    per_op = result.per_op_report["per_op"]
    assert per_op["runs"] == PER_OP_RUNS and len(per_op["whole_ns"]) == PER_OP_RUNS
    names = [k["name"] for k in per_op["kernels"]]
    # every timed callee is one of the adapter's kernels (joined to ONNX nodes through
    # kernel_map) or a VM builtin (allocation, shape checks, tuples)
    assert all(n in artifact.kernel_map or n.startswith("vm.") for n in names), names
    # the adapter's kernels in VM call order (kernel_map lists them in main's call order)
    assert [n for n in names if n in artifact.kernel_map] == [
        k for k, nodes in artifact.kernel_map.items() if nodes]
    assert any(n.startswith("vm.builtin.") for n in names)
    for k in per_op["kernels"]:
        assert k["calls"] >= 1 and len(k["ns"]) == PER_OP_RUNS and min(k["ns"]) > 0
    return names


def test_host_runner_matches_reference_and_times_every_call(tmp_path):
    spec = write_factory(tmp_path / "two_heads.py", TWO_HEADS)
    artifact, program, example, expected = _compiled(tmp_path, spec, "host")
    assert program.instrumented_runner is None and program.extra_files == []
    assert program.model == artifact.path("library") and program.kernel_map == artifact.kernel_map
    assert len(expected) == 2  # a tuple result, flattened in order
    device = LocalDevice()
    try:
        result = run_program(device, program, example, [example],
                             RunnerSettings(runs=200, warmup=20, min_runs=20, per_op_runs=PER_OP_RUNS))
    finally:
        device.close()
    _check(result, artifact, expected, "x86_64")
    assert any("libtvm_runtime.so" in n for n in result.report["notes"])


def test_host_runner_says_why_a_file_is_no_module(tmp_path):
    defines, sources = runner_build_inputs(TARGETS["host"])
    runner = cached_runner("tvm", TARGETS["host"], defines, "auditor-runner-tvm", extra_sources=sources)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "timing_0.npy", np.zeros((1, 16), np.float32))
    bogus = tmp_path / "not_a_module.so"
    bogus.write_bytes(b"not an ELF file")
    out = tmp_path / "r.json"
    done = subprocess.run([runner, "--model", bogus, "--inputs-dir", inputs, "--json", out],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "cannot load" in json.loads(out.read_text())["error"]


def test_native_harness_stores_tvm_rows_that_join_the_graph(tmp_path):
    store, prepared, (run_id,) = audit_in(tmp_path, str(ROOT / "examples/blocks.py:mlp"), ["tvm"],
                                          profile_runs=PER_OP_RUNS, harness="native")
    run = store.run(run_id)
    assert run["status"] == "ok", run["reason"]
    assert json.loads(run["runtime_memory"])["runner"]["backend"] == "tvm"
    assert store.attribution_of(run_id)["method"] == "tvm-timed-callees"
    kernels = {op.kernel: op.onnx_nodes for op in store.op_timings(run_id)}
    assert kernels["fused_matmul_add_relu"] == ["node_linear", "node_relu"]
    graph = {node.name for node in store.nodes(prepared.bundle.model_hash)}
    assert {n for nodes in kernels.values() for n in nodes} == graph
    store.close()


def _assert_arm32_executable(path: Path) -> None:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 1, "a 32-bit ELF"
    assert struct.unpack_from("<H", header, 18)[0] == 40, "EM_ARM"


@pytest.mark.skipif(shutil.which(ARM_CXX) is None, reason=f"{ARM_CXX} missing (g++-arm-linux-gnueabihf)")
@pytest.mark.skipif(shutil.which("qemu-arm") is None, reason="qemu-arm missing (apt-get install qemu-user)")
def test_armv7_runner_under_qemu_matches_reference(tmp_path):
    artifact, program, example, expected = _compiled(tmp_path, str(ROOT / "examples/blocks.py:mlp"),
                                                     "armv7-cortex-a8")
    _assert_arm32_executable(program.runner)
    device = QemuArmv7Device()
    try:
        result = run_program(device, program, example, [example],
                             RunnerSettings(runs=30, warmup=5, min_runs=10, per_op_runs=PER_OP_RUNS))
    finally:
        device.close()
    names = _check(result, artifact, expected, "armv7l")
    assert [n for n in names if not n.startswith("vm.")] == [
        "fused_matmul_add_relu", "fused_matmul1_add_tir_tanh", "fused_matmul2_add1"]
    assert any("built from the wheels' sources" in n for n in result.report["notes"])
