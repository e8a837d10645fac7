import json
import random

import numpy as np
import onnxruntime as ort
import pytest

from auditor import zoo
from auditor.errors import AuditorError
from auditor.export import prepare_bundle, reference_outputs
from auditor.inputs import build_inputs
from auditor.loaders import load_model


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


def test_streaming_recurrent_carries_state():
    model = load_model("zoo:recurrent:cell=lstm,streaming=true,hidden=16")
    assert [i.shape for i in model.inputs] == [(1, 1, 8), (1, 1, 16), (1, 1, 16)]
    out = reference_outputs(model, [np.ones((1, 1, 8), np.float32), np.zeros((1, 1, 16), np.float32),
                                    np.zeros((1, 1, 16), np.float32)])
    assert [o.shape for o in out] == [(1, 1, 16), (1, 1, 16), (1, 1, 16)]  # output, h, c


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
            fam.resolve({k: p.sample(rng) for k, p in fam.params.items()})  # raises if out of range


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
