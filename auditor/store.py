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
from pathlib import Path
from typing import Any, Iterable

from ground.errors import AuditorError, first_line

SCHEMA_VERSION = 1

# Terminal states a --resume does not redo (a failed or interrupted run is tried again).
DONE_STATES = ("ok", "mismatch", "compiled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_hash TEXT PRIMARY KEY, source TEXT, format TEXT, inputs TEXT, outputs TEXT,
    files TEXT, problems TEXT, bundle_dir TEXT, created_at REAL, state TEXT);
CREATE TABLE IF NOT EXISTS onnx_nodes (
    model_hash TEXT, node_index INTEGER, name TEXT, op_type TEXT, domain TEXT,
    inputs TEXT, outputs TEXT, input_shapes TEXT, output_shapes TEXT, attrs TEXT, fx_node TEXT,
    PRIMARY KEY (model_hash, name));
CREATE TABLE IF NOT EXISTS audits (
    audit_id TEXT PRIMARY KEY, model_hash TEXT, command TEXT, settings TEXT, started_at REAL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, audit_id TEXT, model_hash TEXT, inputs_digest TEXT,
    compiler TEXT, variant TEXT, compiler_version TEXT, options TEXT, options_key TEXT,
    target TEXT, device TEXT, emulated INTEGER, host TEXT, settings TEXT,
    status TEXT, reason TEXT, pid INTEGER, started_at REAL, finished_at REAL,
    artifact_dir TEXT, compile_s REAL, load_s REAL, first_us REAL,
    n INTEGER, mean_us REAL, p50_us REAL, p95_us REAL, p99_us REAL, max_us REAL,
    min_us REAL, std_us REAL, jitter_us REAL, cov REAL, stopped_early INTEGER,
    rss_avg_bytes REAL, rss_peak_bytes REAL, rss_samples INTEGER, ru_maxrss_bytes REAL,
    runtime_memory TEXT,
    budget_us REAL, over_budget_share REAL, headroom_p99_us REAL, headroom_max_us REAL,
    verdict TEXT, accuracy_passed INTEGER, task_accuracy REAL, kernel_map TEXT, artifact_notes TEXT,
    converted TEXT);
CREATE INDEX IF NOT EXISTS runs_resume ON runs (model_hash, inputs_digest, compiler, options_key, device);
CREATE TABLE IF NOT EXISTS samples (run_id TEXT, idx INTEGER, latency_ns INTEGER,
    PRIMARY KEY (run_id, idx));
CREATE TABLE IF NOT EXISTS memory_samples (run_id TEXT, idx INTEGER, t_ms REAL, rss_bytes INTEGER,
    PRIMARY KEY (run_id, idx));
CREATE TABLE IF NOT EXISTS accuracy (run_id TEXT, output TEXT, passed INTEGER, max_abs_err REAL,
    rmse REAL, snr_db REAL, reason TEXT, PRIMARY KEY (run_id, output));
CREATE TABLE IF NOT EXISTS op_attribution (run_id TEXT PRIMARY KEY, method TEXT, runs INTEGER,
    per_op_sum_us REAL, instrumented_whole_us REAL, uninstrumented_whole_us REAL,
    overhead_ratio REAL, sum_to_whole REAL, notes TEXT, per_op_sum_p50_us REAL);
CREATE TABLE IF NOT EXISTS op_timings (run_id TEXT, idx INTEGER, kernel TEXT, op_type TEXT,
    onnx_nodes TEXT, calls INTEGER, mean_us REAL, p50_us REAL, std_us REAL, provider TEXT,
    share REAL, method TEXT, PRIMARY KEY (run_id, idx));
CREATE TABLE IF NOT EXISTS profiles (
    profile_id TEXT PRIMARY KEY, run_id TEXT, model_hash TEXT, compiler TEXT, device TEXT,
    event TEXT, frequency INTEGER, samples INTEGER, ms_per_sample REAL, created_at REAL,
    capture TEXT, notes TEXT, folded BLOB, svg_path TEXT);
CREATE INDEX IF NOT EXISTS profiles_by_run ON profiles (run_id);
CREATE INDEX IF NOT EXISTS profiles_by_model ON profiles (model_hash, compiler);
CREATE TABLE IF NOT EXISTS profile_functions (profile_id TEXT, idx INTEGER, function TEXT, dso TEXT,
    self_samples INTEGER, total_samples INTEGER, kernel TEXT, onnx_nodes TEXT,
    PRIMARY KEY (profile_id, idx));
CREATE TABLE IF NOT EXISTS profile_threads (profile_id TEXT, idx INTEGER, comm TEXT, tid INTEGER,
    samples INTEGER, top_function TEXT, PRIMARY KEY (profile_id, idx));
CREATE TABLE IF NOT EXISTS profile_kernels (profile_id TEXT, idx INTEGER, name TEXT, kind TEXT,
    samples INTEGER, symbols TEXT, onnx_nodes TEXT, PRIMARY KEY (profile_id, idx));
"""

RUN_SUMMARY_FIELDS = (
    "n mean_us p50_us p95_us p99_us max_us min_us std_us jitter_us cov stopped_early "
    "rss_avg_bytes rss_peak_bytes rss_samples ru_maxrss_bytes runtime_memory budget_us "
    "over_budget_share headroom_p99_us headroom_max_us verdict accuracy_passed task_accuracy "
    "compile_s load_s first_us compiler_version kernel_map artifact_notes settings converted"
).split()
# Columns added after a store's creation (schema version kept: old stores gain them empty).
ADDED_COLUMNS = {"runs": {"converted": "TEXT"}}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


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
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns.items():
                    if name not in have:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as e:
            raise AuditorError(f"{self.path}: not a usable results store ({first_line(e)})")
        self._check_version()
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(models)")}
        if "state" not in columns:  # a store written before state was recorded
            self.db.execute("ALTER TABLE models ADD COLUMN state TEXT")

    def _check_version(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise AuditorError(
                f"{self.path} has schema version {row[0]}; this auditor reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self.db.close()

    # -- writing -----------------------------------------------------------------------

    def _tx(self, sql: str, rows: Iterable[tuple]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(sql, rows)

    def add_model(self, bundle, source: str, fmt: str, nodes: list[dict]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR IGNORE INTO models VALUES (?,?,?,?,?,?,?,?,?,?)",
                (bundle.model_hash, source, fmt, _json([s.to_dict() for s in bundle.inputs]),
                 _json([s.to_dict() for s in bundle.outputs]), _json(bundle.files),
                 _json(bundle.problems), str(bundle.directory), time.time(), _json(bundle.state)),
            )
            self.db.execute("UPDATE models SET state=? WHERE model_hash=?",
                            (_json(bundle.state), bundle.model_hash))
            self.db.executemany(
                "INSERT OR IGNORE INTO onnx_nodes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(bundle.model_hash, n["index"], n["name"], n["op_type"], n["domain"],
                  _json(n["inputs"]), _json(n["outputs"]), _json(n["input_shapes"]),
                  _json(n["output_shapes"]), _json(n["attrs"]), n["fx_node"]) for n in nodes],
            )

    def new_audit(self, model_hash: str, command: str, settings: dict) -> str:
        audit_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.db.execute("INSERT INTO audits VALUES (?,?,?,?,?)",
                        (audit_id, model_hash, command, _json(settings), time.time()))
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
            (run_id, audit_id, model_hash, inputs_digest, compiler, variant, _json(options),
             options_key, _json(target), device, int(emulated), _json(host), _json(settings),
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
        values = [(_json(v) if isinstance(v, (dict, list)) else v) for v in fields.values()]
        assignments = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE runs SET {assignments} WHERE run_id=?", (*values, run_id))

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

    def add_op_profile(self, run_id: str, attribution: dict, ops: list[dict]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO op_attribution VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, attribution["method"], attribution["runs"], attribution["per_op_sum_us"],
                 attribution["instrumented_whole_us"], attribution["uninstrumented_whole_us"],
                 attribution["overhead_ratio"], attribution["sum_to_whole"], attribution["notes"],
                 attribution["per_op_sum_p50_us"]),
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO op_timings VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, i, o["kernel"], o["op_type"], _json(o["onnx_nodes"]), o["calls"],
                  o["mean_us"], o["p50_us"], o["std_us"], o["provider"], o["share"],
                  attribution["method"]) for i, o in enumerate(ops)],
            )

    def add_profile(self, profile: dict, *, model_hash: str, compiler: str, device: str,
                    run_id: str | None = None, svg_path: str | None = None) -> str:
        """One perf profile (device_runner.profile.Profile.to_dict()) and its per-function,
        per-thread and per-kernel rows; its id. Folded stacks are kept zlib-compressed. Times
        are not stored: samples x profiles.ms_per_sample gives them (see profile())."""
        profile_id = uuid.uuid4().hex[:12]
        folded = "".join(f"{stack} {n}\n" for stack, n in sorted(profile["folded"].items()))
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO profiles VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (profile_id, run_id, model_hash, compiler, device, profile["event"], profile["frequency"],
                 profile["samples"], profile["ms_per_sample"], time.time(), _json(profile["capture"]),
                 _json(profile["notes"]), zlib.compress(folded.encode()), svg_path),
            )
            self.db.executemany(
                "INSERT INTO profile_functions VALUES (?,?,?,?,?,?,?,?)",
                [(profile_id, i, f["function"], f["dso"], f["self_samples"], f["total_samples"], f["kernel"],
                  _json(f["onnx_nodes"])) for i, f in enumerate(profile["functions"])],
            )
            self.db.executemany(
                "INSERT INTO profile_threads VALUES (?,?,?,?,?,?)",
                [(profile_id, i, t["comm"], t["tid"], t["samples"], t["top_function"])
                 for i, t in enumerate(profile["threads"])],
            )
            self.db.executemany(
                "INSERT INTO profile_kernels VALUES (?,?,?,?,?,?,?)",
                [(profile_id, i, k["name"], k["kind"], k["samples"], _json(k["symbols"]), _json(k["onnx_nodes"]))
                 for i, k in enumerate(profile["kernels"])],
            )
        return profile_id

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

    def model(self, model_hash: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM models WHERE model_hash=?", (model_hash,)).fetchone()

    def model_state(self, model_hash: str) -> dict:
        """auditor.state.detect's finding for the model ({} when not recorded)."""
        row = self.db.execute("SELECT state FROM models WHERE model_hash=?", (model_hash,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    # reads for reports ----------------------------------------------------------------

    def models(self) -> list[sqlite3.Row]:
        """Every model, oldest first."""
        return self.db.execute("SELECT * FROM models ORDER BY created_at").fetchall()

    def audits(self) -> list[sqlite3.Row]:
        """Every audit with its run count, newest first."""
        return self.db.execute(
            "SELECT a.*, (SELECT COUNT(*) FROM runs r WHERE r.audit_id=a.audit_id) AS n_runs "
            "FROM audits a ORDER BY started_at DESC").fetchall()

    def audit(self, audit_id: str) -> sqlite3.Row:
        """One audit by its id or a unique prefix of it."""
        rows = self.db.execute("SELECT * FROM audits WHERE audit_id LIKE ?", (audit_id + "%",)).fetchall()
        if not rows:
            raise AuditorError(f"no audit {audit_id!r} in {self.path}")
        if len(rows) > 1:
            raise AuditorError(f"audit id {audit_id!r} is ambiguous ({len(rows)} audits start with it)")
        return rows[0]

    def runs_where(self, *, audit_id: str | None = None, model_hash: str | None = None,
                   status: tuple[str, ...] | None = None) -> list[sqlite3.Row]:
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
        return self.db.execute(f"SELECT * FROM runs{where} ORDER BY started_at", args).fetchall()

    def onnx_nodes(self, model_hash: str) -> list[sqlite3.Row]:
        """The model's canonical ONNX nodes in graph order."""
        return self.db.execute("SELECT * FROM onnx_nodes WHERE model_hash=? ORDER BY node_index",
                               (model_hash,)).fetchall()

    def op_types_by_model(self) -> dict[str, set[str]]:
        """model hash -> the ONNX op types its graph holds."""
        out: dict[str, set[str]] = {}
        for model_hash, op_type in self.db.execute("SELECT DISTINCT model_hash, op_type FROM onnx_nodes"):
            out.setdefault(model_hash, set()).add(op_type)
        return out

    def profiles_for(self, model_hash: str, compiler: str, device: str) -> list[sqlite3.Row]:
        """perf profiles (ids and flamegraph paths) of one model, compiler variant and device."""
        return self.db.execute(
            "SELECT profile_id, svg_path FROM profiles WHERE model_hash=? AND compiler=? AND device=? "
            "ORDER BY created_at", (model_hash, compiler, device)).fetchall()

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
