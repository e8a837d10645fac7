"""If nodes flattened for costing (cost_model.control_flow): the branch a number input or a
static shape selects, else the heavier one (flagged); shape arithmetic and Constant nodes
folded to initializers as onnxsim folds compile-all's graphs; and `auditor predict` on a
dynamic ONNX file as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cost_model.control_flow import flatten_ifs, fold_shape_arithmetic
from cost_model.features import graph_features

CONSOLE_SCRIPT = Path(sys.executable).parent / "auditor"


def _gemm_branch(name: str, width: int) -> onnx.GraphProto:
    """x (1, 64) -> Gemm to `width` -> ReduceSum to (1, 1): branches of different cost, one output."""
    w = numpy_helper.from_array(np.ones((64, width), np.float32), f"{name}_w")
    nodes = [helper.make_node("Gemm", ["x", f"{name}_w"], [f"{name}_g"], name=f"{name}_gemm"),
             helper.make_node("ReduceSum", [f"{name}_g"], [f"{name}_y"], name=f"{name}_sum", keepdims=1)]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 1])],
                             initializer=[w])


def _if_graph(condition: str) -> onnx.ModelProto:
    """condition 'sr': Equal(sr, 16000) picks a Gemm to 512 (then) or to 8 (else);
    'data': the sign of x's sum picks it, which nothing static can tell."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    inputs, nodes = [x], []
    if condition == "sr":
        inputs.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
        nodes += [helper.make_node("Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64))),
                  helper.make_node("Equal", ["sr", "rate"], ["cond"])]
    else:
        nodes += [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                  helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
                  helper.make_node("Greater", ["total", "zero"], ["cond"])]
    nodes.append(helper.make_node("If", ["cond"], ["y"], name="choose", then_branch=_gemm_branch("big", 512),
                                  else_branch=_gemm_branch("small", 8)))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def test_a_number_input_decides_the_branch_and_nothing_is_flagged():
    for rate, gemm, width in ((16000, "big_gemm", 512), (8000, "small_gemm", 8)):
        flat = flatten_ifs(_if_graph("sr"), {"sr": np.array(rate, np.int64)})
        ops = {n.name: n.op_type for n in flat.model.graph.node}
        assert "If" not in ops.values() and gemm in ops and flat.decided == 1 and flat.flag() is None
        assert graph_features(flat.model).nodes[0].macs >= 64 * width  # the Gemm's shapes reached it


def test_a_data_dependent_condition_costs_the_heavier_branch_and_says_so():
    flat = flatten_ifs(_if_graph("data"), {})
    names = {n.name for n in flat.model.graph.node}
    assert "big_gemm" in names and "small_gemm" not in names and flat.guessed == ["choose"]
    assert "1 If node(s) costed by their heavier branch" in flat.flag()


def test_shape_arithmetic_and_constants_fold_so_the_kernel_after_them_has_shapes():
    """Reshape's target computed from Shape -> Gather -> Concat (as exporters write it): with
    the input pinned, it folds, and the Gemm after it gets its shapes and a MAC count."""
    w = numpy_helper.from_array(np.ones((32, 16), np.float32), "w")
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["i0"], value=numpy_helper.from_array(np.array([0], np.int64))),
             helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Constant", [], ["m1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
             helper.make_node("Concat", ["n", "m1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w"], ["y"], name="gemm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert graph_features(model).unknown_ops == ["Gemm"]
    folded = fold_shape_arithmetic(model, {})
    assert len(model.graph.node) == 7  # the caller's graph is not changed
    assert [n.op_type for n in folded.graph.node] == ["Reshape", "Gemm"]
    assert numpy_helper.to_array(next(t for t in folded.graph.initializer if t.name == "target")).tolist() == [2, -1]
    gemm = next(n for n in graph_features(folded).nodes if n.op_type == "Gemm")
    assert gemm.input_shapes[0] == [2, 32] and gemm.macs >= 2 * 32 * 16


def test_predict_a_dynamic_onnx_file_from_the_users_folder(tmp_path):
    """Default options, relative paths: a symbolic batch dimension is one line naming
    --input-shape (it once crashed in onnx-tool's count), and with it the If graph is costed
    on the branch --arg selects."""
    model = _if_graph("sr")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, str(tmp_path / "block.onnx"))

    def run(*args):
        return subprocess.run([str(CONSOLE_SCRIPT), "predict", "block.onnx", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    proc = run()
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "dimension 0 is dynamic (batch): give it a value with --input-shape x=N,64" in proc.stderr
    assert "--arg sr=VALUE" in run("--input-shape", "x=1,64").stderr
    out = {}
    for rate in (16000, 8000):
        proc = run("--input-shape", "x=1,64", "--arg", f"sr={rate}", "--json", "-c", "onnxruntime")
        assert proc.returncode == 0, proc.stderr
        (v,) = json.loads(proc.stdout)["variants"]
        assert not any("control flow" in f for f in v["flags"]) and any(u["ops"].startswith("Gemm") for u in v["top_units"])
        out[rate] = v["p50_us"]
    assert out[16000] > out[8000]  # 64 x 512 against 64 x 8
