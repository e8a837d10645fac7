"""--resume reuses a stored run only when it answers the same question: same options, target,
harness, device, tolerance and deadline. Timing counts do not change the question; they are
shown when a run is reused."""

import json
import sqlite3

import pytest

from auditor.pipeline import AuditSettings, resume_key
from tests.conftest import timed_as_asked

MODEL = "examples/blocks.py:mlp"
SHORT = ["--runs", 50, "--warmup", 5, "--profile-runs", 5]


def _audit(cli, results, *extra):
    proc = cli("compile-all", MODEL, "-c", "sofie", *SHORT, "--results-dir", results, "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    (run,) = out["runs"]
    return run, out["reused"], proc.stderr


def _stored(results, run_id):
    db = sqlite3.connect(results / "results.sqlite")
    try:
        row = db.execute("SELECT status, n, finished_at, p50_us FROM runs WHERE run_id=?", (run_id,)).fetchone()
        samples = db.execute("SELECT idx, latency_ns FROM samples WHERE run_id=? ORDER BY idx", (run_id,)).fetchall()
        return row, samples
    finally:
        db.close()


@pytest.fixture(scope="module")
def armv7_compiled(tmp_path_factory):
    from tests.conftest import run_cli

    results = tmp_path_factory.mktemp("resume")
    run, reused, _ = _audit(run_cli, results, "--target", "armv7-cortex-a8")
    assert run["status"] == "compiled" and run["target"] == "armv7-cortex-a8" and run["n"] is None
    assert reused == []
    return results, run


def test_a_compiled_cross_target_run_does_not_answer_a_host_measurement(armv7_compiled, cli):
    results, armv7 = armv7_compiled
    host, reused, _ = _audit(cli, results, "--resume")
    assert host["run_id"] != armv7["run_id"] and reused == []
    assert host["status"] == "ok" and host["target"] == "host" and timed_as_asked(host, 50)
    assert host["p50_us"] > 0 and host["accuracy_passed"] == 1

    # the same request again is answered by the stored host run, which is left as it was
    before = _stored(results, host["run_id"])
    again, reused, err = _audit(cli, results, "--resume", "--runs", 80)
    assert again["run_id"] == host["run_id"] and reused == [host["run_id"]]
    assert _stored(results, host["run_id"]) == before
    # timed with other counts than asked: said, not hidden
    assert f"stored run {host['run_id']} reused (ok; timed with runs=50 warmup=5" in err
    assert again["timing"]["runs"] == 50

    # the armv7 request is still answered by the armv7 run
    cross, reused, _ = _audit(cli, results, "--resume", "--target", "armv7-cortex-a8")
    assert cross["run_id"] == armv7["run_id"] and reused == [armv7["run_id"]]


def test_another_tolerance_and_deadline_is_another_run(armv7_compiled, cli):
    # (each setting alone changes the key: test_resume_key_covers_every_setting...)
    results, armv7 = armv7_compiled
    other, reused, _ = _audit(cli, results, "--resume", "--atol", 0, "--rtol", 0, "--deadline-us", 100)
    assert reused == [] and timed_as_asked(other, 50) and other["budget_us"] == 100.0
    db = sqlite3.connect(results / "results.sqlite")
    budgets = [b for (b,) in db.execute("SELECT budget_us FROM runs WHERE status='ok' AND run_id!=?",
                                        (other["run_id"],))]
    db.close()
    assert budgets and all(b == pytest.approx(16 / 44100 * 1e6) for b in budgets)  # a new run, not an update


def test_a_cross_compiled_run_does_not_answer_a_request_on_an_emulated_device(armv7_compiled, cli):
    results, armv7 = armv7_compiled
    emulated, reused, _ = _audit(cli, results, "--resume", "--device", "qemu-armv7")
    assert emulated["run_id"] != armv7["run_id"] and reused == []
    assert emulated["status"] == "ok" and emulated["emulated"] is True and timed_as_asked(emulated, 50)


def test_resume_key_covers_every_setting_that_changes_what_a_run_means():
    base = AuditSettings()
    key = resume_key({"threads": 1}, "python", "host", base)
    assert key == resume_key({"threads": 1}, "python", "host", AuditSettings(timing=base.timing))
    changed = [
        resume_key({"threads": 2}, "python", "host", base),
        resume_key({"threads": 1}, "native", "host", base),
        resume_key({"threads": 1}, "python", "armv7-cortex-a8", base),
        resume_key({"threads": 1}, "python", "host", AuditSettings(atol=0.0)),
        resume_key({"threads": 1}, "python", "host", AuditSettings(rtol=0.0)),
        resume_key({"threads": 1}, "python", "host", AuditSettings(budget_us=100.0)),
    ]
    assert len({key, *changed}) == 1 + len(changed)
