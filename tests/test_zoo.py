import json
import random

import numpy as np
import onnxruntime as ort
import pytest

from auditor import zoo
from auditor.export import prepare_bundle, reference_outputs
from auditor.inputs import build_inputs
from auditor.loaders import load_model
from ground.errors import AuditorError


@pytest.mark.parametrize("family", sorted(zoo.FAMILIES))
def test_default_instance_exports_and_onnxruntime_matches_torch(family, tmp_path):
    spec = zoo.spec_string(family, zoo.FAMILIES[family].resolve({}))
    model = load_model(spec)
    inputs = build_inputs(model, [])
    bundle = prepare_bundle(model, inputs, tmp_path)
    assert {"onnx", "torch-export"} <= bundle.formats(), bundle.problems
    session = ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])
    feed = {s.name: a for s, a in zip(bundle.inputs, inputs.timing_inputs)}
    got = session.run(None, feed)
    want = reference_outputs(model, inputs.timing_inputs)
    assert len(got) == len(want) == len(bundle.outputs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)


def test_streaming_recurrent_carries_state(tmp_path):
    """Frame by frame with the state fed back, the streaming cell (torch, and its exported ONNX
    under ORT) gives what the LSTM gives over the whole sequence; from a zero state it does not."""
    import torch

    model = load_model("zoo:recurrent:cell=lstm,streaming=true,hidden=16")
    assert [i.shape for i in model.inputs] == [(1, 1, 8), (1, 1, 16), (1, 1, 16)]
    inputs = build_inputs(model, [])
    bundle = prepare_bundle(model, inputs, tmp_path)
    session = ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(5).standard_normal((4, 1, 1, 8)).astype(np.float32)
    zero = np.zeros((1, 1, 16), np.float32)
    h = c = oh = oc = zero
    eager, onnx_steps = [], []
    for frame in frames:
        out, h, c = reference_outputs(model, [frame, h, c])
        assert [a.shape for a in (out, h, c)] == [(1, 1, 16)] * 3  # output, h, c
        o, oh, oc = session.run(None, {s.name: a for s, a in zip(bundle.inputs, (frame, oh, oc))})
        eager.append(out)
        onnx_steps.append(o)
    with torch.no_grad():
        whole, _ = model.module.rnn(torch.from_numpy(np.concatenate(frames, axis=1)))
    want = whole.numpy()
    np.testing.assert_allclose(np.concatenate(eager, axis=1), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(onnx_steps, axis=1), want, rtol=1e-4, atol=1e-5)
    # the state matters: the last frame alone, from a zero state, is another output
    alone = reference_outputs(model, [frames[-1], zero, zero])[0]
    assert np.abs(alone - eager[-1]).max() > 1e-3


def test_sparsity_zeroes_the_asked_share():
    structured = load_model("zoo:linear:in_features=256,out_features=256,sparsity=0.5,sparsity_structure=structured")
    w = structured.module.fc.weight.detach().numpy()
    zero_rows = np.all(w == 0, axis=1).mean()
    assert 0.4 < zero_rows < 0.6
    unstructured = load_model("zoo:linear:in_features=256,out_features=256,sparsity=0.3")
    assert 0.25 < (unstructured.module.fc.weight.detach().numpy() == 0).mean() < 0.35


def test_spec_identity_and_errors():
    fam, params = zoo.parse_spec("zoo:mlp:depth=3,activation=gelu")
    assert params["depth"] == 3 and params["width"] == 64
    assert zoo.parse_spec(zoo.spec_string("mlp", params))[1] == params
    assert zoo.identity("mlp", params) != zoo.identity("mlp", {**params, "depth": 2})
    with pytest.raises(AuditorError, match="no zoo family 'nope'"):
        zoo.parse_spec("zoo:nope")
    with pytest.raises(AuditorError, match="has no parameter 'colour'"):
        zoo.parse_spec("zoo:mlp:colour=red")
    with pytest.raises(AuditorError, match="outside 1..8"):
        zoo.parse_spec("zoo:mlp:depth=99")
    with pytest.raises(AuditorError, match="not one of"):
        zoo.parse_spec("zoo:mlp:activation=swish")


def test_random_samples_stay_in_range():
    rng = random.Random(3)
    for fam in zoo.FAMILIES.values():
        for _ in range(20):
            drawn = {k: p.sample(rng) for k, p in fam.params.items()}
            resolved = fam.resolve(drawn)  # raises if out of range
            assert {k: resolved[k] for k in drawn} == drawn
            spec = zoo.spec_string(fam.name, resolved)  # and names the same instance back
            back = zoo.parse_spec(spec)
            assert back[0].name == fam.name and back[1] == resolved
    # a drawn value outside its range would be refused, so the check above can fail
    with pytest.raises(AuditorError, match="outside"):
        zoo.FAMILIES["mlp"].resolve({"depth": 99})


def test_zoo_export_cli(tmp_path, cli):
    proc = cli("zoo", "export", "mdn", "-p", "mixtures=3", "-o", tmp_path, check=True)
    meta = json.loads(next(tmp_path.glob("mdn-*.json")).read_text())
    assert meta["params"]["mixtures"] == 3 and len(meta["outputs"]) == 4
    assert len(list(tmp_path.glob("mdn-*.pt2"))) == 1 and len(list(tmp_path.glob("mdn-*.onnx"))) == 1
    assert "zoo:mdn:" in proc.stdout
    listed = json.loads(cli("zoo", "list", "--json", "-o", tmp_path / "none", check=True).stdout)
    assert {f["family"] for f in listed} == set(zoo.FAMILIES)
    bad = cli("zoo", "export", "mdn", "-p", "mixtures=0", "-o", tmp_path)
    assert bad.returncode == 2 and "outside 1..32" in bad.stderr


def test_the_activations_a_spec_may_choose_are_the_ones_the_builders_have():
    """auditor.zoo names them without importing torch; the builders map each to its module."""
    from auditor import zoo
    from auditor.zoo import families

    assert zoo.ACT == tuple(families.ACTIVATIONS)
    assert zoo.OPS == families.OPS
    assert zoo.LAYERS == families.LAYERS


@pytest.mark.parametrize("op,onnx_op", [("conv", "Conv"), ("conv_transpose", "ConvTranspose"), ("lstm", "LSTM")])
def test_each_layer_exports_as_its_one_heavy_node(op, onnx_op, tmp_path):
    """The layer family is kernel-level data: one heavy ONNX node (gemm's is the default
    instance above), whatever glue the exporter adds around a recurrent cell."""
    import onnx

    model = load_model(f"zoo:layer:op={op},rows=32,inputs=8,outputs=16,kernel=5,stride=2,groups=2")
    bundle = prepare_bundle(model, build_inputs(model, []), tmp_path)
    heavy = [n.op_type for n in onnx.load(str(bundle.path("onnx"))).graph.node
             if n.op_type in ("Gemm", "MatMul", "Conv", "ConvTranspose", "GRU", "LSTM")]
    assert heavy == [onnx_op]
    with pytest.raises(AuditorError, match="groups=4 must divide inputs=6"):
        load_model("zoo:layer:op=conv,inputs=6,outputs=16,groups=4")
