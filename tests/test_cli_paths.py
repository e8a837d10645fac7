"""User paths through the CLI that had no test: --inputs/--labels with task accuracy over
several examples, --deadline-us, `results show` in text, `results export --csv --output`,
a variant past its --timeout, an unreachable ssh device, and `doctor`."""

import csv
import json
import os
import platform
import shutil
import socket
import sqlite3

import numpy as np
import pytest
import torch

from tests.conftest import timed_as_asked, write_factory

RUNS = 50
# a classifier taking a batch of 4: each example yields 4 predictions
CLASSIFIER = """
def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).eval(), (torch.randn(4, 16),)
"""
EXAMPLES, BATCH = 5, 4
WRONG = 3  # labels deliberately not what the model predicts


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    from tests.conftest import run_cli

    tmp = tmp_path_factory.mktemp("labelled")
    spec = write_factory(tmp / "classifier.py", CLASSIFIER)
    namespace = {"torch": torch, "nn": torch.nn}
    exec(CLASSIFIER, namespace)
    model, _ = namespace["make"]()
    x = np.random.default_rng(1).standard_normal((EXAMPLES, BATCH, 16)).astype(np.float32)
    with torch.no_grad():
        predicted = np.stack([model(torch.from_numpy(e)).argmax(-1).numpy() for e in x])
    labels = predicted.copy()
    for k in range(WRONG):  # three wrong, in different examples
        labels[k, k] = (labels[k, k] + 1) % 5
    np.savez(tmp / "inputs.npz", x=x)
    np.save(tmp / "labels.npy", labels)
    proc = run_cli("compile-all", spec, "-c", "onnxruntime", "--inputs", tmp / "inputs.npz", "--labels",
                   tmp / "labels.npy", "--deadline-us", 1, "--runs", RUNS, "--warmup", 5, "--profile-runs", 5,
                   "--results-dir", tmp / "r", "--json", check=True)
    out = json.loads(proc.stdout)
    (run,) = out["runs"]
    return tmp / "r", run


def test_task_accuracy_counts_every_prediction_of_every_example(labelled):
    _, run = labelled
    assert run["status"] == "ok", run["reason"]
    assert run["accuracy_passed"] == 1 and run["max_abs_err"] < 1e-5
    assert run["task_accuracy"] == pytest.approx((EXAMPLES * BATCH - WRONG) / (EXAMPLES * BATCH))


def test_task_accuracy_rule():
    from auditor.accuracy import task_accuracy

    logits = lambda *classes: [np.eye(3, dtype=np.float32)[list(classes)]]  # one row per prediction
    assert task_accuracy([logits(0, 1), logits(2, 2)], np.array([[0, 1], [2, 0]])) == 0.75
    assert task_accuracy([logits(1), logits(2), logits(0)], np.array([1, 2, 2])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="4 predictions for 2 labels"):
        task_accuracy([logits(0, 1), logits(2, 2)], np.array([0, 1]))


def test_deadline_us_sets_the_budget_every_run_misses(labelled):
    _, run = labelled
    assert run["budget_us"] == 1.0 and run["verdict"] == "misses"
    assert run["over_budget_share"] == 1.0
    assert run["headroom_p99_us"] == pytest.approx(1.0 - run["p99_us"]) and run["headroom_p99_us"] < 0
    assert run["headroom_max_us"] == pytest.approx(1.0 - run["max_us"])


def test_results_show_text(labelled, cli):
    results, run = labelled
    out = cli("results", "show", run["run_id"][:6], "--results-dir", results, check=True).stdout
    lines = out.splitlines()
    row = next(ln for ln in lines if ln.startswith("onnxruntime "))
    assert "misses (100.0% over)" in row and run["run_id"] in row and f"{run['p50_us']:.1f}" in row
    assert (f'options {json.dumps(run["options"])}; target host; ' in out
            and f"; {run['n']} samples stored ({run['uncontended']['n']} in uncontended blocks); "
                f"timed with runs={RUNS} warmup=5 max_seconds=10.0 gated" in out and timed_as_asked(run, RUNS))
    assert "per-op (ort-profiler, 5 runs): sum of medians " in out
    assert "kernel" in out and "ONNX nodes" in out and "node_linear" in out


def test_results_export_csv_to_a_file(labelled, cli, tmp_path):
    results, run = labelled
    target = tmp_path / "runs.csv"
    proc = cli("results", "export", "--csv", "--output", target, "--results-dir", results, check=True)
    assert proc.stdout == ""
    with open(target, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    from auditor.summary import SUMMARY_KEYS

    assert reader.fieldnames == [*SUMMARY_KEYS, "model", "target", "options", "max_abs_err", "snr_db", "timing_loop",
                                 "timing", "per_op_method", "per_op_sum_to_whole", "state", "rt_safe",
                                 "rt_verdict", "rt_short", "predicted_p50_us", "predicted_p99_us",
                                 "uncontended_p50_us", "uncontended_p99_us", "uncontended_share"]
    (row,) = rows
    assert row["rt_safe"] == row["rt_verdict"] == row["rt_short"] == ""  # no --rt-audit asked
    assert row["state"] == "" and row["converted"] == ""  # a stateless model's own graph
    assert row["run_id"] == run["run_id"] and row["status"] == "ok" and row["n"] == str(run["n"])
    assert float(row["p50_us"]) == pytest.approx(run["p50_us"]) and row["verdict"] == "misses"
    assert float(row["task_accuracy"]) == pytest.approx(run["task_accuracy"]) and row["target"] == "host"
    assert json.loads(row["options"]) == run["options"] and json.loads(row["timing"])["runs"] == RUNS
    assert row["per_op_method"] == "ort-profiler" and row["emulated"] == "False"


def test_a_variant_past_its_timeout_is_killed_and_recorded(tmp_path, cli):
    proc = cli("compile-all", "examples/blocks.py:mlp", "-c", "onnxruntime", "--runs", 10**9, "--max-seconds",
               86400, "--profile-runs", 0, "--timeout", 8, "--results-dir", tmp_path, "--json")
    assert proc.returncode == 1, proc.stderr  # nothing measured
    (run,) = json.loads(proc.stdout)["runs"]
    assert run["status"] == "timeout" and run["reason"] == "no result within 8 s; worker killed"
    db = sqlite3.connect(tmp_path / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM samples WHERE run_id=?", (run["run_id"],)).fetchone() == (0,)
    db.close()


def test_an_unreachable_ssh_device_is_one_line(tmp_path, cli):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cli("compile-all", "examples/blocks.py:mlp", "--device", f"ssh://root@127.0.0.1:{port}",
               "--results-dir", tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"auditor: error: cannot reach root@127.0.0.1:{port}: "
                                                   "connection refused"), proc.stderr
    assert not (tmp_path / "models").exists()  # refused before anything was exported


def test_doctor_json_reports_this_machine(cli):
    import onnx
    import onnxruntime

    from ground.host import package_version
    from compilers import registry

    d = json.loads(cli("doctor", "--json", check=True).stdout)
    assert d["torch"] == torch.__version__ and d["onnx"] == onnx.__version__
    assert d["host"]["machine"] == platform.machine() and d["host"]["cores"] == os.cpu_count()
    assert d["host"]["kernel"] == platform.release()
    compilers = {c["compiler"]: c for c in d["compilers"]}
    assert list(compilers) == registry.names()
    assert compilers["onnxruntime"]["available"] is True and compilers["onnxruntime"]["version"] == onnxruntime.__version__
    assert compilers["onnxruntime"]["per_op"] == "ort-profiler"
    for tool in d["devices"]:
        name, python = tool["tool"].removesuffix(" (Python)"), tool["tool"].endswith(" (Python)")
        found = package_version(name) if python else shutil.which(name)
        assert tool["found"] == (found is not None), tool
    if shutil.which("perf"):
        assert d["perf"]["version"].startswith("perf version")
        assert d["perf"]["paranoid"] == int(open("/proc/sys/kernel/perf_event_paranoid").read())
        assert d["perf"]["events"]["cpu-clock"] == "works"
    # RealtimeSanitizer needs clang >= 20: offered when a clang that new compiles -fsanitize=realtime
    clangs = [c for c in (shutil.which(f"clang++-{v}") for v in range(20, 31)) if c]
    rtsan = d["rtsan"]
    if not clangs:
        assert rtsan["available"] is False and "clang >= 20" in rtsan["how"]
    else:
        assert rtsan["available"] is (rtsan["compiler"] is not None)


def test_doctor_text(cli):
    import onnxruntime

    out = cli("doctor", check=True).stdout
    assert out.startswith(f"python {platform.python_version()}  torch {torch.__version__}")
    row = next(ln for ln in out.splitlines() if ln.startswith("onnxruntime "))
    assert row.split()[1:3] == ["yes", onnxruntime.__version__] and "ort-profiler" in row
    assert f"({os.cpu_count()} cores, {platform.machine()})" in out
