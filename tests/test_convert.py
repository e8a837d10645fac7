"""Conversions for models published in one format: checked, labelled, failures recorded."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from auditor import convert, onnx_rewrite
from ground.host import package_version
from tests.conftest import audit_in


def _graph(nodes, inputs, outputs, initializers=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _reflect_pad_middle_axis():
    """A TF-converted pitch model's reflect Pad on the time axis of [1, T, 1]."""
    pads = numpy_helper.from_array(np.array([0, 3, 0, 0, 2, 0], dtype=np.int64), "pads")
    node = helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect", name="pad")
    return _graph([node], [_tensor("x", [1, 9, 1])], [_tensor("y", [1, 14, 1])], [pads])


def _clip_with_computed_floor():
    """A mel spectrogram's dB floor: clip at max(x) - 8."""
    eight = numpy_helper.from_array(np.array(8.0, dtype=np.float32), "eight")
    nodes = [helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0, name="peak"),
             helper.make_node("Sub", ["peak", "eight"], ["floor"], name="floor"),
             helper.make_node("Clip", ["x", "floor"], ["y"], name="clip")]
    return _graph(nodes, [_tensor("x", [2, 5])], [_tensor("y", [2, 5])], [eight])


@pytest.mark.parametrize("make, label", [
    (_reflect_pad_middle_axis, "reflect/edge Pad moved to the last axis"),
    (_clip_with_computed_floor, "Clip with computed bounds as Max/Min"),
])
def test_rewrites_are_exact_and_let_onnx2torch_convert(tmp_path, make, label):
    model = make()
    x = (np.random.default_rng(0).standard_normal([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])
         * 10).astype(np.float32)
    reference = ReferenceEvaluator(model).run(None, {"x": x})
    rewritten, made = onnx_rewrite.for_onnx2torch(model)
    assert made == {label: 1}
    onnx.checker.check_model(rewritten)
    np.testing.assert_array_equal(ReferenceEvaluator(rewritten).run(None, {"x": x})[0], reference[0])
    program, err, rewrites = convert.onnx_to_torch(model, [x], reference, tmp_path / "log")
    assert rewrites == [f"1 x {label}"] and err == 0.0
    np.testing.assert_array_equal(program.module()(torch.from_numpy(x)).numpy(), reference[0])


def test_max_error_refuses_a_converted_graph_that_disagrees():
    ref = [np.array([1.0, 2.0], np.float32)]
    assert convert.max_error([np.array([1.0, 2.0001], np.float32)], ref, "g") == pytest.approx(1e-4, rel=1e-2)
    with pytest.raises(convert.ConversionError, match=r"g output 0 differs from the reference by 0\.01 \(tolerance 0\.0021\)"):
        convert.max_error([np.array([1.0, 2.01], np.float32)], ref, "g")
    with pytest.raises(convert.ConversionError, match="g gives 2 outputs, the reference 1"):
        convert.max_error(ref * 2, ref, "g")


def test_onnx_bundle_gets_a_labelled_torch_export(tmp_path):
    path = tmp_path / "clip.onnx"
    onnx.save(_clip_with_computed_floor(), path)
    store, prepared, (run_id,) = audit_in(tmp_path / "r", str(path), ["torch-eager"], profile_runs=0)
    bundle = prepared.bundle
    assert bundle.files == {"onnx": "model.onnx", "torch-export": "model.pt2"} and bundle.problems == {}
    assert bundle.converted["torch-export"].startswith(
        f"onnx2torch {package_version('onnx2torch')} from ONNX after exact rewrites "
        "(1 x Clip with computed bounds as Max/Min), max err vs the ONNX reference 0")
    run = store.run(run_id)
    assert run["status"] == "ok" and run["converted"] == bundle.converted["torch-export"]


def test_an_op_onnx2torch_lacks_is_a_recorded_reason(tmp_path):
    path = tmp_path / "hardmax.onnx"
    onnx.save(_graph([helper.make_node("Hardmax", ["x"], ["y"], name="hm")], [_tensor("x", [2, 5])],
                     [_tensor("y", [2, 5])]), path)
    store, prepared, run_ids = audit_in(tmp_path / "r", str(path), ["onnxruntime", "torch-eager"], profile_runs=0)
    bundle = prepared.bundle
    assert "torch-export" not in bundle.files and bundle.converted == {}
    assert bundle.problems["torch-export"].startswith("onnx2torch cannot convert it: NotImplementedError")
    ort, eager = (store.run(r) for r in run_ids)
    assert (ort["status"], ort["converted"]) == ("ok", None)
    assert eager["status"] == "skipped" and "onnx2torch cannot convert it" in eager["reason"]


_MAKE_TFLITE = """
import sys, torch, litert_torch
class M(torch.nn.Module):
    def forward(self, x):
        return torch.sigmoid(x).reshape(1, -1)
litert_torch.convert(M().eval(), (torch.randn(1, 4, 4),)).export(sys.argv[1])
"""


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory):
    pytest.importorskip("litert_torch")
    path = tmp_path_factory.mktemp("tflite") / "sigmoid_reshape.tflite"
    subprocess.run([sys.executable, "-c", _MAKE_TFLITE, str(path)], check=True, capture_output=True, timeout=300)
    return path


def test_tflite_runs_on_litert_as_is_and_elsewhere_converted(tmp_path, cli, small_tflite):
    proc = cli("compile-all", small_tflite, "-c", "litert", "-c", "onnxruntime", "-c", "torch-eager", "--runs", 50,
               "--warmup", 5, "--profile-runs", 0, "--results-dir", tmp_path, "--json", check=True)
    runs = {r["variant"]: r for r in json.loads(proc.stdout)["runs"]}
    assert {v: r["status"] for v, r in runs.items()} == {"litert": "ok", "onnxruntime": "ok", "torch-eager": "ok"}
    assert runs["litert"]["converted"] is None  # the user's own .tflite
    assert runs["onnxruntime"]["converted"].startswith(
        f"tflite2onnx {package_version('tflite2onnx')} from tflite, max err vs the LiteRT reference")
    assert runs["torch-eager"]["converted"].startswith("onnx2torch ") and "from the tflite2onnx graph" in \
        runs["torch-eager"]["converted"]
    assert all(r["max_abs_err"] < 1e-6 for r in runs.values())


def _if_and_loop_graph(opset=18):
    """Control flow as published streaming models have it: an If on a computed condition
    (opset 18 ReduceSum with an axes input) and a Loop with a constant trip count."""
    x_in = _tensor("x", [1, 4])
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [_tensor("t", [1, 4])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_tensor("e", [1, 4])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "x"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _tensor("acc_in", [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _tensor("acc_out", [1, 4])])
    inits = [numpy_helper.from_array(np.array([0, 1], np.int64), "axes"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(3, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "true")]
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Greater", ["s", "zero"], ["c"], name="positive"),
             helper.make_node("If", ["c"], ["branch"], then_branch=then_g, else_branch=else_g, name="if"),
             helper.make_node("Loop", ["trips", "true", "branch"], ["y"], body=body, name="loop")]
    return _graph(nodes, [x_in], [_tensor("y", [1, 4])], inits, opset=opset)


def test_control_flow_graph_each_compiler_handles_it_or_says_why(tmp_path, cli):
    path = tmp_path / "if_loop.onnx"
    onnx.save(_if_and_loop_graph(), path)
    proc = cli("compile-all", path, "-c", "onnxruntime", "-c", "tvm", "-c", "sofie", "-c", "torch-eager",
               "--runs", 50, "--warmup", 5, "--profile-runs", 0, "--results-dir", tmp_path / "r", "--json",
               check=True)
    runs = {r["variant"]: r for r in json.loads(proc.stdout)["runs"]}
    assert runs["onnxruntime"]["status"] == "ok" and runs["onnxruntime"]["max_abs_err"] < 1e-6
    for name in ("tvm", "sofie"):  # neither imports this control flow: a recorded failure
        assert runs[name]["status"] == "failed" and runs[name]["reason"].startswith("compile: ")
    assert "Loop" in runs["sofie"]["reason"]
    assert runs["torch-eager"]["status"] == "skipped"
    assert "onnx2torch cannot convert it" in runs["torch-eager"]["reason"] and "If" in runs["torch-eager"]["reason"]
