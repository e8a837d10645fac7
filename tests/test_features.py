"""Static node features: counts checked against hand-computed ones, unknown ops flagged."""

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from cost_model.features import FEATURE_VERSION, graph_features


def _model(nodes, inputs, outputs, initializers=(), opset=20, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    return onnx.shape_inference.infer_shapes(model)


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_gemm_conv_and_elementwise_counts_match_hand_computed_ones():
    w = numpy_helper.from_array(np.zeros((25, 32), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(25, np.float32), "b")
    k = numpy_helper.from_array(np.zeros((8, 4, 3), np.float32), "k")
    model = _model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm", transB=1),
         helper.make_node("Mish", ["g"], ["m"], name="mish"),
         helper.make_node("Conv", ["s", "k"], ["c"], name="conv", kernel_shape=[3], dilations=[2])],
        [_vi("x", [1, 32]), _vi("s", [1, 4, 20])], [_vi("m", [1, 25]), _vi("c", [1, 8, 16])], [w, b, k])
    f = {n.name: n for n in graph_features(model).nodes}
    assert f["gemm"].macs == 32 * 25 + 25 and f["gemm"].counter == "onnx-tool"  # + bias adds
    assert f["gemm"].weight_bytes == (25 * 32 + 25) * 4 and f["gemm"].bytes_in == 32 * 4
    assert f["gemm"].bytes_out == 25 * 4 and f["gemm"].attrs == {"transB": 1}
    assert f["gemm"].intensity == pytest.approx(825 / ((32 + 25 + 25 * 32 + 25) * 4))
    assert f["mish"].macs == 25 and f["mish"].counter == "elementwise-rule"  # onnx-tool has no Mish
    assert f["conv"].macs == 8 * 4 * 3 * 16  # C_out x C_in x k x L_out, dilation 2: L_out 16
    assert f["conv"].attrs["dilations"] == [2] and f["conv"].flags == []


def test_unknown_op_is_flagged_never_counted_as_zero():
    model = _model([helper.make_node("Foo", ["x"], ["t"], name="foo", domain="com.example"),
                    helper.make_node("Relu", ["t"], ["y"], name="relu")],
                   [_vi("x", [1, 4])], [_vi("y", [1, 4])],
                   extra_opsets=[helper.make_opsetid("com.example", 1)])
    g = graph_features(model)
    foo = g.nodes[0]
    assert foo.macs is None and foo.counter == "none" and "unknown-op" in foo.flags
    assert foo.intensity is None and g.unknown_ops == ["Foo"]
    assert "dynamic-shape" in foo.flags  # nothing infers Foo's output shape


def test_graph_position_depth_and_fan():
    # x -> a -> b -> d ; a -> c -> d (a diamond): depth counts the longest path
    model = _model([helper.make_node("Relu", ["x"], ["a"], name="a"),
                    helper.make_node("Relu", ["a"], ["b"], name="b"),
                    helper.make_node("Relu", ["b"], ["b2"], name="b2"),
                    helper.make_node("Tanh", ["a"], ["c"], name="c"),
                    helper.make_node("Add", ["b2", "c"], ["d"], name="d")],
                   [_vi("x", [2, 3])], [_vi("d", [2, 3])])
    f = {n.name: n for n in graph_features(model).nodes}
    assert (f["a"].depth, f["a"].fan_in, f["a"].fan_out) == (0, 0, 2)
    assert (f["d"].depth, f["d"].fan_in, f["d"].fan_out) == (3, 2, 0)
    assert f["c"].depth == 1 and f["b2"].depth == 2


def test_every_op_of_the_zoo_defaults_is_counted(tmp_path):
    from auditor import zoo
    from auditor.export import prepare_bundle
    from auditor.inputs import build_inputs
    from auditor.loaders import load_model

    for family in ("recurrent", "transformer", "mdn", "conv1d"):
        model = load_model(zoo.spec_string(family, zoo.family(family).resolve({})))
        bundle = prepare_bundle(model, build_inputs(model, []), tmp_path)
        g = graph_features(onnx.load(str(bundle.path("onnx"))))
        assert g.feature_version == FEATURE_VERSION and g.counter_version.startswith("onnx-tool ")
        assert g.unknown_ops == [] and g.total_macs > 0, family
        assert all("dynamic-shape" not in n.flags for n in g.nodes), family
        heavy = [n for n in g.nodes if n.op_type in ("Gemm", "MatMul", "Conv", "ConvTranspose", "LSTM", "GRU")]
        assert heavy and all(n.macs > 0 for n in heavy), family
