"""Nothing measured is lost: a killed audit resumes; a crashing compiler costs only its run."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

VARIANTS = ["torch-eager", "onnxruntime", "onnxruntime:graph_opt=disable", "torchscript"]


def _start(results, *extra):
    args = [sys.executable, "-m", "auditor", "compile-all", "examples/blocks.py:mlp", "--results-dir",
            str(results), "--runs", "1000000", "--max-seconds", "1.5", "--profile-runs", "10", *extra]
    for v in VARIANTS:
        args += ["-c", v]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _rows(results):
    if not (results / "results.sqlite").exists():
        return []
    db = sqlite3.connect(results / "results.sqlite", timeout=30)
    try:
        return db.execute("SELECT run_id, variant, status, n, p50_us FROM runs ORDER BY started_at").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _wait_for(predicate, results, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = _rows(results)
        if predicate(rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"condition not reached: {_rows(results)}")


def _workers_of(run_id):
    out = subprocess.run(["pgrep", "-f", f"auditor.worker .*{run_id}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_sigkill_mid_run_then_resume(tmp_path):
    proc = _start(tmp_path)
    rows = _wait_for(lambda rows: any(r[2] == "ok" for r in rows) and any(r[2] == "running" for r in rows),
                     tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    running = [r for r in rows if r[2] == "running"][0][0]
    time.sleep(0.5)
    assert _workers_of(running) == []  # the worker died with its parent
    before = {r[0]: r for r in _rows(tmp_path)}
    db = sqlite3.connect(tmp_path / "results.sqlite")
    samples_before = dict(db.execute("SELECT run_id, COUNT(*) FROM samples GROUP BY run_id").fetchall())
    db.close()

    resumed = _start(tmp_path, "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    after = {r[0]: r for r in _rows(tmp_path)}
    # every row written before the kill is still there; finished ones unchanged
    assert set(before) <= set(after)
    for run_id, row in before.items():
        if row[2] == "ok":
            assert after[run_id] == row
    assert after[running][2] == "interrupted"
    db = sqlite3.connect(tmp_path / "results.sqlite")
    samples_after = dict(db.execute("SELECT run_id, COUNT(*) FROM samples GROUP BY run_id").fetchall())
    db.close()
    for run_id, count in samples_before.items():
        assert samples_after[run_id] == count
    # the run completes: exactly one ok run per variant, none measured twice
    ok = [r for r in after.values() if r[2] == "ok"]
    from compilers.registry import parse_variant
    labels = sorted(parse_variant(v).label for v in VARIANTS)
    assert sorted(r[1] for r in ok) == labels


def test_crashing_compiler_is_recorded_and_the_others_finish(tmp_path):
    proc = _start(tmp_path)
    rows = _wait_for(lambda rows: any(r[1] == "onnxruntime" and r[2] == "running" for r in rows), tmp_path)
    victim = next(r[0] for r in rows if r[1] == "onnxruntime")
    end = time.monotonic() + 30
    while not _workers_of(victim) and time.monotonic() < end:
        time.sleep(0.05)
    for pid in _workers_of(victim):
        os.kill(pid, signal.SIGSEGV)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    final = {r[1]: r for r in _rows(tmp_path)}
    db = sqlite3.connect(tmp_path / "results.sqlite")
    reason = db.execute("SELECT reason FROM runs WHERE run_id=?", (victim,)).fetchone()[0]
    assert final["onnxruntime"][2] == "failed" and "SIGSEGV" in reason
    others = [v for v in final if v != "onnxruntime"]
    assert len(others) == 3 and all(final[v][2] == "ok" for v in others)
    assert "failed: worker died with SIGSEGV" in out
