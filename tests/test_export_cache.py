"""The ONNX exporter's op registry is built once per process (auditor.export): the graphs
it exports are the same as with a registry built afresh for each export."""

from __future__ import annotations

import torch

from auditor import export


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
        self.norm = torch.nn.LayerNorm(4)

    def forward(self, x):
        return torch.nn.functional.gelu(self.norm(self.fc(x))).softmax(-1)


def _onnx_bytes(tmp_path, name: str) -> bytes:
    torch.manual_seed(0)
    module = _Block().eval()
    args = (torch.randn(2, 8),)
    ep = torch.export.export(module, args)
    program = torch.onnx.export(ep, args, str(tmp_path / f"{name}.onnx"), dynamo=True, external_data=False,
                                opset_version=export.OPSET, verbose=False)
    return program.model_proto.SerializeToString()


def test_exports_with_the_registry_built_once_equal_fresh_ones(tmp_path, monkeypatch):
    from torch.onnx._internal.exporter import _registration

    fresh = _onnx_bytes(tmp_path, "fresh")
    builds = []
    original = _registration.ONNXRegistry.__dict__["from_torchlib"]
    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib",
                        classmethod(lambda cls, *a, **k: builds.append(1) or original.__func__(cls, *a, **k)))
    export._TORCHLIB_REGISTRIES.clear()
    with export._torchlib_registry_built_once():
        first = _onnx_bytes(tmp_path, "first")
        second = _onnx_bytes(tmp_path, "second")
    assert first == fresh and second == fresh
    assert len(builds) == 1  # built for the first export, copied for the second
    _onnx_bytes(tmp_path, "after")  # the patch is lifted afterwards: each export builds its own again
    assert len(builds) == 2
