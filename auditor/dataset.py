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
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ground.children import dies_with_me
from ground.errors import AuditorError, first_line
from auditor.measure_worker import MeasurePool
from auditor.measure_worker import prepare_point as _prepare_point
from auditor.pipeline import AuditSettings, audit_variants, resolve_device
from auditor.store import Store
from auditor.sweeps import Sweep
from compilers.registry import Variant

POINT_TABLE = """
CREATE TABLE IF NOT EXISTS dataset_points (
    dataset TEXT, spec TEXT, family TEXT, params TEXT, model_hash TEXT, status TEXT, reason TEXT,
    updated_at REAL, PRIMARY KEY (dataset, spec));
"""

# A row is usable to fit a cost model only when measured natively and correct.
TRAINING_STATUS = "ok"


def _ensure_table(store: Store) -> None:
    store.db.executescript(POINT_TABLE)


def _record_point(store: Store, dataset: str, spec: str, model_hash: str | None, status: str, reason: str = ""):
    from auditor import zoo

    fam, params = zoo.parse_spec(spec)
    store.db.execute(
        "INSERT INTO dataset_points VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (dataset, spec) DO UPDATE SET "
        "model_hash=COALESCE(excluded.model_hash, model_hash), status=excluded.status, "
        "reason=excluded.reason, updated_at=excluded.updated_at",
        (dataset, spec, fam.name, json.dumps(params, sort_keys=True), model_hash, status, reason, time.time()))


def build(sweep: Sweep, store: Store, variants: list[Variant], settings: AuditSettings, jobs: int = 1,
          progress=None, command: str = "auditor dataset build", resolved=None,
          worker: str = "long-lived") -> dict[str, int]:
    """Measure every point of the sweep; returns counts of points by final state.
    worker: long-lived (one auditor.measure_worker per compiler, artifacts cached) or
    per-run (a fresh auditor.worker process per run, as compile-all)."""
    _ensure_table(store)
    settings.resume = True
    resolved = resolved or resolve_device(settings)  # once, and a bad device fails before any export
    counts = {"measured": 0, "failed": 0}
    measure = MeasurePool(store.dir, settings.cpu) if worker == "long-lived" else None
    settings.artifact_cache = measure is not None
    pool = ProcessPoolExecutor(max_workers=jobs - 1, mp_context=get_context("spawn"),
                               initializer=dies_with_me()) if jobs > 1 else None
    ahead: dict[str, Any] = {}
    try:
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
    _ensure_table(store)
    points = store.db.execute("SELECT * FROM dataset_points WHERE dataset=? AND model_hash IS NOT NULL",
                              (dataset,)).fetchall()
    if not points and not store.db.execute("SELECT 1 FROM dataset_points WHERE dataset=?", (dataset,)).fetchone():
        raise AuditorError(f"no dataset {dataset!r} in {store.path}")
    rows = []
    for point in points:
        model = store.model(point["model_hash"])
        nodes = store.db.execute("SELECT * FROM onnx_nodes WHERE model_hash=? ORDER BY node_index",
                                 (point["model_hash"],)).fetchall()
        runs = store.db.execute("SELECT * FROM runs WHERE model_hash=? AND status NOT IN ('pending','running')",
                                (point["model_hash"],)).fetchall()
        runs, repeats = _split_repeats(runs)
        for run in runs:
            rid = run["run_id"]
            attribution = store.attribution(rid)
            rows.append({
                "dataset": dataset, "spec": point["spec"], "family": point["family"], "params": point["params"],
                **{k: run[k] for k in RUN_COLUMNS},
                **_conditions_and_spread(run, repeats),
                "model": json.dumps({k: model[k] for k in MODEL_COLUMNS}) if model else None,
                "samples_ns": [r["latency_ns"] for r in store.rows("samples", rid)],
                "accuracy": json.dumps([dict(r) for r in store.rows("accuracy", rid)], default=str),
                "attribution": json.dumps({k: attribution[k] for k in ATTRIBUTION_COLUMNS}) if attribution else None,
                "per_op": [{k: r[k] for k in OP_COLUMNS} for r in store.rows("op_timings", rid)],
                "graph": [{k: n[k] for k in NODE_COLUMNS} for n in nodes],
            })
    return rows


def _split_repeats(runs: list) -> tuple[list, dict[tuple, list]]:
    """Main runs, and repeat runs (settings.repeat > 0: measured again for the spread) by
    (variant, device, target)."""
    main, repeats = [], {}
    for run in runs:
        if json.loads(run["settings"] or "{}").get("repeat"):
            repeats.setdefault((run["variant"], run["device"], run["target"]), []).append(run)
        else:
            main.append(run)
    return main, repeats


def _conditions_and_spread(run, repeats: dict[tuple, list]) -> dict:
    """Extra columns (absent from files of older builds): the timed window's conditions
    (JSON), the p50 of the run and of its ok repeats, and their spread (max - min) / median."""
    settings = json.loads(run["settings"] or "{}")
    p50s = [r["p50_us"] for r in [run, *repeats.get((run["variant"], run["device"], run["target"]), [])]
            if r["status"] == "ok" and r["p50_us"] is not None] if run["status"] == "ok" else []
    spread = None
    if len(p50s) >= 2:
        ordered = sorted(p50s)
        mid = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
        spread = (ordered[-1] - ordered[0]) / mid if mid else None
    return {"conditions": json.dumps(settings.get("conditions")) if settings.get("conditions") else None,
            "under_load": (settings.get("conditions") or {}).get("under_load"),
            "repeat_p50_us": p50s if len(p50s) >= 2 else None, "spread": spread}


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
    _ensure_table(store)
    try:
        return _import_rows(store, rows)
    except (KeyError, TypeError, ValueError) as e:  # nested fields of another shape; nothing was written
        raise AuditorError(f"{path}: not an auditor dataset file ({type(e).__name__}: {first_line(e)})")


def _import_rows(store: Store, rows: list[dict]) -> dict[str, int]:
    added = skipped = 0
    with store.db:
        store.db.execute("BEGIN")
        for row in rows:
            if store.db.execute("SELECT 1 FROM runs WHERE run_id=?", (row["run_id"],)).fetchone():
                skipped += 1
                continue
            added += 1
            cols = ", ".join(RUN_COLUMNS)
            store.db.execute(f"INSERT INTO runs ({cols}) VALUES ({','.join('?' * len(RUN_COLUMNS))})",
                             [row[k] for k in RUN_COLUMNS])
            rid = row["run_id"]
            store.db.executemany("INSERT OR IGNORE INTO samples VALUES (?,?,?)",
                                 [(rid, i, v) for i, v in enumerate(row["samples_ns"])])
            for a in json.loads(row["accuracy"] or "[]"):
                store.db.execute("INSERT OR IGNORE INTO accuracy VALUES (?,?,?,?,?,?,?)",
                                 (rid, a["output"], a["passed"], a["max_abs_err"], a["rmse"], a["snr_db"], a["reason"]))
            if row["attribution"]:
                a = json.loads(row["attribution"])
                store.db.execute("INSERT OR IGNORE INTO op_attribution VALUES (?,?,?,?,?,?,?,?,?,?)",
                                 (rid, *[a[k] for k in ATTRIBUTION_COLUMNS]))
            store.db.executemany(
                f"INSERT OR IGNORE INTO op_timings VALUES (?,{','.join('?' * len(OP_COLUMNS))})",
                [(rid, *[op[k] for k in OP_COLUMNS]) for op in row["per_op"]])
            if row["model"]:
                m = json.loads(row["model"])
                store.db.execute(f"INSERT OR IGNORE INTO models (model_hash, {', '.join(MODEL_COLUMNS)}, "
                                 f"created_at) VALUES ({','.join('?' * (len(MODEL_COLUMNS) + 2))})",
                                 # files exported before the state column have no "state"
                                 (row["model_hash"], *[m.get(k) for k in MODEL_COLUMNS], time.time()))
            store.db.executemany(
                f"INSERT OR IGNORE INTO onnx_nodes VALUES (?,{','.join('?' * len(NODE_COLUMNS))})",
                [(row["model_hash"], *[n[k] for k in NODE_COLUMNS]) for n in row["graph"]])
            store.db.execute("INSERT OR IGNORE INTO dataset_points VALUES (?,?,?,?,?,?,?,?)",
                             (row["dataset"], row["spec"], row["family"], row["params"], row["model_hash"],
                              "measured", "", time.time()))
    return {"added": added, "skipped": skipped}


def info(store: Store, dataset: str | None = None) -> dict:
    """Points by family, runs by family x variant x device and state, failures with reasons."""
    _ensure_table(store)
    datasets = [r[0] for r in store.db.execute("SELECT DISTINCT dataset FROM dataset_points")]
    if dataset and dataset not in datasets:
        raise AuditorError(f"no dataset {dataset!r} in {store.path} (datasets: {', '.join(datasets) or 'none'})")
    args = (dataset,) if dataset else ()

    def where(*conditions: str) -> str:
        conditions += ("p.dataset = ?",) if dataset else ()
        return "WHERE " + " AND ".join(conditions) if conditions else ""

    joined = "FROM dataset_points p JOIN runs r ON r.model_hash = p.model_hash"
    points = store.db.execute(
        f"SELECT p.family, p.status, COUNT(*) FROM dataset_points p {where()} GROUP BY 1, 2", args).fetchall()
    runs = store.db.execute(
        f"SELECT p.family, r.variant, r.device, r.emulated, r.status, COUNT(*) {joined} {where()} "
        "GROUP BY 1, 2, 3, 4, 5", args).fetchall()
    not_ok, failed = where("r.status != 'ok'"), where("p.status = 'failed'")
    reasons = store.db.execute(
        f"SELECT r.variant, r.status, r.reason, COUNT(*) {joined} {not_ok} GROUP BY 1, 2, 3 ORDER BY 4 DESC",
        args).fetchall()
    point_failures = store.db.execute(f"SELECT p.spec, p.reason FROM dataset_points p {failed}", args).fetchall()
    return {
        "datasets": datasets,
        "points": [{"family": f, "status": s, "count": c} for f, s, c in points],
        "runs": [{"family": f, "variant": v, "device": d, "emulated": bool(e), "status": s, "count": c}
                 for f, v, d, e, s, c in runs],
        "run_problems": [{"variant": v, "status": s, "reason": r, "count": c} for v, s, r, c in reasons],
        "point_failures": [{"spec": s, "reason": r} for s, r in point_failures],
    }
