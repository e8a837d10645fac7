import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from store import SCHEMA_VERSION, Store
from ground.errors import AuditorError


def _run(store, **kw):
    base = dict(audit_id="a", model_hash="m", inputs_digest="d", compiler="onnxruntime", variant="onnxruntime",
                options={"threads": 1}, options_key="k", target={"name": "host"}, device="local",
                emulated=False, host={}, settings={})
    base.update(kw)
    return store.new_run(**base)


def test_not_writable_results_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AuditorError, match="not writable"):
        Store(blocker / "results")


def test_schema_version_checked(tmp_path):
    store = Store(tmp_path)
    store.db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    store.close()
    with pytest.raises(AuditorError, match=f"schema version 999; this auditor reads {SCHEMA_VERSION}"):
        Store(tmp_path)


def test_corrupt_store_is_one_clear_error(tmp_path):
    (tmp_path / Store.FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AuditorError, match="not a usable results store"):
        Store(tmp_path)


def test_dead_process_runs_become_interrupted_and_resume_skips_done(tmp_path):
    store = Store(tmp_path)
    done = _run(store)
    store.set_status(done, "ok")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = _run(store, options_key="k2")
    store.set_status(stale, "running", pid=int(dead.stdout))
    alive = _run(store, options_key="k3")
    store.set_status(alive, "running", pid=__import__("os").getpid())
    assert store.mark_dead_runs_interrupted() == 1
    assert store.run(stale)["status"] == "interrupted"
    assert store.run(alive)["status"] == "running"
    assert store.completed_run("m", "d", "onnxruntime", "k", "local")["run_id"] == done
    assert store.completed_run("m", "d", "onnxruntime", "k2", "local") is None


def test_run_prefix_lookup(tmp_path):
    store = Store(tmp_path)
    run_id = _run(store)
    assert store.run(run_id[:6])["run_id"] == run_id
    with pytest.raises(AuditorError, match="no run"):
        store.run("zzzz")


# -- schema versions: a version-1 store opens migrated, anything else unknown is refused ---

V1_DDL = (Path(__file__).parent / "data" / "store_v1.sql").read_text()


def v1_store(directory: Path, *, before_added_columns: bool = False) -> Path:
    """A store as auditor e7d04b2 left it: one run with samples, a coverage case, a dataset
    point; with before_added_columns, as the stores made before runs.converted and
    models.state existed."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / Store.FILE
    db = sqlite3.connect(path)
    db.executescript(V1_DDL)
    if before_added_columns:
        db.executescript("ALTER TABLE runs DROP COLUMN converted; ALTER TABLE models DROP COLUMN state;")
    db.execute("INSERT INTO runs (run_id, audit_id, model_hash, compiler, variant, options, target, device, "
               "emulated, host, settings, status, reason, started_at, finished_at, n, p50_us) VALUES "
               "('r1', 'a1', 'm1', 'onnxruntime', 'onnxruntime', '{\"threads\": 1}', '{\"name\": \"host\"}', "
               "'local', 0, '{\"cpu_model\": \"x\"}', '{}', 'ok', '', 1.0, 2.0, 3, 12.5)")
    db.executemany("INSERT INTO samples VALUES ('r1', ?, ?)", [(0, 12000), (1, 12500), (2, 13000)])
    db.execute("INSERT INTO coverage VALUES ('tvm', 'tvm', 'node', 'test_add', '[\"Add\"]', 'matched', '', "
               "0.5, '0.27', 1.0)")
    db.execute("INSERT INTO dataset_points VALUES ('d', 'zoo:mlp', 'mlp', '{}', 'm1', 'measured', '', 1.0)")
    db.commit()
    db.close()
    return path


def table_shapes(path: Path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    shapes = {n: [tuple(r) for r in db.execute(f"PRAGMA table_info({n})")] for n in names}
    db.close()
    return shapes


@pytest.mark.parametrize("before_added_columns", [False, True])
def test_a_version_1_store_opens_migrated_with_its_data(tmp_path, before_added_columns):
    v1_store(tmp_path / "old", before_added_columns=before_added_columns)
    store = Store(tmp_path / "old")
    assert store.found_version == 1 and SCHEMA_VERSION == 2
    assert store.run("r1")["p50_us"] == 12.5 and store.run("r1")["converted"] is None
    assert [r["latency_ns"] for r in store.rows("samples", "r1")] == [12000, 12500, 13000]
    assert store.coverage_failures("tvm") == [] and store.dataset_names() == ["d"]
    store.close()
    Store(tmp_path / "new").close()
    # the migrated store has exactly the tables and columns of a store created now
    assert table_shapes(tmp_path / "old" / Store.FILE) == table_shapes(tmp_path / "new" / Store.FILE)
    assert Store(tmp_path / "old").found_version == SCHEMA_VERSION  # migrated once


def test_a_failed_migration_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    from store import migrate

    path = v1_store(tmp_path)
    before = table_shapes(path)

    def half_done(db):
        migrate._v1_to_v2(db)
        db.execute("INSERT INTO no_such_table VALUES (1)")

    monkeypatch.setitem(migrate.STEPS, 1, half_done)
    with pytest.raises(AuditorError, match="migrating the store from schema version 1 failed .* it is unchanged"):
        Store(tmp_path)
    assert table_shapes(path) == before
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)


def test_a_sqlite_file_that_is_not_a_store_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / Store.FILE)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    with pytest.raises(AuditorError, match="a SQLite database but not an auditor results store"):
        Store(tmp_path)


def _store_of_version(directory: Path, version: str) -> None:
    path = v1_store(directory)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
    db.commit()
    db.close()


def test_the_console_script_reads_a_version_1_store_and_refuses_a_newer_one(tmp_path):
    from tests.test_user_path import CONSOLE_SCRIPT, user_env

    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no installed console script at {CONSOLE_SCRIPT} (run make deps)")

    def results_list(folder: Path):
        return subprocess.run([str(CONSOLE_SCRIPT), "results", "list"], cwd=folder, env=user_env(),
                              capture_output=True, text=True, timeout=300)

    old = tmp_path / "old"
    v1_store(old / "auditor-results")
    listed = results_list(old)
    assert listed.returncode == 0, listed.stderr
    assert "r1" in listed.stdout and "12.5" in listed.stdout and "Traceback" not in listed.stderr
    assert Store(old / "auditor-results").found_version == SCHEMA_VERSION

    newer = tmp_path / "newer"
    _store_of_version(newer / "auditor-results", "3")
    refused = results_list(newer)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "has schema version 3; this auditor reads 2 (written by a newer auditor)" in refused.stderr
    db = sqlite3.connect(newer / "auditor-results" / Store.FILE)
    assert db.execute("SELECT value FROM meta").fetchone() == ("3",)  # left alone

    garbage = tmp_path / "garbage"
    (garbage / "auditor-results").mkdir(parents=True)
    (garbage / "auditor-results" / Store.FILE).write_bytes(b"not a database" * 100)
    refused = results_list(garbage)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "not a usable results store" in refused.stderr and "Traceback" not in refused.stderr


def test_a_measurement_is_stored_whole_or_not_at_all(tmp_path):
    from store import Measurement

    store = Store(tmp_path)
    run_id = _run(store, settings={"harness": "python"})
    store.record_measurement(run_id, Measurement(
        samples_ns=[1000, 3000, 2000], first_us=9.5, stopped_early=False, stats={"n": 3, "p50_us": 2.0},
        deadline={"budget_us": 2.5, "verdict": "misses"}, timing_loop="python: a loop",
        memory_samples=[(0.0, 4096), (1.5, 8192)], memory={"rss_peak_bytes": 8192.0},
        runtime_memory={"arena": 1}))
    run = store.run_record(run_id)
    assert (run.n, run.p50_us, run.first_us, run.stopped_early, run.verdict, run.rss_peak_bytes) == \
        (3, 2.0, 9.5, 0, "misses", 8192.0)
    assert run.settings == {"harness": "python", "timing_loop": "python: a loop"}
    assert run.runtime_memory == {"arena": 1} and run.options == {"threads": 1}
    assert store.samples_ns(run_id) == [1000, 3000, 2000]
    assert store.memory_samples(run_id) == [(0.0, 4096), (1.5, 8192)]

    bad_ops = [{"kernel": "k"}]  # no timing columns: the whole measurement is refused
    with pytest.raises(KeyError):
        store.record_measurement(run_id, Measurement(
            accuracy=[{"output": "y", "passed": True, "max_abs_err": 0.0, "rmse": 0.0, "snr_db": 90.0}],
            accuracy_passed=True, attribution={"method": "m"}, ops=bad_ops))
    assert store.accuracy_rows(run_id) == [] and store.run_record(run_id).accuracy_passed is None

    store.record_measurement(run_id, Measurement(
        accuracy=[{"output": "y", "passed": True, "max_abs_err": 0.0, "rmse": 0.0, "snr_db": 90.0}],
        accuracy_passed=True, task_accuracy=0.75))
    assert store.run_record(run_id).accuracy_passed == 1 and store.run_record(run_id).task_accuracy == 0.75
    assert [(a["output"], a["passed"], a["snr_db"]) for a in store.accuracy_rows(run_id)] == [("y", 1, 90.0)]
