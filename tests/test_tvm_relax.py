"""TVM Relax adapter: fused kernels, kernel map, VM-instrument rows, ARM cross-compile.

Through the real pipeline (bundle export, isolated worker, store). MetaSchedule tuning is
not run by default: on this 2-core VM even 8 trials take about 75 s (a one-off ~30 s import
of TVM's tensor intrinsics, the runner's start, design-space generation); set
AUDITOR_TVM_TUNE_TEST=1 to run it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("tvm")

from compilers import registry  # noqa: E402
from compilers.tvm_relax import TvmRelax  # noqa: E402
from compilers.tvm_tuning import tuning_dir, tvm_version  # noqa: E402
from ground.targets import TARGETS  # noqa: E402
from ground.tensors import ModelBundle  # noqa: E402

from tests.conftest import audit_in  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILE_RUNS = 20
ARM_CXX = TARGETS["armv7-cortex-a8"].cxx

LSTM_FACTORY = """
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])   # a negative select: TVM 0.27 alone reads out of bounds


def make():
    torch.manual_seed(0)
    return Block().eval(), (torch.randn(1, 5, 8),)
"""


def _audit(tmp: Path, spec: str, variants: list[str], target: str = "host"):
    return audit_in(tmp, spec, variants, target, profile_runs=PROFILE_RUNS)


def _onnx_nodes(bundle) -> dict[str, str]:
    return {n.name: n.op_type for n in onnx.load(str(bundle.path("onnx"))).graph.node}


def _ok(store, run_id):
    row = store.run(run_id)
    assert row["status"] == "ok", (row["status"], row["reason"])
    return row


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tvm_mlp")
    store, prepared, run_ids = _audit(tmp, str(ROOT / "examples/blocks.py:mlp"), ["tvm", "tvm:fuse=false"])
    yield store, prepared, dict(zip(("fused", "unfused"), run_ids))
    store.close()


def test_available_options_and_variants():
    ok, detail = TvmRelax.available()
    assert ok, detail
    assert detail.startswith("0.27")
    assert TvmRelax.default_variants == ({},)
    assert TvmRelax.resolve_options({}) == {"opt_level": 3, "fuse": True, "tune_trials": 0}
    assert set(TvmRelax.targets) == {"host", "armv7-cortex-a8"}
    assert TvmRelax.per_op_method == "tvm-vm-instrument"


def test_mlp_fused_kernels_map_to_their_onnx_nodes(mlp):
    store, prepared, runs = mlp
    row = _ok(store, runs["fused"])
    assert row["accuracy_passed"] == 1
    assert json.loads(row["options"]) == {"opt_level": 3, "fuse": True, "tune_trials": 0}
    kernel_map = json.loads(row["kernel_map"])
    nodes = _onnx_nodes(prepared.bundle)
    # Each Linear fuses with the activation after it; every ONNX node is covered exactly once.
    assert kernel_map == {
        "fused_matmul_add_relu": ["node_linear", "node_relu"],
        "fused_matmul1_add_tir_tanh": ["node_linear_1", "node_tanh"],
        "fused_matmul2_add1": ["node_linear_2"],
    }
    assert sorted(n for ns in kernel_map.values() for n in ns) == sorted(nodes)
    notes = json.loads(row["artifact_notes"])
    assert any("0 joined by op and order only, 0 unmatched" in n for n in notes), notes


def test_mlp_unfused_bias_adds_map_to_their_own_linear(mlp):
    store, prepared, runs = mlp
    row = _ok(store, runs["unfused"])
    assert json.loads(row["options"])["fuse"] is False
    kernel_map = json.loads(row["kernel_map"])
    assert not any(k.startswith("fused_") for k in kernel_map)
    # the first two bias adds share one PrimFunc ("add"); the third has its own shape
    assert kernel_map["add"] == ["node_linear", "node_linear_1"]
    assert kernel_map["add1"] == ["node_linear_2"]
    assert kernel_map["relu"] == ["node_relu"] and kernel_map["tir_tanh"] == ["node_tanh"]
    assert set(n for ns in kernel_map.values() for n in ns) == set(_onnx_nodes(prepared.bundle))


def test_mlp_per_op_rows_are_kernels_with_onnx_nodes(mlp):
    store, prepared, runs = mlp
    row = _ok(store, runs["fused"])
    assert json.loads(row["settings"])["timing_loop"].startswith("tvm time_evaluator")
    attribution = store.attribution(runs["fused"])
    assert attribution["method"] == "tvm-vm-instrument"
    assert attribution["runs"] == PROFILE_RUNS
    assert attribution["instrumented_whole_us"] > 0
    assert "hook overhead" in attribution["notes"] and "not rescaled" in attribution["notes"]
    ops = store.rows("op_timings", runs["fused"])
    kernel_map = json.loads(row["kernel_map"])
    assert [op["kernel"] for op in ops] == [  # in VM call order
        "fused_matmul_add_relu", "fused_matmul1_add_tir_tanh", "fused_matmul2_add1"]
    for op in ops:
        assert op["calls"] == 1 and op["mean_us"] > 0 and op["p50_us"] > 0
        assert json.loads(op["onnx_nodes"]) == kernel_map[op["kernel"]]
    assert ops[0]["op_type"] == "matmul+add+relu"
    # the instrumented whole includes the Python hook around every VM call: never below the sum
    assert attribution["instrumented_whole_us"] >= attribution["per_op_sum_p50_us"]


def test_conv1d_fused_and_matches_torch(tmp_path):
    store, prepared, run_ids = _audit(tmp_path, str(ROOT / "examples/blocks.py:conv1d"), ["tvm"])
    row = _ok(store, run_ids[0])
    kernel_map = json.loads(row["kernel_map"])
    assert kernel_map == {
        "fused_conv1d_add_relu": ["node_conv1d", "node_relu"],
        "fused_conv1d1_add_relu": ["node_conv1d_1", "node_relu_1"],
        "fused_conv1d2_add1": ["node_conv1d_2"],
    }
    ops = store.rows("op_timings", run_ids[0])
    assert {op["kernel"] for op in ops} == set(kernel_map)
    assert all(op["p50_us"] > 0 for op in ops)
    store.close()


def test_lstm_negative_select_matches_and_maps(tmp_path):
    from tests.conftest import write_factory

    spec = write_factory(tmp_path / "lstm_block.py", LSTM_FACTORY)
    store, prepared, run_ids = _audit(tmp_path / "res", spec, ["tvm"])
    row = _ok(store, run_ids[0])  # outputs match torch: the select workaround is in place
    notes = json.loads(row["artifact_notes"])
    assert any("negative aten.select index normalised" in n for n in notes), notes
    kernel_map = json.loads(row["kernel_map"])
    nodes = _onnx_nodes(prepared.bundle)
    lstm_nodes = {n for n, op in nodes.items() if op == "LSTM"}
    assert lstm_nodes and any(lstm_nodes & set(v) for v in kernel_map.values())
    gemm = [n for n, op in nodes.items() if op == "Gemm"]
    assert [k for k, v in kernel_map.items() if v == gemm] == ["fused_matmul2_add4"]
    assert all(n in nodes for ns in kernel_map.values() for n in ns)
    store.close()


def test_onnx_fallback_without_torch_export(mlp, tmp_path):
    """A bundle with only the ONNX graph goes through TVM's ONNX frontend, same kernels."""
    _, prepared, _ = mlp
    directory = tmp_path / "bundle"
    shutil.copytree(prepared.bundle.directory, directory)
    meta = json.loads((directory / "bundle.json").read_text())
    meta["files"].pop("torch-export")
    (directory / "bundle.json").write_text(json.dumps(meta))
    bundle = ModelBundle.load(directory)
    compiler = TvmRelax()
    work = tmp_path / "work"
    work.mkdir()
    artifact = compiler.compile(bundle, TARGETS["host"], TvmRelax.resolve_options({}), work)
    assert any("ONNX graph" in n for n in artifact.notes)
    assert artifact.kernel_map == {
        "fused_matmul_add_relu": ["node_linear", "node_relu"],
        "fused_matmul1_add_tir_tanh": ["node_linear_1", "node_tanh"],
        "fused_matmul2_add1": ["node_linear_2"],
    }
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    runnable = compiler.load(artifact, bundle)
    runnable.set_inputs([x])
    runnable.run()
    session = ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])
    expected = session.run(None, {bundle.inputs[0].name: x})[0]
    np.testing.assert_allclose(runnable.outputs()[0], expected, rtol=1e-4, atol=1e-5)


def _assert_arm32_hard_float(path: Path) -> None:
    header = path.read_bytes()[:52]
    assert header[:4] == b"\x7fELF"
    assert header[4] == 1, "ELFCLASS32"
    assert header[5] == 1, "little endian"
    (machine,) = struct.unpack_from("<H", header, 18)
    assert machine == 40, f"e_machine {machine} is not EM_ARM"
    (flags,) = struct.unpack_from("<I", header, 36)
    assert flags & 0x400, f"e_flags {flags:#x}: not the hard-float ABI"
    assert flags >> 24 == 5, f"e_flags {flags:#x}: not EABI version 5"


@pytest.mark.skipif(shutil.which(ARM_CXX) is None, reason=f"{ARM_CXX} missing (g++-arm-linux-gnueabihf)")
@pytest.mark.parametrize("block", ["mlp", "conv1d"])
def test_armv7_cross_compile_keeps_a_32bit_arm_library(tmp_path, block):
    store, prepared, run_ids = _audit(tmp_path, str(ROOT / f"examples/blocks.py:{block}"), ["tvm"],
                                      target="armv7-cortex-a8")
    row = store.run(run_ids[0])
    assert row["status"] == "compiled", (row["status"], row["reason"])
    library = Path(row["artifact_dir"]) / "model.so"
    _assert_arm32_hard_float(library)
    kernel_map = json.loads(row["kernel_map"])
    assert set(n for ns in kernel_map.values() for n in ns) == set(_onnx_nodes(prepared.bundle))
    notes = json.loads(row["artifact_notes"])
    assert any('"mtriple": "armv7a-linux-gnueabihf"' in n for n in notes), notes
    store.close()


def test_tuning_on_arm_is_refused(mlp, tmp_path):
    _, prepared, _ = mlp
    with pytest.raises(ValueError, match="MetaSchedule"):
        TvmRelax().compile(prepared.bundle, TARGETS["armv7-cortex-a8"],
                           TvmRelax.resolve_options({"tune_trials": 4}), tmp_path)


@pytest.mark.skipif(os.environ.get("AUDITOR_TVM_TUNE_TEST") != "1",
                    reason="MetaSchedule takes ~75 s even for 8 trials here; AUDITOR_TVM_TUNE_TEST=1 runs it")
def test_tuning_database_is_cached_and_reused(mlp, tmp_path):
    _, prepared, _ = mlp
    bundle = prepared.bundle
    options = TvmRelax.resolve_options({"tune_trials": 8})
    shutil.rmtree(tuning_dir(bundle.model_hash, TARGETS["host"], options), ignore_errors=True)
    compiler = TvmRelax()
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    a = compiler.compile(bundle, TARGETS["host"], options, first)
    assert any("tuning cache miss" in n for n in a.notes), a.notes
    work_dir = tuning_dir(bundle.model_hash, TARGETS["host"], options)
    assert work_dir.name == f"{bundle.model_hash}-host-8-fuse1-O3-tvm{tvm_version()}"
    assert (work_dir / "database_tuning_record.json").stat().st_size > 0
    assert "3 of 3 kernels took a tuned schedule from the database" in a.notes
    b = compiler.compile(bundle, TARGETS["host"], options, second)
    assert any("tuning cache hit" in n for n in b.notes), b.notes
    assert "3 of 3 kernels took a tuned schedule from the database" in b.notes
    assert json.loads((second / "kernels.json").read_text())["tvm_target"]["num-cores"] == 1
    assert b.kernel_map == a.kernel_map
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    outs = []
    for artifact in (a, b):
        runnable = compiler.load(artifact, bundle)
        runnable.set_inputs([x])
        runnable.run()
        outs.append(runnable.outputs()[0])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
