"""Training records from dataset rows (a Parquet dataset file or the store's
`dataset_rows`, both in the dataset format described in datasets/README.md).

One `Graph` per distinct model hash (its node table and family) and one `Measured` per
usable run: status `ok`, not emulated, with timing samples. Nothing here reads a file
format: callers hand over rows as dicts, so a Parquet file and the store feed the same code.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ground.errors import AuditorError
from ground.probe import QUIET_MIN

# columns the cost model reads (a Parquet reader can ask for only these)
COLUMNS = ("family", "spec", "model_hash", "compiler", "variant", "compiler_version", "device",
           "emulated", "host", "status", "n", "p50_us", "p99_us", "rss_peak_bytes", "kernel_map",
           "model", "samples_ns", "graph", "conditions", "repeat_p50_us", "quiet_n", "quiet_p50_us", "quiet_p99_us",
           "repeat_quiet_p50_us")


def _loads(value: Any, default: Any = None) -> Any:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class Graph:
    model_hash: str
    family: str
    spec: str
    nodes: list[dict[str, Any]]  # node table rows, JSON fields decoded
    inputs: list[str]  # the graph's real input names


@dataclass
class Measured:
    model_hash: str
    variant: str
    compiler: str
    compiler_version: str
    device: str
    cpu: str
    # the median of the run's and its repeats' p50 when it was repeated; of a gated run
    # (auditor.timing), over its uncontended samples only (and theirs)
    p50_us: float
    p99_us: float
    # the larger of: the relative half-width of the p50's 95% order-statistic interval (how
    # far it could move within the process) and, for a repeated point, the farthest repeat's
    # distance from p50_us (how far it moved in fresh processes)
    p50_spread: float
    p99_spread: float  # the same for p99
    rss_peak_bytes: float | None
    kernel_map: dict[str, list[str]] = field(default_factory=dict)
    repeats: tuple[float, ...] = ()  # p50 of the run and of its fresh-process repeats (>= 2), else ()


def quantile_spread(samples_ns: list[int], q: float) -> float:
    """Relative half-width of the distribution-free 95% interval of the q-quantile from its
    order statistics (ranks n*q +- 1.96*sqrt(n*q*(1-q))): how far the measured quantile
    itself could move if the run were repeated."""
    if not samples_ns:
        return 0.0
    s = np.sort(np.asarray(samples_ns, dtype=np.float64))
    n = len(s)
    half = 1.96 * math.sqrt(n * q * (1 - q))
    lo = s[max(0, int(math.floor(n * q - half)) - 1)]
    hi = s[min(n - 1, int(math.ceil(n * q + half)) - 1)]
    mid = float(np.quantile(s, q))
    return float(max(mid - lo, hi - mid) / mid) if mid > 0 else 0.0


def _node(row: dict[str, Any]) -> dict[str, Any]:
    return {"index": row.get("node_index", row.get("index")), "name": row["name"], "op_type": row["op_type"],
            "domain": row.get("domain") or "ai.onnx", "inputs": _loads(row["inputs"], []),
            "outputs": _loads(row["outputs"], []), "input_shapes": _loads(row["input_shapes"], []),
            "output_shapes": _loads(row["output_shapes"], []), "attrs": _loads(row["attrs"], {})}


def read_rows(rows: list[dict[str, Any]]) -> tuple[dict[str, Graph], list[Measured]]:
    """(graphs by model hash, usable measurements). Rows that are not ok, emulated or
    without samples are left out (they are not training data)."""
    graphs: dict[str, Graph] = {}
    measured: list[Measured] = []
    for r in rows:
        if r.get("status") != "ok" or r.get("emulated") or not r.get("graph") or not r.get("p50_us"):
            continue
        h = r["model_hash"]
        if h not in graphs:
            model = _loads(r.get("model"), {}) or {}
            inputs = [i["name"] for i in _loads(model.get("inputs"), [])]
            graphs[h] = Graph(h, r.get("family") or "?", r.get("spec") or "", [_node(n) for n in r["graph"]], inputs)
        host = _loads(r.get("host"), {}) or {}
        samples = list(r.get("samples_ns") or [])
        p50, p99 = float(r["p50_us"]), float(r["p99_us"] or r["p50_us"])
        repeats = [float(x) for x in (r.get("repeat_p50_us") or []) if x]
        # a gated run is labelled by its uncontended samples; one contended nearly throughout
        # (fewer than QUIET_MIN) by all its samples, as an ungated run is (NaN compares False)
        if (r.get("quiet_n") or 0) >= QUIET_MIN:
            p50, p99 = float(r["quiet_p50_us"]), float(r["quiet_p99_us"])
            samples = _quiet_samples(r, samples)
            repeats = [float(x) for x in (r.get("repeat_quiet_p50_us") or []) if x]
        p50_spread = quantile_spread(samples, 0.5)
        if len(repeats) >= 2:  # measured again in fresh processes: the median is the label,
            mid = float(np.median(repeats))  # and the whole distribution moves with it
            p99 *= mid / p50
            p50 = mid
            p50_spread = max(p50_spread, max(abs(x - p50) for x in repeats) / p50)
        rss = r.get("rss_peak_bytes")
        measured.append(Measured(
            model_hash=h, variant=r["variant"], compiler=r["compiler"],
            compiler_version=r.get("compiler_version") or "", device=r.get("device") or "local",
            cpu=host.get("cpu_model") or host.get("model_name") or host.get("cpu") or "",
            p50_us=p50, p99_us=p99,
            p50_spread=p50_spread, p99_spread=quantile_spread(samples, 0.99),
            rss_peak_bytes=float(rss) if rss and not math.isnan(rss) else None,
            kernel_map=_loads(r.get("kernel_map"), {}) or {},
            repeats=tuple(repeats) if len(repeats) >= 2 else ()))
    return graphs, measured


def _quiet_samples(row: dict[str, Any], samples: list[int]) -> list[int]:
    """The uncontended samples of a gated run (its conditions' quiet ranges)."""
    quiet = (_loads(row.get("conditions"), {}) or {}).get("quiet") or {}
    return [x for a, b in quiet.get("quiet_ranges", []) for x in samples[a:b]]


def read_parquet(paths: list[str]) -> list[dict[str, Any]]:
    """Rows of one or more dataset files (only the columns the cost model reads)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise AuditorError("reading a dataset file needs pyarrow (pip install pyarrow; `make deps` installs it)")
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            schema = pq.read_schema(str(path))
            table = pq.read_table(str(path), columns=[c for c in COLUMNS if c in schema.names])
        except FileNotFoundError:
            raise AuditorError(f"{path}: no such file")
        except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
            raise AuditorError(f"{path}: not a readable dataset file ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        missing = {"model_hash", "variant", "p50_us", "graph"} - set(schema.names)
        if missing:
            raise AuditorError(f"{path}: not a dataset file (no {', '.join(sorted(missing))} column)")
        rows += table.to_pylist()
    return rows


def fingerprint(measured: list[Measured]) -> str:
    """A digest of exactly what a model was trained on (graphs, variants, measured figures)."""
    h = hashlib.sha256()
    for m in sorted(measured, key=lambda m: (m.model_hash, m.variant)):
        h.update(f"{m.model_hash}|{m.variant}|{m.device}|{m.p50_us:.3f}|{m.p99_us:.3f}\n".encode())
    return h.hexdigest()[:16]
