"""Typed records of the store: rows with their JSON columns decoded once, here.

Plain dataclasses (numbers, strings, dicts, lists): summaries, pages, dataset files, the
cost model and reports read these instead of rows and json.loads of their own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def encode(value: Any) -> str:
    """A JSON column's stored text (keys sorted: equal values store equal text)."""
    return json.dumps(value, sort_keys=True, default=str)


def _decode(text: str | None, empty: Any) -> Any:
    return json.loads(text) if text else empty


class _ReadsLikeARow:
    """record["field"] reads the field: pages and templates index runs and models the way
    they indexed database rows."""

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def keys(self) -> list[str]:  # dict(record) as dict(row)
        return [f.name for f in fields(self)]


@dataclass
class RunRecord(_ReadsLikeARow):
    """One row of `runs`; options, target, host, settings, runtime_memory, kernel_map and
    artifact_notes decoded (an empty column reads as {} or [], kernel_map as None)."""
    run_id: str
    audit_id: str | None = None
    model_hash: str | None = None
    inputs_digest: str | None = None
    compiler: str | None = None
    variant: str | None = None
    compiler_version: str | None = None
    options: dict = field(default_factory=dict)
    options_key: str | None = None
    target: dict = field(default_factory=dict)
    device: str | None = None
    emulated: bool = False
    host: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    status: str | None = None
    reason: str | None = None
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    artifact_dir: str | None = None
    compile_s: float | None = None
    load_s: float | None = None
    first_us: float | None = None
    n: int | None = None
    mean_us: float | None = None
    p50_us: float | None = None
    p95_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    min_us: float | None = None
    std_us: float | None = None
    jitter_us: float | None = None
    cov: float | None = None
    stopped_early: int | None = None
    rss_avg_bytes: float | None = None
    rss_peak_bytes: float | None = None
    rss_samples: int | None = None
    ru_maxrss_bytes: float | None = None
    runtime_memory: dict = field(default_factory=dict)
    budget_us: float | None = None
    over_budget_share: float | None = None
    headroom_p99_us: float | None = None
    headroom_max_us: float | None = None
    verdict: str | None = None
    accuracy_passed: int | None = None
    task_accuracy: float | None = None
    kernel_map: dict | None = None
    artifact_notes: list = field(default_factory=list)
    converted: str | None = None

    JSON_OBJECTS = ("options", "target", "host", "settings", "runtime_memory")

    @classmethod
    def from_row(cls, row) -> RunRecord:
        """From a stored row (a mapping of column -> stored value; columns not named stay empty)."""
        values = {f.name: row[f.name] for f in fields(cls) if f.name in row.keys()}
        for name in cls.JSON_OBJECTS:
            values[name] = _decode(values.get(name), {})
        values["kernel_map"] = _decode(values.get("kernel_map"), None)
        values["artifact_notes"] = _decode(values.get("artifact_notes"), [])
        values["emulated"] = bool(values.get("emulated"))
        return cls(**values)

    def to_row(self, columns: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Column -> stored value (JSON columns encoded), for `columns` or every column."""
        out = {}
        for name in columns or [f.name for f in fields(self)]:
            value = getattr(self, name)
            if name in self.JSON_OBJECTS or name in ("kernel_map", "artifact_notes"):
                value = None if value is None else encode(value)
            elif name == "emulated":
                value = int(value)
            out[name] = value
        return out


@dataclass
class ModelRecord(_ReadsLikeARow):
    """One row of `models`, its JSON columns decoded (state: {} when not recorded)."""
    model_hash: str
    source: str | None = None
    format: str | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    bundle_dir: str | None = None
    created_at: float | None = None
    state: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row) -> ModelRecord:
        values = dict(row)
        for name, empty in (("inputs", []), ("outputs", []), ("files", {}), ("problems", []), ("state", {})):
            values[name] = _decode(values.get(name), empty)
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})


@dataclass
class NodeRecord:
    """One ONNX node of a model's canonical graph (`onnx_nodes`), its lists and attributes decoded."""
    node_index: int
    name: str
    op_type: str
    domain: str | None
    inputs: list
    outputs: list
    input_shapes: list
    output_shapes: list
    attrs: dict
    fx_node: str | None

    @classmethod
    def from_row(cls, row) -> NodeRecord:
        return cls(row["node_index"], row["name"], row["op_type"], row["domain"],
                   *(_decode(row[k], []) for k in ("inputs", "outputs", "input_shapes", "output_shapes")),
                   _decode(row["attrs"], {}), row["fx_node"])


@dataclass
class OpTiming:
    """One per-op row of a run (`op_timings`), the ONNX nodes it covers decoded."""
    run_id: str
    idx: int
    kernel: str
    op_type: str | None
    onnx_nodes: list[str]
    calls: int | None
    mean_us: float | None
    p50_us: float | None
    std_us: float | None
    provider: str | None
    share: float | None
    method: str | None

    @classmethod
    def from_row(cls, row) -> OpTiming:
        return cls(**{**{f.name: row[f.name] for f in fields(cls)}, "onnx_nodes": _decode(row["onnx_nodes"], [])})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DatasetPoint:
    """One point of a measured dataset (`dataset_points`), its parameters decoded."""
    dataset: str
    spec: str
    family: str
    params: dict
    model_hash: str | None
    status: str
    reason: str
    updated_at: float | None

    @classmethod
    def from_row(cls, row) -> DatasetPoint:
        return cls(**{**{f.name: row[f.name] for f in fields(cls)}, "params": _decode(row["params"], {})})


@dataclass
class CoverageCase:
    """One operator-coverage verdict (`coverage`), its operator types decoded."""
    compiler: str
    variant: str
    suite: str
    case_name: str
    op_types: list[str]
    status: str
    reason: str
    seconds: float | None
    compiler_version: str | None
    updated_at: float | None

    @classmethod
    def from_row(cls, row) -> CoverageCase:
        return cls(**{**{f.name: row[f.name] for f in fields(cls)}, "op_types": _decode(row["op_types"], [])})


@dataclass
class Measurement:
    """What a harness (the Python loop or the native runner) measured of one run, stored by
    Store.record_measurement in one transaction. A part left None was not measured (yet): a
    harness records its timing as soon as it has it, then the output check, then the per-op
    profile, so a crash later keeps what was measured before it."""
    # latency: the raw samples, their statistics (timing.latency_stats) and the deadline audit
    samples_ns: list[int] | None = None
    first_us: float | None = None
    stopped_early: bool | None = None
    stats: dict | None = None
    deadline: dict | None = None
    timing_loop: str | None = None  # what was timed (kept in the run's settings)
    conditions: dict | None = None  # what else ran meanwhile, pinning, load (kept in the settings)
    worker: dict | None = None  # which worker process measured it (kept in the settings)
    # memory: the RSS trace as (ms, bytes), its summary (rss_* and ru_maxrss_bytes columns),
    # what the runtime reports of itself
    memory_samples: list[tuple[float, int]] | None = None
    memory: dict | None = None
    runtime_memory: dict | None = None
    # outputs against the reference: one row per output (accuracy.compare_*)
    accuracy: list[dict] | None = None
    accuracy_passed: bool | None = None
    task_accuracy: float | None = None
    # per-op profile: how it was attributed and one row per kernel
    attribution: dict | None = None
    ops: list[dict] | None = None

    def run_columns(self) -> dict[str, Any]:
        """The runs columns this measurement sets."""
        columns: dict[str, Any] = {**(self.stats or {}), **(self.memory or {}), **(self.deadline or {})}
        for name in ("first_us", "runtime_memory", "task_accuracy"):
            if getattr(self, name) is not None:
                columns[name] = getattr(self, name)
        for name in ("stopped_early", "accuracy_passed"):
            if getattr(self, name) is not None:
                columns[name] = int(getattr(self, name))
        return columns
