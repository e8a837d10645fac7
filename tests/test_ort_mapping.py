import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import numpy as np

from compilers.ort import covered_nodes, parse_profile


def _conv_relu_model():
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["y"], name="sig")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fused_conv_relu_maps_to_both_original_nodes(tmp_path):
    model = _conv_relu_model()
    onnx.save(model, tmp_path / "m.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(tmp_path / "m.onnx"), so, providers=["CPUExecutionProvider"])
    optimized = onnx.load(tmp_path / "opt.onnx")
    mapping = covered_nodes(model, optimized)
    fused = [n for n in optimized.graph.node if n.op_type == "FusedConv"]
    assert len(fused) == 1, [n.op_type for n in optimized.graph.node]
    assert mapping[fused[0].name] == ["conv", "relu"]
    assert mapping["sig"] == ["sig"]


def test_parse_profile_skips_warmup_and_sums_per_run():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(name, ts, dur, op="Gemm"):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": "CPUExecutionProvider"}}

    events = [run(0, 10), node("a", 1, 9),  # warm-up
              run(100, 10), node("a", 101, 4), node("b", 106, 2, "Relu"), node("b", 108, 1, "Relu"),
              run(200, 12), node("a", 201, 6), node("b", 208, 2, "Relu"), node("b", 210, 2, "Relu")]
    profile = parse_profile(events, {"a": ["n1", "n2"], "b": ["n3"]}, skip_runs=1)
    assert profile.runs == 2 and profile.instrumented_whole_us == pytest.approx(11)
    a, b = profile.ops
    assert (a.kernel, a.onnx_nodes, a.calls, a.mean_us) == ("a", ["n1", "n2"], 1, pytest.approx(5))
    assert (b.kernel, b.op_type, b.calls, b.mean_us) == ("b", "Relu", 2, pytest.approx(3.5))
    assert profile.per_op_sum_us == pytest.approx(8.5)
