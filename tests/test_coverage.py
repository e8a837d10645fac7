"""auditor coverage over a seeded sample of ONNX's own test cases; a crash costs one case."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from tests.conftest import ROOT


def test_coverage_sample_matrix(tmp_path, cli):
    proc = cli("coverage", "-o", tmp_path, "-c", "onnxruntime,torch-eager", "--suite", "node",
               "--suite", "pytorch-converted", "--sample", 40, "--json", timeout=900, check=True)
    report = json.loads(proc.stdout)
    assert report["cases"] == 40
    totals = report["totals"]["onnxruntime"]
    assert sum(totals.values()) == 40 and totals.get("matched", 0) >= 25
    assert "takes torch-export or torchscript" in report["skipped"]["torch-eager"]
    md = (tmp_path / "reports" / "coverage.md").read_text()
    assert "| onnxruntime |" in md and "[pytorch-converted]" in md
    html = (tmp_path / "reports" / "coverage.html").read_text()
    assert "Operator coverage" in html and "onnxruntime" in html
    db = sqlite3.connect(tmp_path / "results.sqlite")
    rows = db.execute("SELECT status, reason FROM coverage WHERE status NOT IN ('matched')").fetchall()
    assert all(reason for status, reason in rows)  # every non-match says why
    # a second run reuses what is stored: every case's row as it was (status, reason, time
    # taken, when written), so nothing was re-run
    per_case = "SELECT variant, suite, case_name, status, reason, seconds, updated_at FROM coverage ORDER BY 1, 2, 3"
    before = db.execute(per_case).fetchall()
    assert len([r for r in before if r[0] == "onnxruntime"]) == 40
    again = json.loads(cli("coverage", "-o", tmp_path, "-c", "onnxruntime", "--suite", "node", "--suite",
                           "pytorch-converted", "--sample", 40, "--json", check=True).stdout)
    assert again["totals"]["onnxruntime"] == totals
    assert db.execute(per_case).fetchall() == before
    db.close()


def test_a_crashing_case_is_recorded_and_the_rest_run(tmp_path):
    args = [sys.executable, "-m", "auditor", "coverage", "-o", str(tmp_path), "-c", "onnxruntime",
            "--suite", "node", "--sample", "60", "--seed", "3"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    end = time.monotonic() + 300
    killed: set[int] = set()
    crashed_seen = False

    def db_count(sql: str) -> int:
        try:
            db = sqlite3.connect(tmp_path / "results.sqlite")
            try:
                return db.execute(sql).fetchone()[0]
            finally:
                db.close()
        except sqlite3.OperationalError:
            return 0

    def workers() -> list[int]:
        found = subprocess.run(["pgrep", "-f", "auditor.coverage_worker"], capture_output=True, text=True)
        return [p for p in map(int, found.stdout.split()) if p not in killed]

    # A signal that lands between two cases (no case 'running') is not a case's crash: the
    # worker is restarted and the case reruns. Kill workers until one dies inside a case.
    while time.monotonic() < end and not crashed_seen and proc.poll() is None:
        time.sleep(0.05)
        if not (tmp_path / "results.sqlite").exists() or \
                db_count("SELECT COUNT(*) FROM coverage WHERE status != 'running'") < 10 or \
                not db_count("SELECT COUNT(*) FROM coverage WHERE status = 'running'"):
            continue  # a worker killed before its first case would count as making no progress
        for pid in workers():
            os.kill(pid, signal.SIGSEGV)
            killed.add(pid)
        while time.monotonic() < end and proc.poll() is None:  # until the death is handled
            restarted = workers()  # before the count: the auditor records a crash, then restarts
            crashed_seen = db_count("SELECT COUNT(*) FROM coverage WHERE status='crashed'") > 0
            if crashed_seen or restarted:
                break
            time.sleep(0.05)
    assert killed and crashed_seen
    proc.communicate(timeout=600)
    assert proc.returncode == 0
    db = sqlite3.connect(tmp_path / "results.sqlite")
    states = dict(db.execute("SELECT status, COUNT(*) FROM coverage GROUP BY status").fetchall())
    assert sum(states.values()) == 60 and "running" not in states
    crashed = db.execute("SELECT reason FROM coverage WHERE status='crashed'").fetchall()
    assert len(crashed) == 1 and "SIGSEGV" in crashed[0][0]


def test_control_flow_cases_are_sampled_and_counted_per_op(tmp_path, cli):
    """A sample of three node cases is exactly one If, one Loop and one Scan case; every
    compiler either matches each or records why not, and the matrix has a row per operator."""
    proc = cli("coverage", "-o", tmp_path, "-c", "onnxruntime", "-c", "tvm", "-c", "sofie", "--suite", "node",
               "--sample", 3, "--json", timeout=600, check=True)
    report = json.loads(proc.stdout)
    assert report["cases"] == 3
    db = sqlite3.connect(tmp_path / "results.sqlite")
    rows = db.execute("SELECT variant, case_name, op_types, status, reason FROM coverage").fetchall()
    assert {r[1] for r in rows} == {"test_if", "test_loop11", "test_scan9_multi_state"}
    assert {r[0] for r in rows} == {"onnxruntime", "tvm", "sofie"} and len(rows) == 9
    ort = {json.loads(ops)[0]: status for variant, _, ops, status, _ in rows if variant == "onnxruntime"}
    assert ort == {"If": "matched", "Loop": "matched", "Scan": "matched"}
    assert all(reason for *_, status, reason in rows if status != "matched")  # a failure says why
    md = (tmp_path / "reports" / "coverage.md").read_text()
    for op in ("If", "Loop", "Scan"):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {op} |"))
        assert line.count("/1") == 3  # one case, counted for each of the three compilers
