import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from auditor.inputs import build_inputs, parse_input_shapes
from auditor.loaders import load_model
from ground.errors import AuditorError
from tests.conftest import write_factory


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()


def test_pt2_declares_shapes_and_examples(example_models):
    model = load_model(str(example_models / "mlp.pt2"))
    assert model.format == "torch-export"
    assert [(i.name, i.shape, i.dtype) for i in model.inputs] == [("x", (1, 16), "float32")]
    inputs = build_inputs(model, [])
    assert inputs.specs[0].shape == (1, 16) and inputs.source == "model-example"


def test_dynamic_pt2_dimension_needs_a_value(tmp_path):
    m = _mlp()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(m, (torch.randn(2, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "dyn.pt2")
    model = load_model(str(tmp_path / "dyn.pt2"))
    model.example_inputs = None  # the archive's sample input would otherwise fix the shape
    with pytest.raises(AuditorError, match=r"input 'input' dimension 0 is dynamic \(s\d+\).*--input-shape input=N,8"):
        build_inputs(model, [])
    assert build_inputs(model, ["input:3,8"]).specs[0].shape == (3, 8)


def test_torchscript_needs_input_shape(tmp_path):
    torch.jit.script(_mlp()).save(str(tmp_path / "m.ts"))
    model = load_model(str(tmp_path / "m.ts"))
    assert model.format == "torchscript"
    with pytest.raises(AuditorError, match="does not declare its input shapes"):
        build_inputs(model, [])
    assert build_inputs(model, ["1,8"]).specs[0].shape == (1, 8)


def test_jit_suffix_is_torchscript(tmp_path):
    torch.jit.script(_mlp()).save(str(tmp_path / "m.jit"))
    model = load_model(str(tmp_path / "m.jit"))
    assert model.format == "torchscript"
    assert build_inputs(model, ["2,4"]).specs[0].shape == (2, 4)


def test_pickle_refused_without_trust(tmp_path):
    torch.save(_mlp(), tmp_path / "m.pt")
    with pytest.raises(AuditorError, match="pickled Python object.*--trust-pickle"):
        load_model(str(tmp_path / "m.pt"))
    model = load_model(str(tmp_path / "m.pt"), trust_pickle=True)
    assert model.format == "pickle" and isinstance(model.module, torch.nn.Module)


def test_pickled_state_dict_is_not_a_module(tmp_path):
    torch.save(_mlp().state_dict(), tmp_path / "sd.pth")
    with pytest.raises(AuditorError, match="OrderedDict, not a torch.nn.Module"):
        load_model(str(tmp_path / "sd.pth"), trust_pickle=True)


def test_factory_is_seeded_and_returns_examples(tmp_path):
    spec = write_factory(tmp_path / "f.py", "def make():\n    return nn.Linear(4, 2), (torch.ones(1, 4),)\n")
    a, b = load_model(spec), load_model(spec)
    assert torch.equal(a.module.weight, b.module.weight)  # same seed, same weights
    assert a.inputs[0].shape == (1, 4)


@pytest.mark.parametrize("spec_text, message", [
    ("def make():\n    raise RuntimeError('boom')\n", r"make\(\) failed \(RuntimeError: boom\)"),
    ("def make():\n    return 3\n", "returned int, not an nn.Module"),
    ("x = 1\n", "has no function 'make'"),
])
def test_factory_errors(tmp_path, spec_text, message):
    spec = write_factory(tmp_path / "f.py", spec_text)
    with pytest.raises(AuditorError, match=message):
        load_model(spec)


def test_onnx_dim_param_named_in_error(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    model = load_model(str(tmp_path / "m.onnx"))
    with pytest.raises(AuditorError, match=r"dimension 0 is dynamic \(batch\)"):
        build_inputs(model, [])
    with pytest.raises(AuditorError, match="is 2,5 but the model takes \\?,4"):
        build_inputs(model, ["x:2,5"])
    assert build_inputs(model, ["x:2,4"]).specs[0].shape == (2, 4)


def test_shape_parsing():
    assert parse_input_shapes(["x:1,16", "1x64"]) == {"x": (1, 16), "#1": (1, 64)}
    # '=' is unambiguous for TF-converted names that contain ':'; ':' splits at the last one
    assert parse_input_shapes(["serving_default_input_2:0=1,43844,1", "y=2x3", "a:0:4,5"]) == {
        "serving_default_input_2:0": (1, 43844, 1), "y": (2, 3), "a:0": (4, 5)}
    with pytest.raises(AuditorError, match="the input name before '=' is empty"):
        parse_input_shapes(["=1,2"])
    with pytest.raises(AuditorError):
        parse_input_shapes(["x:1,a"])
    with pytest.raises(AuditorError):
        parse_input_shapes(["0,4"])


def test_user_inputs_and_labels(tmp_path, example_models):
    model = load_model(str(example_models / "mlp.pt2"))
    data = np.random.default_rng(1).standard_normal((5, 1, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=data)
    np.save(tmp_path / "labels.npy", np.arange(5) % 8)
    inputs = build_inputs(model, [], tmp_path / "in.npz", tmp_path / "labels.npy")
    assert len(inputs.examples) == 5 and inputs.examples[3][0].shape == (1, 16)
    assert inputs.labels.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(inputs.examples[3][0].reshape(-1), data[3].reshape(-1))
    np.savez(tmp_path / "bad.npz", x=np.zeros((1, 15), np.float32))
    with pytest.raises(AuditorError, match="has shape \\[1, 15\\]; the model takes 1,16"):
        build_inputs(model, [], tmp_path / "bad.npz")
