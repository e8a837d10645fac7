"""The results store's tables, one versioned schema (see store.migrate for older versions)."""

# 2: the coverage and dataset_points tables (created on first use by auditor/coverage.py and
# auditor/dataset.py in 1) and runs.converted, models.state (added by ALTER TABLE on open in 1)
# are part of the schema, and runs.rt_safety (the real-time audit, JSON) and the predictions table (the cost model's
# forecast of a measured run) are new; store/migrate.py brings a version-1 store here.
SCHEMA_VERSION = 2

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
    converted TEXT, rt_safety TEXT);
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
CREATE TABLE IF NOT EXISTS coverage (
    compiler TEXT, variant TEXT, suite TEXT, case_name TEXT, op_types TEXT, status TEXT, reason TEXT,
    seconds REAL, compiler_version TEXT, updated_at REAL, PRIMARY KEY (variant, suite, case_name));
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT PRIMARY KEY, model_file TEXT, cpu TEXT, p50_us REAL, p50_lo REAL, p50_hi REAL,
    p99_us REAL, p99_lo REAL, p99_hi REAL, low_confidence INTEGER, flags TEXT, created_at REAL);
CREATE TABLE IF NOT EXISTS dataset_points (
    dataset TEXT, spec TEXT, family TEXT, params TEXT, model_hash TEXT, status TEXT, reason TEXT,
    updated_at REAL, PRIMARY KEY (dataset, spec));
"""

RUN_SUMMARY_FIELDS = (
    "n mean_us p50_us p95_us p99_us max_us min_us std_us jitter_us cov stopped_early "
    "rss_avg_bytes rss_peak_bytes rss_samples ru_maxrss_bytes runtime_memory budget_us "
    "over_budget_share headroom_p99_us headroom_max_us verdict accuracy_passed task_accuracy "
    "compile_s load_s first_us compiler_version kernel_map artifact_notes settings converted"
).split()


def statements(script: str) -> list[str]:
    """The statements of a DDL script (none holds a ';' of its own), to run one by one inside
    a transaction (sqlite3's executescript commits first)."""
    return [s.strip() for s in script.split(";") if s.strip()]
