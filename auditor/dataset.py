"""Measured datasets: build a sweep into the store, move it between machines as Parquet.

`build` exports each point once (optionally several ahead, in parallel processes) and
measures its compiler variants one at a time through the same isolated workers as
compile-all, with resume always on: after any interruption the next build picks up
where it stopped, and nothing stored is redone or duplicated.

The portable file holds one row per run: point, family and parameters, compiler, version
and options, device facts, status (a mismatch is kept, flagged), statistics, raw samples,
per-op rows with the ONNX nodes they cover, and the point's graph (node table, no weights).
"""

from __future__ import annotations

import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ground.children import dies_with_me
from ground.errors import AuditorError, first_line
from ground.probe import QUIET_MIN
from auditor.measure_worker import MeasurePool
from auditor.measure_worker import prepare_point as _prepare_point
from auditor.pipeline import AuditSettings, audit_variants, resolve_device, resume_key
from store import Measurement, ModelRecord, NodeRecord, RunRecord, Store, encode
from auditor.sweeps import Sweep
from compilers.registry import Variant

# A row is usable to fit a cost model only when measured natively and correct.
TRAINING_STATUS = "ok"


def _record_point(store: Store, dataset: str, spec: str, model_hash: str | None, status: str, reason: str = ""):
    from auditor import zoo

    fam, params = zoo.parse_spec(spec)
    store.record_dataset_point(dataset, spec, fam.name, params, model_hash, status, reason)


def build(sweep: Sweep, store: Store, variants: list[Variant], settings: AuditSettings, jobs: int = 1,
          progress=None, command: str = "auditor dataset build", resolved=None,
          worker: str = "long-lived") -> dict[str, int]:
    """Measure every point of the sweep; returns counts of points by final state.
    worker: long-lived (one auditor.measure_worker per compiler, artifacts cached) or
    per-run (a fresh auditor.worker process per run, as compile-all)."""
    settings.resume = True
    resolved = resolved or resolve_device(settings)  # once, and a bad device fails before any export
    counts = {"measured": 0, "failed": 0}
    measure = MeasurePool(store.dir, settings.cpu) if worker == "long-lived" else None
    settings.artifact_cache = measure is not None
    pool = ProcessPoolExecutor(max_workers=jobs - 1, mp_context=get_context("spawn"),
                               initializer=dies_with_me()) if jobs > 1 else None
    ahead: dict[str, Any] = {}
    try:
        if pool is not None:
            for nxt in sweep.points[:jobs]:
                ahead[nxt] = pool.submit(_prepare_point, nxt, str(store.dir))
        if measure is not None:  # every compiler's worker starts while the first points export
            measure.warm([v.compiler for v in variants])
        for index, spec in enumerate(sweep.points):
            if pool is not None:  # keep jobs-1 exports running ahead of the measurement
                for nxt in sweep.points[index: index + jobs]:
                    if nxt not in ahead:
                        ahead[nxt] = pool.submit(_prepare_point, nxt, str(store.dir))
                prepared = ahead.pop(spec).result()
            else:
                prepared = _prepare_point(spec, str(store.dir))
            if isinstance(prepared, str):
                _record_point(store, sweep.name, spec, None, "failed", prepared)
                counts["failed"] += 1
            else:
                _record_point(store, sweep.name, spec, prepared.bundle.model_hash, "measuring")
                audit_variants(prepared, variants, settings, store, command,
                               (lambda label, phase: progress(spec, label, phase)) if progress else None,
                               resolved, measure.run if measure else None)
                _record_point(store, sweep.name, spec, prepared.bundle.model_hash, "measured")
                counts["measured"] += 1
            if progress:
                progress(spec, None, "point done")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if measure is not None:
            measure.close()
    return counts


# -- export / import -------------------------------------------------------------------

RUN_COLUMNS = (
    "run_id", "model_hash", "compiler", "variant", "compiler_version", "options", "target", "device",
    "emulated", "host", "settings", "status", "reason", "started_at", "finished_at", "compile_s",
    "load_s", "first_us", "n", "mean_us", "p50_us", "p95_us", "p99_us", "max_us", "min_us", "std_us",
    "jitter_us", "cov", "stopped_early", "rss_avg_bytes", "rss_peak_bytes", "ru_maxrss_bytes",
    "budget_us", "over_budget_share", "headroom_p99_us", "headroom_max_us", "verdict",
    "accuracy_passed", "task_accuracy", "kernel_map", "artifact_notes", "inputs_digest", "audit_id",
)
OP_COLUMNS = ("idx", "kernel", "op_type", "onnx_nodes", "calls", "mean_us", "p50_us", "std_us", "provider",
              "share", "method")
ATTRIBUTION_COLUMNS = ("method", "runs", "per_op_sum_us", "instrumented_whole_us", "uninstrumented_whole_us",
                       "overhead_ratio", "sum_to_whole", "notes", "per_op_sum_p50_us")
NODE_COLUMNS = ("node_index", "name", "op_type", "domain", "inputs", "outputs", "input_shapes",
                "output_shapes", "attrs", "fx_node")
MODEL_COLUMNS = ("source", "format", "inputs", "outputs", "files", "problems", "state")
# the top-level columns dataset_rows writes (nested ones: the *_COLUMNS above)
FILE_COLUMNS = ("dataset", "spec", "family", "params", *RUN_COLUMNS, "model", "samples_ns", "accuracy",
                "attribution", "per_op", "graph")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise AuditorError("dataset export/import needs pyarrow (pip install pyarrow; `make deps` installs it)")
    return pyarrow


def dataset_rows(store: Store, dataset: str) -> list[dict]:
    points = store.dataset_points(dataset)
    if not points and dataset not in store.dataset_names():
        raise AuditorError(f"no dataset {dataset!r} in {store.path}")
    rows = []
    for point in points:
        model = store.model_record(point.model_hash)
        graph = [_stored(n, NODE_COLUMNS) for n in store.nodes(point.model_hash)]
        runs, repeats = _split_repeats(store.run_records(model_hash=point.model_hash, finished=True))
        for run in runs:
            attribution = store.attribution_of(run.run_id)
            rows.append({
                "dataset": dataset, "spec": point.spec, "family": point.family,
                "params": encode(point.params), **run.to_row(RUN_COLUMNS),
                **_conditions_and_spread(run, repeats),
                "model": json.dumps(_stored(model, MODEL_COLUMNS)) if model else None,
                "samples_ns": store.samples_ns(run.run_id),
                "accuracy": json.dumps(store.accuracy_rows(run.run_id), default=str),
                "attribution": json.dumps({k: attribution[k] for k in ATTRIBUTION_COLUMNS}) if attribution else None,
                "per_op": [_stored(o, OP_COLUMNS) for o in store.op_timings(run.run_id)],
                "graph": graph,
            })
    return rows


def _stored(record, columns: tuple[str, ...]) -> dict:
    """The record's columns as the file holds them: lists and dicts as JSON text."""
    return {k: encode(v) if isinstance(v, (list, dict)) else v for k, v in
            ((k, getattr(record, k)) for k in columns)}


def _split_repeats(runs: list[RunRecord]) -> tuple[list[RunRecord], dict[tuple, list[RunRecord]]]:
    """Main runs, and repeat runs (settings.repeat > 0: measured again for the spread) by
    (variant, device, target)."""
    main, repeats = [], {}
    for run in runs:
        if run.settings.get("repeat"):
            repeats.setdefault(_repeat_key(run), []).append(run)
        else:
            main.append(run)
    return main, repeats


def _repeat_key(run: RunRecord) -> tuple:
    return run.variant, run.device, run.target.get("name")


def _conditions_and_spread(run: RunRecord, repeats: dict[tuple, list[RunRecord]]) -> dict:
    """Extra columns (absent from files of older builds): the timed window's conditions
    (JSON), the p50 of the run and of its ok repeats, and their spread (max - min) / median;
    for a gated run (auditor.timing), the uncontended samples' p50, p99 and count, and the
    same p50s and spread over those samples."""
    conditions = run.settings.get("conditions")
    runs = [r for r in [run, *repeats.get(_repeat_key(run), [])] if r.status == "ok"] if run.status == "ok" else []
    p50s = [r.p50_us for r in runs if r.p50_us is not None]
    quiet = [(r.settings.get("conditions") or {}).get("quiet") or {} for r in runs]
    quiet_p50s = [q["p50_us"] for q in quiet if q.get("n", 0) >= QUIET_MIN]
    mine = ((conditions or {}).get("quiet") or {})
    return {"conditions": json.dumps(conditions) if conditions else None,
            "under_load": (conditions or {}).get("under_load"),
            "repeat_p50_us": p50s if len(p50s) >= 2 else None, "spread": _spread(p50s),
            "quiet_n": mine.get("n"), "quiet_p50_us": mine.get("p50_us"), "quiet_p99_us": mine.get("p99_us"),
            "repeat_quiet_p50_us": quiet_p50s if len(quiet_p50s) >= 2 else None,
            "quiet_spread": _spread(quiet_p50s)}


def _spread(values: list[float]) -> float | None:
    """(max - min) / median of two or more values, else None."""
    if len(values) < 2:
        return None
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid else None


def export_parquet(store: Store, dataset: str, path: Path) -> int:
    pa = _pyarrow()
    rows = dataset_rows(store, dataset)
    table = pa.Table.from_pylist(rows)
    pa.parquet.write_table(table, str(path), compression="zstd")
    return len(rows)


def import_parquet(store: Store, path: Path) -> dict[str, int]:
    """Merge a dataset file into the store; rows already present (same run id) are skipped."""
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
        raise AuditorError(f"{path}: not a readable dataset file ({first_line(e)})")
    missing = [c for c in FILE_COLUMNS if c not in table.column_names]
    if missing:
        raise AuditorError(f"{path}: not an auditor dataset file (no column {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}; `auditor dataset export` writes them)")
    rows = table.to_pylist()
    try:
        return _import_rows(store, rows)
    except (KeyError, TypeError, ValueError) as e:  # nested fields of another shape; nothing was written
        raise AuditorError(f"{path}: not an auditor dataset file ({type(e).__name__}: {first_line(e)})")


def _resume_key_of(run: RunRecord) -> str | None:
    """The key a build's resume check looks runs up by, from what the run stored (the file
    does not carry it): an imported run then counts as done for a build on the same spec,
    as it did where it was measured. None for a run that stored no harness or target."""
    s = run.settings
    if "harness" not in s or "target" not in s:
        return None
    defaults = AuditSettings()
    settings = AuditSettings(atol=s.get("atol", defaults.atol), rtol=s.get("rtol", defaults.rtol),
                             budget_us=s.get("budget_us", defaults.budget_us), repeat=s.get("repeat", 0))
    return resume_key(run.options, s["harness"], s["target"], settings, s.get("stream_state"))


def _import_rows(store: Store, rows: list[dict]) -> dict[str, int]:
    added = skipped = 0
    with store.transaction():
        for row in rows:
            if store.has_run(row["run_id"]):
                skipped += 1
                continue
            added += 1
            rid = row["run_id"]
            record = RunRecord.from_row(row)
            record.options_key = _resume_key_of(record)
            store.add_run_record(record, (*RUN_COLUMNS, "options_key"))
            # the run's columns came with it; its rows are a measurement of it
            store.record_measurement(rid, Measurement(
                samples_ns=row["samples_ns"], accuracy=json.loads(row["accuracy"] or "[]"),
                attribution=json.loads(row["attribution"]) if row["attribution"] else None,
                ops=[{**op, "onnx_nodes": json.loads(op["onnx_nodes"])} for op in row["per_op"]]))
            if row["model"]:
                # files exported before the state column have no "state"
                model = {k: v for k, v in json.loads(row["model"]).items() if k in MODEL_COLUMNS}
                store.add_model_record(ModelRecord.from_row({"model_hash": row["model_hash"], **model}),
                                       [NodeRecord.from_row(n) for n in row["graph"]])
            else:
                store.add_nodes(row["model_hash"], [NodeRecord.from_row(n) for n in row["graph"]])
            store.record_dataset_point(row["dataset"], row["spec"], row["family"], json.loads(row["params"]),
                                       row["model_hash"], "measured", keep_existing=True)
    return {"added": added, "skipped": skipped}


def info(store: Store, dataset: str | None = None) -> dict:
    """Points by family, runs by family x variant x device and state, failures with reasons."""
    datasets = store.dataset_names()
    if dataset and dataset not in datasets:
        raise AuditorError(f"no dataset {dataset!r} in {store.path} (datasets: {', '.join(datasets) or 'none'})")
    counts = store.dataset_counts(dataset)
    return {
        "datasets": datasets,
        "points": [{"family": f, "status": s, "count": c} for f, s, c in counts["points"]],
        "runs": [{"family": f, "variant": v, "device": d, "emulated": bool(e), "repeat": bool(rep), "status": s,
                  "count": c} for f, v, d, e, rep, s, c in counts["runs"]],
        "run_problems": [{"variant": v, "status": s, "reason": r, "count": c} for v, s, r, c in counts["run_problems"]],
        "point_failures": [{"spec": s, "reason": r} for s, r in counts["point_failures"]],
    }
