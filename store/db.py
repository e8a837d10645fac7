"""The results store: one SQLite file per results directory, rows written as they exist.

WAL mode lets the orchestrator and a compiler's worker process write the same file; a
killed process loses nothing it had committed. Runs left `running` by a dead process are
marked `interrupted` (kept, never deleted) the next time the store is opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ground.errors import AuditorError, first_line
from ground.rt_safety import RtSafety
from store.migrate import open_schema
from store.records import (CoverageCase, DatasetPoint, Measurement, ModelRecord, NodeRecord, OpTiming,
                           RunRecord, encode)
from store.schema import DONE_STATES, RUN_SUMMARY_FIELDS, SCHEMA_VERSION


class Store:
    FILE = "results.sqlite"

    def __init__(self, results_dir: Path):
        # absolute: every run, model and profile path derives from it and is handed to
        # children that run in directories of their own
        self.dir = Path(results_dir).expanduser().absolute()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise AuditorError(f"results directory {self.dir} is not writable ({e.strerror or first_line(e)})")
        self.path = self.dir / self.FILE
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise AuditorError(f"{self.path}: not a usable results store ({first_line(e)})")
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # the version the store was found at (None: created now), before its migration
            self.found_version = open_schema(self.db, self.path)
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise AuditorError(f"{self.path}: not a usable results store ({first_line(e)})")
        except AuditorError:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    # -- writing -----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything written inside is committed together or not at all; inside another
        transaction it is part of that one."""
        if self.db.in_transaction:
            yield
            return
        with self.db:
            self.db.execute("BEGIN")
            yield

    def _tx(self, sql: str, rows: Iterable[tuple]) -> None:
        with self.transaction():
            self.db.executemany(sql, rows)

    def add_model(self, bundle, source: str, fmt: str, nodes: list[dict]) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO models VALUES (?,?,?,?,?,?,?,?,?,?)",
                (bundle.model_hash, source, fmt, encode([s.to_dict() for s in bundle.inputs]),
                 encode([s.to_dict() for s in bundle.outputs]), encode(bundle.files),
                 encode(bundle.problems), str(bundle.directory), time.time(), encode(bundle.state)),
            )
            self.db.execute("UPDATE models SET state=? WHERE model_hash=?",
                            (encode(bundle.state), bundle.model_hash))
            self.db.executemany(
                "INSERT OR IGNORE INTO onnx_nodes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(bundle.model_hash, n["index"], n["name"], n["op_type"], n["domain"],
                  encode(n["inputs"]), encode(n["outputs"]), encode(n["input_shapes"]),
                  encode(n["output_shapes"]), encode(n["attrs"]), n["fx_node"]) for n in nodes],
            )

    def new_audit(self, model_hash: str, command: str, settings: dict) -> str:
        audit_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.db.execute("INSERT INTO audits VALUES (?,?,?,?,?)",
                        (audit_id, model_hash, command, encode(settings), time.time()))
        return audit_id

    def new_run(self, *, audit_id: str, model_hash: str, inputs_digest: str, compiler: str,
                variant: str, options: dict, options_key: str, target: dict, device: str,
                emulated: bool, host: dict, settings: dict) -> str:
        """A pending run; its files go in <results>/runs/<run_id>/ (see run_dir)."""
        run_id = uuid.uuid4().hex[:12]
        self.db.execute(
            "INSERT INTO runs (run_id, audit_id, model_hash, inputs_digest, compiler, variant, "
            "options, options_key, target, device, emulated, host, settings, status, started_at, "
            "artifact_dir) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',?,?)",
            (run_id, audit_id, model_hash, inputs_digest, compiler, variant, encode(options),
             options_key, encode(target), device, int(emulated), encode(host), encode(settings),
             time.time(), str(self.run_dir(run_id))),
        )
        return run_id

    def run_dir(self, run_id: str) -> Path:
        return self.dir / "runs" / run_id

    def set_status(self, run_id: str, status: str, reason: str = "", pid: int | None = None) -> None:
        finished = time.time() if status not in ("pending", "running") else None
        self.db.execute(
            "UPDATE runs SET status=?, reason=?, pid=COALESCE(?, pid), finished_at=? WHERE run_id=?",
            (status, reason, pid, finished, run_id),
        )

    def update_run(self, run_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(RUN_SUMMARY_FIELDS)
        if unknown:
            raise ValueError(f"not run summary fields: {sorted(unknown)}")
        values = [(encode(v) if isinstance(v, (dict, list)) else v) for v in fields.values()]
        assignments = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE runs SET {assignments} WHERE run_id=?", (*values, run_id))

    # -- the real-time safety audit (runs.rt_safety: one JSON object per run) ---------------

    def set_rt_safety(self, run_id: str, result: RtSafety | None, failure: str | None = None) -> None:
        """The run's real-time audit, or why it has none (written by the worker)."""
        record = result.to_dict() if result is not None else {"failure": failure or "no result"}
        self.db.execute("UPDATE runs SET rt_safety=? WHERE run_id=?", (encode(record), run_id))

    def rt_safety(self, run_id: str) -> tuple[RtSafety | None, str | None]:
        """(the typed audit, None), (None, why it failed), or (None, None) when none was asked."""
        row = self.db.execute("SELECT rt_safety FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None or not row[0]:
            return None, None
        record = json.loads(row[0])
        if "failure" in record:
            return None, record["failure"]
        return RtSafety.from_dict(record), None

    def add_samples(self, run_id: str, samples_ns) -> None:
        self._tx("INSERT OR REPLACE INTO samples VALUES (?,?,?)",
                 ((run_id, i, int(v)) for i, v in enumerate(samples_ns)))

    def add_memory_samples(self, run_id: str, samples: list[tuple[float, int]]) -> None:
        self._tx("INSERT OR REPLACE INTO memory_samples VALUES (?,?,?,?)",
                 ((run_id, i, t, b) for i, (t, b) in enumerate(samples)))

    def add_accuracy(self, run_id: str, rows: list[dict]) -> None:
        self._tx("INSERT OR REPLACE INTO accuracy VALUES (?,?,?,?,?,?,?)",
                 ((run_id, r["output"], int(r["passed"]), r["max_abs_err"], r["rmse"],
                   r["snr_db"], r.get("reason", "")) for r in rows))

    def add_op_profile(self, run_id: str, attribution: dict | None, ops: list[dict]) -> None:
        """A run's per-op rows and how they were attributed (an op's own "method", when it
        has one, wins over the attribution's)."""
        with self.transaction():
            if attribution is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO op_attribution VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (run_id, attribution["method"], attribution["runs"], attribution["per_op_sum_us"],
                     attribution["instrumented_whole_us"], attribution["uninstrumented_whole_us"],
                     attribution["overhead_ratio"], attribution["sum_to_whole"], attribution["notes"],
                     attribution["per_op_sum_p50_us"]),
                )
            self.db.executemany(
                "INSERT OR REPLACE INTO op_timings VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, i, o["kernel"], o["op_type"], encode(o["onnx_nodes"]), o["calls"],
                  o["mean_us"], o["p50_us"], o["std_us"], o["provider"], o["share"],
                  o.get("method") or attribution["method"]) for i, o in enumerate(ops)],
            )

    def record_measurement(self, run_id: str, m: Measurement) -> None:
        """Everything a harness measured of a run (the parts it has), in one transaction."""
        with self.transaction():
            if m.samples_ns is not None:
                self.add_samples(run_id, m.samples_ns)
            if m.memory_samples is not None:
                self.add_memory_samples(run_id, m.memory_samples)
            if m.accuracy is not None:
                self.add_accuracy(run_id, m.accuracy)
            if m.ops is not None:
                self.add_op_profile(run_id, m.attribution, m.ops)
            columns = m.run_columns()
            kept = {name: getattr(m, name) for name in ("timing_loop", "conditions", "worker")
                    if getattr(m, name) is not None}
            if kept:
                columns["settings"] = {**RunRecord.from_row(self.run(run_id)).settings, **kept}
            if columns:
                self.update_run(run_id, **columns)

    def add_profile(self, profile: dict, *, model_hash: str, compiler: str, device: str,
                    run_id: str | None = None, svg_path: str | None = None) -> str:
        """One perf profile (device_runner.profile.Profile.to_dict()) and its per-function,
        per-thread and per-kernel rows; its id. Folded stacks are kept zlib-compressed. Times
        are not stored: samples x profiles.ms_per_sample gives them (see profile())."""
        profile_id = uuid.uuid4().hex[:12]
        folded = "".join(f"{stack} {n}\n" for stack, n in sorted(profile["folded"].items()))
        with self.transaction():
            self.db.execute(
                "INSERT INTO profiles VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (profile_id, run_id, model_hash, compiler, device, profile["event"], profile["frequency"],
                 profile["samples"], profile["ms_per_sample"], time.time(), encode(profile["capture"]),
                 encode(profile["notes"]), zlib.compress(folded.encode()), svg_path),
            )
            self.db.executemany(
                "INSERT INTO profile_functions VALUES (?,?,?,?,?,?,?,?)",
                [(profile_id, i, f["function"], f["dso"], f["self_samples"], f["total_samples"], f["kernel"],
                  encode(f["onnx_nodes"])) for i, f in enumerate(profile["functions"])],
            )
            self.db.executemany(
                "INSERT INTO profile_threads VALUES (?,?,?,?,?,?)",
                [(profile_id, i, t["comm"], t["tid"], t["samples"], t["top_function"])
                 for i, t in enumerate(profile["threads"])],
            )
            self.db.executemany(
                "INSERT INTO profile_kernels VALUES (?,?,?,?,?,?,?)",
                [(profile_id, i, k["name"], k["kind"], k["samples"], encode(k["symbols"]), encode(k["onnx_nodes"]))
                 for i, k in enumerate(profile["kernels"])],
            )
        return profile_id

    def has_run(self, run_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is not None

    def add_run_record(self, record: RunRecord, columns: tuple[str, ...]) -> None:
        """A run made elsewhere (a dataset file), with the given columns of it."""
        row = record.to_row(columns)
        self.db.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({','.join('?' * len(row))})",
                        list(row.values()))

    def add_model_record(self, model: ModelRecord, nodes: list[NodeRecord]) -> None:
        """A model and its graph made elsewhere (a dataset file); one already stored is kept."""
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO models (model_hash, source, format, inputs, outputs, files, problems, "
                "state, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (model.model_hash, model.source, model.format, encode(model.inputs), encode(model.outputs),
                 encode(model.files), encode(model.problems), encode(model.state),
                 time.time()))
            self.add_nodes(model.model_hash, nodes)

    def add_nodes(self, model_hash: str, nodes: list[NodeRecord]) -> None:
        self._tx("INSERT OR IGNORE INTO onnx_nodes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                 [(model_hash, n.node_index, n.name, n.op_type, n.domain, encode(n.inputs), encode(n.outputs),
                   encode(n.input_shapes), encode(n.output_shapes), encode(n.attrs), n.fx_node) for n in nodes])

    # -- operator coverage (auditor/coverage.py) ------------------------------------------

    def record_coverage(self, *, compiler: str, variant: str, suite: str, case_name: str, op_types: list[str],
                        status: str, reason: str, seconds: float, compiler_version: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO coverage VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (compiler, variant, suite, case_name, encode(op_types), status, reason, seconds,
                         compiler_version, time.time()))

    def finish_running_coverage(self, variant: str, status: str, reason: str) -> None:
        """The variant's case left `running` (its worker died on it) gets its final status."""
        self.db.execute("UPDATE coverage SET status=?, reason=?, updated_at=? WHERE variant=? AND status='running'",
                        (status, reason, time.time(), variant))

    def coverage_cases_done(self, variant: str) -> set[str]:
        """'suite/case' of every case the variant has a verdict on."""
        return {r[0] for r in self.db.execute(
            "SELECT suite || '/' || case_name FROM coverage WHERE variant=? AND status != 'running'", (variant,))}

    def coverage_running_case(self, variant: str) -> CoverageCase | None:
        row = self.db.execute("SELECT * FROM coverage WHERE variant=? AND status='running'", (variant,)).fetchone()
        return CoverageCase.from_row(row) if row else None

    def coverage_cases(self) -> list[CoverageCase]:
        return [CoverageCase.from_row(r) for r in self.db.execute("SELECT * FROM coverage")]

    def coverage_verdict_counts(self, suite: str = "node") -> list[tuple[str, list[str], str, int]]:
        """(variant, op types, status, cases) over one suite's verdicts, grouped in SQL:
        `predict` reads this on every call, and a full coverage run holds thousands of cases."""
        return [(r[0], json.loads(r[1] or "[]"), r[2], r[3]) for r in self.db.execute(
            "SELECT variant, op_types, status, COUNT(*) FROM coverage WHERE suite=? "
            "GROUP BY variant, op_types, status", (suite,))]

    def coverage_failures(self, variant: str, limit: int = 200) -> list[tuple[str, str, str, str]]:
        """(suite, case, status, reason) of the variant's cases that did not match, by name."""
        return [tuple(r) for r in self.db.execute(
            "SELECT suite, case_name, status, reason FROM coverage WHERE variant=? AND status != 'matched' "
            "ORDER BY suite, case_name LIMIT ?", (variant, limit))]

    # -- measured datasets (auditor/dataset.py) -------------------------------------------

    def record_dataset_point(self, dataset: str, spec: str, family: str, params: dict, model_hash: str | None,
                             status: str, reason: str = "", keep_existing: bool = False) -> None:
        """A point's state (a model hash once known is kept); keep_existing: only when the
        dataset has no such point yet."""
        conflict = "NOTHING" if keep_existing else (
            "UPDATE SET model_hash=COALESCE(excluded.model_hash, model_hash), status=excluded.status, "
            "reason=excluded.reason, updated_at=excluded.updated_at")
        self.db.execute(f"INSERT INTO dataset_points VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (dataset, spec) DO {conflict}",
                        (dataset, spec, family, encode(params), model_hash, status, reason, time.time()))

    def dataset_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT dataset FROM dataset_points ORDER BY dataset")]

    def dataset_points(self, dataset: str) -> list[DatasetPoint]:
        """The dataset's points that have a model (exported)."""
        return [DatasetPoint.from_row(r) for r in self.db.execute(
            "SELECT * FROM dataset_points WHERE dataset=? AND model_hash IS NOT NULL", (dataset,))]

    def dataset_counts(self, dataset: str | None = None) -> dict[str, list[tuple]]:
        """Counts over one dataset (None: all): 'points' (family, status, n), 'runs' (family,
        variant, device, emulated, repeat, status, n; repeat 1: a spread repeat, settings.repeat
        > 0), 'run_problems' (variant, status, reason, n; most frequent first), 'point_failures'
        (spec, reason)."""
        args = (dataset,) if dataset else ()

        def where(*conditions: str) -> str:
            conditions += ("p.dataset = ?",) if dataset else ()
            return "WHERE " + " AND ".join(conditions) if conditions else ""

        joined = "FROM dataset_points p JOIN runs r ON r.model_hash = p.model_hash"
        not_ok, failed = where("r.status != 'ok'"), where("p.status = 'failed'")
        queries = {
            "points": f"SELECT p.family, p.status, COUNT(*) FROM dataset_points p {where()} GROUP BY 1, 2",
            "runs": f"SELECT p.family, r.variant, r.device, r.emulated, "
                    f"COALESCE(json_extract(r.settings, '$.repeat'), 0) > 0, r.status, COUNT(*) {joined} {where()} "
                    "GROUP BY 1, 2, 3, 4, 5, 6",
            "run_problems": f"SELECT r.variant, r.status, r.reason, COUNT(*) {joined} {not_ok} "
                            "GROUP BY 1, 2, 3 ORDER BY 4 DESC",
            "point_failures": f"SELECT p.spec, p.reason FROM dataset_points p {failed}",
        }
        return {name: [tuple(r) for r in self.db.execute(sql, args)] for name, sql in queries.items()}

    # -- runs ----------------------------------------------------------------------------

    def mark_dead_runs_interrupted(self) -> int:
        """Runs left pending/running by a process that no longer exists."""
        stale = self.db.execute(
            "SELECT run_id, pid FROM runs WHERE status IN ('pending', 'running')").fetchall()
        count = 0
        for row in stale:
            if row["pid"] is None or not _alive(row["pid"]):
                self.set_status(row["run_id"], "interrupted", "the auditing process stopped mid-run")
                count += 1
        return count

    # -- reading -----------------------------------------------------------------------

    def completed_run(self, model_hash: str, inputs_digest: str, compiler: str,
                      options_key: str, device: str) -> sqlite3.Row | None:
        marks = ",".join("?" * len(DONE_STATES))
        return self.db.execute(
            f"SELECT * FROM runs WHERE model_hash=? AND inputs_digest=? AND compiler=? AND "
            f"options_key=? AND device=? AND status IN ({marks}) ORDER BY finished_at DESC LIMIT 1",
            (model_hash, inputs_digest, compiler, options_key, device, *DONE_STATES),
        ).fetchone()

    def run_record(self, run_id: str) -> RunRecord:
        """The run (an id or a unique prefix of one), its JSON columns decoded."""
        return RunRecord.from_row(self.run(run_id))

    def run_records(self, limit: int | None = None, *, model_hash: str | None = None,
                    finished: bool = False) -> list[RunRecord]:
        """Runs, newest first: all, or a model's; finished: not pending or running."""
        return list(self.iter_run_records(limit, model_hash=model_hash, finished=finished))

    def iter_run_records(self, limit: int | None = None, *, model_hash: str | None = None, finished: bool = False,
                         status: str | None = None, device: str | None = None,
                         compiler: str | None = None) -> Iterator[RunRecord]:
        """Runs, newest first, decoded one at a time as the caller takes them (a caller that
        stops after 200 of 2,000 runs decodes 200). compiler matches the compiler or the variant."""
        clauses: list[tuple[str, tuple]] = []
        if model_hash is not None:
            clauses.append(("model_hash=?", (model_hash,)))
        if finished:
            clauses.append(("status NOT IN ('pending', 'running')", ()))
        if status is not None:
            clauses.append(("status=?", (status,)))
        if device is not None:
            clauses.append(("device=?", (device,)))
        if compiler is not None:
            clauses.append(("(compiler=? OR variant=?)", (compiler, compiler)))
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(w for w, _ in clauses) if clauses else "")
        sql += " ORDER BY started_at DESC" + (f" LIMIT {int(limit)}" if limit else "")
        for row in self.db.execute(sql, [v for _, vs in clauses for v in vs]):
            yield RunRecord.from_row(row)

    def run_ids_of(self, model_hash: str, variant: str, device: str) -> list[str]:
        """Every run of one model, compiler variant and device."""
        return [r[0] for r in self.db.execute("SELECT run_id FROM runs WHERE model_hash=? AND variant=? AND device=?",
                                              (model_hash, variant, device))]

    def latest_status_by_variant(self, source: str) -> dict[str, str]:
        """variant -> status of its newest run of the models loaded from `source`."""
        rows = self.db.execute(
            "SELECT r.variant, r.status FROM runs r JOIN models m ON m.model_hash = r.model_hash "
            "WHERE m.source = ? ORDER BY r.started_at", (source,))
        return {variant: status for variant, status in rows}

    def samples_ns(self, run_id: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT latency_ns FROM samples WHERE run_id=? ORDER BY idx", (run_id,))]

    def memory_samples(self, run_id: str) -> list[tuple[float, int]]:
        """(ms since the timing started, RSS bytes) of the run's memory trace."""
        return [(t, b) for t, b in self.db.execute(
            "SELECT t_ms, rss_bytes FROM memory_samples WHERE run_id=? ORDER BY idx", (run_id,))]

    def accuracy_rows(self, run_id: str) -> list[dict]:
        """Per output: passed, max_abs_err, rmse, snr_db, reason (and run_id, output)."""
        return [dict(r) for r in self.rows("accuracy", run_id)]

    def op_timings(self, run_id: str) -> list[OpTiming]:
        return [OpTiming.from_row(r) for r in self.rows("op_timings", run_id)]

    def attribution_of(self, run_id: str) -> dict | None:
        """How the run's per-op rows were attributed (op_attribution's columns but run_id)."""
        row = self.attribution(run_id)
        return {k: row[k] for k in row.keys() if k != "run_id"} if row else None

    def run(self, run_id: str) -> sqlite3.Row:
        rows = self.db.execute("SELECT * FROM runs WHERE run_id LIKE ?", (run_id + "%",)).fetchall()
        if not rows:
            raise AuditorError(f"no run {run_id!r} in {self.path}")
        if len(rows) > 1:
            raise AuditorError(f"run id {run_id!r} is ambiguous ({len(rows)} runs start with it)")
        return rows[0]

    def runs(self, limit: int | None = None) -> list[sqlite3.Row]:
        sql = "SELECT * FROM runs ORDER BY started_at DESC"
        return self.db.execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()

    def rows(self, table: str, run_id: str) -> list[sqlite3.Row]:
        order = {"accuracy": "output"}.get(table, "idx")
        return self.db.execute(f"SELECT * FROM {table} WHERE run_id=? ORDER BY {order}", (run_id,)).fetchall()

    def attribution(self, run_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM op_attribution WHERE run_id=?", (run_id,)).fetchone()

    def profile(self, profile_id: str) -> dict:
        """A stored profile (an id or a unique prefix of one) in the shape add_profile took,
        plus its ids, svg_path and, on every row, share of all samples and ms."""
        rows = self.db.execute("SELECT * FROM profiles WHERE profile_id LIKE ?", (profile_id + "%",)).fetchall()
        if not rows:
            raise AuditorError(f"no profile {profile_id!r} in {self.path}")
        if len(rows) > 1:
            raise AuditorError(f"profile id {profile_id!r} is ambiguous ({len(rows)} profiles start with it)")
        head = dict(rows[0])
        pid, total, ms = head["profile_id"], head["samples"] or 0, head["ms_per_sample"] or 0.0

        def table(name: str) -> list[dict]:
            return [dict(r) for r in self.db.execute(
                f"SELECT * FROM {name} WHERE profile_id=? ORDER BY idx", (pid,)).fetchall()]

        def share(n: int) -> float:
            return n / total if total else 0.0

        functions = [dict(f, onnx_nodes=json.loads(f["onnx_nodes"]), self_share=share(f["self_samples"]),
                          total_share=share(f["total_samples"]), self_ms=f["self_samples"] * ms,
                          total_ms=f["total_samples"] * ms) for f in table("profile_functions")]
        threads = [dict(t, thread=f"{t['comm']}-{t['tid']}", share=share(t["samples"]), ms=t["samples"] * ms)
                   for t in table("profile_threads")]
        kernels = [dict(k, symbols=json.loads(k["symbols"]), onnx_nodes=json.loads(k["onnx_nodes"]),
                        share=share(k["samples"]), ms=k["samples"] * ms) for k in table("profile_kernels")]
        folded: dict[str, int] = {}
        for line in zlib.decompress(head.pop("folded")).decode().splitlines():
            stack, _, n = line.rpartition(" ")
            folded[stack] = int(n)
        return dict(head, capture=json.loads(head["capture"]), notes=json.loads(head["notes"]), folded=folded,
                    functions=functions, threads=threads, kernels=kernels)

    def model_record(self, model_hash: str) -> ModelRecord | None:
        row = self.model(model_hash)
        return ModelRecord.from_row(row) if row else None

    def nodes(self, model_hash: str) -> list[NodeRecord]:
        """The model's canonical ONNX graph, node by node in graph order."""
        return [NodeRecord.from_row(r) for r in self.db.execute(
            "SELECT * FROM onnx_nodes WHERE model_hash=? ORDER BY node_index", (model_hash,))]

    def profiles_of(self, model_hash: str, variant: str, device: str) -> list[tuple[str, str | None]]:
        """(profile_id, flamegraph SVG path) of one model, compiler variant and device, oldest first."""
        return [tuple(r) for r in self.db.execute(
            "SELECT profile_id, svg_path FROM profiles WHERE model_hash=? AND compiler=? AND device=? "
            "ORDER BY created_at", (model_hash, variant, device))]

    def model(self, model_hash: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM models WHERE model_hash=?", (model_hash,)).fetchone()

    def model_state(self, model_hash: str) -> dict:
        """auditor.state.detect's finding for the model ({} when not recorded)."""
        row = self.db.execute("SELECT state FROM models WHERE model_hash=?", (model_hash,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    # -- the cost model's forecast of a measured run (compile-all checks the model on every audit)

    PREDICTION_FIELDS = ("model_file", "cpu", "p50_us", "p50_lo", "p50_hi", "p99_us", "p99_lo", "p99_hi",
                         "low_confidence", "flags")

    def record_prediction(self, run_id: str, prediction: dict) -> None:
        """What the cost model predicted for a run, kept beside what was measured."""
        values = [prediction.get(k) for k in self.PREDICTION_FIELDS]
        values[-2] = int(bool(values[-2]))
        values[-1] = encode(values[-1] or [])
        self.db.execute("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (run_id, *values, time.time()))

    def prediction(self, run_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM predictions WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return None
        out = {k: row[k] for k in self.PREDICTION_FIELDS}
        out["low_confidence"], out["flags"] = bool(out["low_confidence"]), json.loads(out["flags"] or "[]")
        return out

    # -- reads for reports and serve ----------------------------------------------------

    @classmethod
    def read_only(cls, results_dir: Path) -> Store:
        """An existing store opened read-only, usable from any thread (serve): nothing can
        be written through it, and a store of another schema version is refused."""
        store = cls.__new__(cls)
        store.dir = Path(results_dir).expanduser().absolute()
        store.path = store.dir / cls.FILE
        if not store.path.exists():
            raise AuditorError(f"no results store in {store.dir} (run `auditor compile-all` first)")
        try:
            store.db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, check_same_thread=False)
            store.db.row_factory = sqlite3.Row
            row = store.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise AuditorError(f"{store.path}: not a usable results store ({first_line(e)})")
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise AuditorError(f"{store.path} has schema version {row[0] if row else None}; this auditor reads "
                               f"{SCHEMA_VERSION} (open it once with `auditor results list` to migrate it)")
        store.found_version = SCHEMA_VERSION
        return store

    def models(self) -> list[ModelRecord]:
        """Every model, oldest first."""
        return [ModelRecord.from_row(r) for r in self.db.execute("SELECT * FROM models ORDER BY created_at")]

    def audits(self) -> list[dict]:
        """Every audit with its run count (n_runs), newest first."""
        return [dict(r) for r in self.db.execute(
            "SELECT a.*, (SELECT COUNT(*) FROM runs r WHERE r.audit_id=a.audit_id) AS n_runs "
            "FROM audits a ORDER BY started_at DESC")]

    def audit(self, audit_id: str) -> dict:
        """One audit by its id or a unique prefix of it."""
        rows = self.db.execute("SELECT * FROM audits WHERE audit_id LIKE ?", (audit_id + "%",)).fetchall()
        if not rows:
            raise AuditorError(f"no audit {audit_id!r} in {self.path}")
        if len(rows) > 1:
            raise AuditorError(f"audit id {audit_id!r} is ambiguous ({len(rows)} audits start with it)")
        return dict(rows[0])

    def runs_where(self, *, audit_id: str | None = None, model_hash: str | None = None,
                   status: tuple[str, ...] | None = None) -> list[RunRecord]:
        """Runs of one audit and/or one model and/or in some states, oldest first."""
        clauses, args = [], []
        if audit_id is not None:
            clauses.append("audit_id=?")
            args.append(audit_id)
        if model_hash is not None:
            clauses.append("model_hash=?")
            args.append(model_hash)
        if status:
            clauses.append(f"status IN ({','.join('?' * len(status))})")
            args.extend(status)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [RunRecord.from_row(r) for r in self.db.execute(f"SELECT * FROM runs{where} ORDER BY started_at", args)]

    def op_types_by_model(self) -> dict[str, set[str]]:
        """model hash -> the ONNX op types its graph holds."""
        out: dict[str, set[str]] = {}
        for model_hash, op_type in self.db.execute("SELECT DISTINCT model_hash, op_type FROM onnx_nodes"):
            out.setdefault(model_hash, set()).add(op_type)
        return out

    def profile_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT profile_id FROM profiles ORDER BY created_at")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
