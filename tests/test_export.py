"""The canonical ONNX graph: exported once, and every node's torch origin named as in model.pt2."""

import onnx
import torch

from auditor.pipeline import ModelRequest, prepare
from store import Store
from ground.fx_nodes import fx_node_map, fx_node_of


def test_fx_origins_use_the_saved_programs_names(tmp_path):
    # The exporter decomposes first (unflatten -> view) and its names drift from model.pt2's;
    # the canonical graph must carry model.pt2's names, which torch-side compilers see.
    prepared = prepare(ModelRequest("zoo:transformer"), Store(tmp_path))
    model = onnx.load(str(prepared.bundle.path("onnx")))
    ep = torch.export.load(str(prepared.bundle.path("torch-export")))
    pt2 = {n.name: str(n.target) for n in ep.graph.nodes}
    fx = fx_node_map(model)
    assert fx and set(fx) <= set(pt2)
    assert fx["view"] == ["node_view_1"]  # the exporter calls it view_1
    assert "aten.view" in pt2["view"]
    attributed = [n for n in model.graph.node if fx_node_of(n)]
    assert len(attributed) >= len(model.graph.node) - 4


def test_bundle_is_exported_once(tmp_path):
    store = Store(tmp_path)
    first = prepare(ModelRequest("examples/blocks.py:mlp"), store)
    stamp = first.bundle.path("onnx").stat().st_mtime_ns
    second = prepare(ModelRequest("examples/blocks.py:mlp"), store)
    assert second.bundle.directory == first.bundle.directory
    assert second.bundle.path("onnx").stat().st_mtime_ns == stamp
    names = [n.name for n in onnx.load(str(first.bundle.path("onnx"))).graph.node]
    assert len(names) == len(set(names)) and all(names)
