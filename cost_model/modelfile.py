"""The cost-model file: JSON, never a pickle.

It records what it describes and what it was made from: the device and its CPU, the
training data's fingerprint and source, each variant's compiler version, the feature
version and counter (`features.FEATURE_VERSION`, onnx-tool's version). Loading checks them:
a file of another format version or feature version is refused (AuditorError, one line);
a compiler whose installed version differs from the trained one is flagged per variant.
A pickle (or a torch zip) posing as a model file is refused before any parsing.

`known_failures` (cost_model/known_failures.py) was added without a format bump: it is
optional and additive, so files written before it still load (with no known failures) and
an older auditor reading a newer file ignores it and only loses that flag; it is not
training data, so the fingerprint does not cover it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from cost_model.features import FEATURE_VERSION
from cost_model.grouping import FusionRules
from cost_model.intervals import Calibration
from cost_model.known_failures import KnownFailures
from cost_model.regression import Additive, VariantModel
from ground.errors import AuditorError

FORMAT = "auditor-cost-model"
FORMAT_VERSION = 1
# the Python distribution whose version a compiler's stored compiler_version is
DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "torch-eager": "torch", "torchscript": "torch",
                 "tvm": "apache-tvm", "sofie": "sofie", "litert": "ai-edge-litert",
                 "executorch": "executorch", "iree": "iree-base-runtime"}


@dataclass
class Fitted:
    """One variant's regression plus its calibration sets."""

    model: VariantModel
    compiler: str
    compiler_version: str
    graphs: int
    p50_calibration: Calibration
    p99_calibration: Calibration


@dataclass
class CostModel:
    device: str
    cpu: str
    fingerprint: str
    sources: list[str]
    variants: dict[str, Fitted]
    feature_version: int = FEATURE_VERSION
    counter_version: str = ""
    prior: str = ""  # the model this one was adapted from ("" when fitted from scratch)
    notes: list[str] = field(default_factory=list)
    known_failures: KnownFailures = field(default_factory=KnownFailures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "feature_version": self.feature_version,
            "counter_version": self.counter_version, "device": self.device, "cpu": self.cpu,
            "fingerprint": self.fingerprint, "sources": self.sources, "prior": self.prior, "notes": self.notes,
            "variants": {v: _variant_dict(f) for v, f in sorted(self.variants.items())},
            "known_failures": self.known_failures.to_dict(),
        }

    def version_flags(self) -> dict[str, str]:
        """variant -> one line when the installed compiler differs from the trained one."""
        flags = {}
        for v, f in self.variants.items():
            dist = DISTRIBUTIONS.get(f.compiler)
            if not dist:
                continue
            try:
                installed = metadata.version(dist)
            except metadata.PackageNotFoundError:
                flags[v] = f"{f.compiler} is not installed here (trained on {f.compiler_version})"
                continue
            trained = _version_of(dist, f.compiler_version)
            if trained and installed.split("+")[0] != trained.split("+")[0]:
                flags[v] = f"trained on {f.compiler} {f.compiler_version}, installed {dist} {installed}"
        return flags


def _version_of(dist: str, recorded: str) -> str:
    """The distribution's version in a recorded compiler version: the whole string, or the
    `dist X` part of a compound one (LiteRT records "litert-torch 0.10.0, ai-edge-litert 2.3.0")."""
    for part in recorded.split(","):
        name, _, version = part.strip().rpartition(" ")
        if name == dist:
            return version
    return recorded


def _variant_dict(f: Fitted) -> dict[str, Any]:
    m = f.model
    return {
        "compiler": f.compiler, "compiler_version": f.compiler_version, "graphs": f.graphs,
        "p50": m.p50.to_dict(), "p99": m.p99.to_dict(), "memory": m.memory.to_dict(),
        "kinds": m.kinds, "ranges": m.ranges, "rules": m.rules.to_dict() if m.rules else None,
        "p50_calibration": f.p50_calibration.residuals, "p99_calibration": f.p99_calibration.residuals,
    }


def _variant(name: str, d: dict[str, Any]) -> Fitted:
    model = VariantModel(
        name, Additive.from_dict(d["p50"]), Additive.from_dict(d["p99"]),
        Additive.from_dict(d["memory"]), list(d["kinds"]), {k: list(v) for k, v in d["ranges"].items()},
        FusionRules.from_dict(d["rules"]) if d.get("rules") else None)
    return Fitted(model, d["compiler"], d["compiler_version"], int(d["graphs"]),
                  Calibration([float(r) for r in d["p50_calibration"]]),
                  Calibration([float(r) for r in d["p99_calibration"]]))


def save(model: CostModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model.to_dict(), separators=(",", ":")) + "\n")


def load(path: Path) -> CostModel:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AuditorError(f"{path}: no such cost-model file")
    except OSError as e:
        raise AuditorError(f"{path}: cannot read the cost-model file ({e.strerror})")
    if raw[:1] == b"\x80" or raw[:2] == b"PK":
        raise AuditorError(f"{path}: is a pickle or zip archive, not a cost-model file (the auditor never loads pickles)")
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AuditorError(f"{path}: not a cost-model file (not JSON)")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise AuditorError(f"{path}: not a cost-model file (no '{FORMAT}' format tag)")
    if d.get("format_version") != FORMAT_VERSION:
        raise AuditorError(f"{path}: cost-model file format {d.get('format_version')}, this auditor reads "
                           f"{FORMAT_VERSION}: fit it again with `auditor fit`")
    if d.get("feature_version") != FEATURE_VERSION:
        raise AuditorError(f"{path}: fitted on features version {d.get('feature_version')}, this auditor "
                           f"computes version {FEATURE_VERSION}: fit it again with `auditor fit`")
    try:
        variants = {v: _variant(v, vd) for v, vd in d["variants"].items()}
        return CostModel(d["device"], d["cpu"], d["fingerprint"], list(d["sources"]), variants,
                         d["feature_version"], d.get("counter_version", ""), d.get("prior", ""),
                         list(d.get("notes", [])), KnownFailures.from_dict(d.get("known_failures")))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise AuditorError(f"{path}: a damaged cost-model file ({type(e).__name__}: {e})")
