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
    # a second run reuses what is stored: same totals, nothing re-run
    again = json.loads(cli("coverage", "-o", tmp_path, "-c", "onnxruntime", "--suite", "node", "--suite",
                           "pytorch-converted", "--sample", 40, "--json", check=True).stdout)
    assert again["totals"]["onnxruntime"] == totals


def test_a_crashing_case_is_recorded_and_the_rest_run(tmp_path):
    args = [sys.executable, "-m", "auditor", "coverage", "-o", str(tmp_path), "-c", "onnxruntime",
            "--suite", "node", "--sample", "60", "--seed", "3"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    end = time.monotonic() + 300
    victim = None
    while time.monotonic() < end and victim is None:
        time.sleep(0.05)
        db_path = tmp_path / "results.sqlite"
        if not db_path.exists():
            continue
        try:
            db = sqlite3.connect(db_path)
            done = db.execute("SELECT COUNT(*) FROM coverage WHERE status != 'running'").fetchone()[0]
            db.close()
        except sqlite3.OperationalError:
            continue
        if done >= 10:
            pids = subprocess.run(["pgrep", "-f", "auditor.coverage_worker"], capture_output=True, text=True)
            for pid in map(int, pids.stdout.split()):
                os.kill(pid, signal.SIGSEGV)
                victim = pid
    assert victim is not None
    proc.communicate(timeout=600)
    assert proc.returncode == 0
    db = sqlite3.connect(tmp_path / "results.sqlite")
    states = dict(db.execute("SELECT status, COUNT(*) FROM coverage GROUP BY status").fetchall())
    assert sum(states.values()) == 60 and "running" not in states
    crashed = db.execute("SELECT reason FROM coverage WHERE status='crashed'").fetchall()
    assert len(crashed) == 1 and "SIGSEGV" in crashed[0][0]
