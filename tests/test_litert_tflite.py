"""LiteRT adapter: conversion, outputs, kernel map, options, per-op slicing, through the real pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from compilers import registry  # noqa: E402
from compilers.litert_tflite import LiteRT, _interpreter, _read_model, _slice  # noqa: E402
from ground.targets import TARGETS  # noqa: E402
from ground.tensors import ModelBundle  # noqa: E402

from tests.conftest import audit_in  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

GRU_FACTORY = """
import torch
from torch import nn

class GRUBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y, _ = self.gru(x)
        return self.head(y)

def make():
    torch.manual_seed(0)
    return GRUBlock().eval(), (torch.randn(1, 6, 4),)
"""


def _audit(tmp: Path, spec: str, variants: list[str]):
    return audit_in(tmp, spec, variants, profile_runs=20)


def _onnx_names(bundle) -> list[str]:
    return [n.name for n in onnx.load(str(bundle.path("onnx"))).graph.node]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("litert_mlp")
    store, prepared, run_ids = _audit(tmp, str(ROOT / "examples/blocks.py:mlp"), ["litert"])
    yield store, prepared, run_ids[0]
    store.close()


def test_available_reports_versions():
    ok, detail = LiteRT.available()
    assert ok, detail
    assert "litert-torch" in detail and "ai-edge-litert" in detail


def test_mlp_default_variant(mlp):
    store, prepared, run_id = mlp
    row = store.run(run_id)
    assert row["status"] == "ok", row["reason"]
    assert row["accuracy_passed"] == 1
    assert all(r["max_abs_err"] < 1e-5 for r in store.rows("accuracy", run_id))
    assert row["p50_us"] > 0
    assert json.loads(row["options"]) == {"xnnpack": True, "threads": 1, "quantize": "none",
                                          "profile_max_ops": 400}
    assert "litert-torch" in row["compiler_version"]
    workdir = Path(row["artifact_dir"])
    memory = json.loads(row["runtime_memory"])
    assert memory["model_bytes"] == (workdir / "model_float.tflite").stat().st_size

    # Kernel map: three FULLY_CONNECTED (ReLU fused into the first) and a TANH, each naming
    # the canonical ONNX nodes of its torch ops.
    names = set(_onnx_names(prepared.bundle))
    kmap = json.loads(row["kernel_map"])
    assert kmap == {
        "op0000_FULLY_CONNECTED": ["node_linear", "node_relu"],
        "op0001_FULLY_CONNECTED": ["node_linear_1"],
        "op0002_TANH": ["node_tanh"],
        "op0003_FULLY_CONNECTED": ["node_linear_2"],
    }
    assert {n for nodes in kmap.values() for n in nodes} == names
    saved = json.loads((workdir / "kernels.json").read_text())
    assert any("MLIR locations" in note for note in saved["notes"])


def test_mlp_per_op_slices(mlp):
    store, _, run_id = mlp
    ops = store.rows("op_timings", run_id)
    assert [o["kernel"] for o in ops] == ["op0000_FULLY_CONNECTED", "op0001_FULLY_CONNECTED", "op0002_TANH",
                                          "op0003_FULLY_CONNECTED"]
    kmap = json.loads(store.run(run_id)["kernel_map"])
    for o in ops:
        assert o["mean_us"] > 0 and o["p50_us"] > 0 and o["calls"] == 1
        assert json.loads(o["onnx_nodes"]) == kmap[o["kernel"]]
        assert o["provider"] == "xnnpack"
        assert o["method"] == "tflite-op-slicing"
    attribution = store.attribution(run_id)
    assert attribution["method"] == "tflite-op-slicing"
    assert attribution["runs"] == 20
    assert attribution["instrumented_whole_us"] > 0
    assert attribution["per_op_sum_us"] == pytest.approx(sum(o["mean_us"] for o in ops))
    assert "not rescaled" in attribution["notes"]


def test_slices_compute_what_the_whole_model_computes(mlp):
    """Each one-op slice, fed the whole model's intermediate values, gives that op's output."""
    store, _, run_id = mlp
    path = Path(store.run(run_id)["artifact_dir"]) / "model_float.tflite"
    model = _read_model(path)
    options = LiteRT.resolve_options({})
    whole = _interpreter(options, model_path=str(path), preserve_all=True)
    whole.allocate_tensors()
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    whole.set_tensor(whole.get_input_details()[0]["index"], x)
    whole.invoke()
    for i in range(len(model.subgraphs[0].operators)):
        content, ins, outs = _slice(model, i)
        one = _interpreter(options, model_content=content)
        one.allocate_tensors()
        for detail, t in zip(one.get_input_details(), ins):
            one.set_tensor(detail["index"], whole.get_tensor(t))
        one.invoke()
        got = one.get_tensor(one.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, whole.get_tensor(outs[0]), rtol=1e-5, atol=1e-6)


def test_conv1d_builtin_and_dynamic_int8(tmp_path):
    store, prepared, (plain, int8) = _audit(
        tmp_path, str(ROOT / "examples/blocks.py:conv1d"),
        ["litert:xnnpack=false", "litert:quantize=dynamic-int8"])
    names = set(_onnx_names(prepared.bundle))

    row = store.run(plain)
    assert row["status"] == "ok", row["reason"]
    assert json.loads(row["options"])["xnnpack"] is False
    kmap = json.loads(row["kernel_map"])
    assert kmap["op0001_DEPTHWISE_CONV_2D"] == ["node_conv1d", "node_relu"]
    # the second conv reads relu's value but does not compute it
    assert kmap["op0002_CONV_2D"] == ["node_conv1d_1", "node_relu_1"]
    assert {n for nodes in kmap.values() for n in nodes} == names
    ops = store.rows("op_timings", plain)
    assert len(ops) == len(kmap) and all(o["provider"] == "builtin" and o["mean_us"] > 0 for o in ops)

    q = store.run(int8)
    # int8 weights: the output is close to, but not within, the float tolerance
    errs = [r["max_abs_err"] for r in store.rows("accuracy", int8)]
    assert 0 < max(errs) < 0.05
    assert q["status"] == "mismatch" and q["accuracy_passed"] == 0, q["reason"]
    assert q["reason"].endswith(f"max abs error {max(errs):.3g} over tolerance")
    assert json.loads(q["options"])["quantize"] == "dynamic-int8"
    assert json.loads(q["kernel_map"]) == kmap
    qbytes = json.loads(q["runtime_memory"])["model_bytes"]
    assert qbytes == (Path(q["artifact_dir"]) / "model_dynamic_int8.tflite").stat().st_size
    assert qbytes < json.loads(row["runtime_memory"])["model_bytes"]
    assert len(store.rows("op_timings", int8)) == len(kmap)


def test_gru_kernel_map_and_profile_bound(tmp_path):
    factory = tmp_path / "gru_block.py"
    factory.write_text(GRU_FACTORY)
    store, prepared, (run_id,) = _audit(tmp_path, f"{factory}:make", ["litert:profile_max_ops=12"])
    row = store.run(run_id)
    assert row["status"] == "ok", row["reason"]
    names = set(_onnx_names(prepared.bundle))
    kmap = json.loads(row["kernel_map"])
    assert len(kmap) > 50  # the GRU is unrolled into many small ops
    mapped = [nodes for nodes in kmap.values() if nodes]
    assert len(mapped) >= 0.9 * len(kmap)
    assert all(set(nodes) <= names for nodes in kmap.values())
    ops = store.rows("op_timings", run_id)
    assert [o["kernel"] for o in ops] == list(kmap)[:12]
    assert "first 12 of" in store.attribution(run_id)["notes"]


def test_conversion_failure_is_reported(tmp_path):
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "model.pt2").write_bytes(b"not a torch.export archive")
    bundle = ModelBundle("deadbeef", bundle_dir, inputs=[], outputs=[],
                         files={"torch-export": "model.pt2"})
    bundle.save()
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(RuntimeError, match="litert-torch conversion failed"):
        LiteRT().compile(bundle, TARGETS["host"], LiteRT.resolve_options({}), workdir)


def test_xnnpack_on_and_off_load_one_cached_conversion(tmp_path):
    """XNNPACK is chosen when the interpreter loads (a runtime-only option): a dataset build's
    two LiteRT variants convert the model once, and each run still uses its own setting."""
    import sqlite3
    import subprocess
    import sys

    (tmp_path / "s.json").write_text(json.dumps({
        "name": "lt", "compilers": ["litert", "litert:xnnpack=false"],
        "timing": {"runs": 30, "warmup": 3, "max_seconds": 0.2, "profile_runs": 2},
        "families": [{"family": "mlp", "grid": {"depth": [1], "width": [16]}}]}))
    auditor = Path(sys.executable).parent / "auditor"
    done = subprocess.run([str(auditor), "dataset", "build", "--spec", "s.json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = tmp_path / "auditor-results"
    assert len([p for p in (results / "artifacts").iterdir() if p.is_dir()]) == 1
    db = sqlite3.connect(results / "results.sqlite")
    runs = dict(db.execute("SELECT variant, status FROM runs").fetchall())
    assert runs == {"litert": "ok", "litert[xnnpack=False]": "ok"}
    providers = dict(db.execute("SELECT r.variant, group_concat(DISTINCT o.provider) FROM op_timings o "
                                "JOIN runs r USING (run_id) GROUP BY r.variant").fetchall())
    assert providers == {"litert": "xnnpack", "litert[xnnpack=False]": "builtin"}
