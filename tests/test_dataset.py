"""dataset build resumes after SIGKILL to exactly what an uninterrupted build stores."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from auditor.sweeps import load_sweep
from ground.errors import AuditorError
from tests.conftest import ROOT, process_running, processes_where

SPEC = {
    "name": "tiny", "compilers": ["onnxruntime", "onnxruntime:graph_opt=disable"],
    "timing": {"runs": 40, "warmup": 5, "max_seconds": 0.5, "profile_runs": 5},
    "families": [
        {"family": "mlp", "grid": {"depth": [1, 2], "width": [8, 16]}},
        {"family": "mdn", "random": 2, "seed": 4},
        {"family": "transformer", "grid": {"heads": [2, 3]}},  # heads=3 is outside the choices
    ],
}


def _build(results, spec_path, *extra):
    return subprocess.Popen([sys.executable, "-m", "auditor", "dataset", "build", "--spec", str(spec_path),
                             "--results-dir", str(results), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _processes_mentioning(path) -> list[str]:
    """Live processes whose command line names path (the measuring worker's job file is under it)."""
    return processes_where(lambda cmdline: str(path) in cmdline)


def _measured(results):
    db = sqlite3.connect(results / "results.sqlite")
    rows = db.execute("SELECT p.spec, r.variant, r.status FROM dataset_points p JOIN runs r "
                      "ON r.model_hash = p.model_hash").fetchall()
    points = db.execute("SELECT spec, status FROM dataset_points").fetchall()
    db.close()
    return rows, points


def _run_states(results) -> dict[str, str]:
    db = sqlite3.connect(results / "results.sqlite")
    states = dict(db.execute("SELECT run_id, status FROM runs").fetchall())
    db.close()
    return states


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.json"
    path.write_text(json.dumps(SPEC))
    return path


def test_sweep_spec_points(spec_path):
    sweep = load_sweep(spec_path)
    assert len(sweep.points) == 4 + 2 + 1 and len(sweep.rejected) == 1
    assert "heads=3" in sweep.rejected[0][0] and "not one of" in sweep.rejected[0][1]
    assert sweep.points == load_sweep(spec_path).points  # seeded: the same points every time


def test_bad_spec_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AuditorError, match="not valid JSON"):
        load_sweep(bad)
    bad.write_text(json.dumps({"families": [{"family": "mlp", "grid": {"depth": [1]}}], "timing": {"x": 1}}))
    with pytest.raises(AuditorError, match="unknown timing keys"):
        load_sweep(bad)
    bad.write_text(json.dumps({"families": [{"family": "mlp", "grid": {"depth": [1]}}],
                               "timing": {"runs": 10, "min_runs": 20}}))
    with pytest.raises(AuditorError, match="min_runs 20 is more than runs 10"):
        load_sweep(bad)


def test_random_entries_sample_within_their_narrower_ranges(tmp_path):
    """A random entry's `ranges` narrow a parameter's sampled range (the layer family's rows
    mean samples for a convolution, rows for a Gemm); a range outside the family's is an error."""
    from auditor import zoo

    path = tmp_path / "ranges.json"
    entry = {"family": "layer", "random": 30, "seed": 3, "fixed": {"op": "gemm"}, "ranges": {"rows": [2, 8]}}
    path.write_text(json.dumps({"families": [entry]}))
    points = [zoo.parse_spec(p)[1] for p in load_sweep(path).points]
    rows = [p["rows"] for p in points]
    assert len(points) == 30 and min(rows) >= 2 and max(rows) <= 8 and len(set(rows)) > 3
    assert max(p["inputs"] for p in points) > 8  # the other parameters keep the family's range
    for ranges, message in (({"rows": [0, 8]}, "not within layer's 1..1024"),
                            ({"op": [1, 2]}, "'op' is not a numeric parameter")):
        path.write_text(json.dumps({"families": [{**entry, "ranges": ranges}]}))
        with pytest.raises(AuditorError, match=message):
            load_sweep(path)


def test_sigkill_then_resume_matches_uninterrupted_build(tmp_path, spec_path):
    clean = tmp_path / "clean"
    proc = _build(clean, spec_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    clean_rows, clean_points = _measured(clean)
    db = sqlite3.connect(clean / "results.sqlite")
    workers = [json.loads(s)["worker"] for (s,) in db.execute("SELECT settings FROM runs WHERE status='ok'")]
    db.close()
    # long-lived measurement workers: one process served every run of the compiler
    assert {w["kind"] for w in workers} == {"long-lived"} and len({w["pid"] for w in workers}) == 1
    assert max(w["run_in_worker"] for w in workers) == 7 * 2

    killed = tmp_path / "killed"
    proc = _build(killed, spec_path, "--jobs", "2")
    end = time.monotonic() + 300
    while time.monotonic() < end:  # kill once some points are done and others are not
        if (killed / "results.sqlite").exists():
            try:
                done = len([p for p in _measured(killed)[1] if p[1] == "measured"])
            except sqlite3.OperationalError:
                done = 0
            if done >= 2:
                break
        time.sleep(0.1)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children  # the export pool and the long-lived measuring worker
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    alive = children
    for _ in range(100):  # a dead child may linger as a zombie until reaped: that is gone
        alive = [c for c in children if process_running(c)]
        if not alive:
            break
        time.sleep(0.1)
    assert alive == [], "children outlived the killed build: " + "; ".join(
        open(f"/proc/{c}/cmdline").read().replace("\0", " ")[:150] for c in alive if process_running(c))
    # a worker started after pgrep above must be gone too (a measuring worker names its results dir)
    orphans = _processes_mentioning(killed)
    for _ in range(100):
        if not orphans:
            break
        time.sleep(0.1)
        orphans = _processes_mentioning(killed)
    assert orphans == [], f"processes outlived the killed build: {orphans}"
    _, partial_points = _measured(killed)
    partial_runs = _run_states(killed)
    assert len([p for p in partial_points if p[1] == "measured"]) < len(clean_points)

    proc = _build(killed, spec_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    rows, points = _measured(killed)
    ok = sorted((s, v) for s, v, st in rows if st == "ok")
    assert ok == sorted((s, v) for s, v, st in clean_rows if st == "ok")  # same points, nothing missing
    assert len(ok) == len(set(ok)) == 7 * 2  # no duplicates
    assert sorted(points) == sorted(clean_points)
    # every run stored at the kill is still there: finished ones unchanged, the ones the kill
    # cut short (pending or running) marked interrupted, never redone in place
    final_runs = _run_states(killed)
    for run_id, status in partial_runs.items():
        expected = "interrupted" if status in ("pending", "running") else status
        assert final_runs[run_id] == expected, (run_id, status, final_runs[run_id])


def test_export_import_roundtrip(tmp_path, spec_path, cli):
    results = tmp_path / "a"
    cli("dataset", "build", "--spec", spec_path, "--results-dir", results, "--limit", 2, check=True)
    cli("dataset", "export", "tiny", "--output", tmp_path / "tiny.parquet", "--results-dir", results, check=True)
    first = cli("dataset", "import", tmp_path / "tiny.parquet", "--results-dir", tmp_path / "b", check=True)
    again = cli("dataset", "import", tmp_path / "tiny.parquet", "--results-dir", tmp_path / "b", check=True)
    assert "4 runs added, 0 already present" in first.stdout
    assert "0 runs added, 4 already present" in again.stdout
    info = json.loads(cli("dataset", "info", "tiny", "--results-dir", tmp_path / "b", "--json", check=True).stdout)
    assert sum(r["count"] for r in info["runs"] if r["status"] == "ok") == 4
    a = json.loads(cli("results", "export", "--json", "--results-dir", results, check=True).stdout)
    b = json.loads(cli("results", "export", "--json", "--results-dir", tmp_path / "b", check=True).stdout)
    strip = lambda runs: sorted(({k: v for k, v in r.items() if k != "memory_samples"} for r in runs),
                                key=lambda r: r["run_id"])
    assert strip(a) == strip(b)  # everything but the raw RSS trace survives the trip
    bad = cli("dataset", "import", spec_path, "--results-dir", tmp_path / "b")
    assert bad.returncode == 2 and "not a readable dataset file" in bad.stderr
    # a build of the same spec over the imported file measures nothing again, and says so
    resumed = cli("dataset", "build", "--spec", spec_path, "--results-dir", tmp_path / "b", "--limit", 2, check=True)
    assert "4 runs were already stored" in resumed.stdout
    db = sqlite3.connect(tmp_path / "b" / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4


def test_shipped_host_dataset_imports_and_covers_every_family(tmp_path, cli):
    """datasets/host-v1.parquet: what a fresh install learns from (issue: >= 500 graphs, every
    family, four variants each)."""
    shipped = ROOT / "datasets" / "host-v1.parquet"
    assert shipped.stat().st_size < 30 * 2**20
    done = cli("dataset", "import", shipped, "-o", tmp_path)
    assert done.returncode == 0, done.stderr
    db = sqlite3.connect(tmp_path / "results.sqlite")
    assert db.execute("SELECT COUNT(DISTINCT model_hash) FROM runs WHERE status='ok'").fetchone()[0] >= 500
    per_model = db.execute("SELECT MIN(c) FROM (SELECT COUNT(DISTINCT variant) c FROM runs "
                           "WHERE status='ok' GROUP BY model_hash)").fetchone()[0]
    assert per_model >= 4
    info = cli("dataset", "info", "host-v1", "-o", tmp_path)
    for family in ("linear", "conv1d", "recurrent", "mlp", "transformer", "mdn", "reparam_kl",
                   "gesture_classifier", "audio_decoder", "sensor_autoencoder"):
        assert family in info.stdout
    hosts = {json.loads(h)["cpu_model"] for (h,) in db.execute("SELECT DISTINCT host FROM runs")}
    assert len(hosts) == 1 and db.execute("SELECT SUM(emulated) FROM runs").fetchone()[0] == 0


def test_shipped_host_v2_has_every_host_compiler_on_one_boot():
    """datasets/host-v2.parquet (issue 14): >= 500 graphs over every family, the ten host
    variants each ok on most of them, failures kept with reasons, one boot, every timed run's
    conditions, and fresh-process repeats for a seeded subset."""
    import pyarrow.parquet as pq

    shipped = ROOT / "datasets" / "host-v2.parquet"
    assert shipped.stat().st_size < 30 * 2**20
    rows = pq.read_table(shipped, columns=["family", "model_hash", "variant", "status", "reason", "host",
                                           "conditions", "quiet_n", "repeat_quiet_p50_us"]).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len({r["model_hash"] for r in ok}) >= 500
    assert {r["family"] for r in ok} == {"linear", "conv1d", "recurrent", "mlp", "transformer", "mdn", "reparam_kl",
                                         "gesture_classifier", "audio_decoder", "sensor_autoencoder"}
    ten = {"onnxruntime", "onnxruntime[graph_opt=disable]", "tvm", "sofie", "litert", "litert[xnnpack=False]",
           "executorch", "executorch[backend=portable]", "torchscript", "torch-eager"}
    per_variant = {v: len({r["model_hash"] for r in ok if r["variant"] == v}) for v in ten}
    assert min(per_variant.values()) >= 440, per_variant  # SOFIE: 447 (its fused-norm and conv failures)
    assert all(r["reason"] for r in rows if r["status"] in ("failed", "mismatch", "timeout"))
    assert len({json.loads(r["host"])["boot_id"] for r in rows}) == 1
    assert all(r["conditions"] and r["quiet_n"] is not None for r in ok)
    assert len({r["model_hash"] for r in ok if r["repeat_quiet_p50_us"]}) >= 30


def test_shipped_ops_dataset_is_single_operators_on_host_v2s_boot():
    """datasets/host-v2-ops.parquet: the kernel-level training data the shipped cost model is
    fitted with: one ONNX node per graph, every operator of the ops family, the ten variants
    with host-v2's gated timing, measured on host-v2's boot (so the two are one device)."""
    import pyarrow.parquet as pq

    from auditor.zoo import OPS

    def rows(name, columns):
        return pq.read_table(ROOT / "datasets" / name, columns=columns).to_pylist()

    ops = rows("host-v2-ops.parquet", ["family", "model_hash", "variant", "status", "host", "graph", "params",
                                        "quiet_n"])
    ok = [r for r in ops if r["status"] == "ok"]
    assert {r["family"] for r in ops} == {"ops"} and len({r["model_hash"] for r in ok}) >= 190
    assert all(len(r["graph"]) == 1 for r in ok)
    assert {json.loads(r["params"])["op"] for r in ok} == set(OPS)
    assert len({r["variant"] for r in ok}) == 10 and all(r["quiet_n"] is not None for r in ok)
    boots = {json.loads(r["host"])["boot_id"] for r in ops}
    assert boots == {json.loads(r["host"])["boot_id"] for r in rows("host-v2.parquet", ["host"])}


def test_shipped_layer_dataset_is_one_heavy_node_per_graph_on_host_v2s_boot():
    """datasets/host-v2-layers.parquet: the heavy kernels' training data: one Gemm, Conv,
    ConvTranspose, GRU or LSTM per graph, every layer op, the ten variants, host-v2's boot."""
    import pyarrow.parquet as pq

    from auditor.zoo import LAYERS

    heavy_ops = {"Gemm", "MatMul", "Conv", "ConvTranspose", "GRU", "LSTM"}
    rows = pq.read_table(ROOT / "datasets" / "host-v2-layers.parquet",
                         columns=["family", "model_hash", "variant", "status", "host", "graph", "params"]).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["family"] for r in rows} == {"layer"} and len({r["model_hash"] for r in ok}) >= 230
    assert all(sum(n["op_type"] in heavy_ops for n in r["graph"]) == 1 for r in ok)
    assert {json.loads(r["params"])["op"] for r in ok} == set(LAYERS)
    assert len({r["variant"] for r in ok}) == 10
    boot = {json.loads(r["host"])["boot_id"] for r in pq.read_table(ROOT / "datasets" / "host-v2.parquet",
                                                                    columns=["host"]).to_pylist()}
    assert {json.loads(r["host"])["boot_id"] for r in rows} == boot


@pytest.mark.parametrize("columns", [
    {"a": [1, 2], "b": ["x", "y"]},  # a valid Parquet file of another schema
    "nested",  # the right top-level columns, per-op rows of another shape
])
def test_import_of_a_parquet_file_of_another_schema_is_one_line(tmp_path, cli, columns):
    import pyarrow as pa
    import pyarrow.parquet

    if columns == "nested":
        from auditor.dataset import FILE_COLUMNS

        columns = {c: [None] for c in FILE_COLUMNS}
        columns.update(run_id=["r1"], samples_ns=[[1, 2]], per_op=[[{"kernel": "k"}]], graph=[[]],
                       accuracy=["[]"])
    path = tmp_path / "other.parquet"
    pa.parquet.write_table(pa.table(columns), str(path))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run([sys.executable, "-m", "auditor", "dataset", "import", str(path), "-o", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp)))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "not an auditor dataset file" in proc.stderr
    assert list(tmp.iterdir()) == []  # no crash file
    db = sqlite3.connect(tmp_path / "r" / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)  # nothing half-imported
    db.close()
