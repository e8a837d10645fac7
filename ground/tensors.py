"""Tensor specs and the model bundle: the interchange files every compiler reads from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32"
    # a Python number argument of a torch model (forward(x, sr: int)): torch gets a Python
    # int/float, an ONNX graph a 0-d tensor (or the exporter made it a constant)
    scalar: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        return {**d, "scalar": True} if self.scalar else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(int(s) for s in d["shape"]), d["dtype"], bool(d.get("scalar", False)))


@dataclass
class ModelBundle:
    """The interchange files of one model, written once by `auditor.export`.

    Every compiler reads from here. `files` maps a format to its file name:
    "onnx" is the canonical graph (simplified, shape-inferred, every node uniquely named;
    per-op rows refer to these node names), "torch-export" a static torch.export program,
    "torchscript" the user's TorchScript archive, "tflite" the user's TFLite flatbuffer.
    `problems` says why a format is missing. `converted` labels each format that is not the
    user's graph but a converter's product (e.g. "onnx2torch 1.5.15 from ONNX, max err vs
    ONNX reference 2e-05"): a run compiled from it is measured on the converted graph.
    `state` says whether the model keeps state between calls (auditor.state.detect).
    """

    model_hash: str
    directory: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)

    META = "bundle.json"

    def formats(self) -> set[str]:
        return set(self.files)

    def pick(self, accepts: tuple[str, ...]) -> str | None:
        """The format a compiler taking `accepts` (in its order of preference) compiles
        from: the user's own graph before any converted one; None when it has neither."""
        present = [f for f in accepts if f in self.files]
        return next((f for f in present if f not in self.converted), present[0] if present else None)

    def path(self, fmt: str) -> Path:
        return self.directory / self.files[fmt]

    def save(self) -> None:
        meta = {
            "model_hash": self.model_hash,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "files": self.files,
            "problems": self.problems,
            "state": self.state,
            "converted": self.converted,
        }
        (self.directory / self.META).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        meta = json.loads((directory / cls.META).read_text())
        return cls(
            model_hash=meta["model_hash"],
            directory=directory,
            inputs=[TensorSpec.from_dict(d) for d in meta["inputs"]],
            outputs=[TensorSpec.from_dict(d) for d in meta["outputs"]],
            files=meta["files"],
            problems=meta["problems"],
            state=meta.get("state", {}),
            converted=meta.get("converted", {}),
        )
