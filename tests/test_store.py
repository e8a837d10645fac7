import subprocess
import sys

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
