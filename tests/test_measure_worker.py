"""Long-lived measurement workers (issue 14): a crash is recorded against exactly the run it
hit and the build goes on in a fresh worker; --quiet compiles first, measures pinned,
records the conditions, refuses a loaded run, and measures a seeded subset again in
separate processes; the timing loop stops early once the median is pinned down."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from auditor.timing import GATE_STRETCH, TimingSettings, median_converged, time_calls
from ground.probe import QUIET_MIN
from tests.conftest import ROOT

CONSOLE_SCRIPT = Path(sys.executable).parent / "auditor"
ORT = ["onnxruntime", "onnxruntime:graph_opt=disable"]


def _db_rows(results: Path, sql: str) -> list:
    try:
        db = sqlite3.connect(results / "results.sqlite", timeout=30)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:  # not created yet
        return []


def test_timing_stops_once_the_median_is_pinned_down():
    wide = np.array([100, 1000] * 100, dtype=np.int64)  # two modes: the median is anywhere between
    assert not median_converged(wide, 0.05)
    assert median_converged(np.full(200, 1000, dtype=np.int64) + np.arange(200) % 3, 0.05)
    steady = TimingSettings(warmup=0, runs=10_000, max_seconds=60, min_runs=50, converge=0.5)
    t = time_calls(lambda: sum(range(200)), steady)
    assert 50 <= len(t.samples_ns) < 10_000 and t.stopped_early
    t = time_calls(lambda: sum(range(200)), TimingSettings(warmup=0, runs=300, max_seconds=60, min_runs=50))
    assert len(t.samples_ns) == 300  # converge off: every run


def test_a_crash_in_a_long_lived_worker_costs_exactly_its_run(tmp_path):
    spec = tmp_path / "crash.json"
    spec.write_text(json.dumps({
        "name": "crash", "compilers": ORT,
        "timing": {"runs": 1_000_000, "warmup": 5, "max_seconds": 0.8, "profile_runs": 0},
        "families": [{"family": "mlp", "grid": {"depth": [1, 2, 3], "width": [8]}}]}))
    results = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "auditor", "dataset", "build", "--spec", str(spec),
                             "--results-dir", str(results)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    victim = None
    end = time.monotonic() + 300
    while victim is None and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
        ok = _db_rows(results, "SELECT COUNT(*) FROM runs WHERE status='ok'")
        running = _db_rows(results, "SELECT run_id FROM runs WHERE status='running'")
        if ok and ok[0][0] >= 2 and running:  # the worker has served runs before this one
            # the build's own child: the worker's forked compile child has the same command line
            found = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "auditor.measure_worker .*--name onnxruntime"],
                                   capture_output=True, text=True).stdout.split()
            if found:
                victim = running[0][0]
                os.kill(int(found[0]), signal.SIGSEGV)
    assert victim, "no run was caught running in the worker"
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    runs = _db_rows(results, "SELECT run_id, variant, status, reason, started_at, settings FROM runs "
                             "ORDER BY started_at")
    assert len(runs) == 6  # 3 points x 2 variants, none redone
    crashed = [r for r in runs if r[0] == victim]
    assert crashed[0][2] == "failed" and "SIGSEGV" in crashed[0][3]
    assert all(r[2] == "ok" for r in runs if r[0] != victim)  # the build went on
    worker = {r[0]: json.loads(r[5])["worker"] for r in runs if r[0] != victim}
    before = [worker[r[0]] for r in runs if r[0] != victim and r[4] < crashed[0][4]]
    after = [worker[r[0]] for r in runs if r[0] != victim and r[4] > crashed[0][4]]
    assert before and after
    assert len({w["pid"] for w in before}) == 1 and max(w["run_in_worker"] for w in before) >= 2
    assert {w["pid"] for w in after}.isdisjoint({w["pid"] for w in before})  # restarted
    assert after[0]["run_in_worker"] == 1 and all(w["kind"] == "long-lived" for w in before + after)


@pytest.fixture(scope="module")
def quiet_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("quiet-home")
    spec = {"name": "quiet", "compilers": ORT,
            "timing": {"runs": 300, "warmup": 5, "max_seconds": 0.3, "profile_runs": 0, "converge": 0.05},
            "spread": {"share": 0.5, "repeats": 2, "seed": 0},
            "families": [{"family": "mlp", "grid": {"depth": [1, 2], "width": [8]}}]}
    (home / "quiet.json").write_text(json.dumps(spec))
    spec["families"][0]["grid"]["depth"].append(3)  # one more point for the refusal below
    (home / "quiet3.json").write_text(json.dumps(spec))
    return home


def _auditor(home: Path, *args):
    return subprocess.run([str(CONSOLE_SCRIPT), *map(str, args)], cwd=home, capture_output=True, text=True,
                          timeout=600)


def test_quiet_build_compiles_first_measures_pinned_and_repeats_in_fresh_workers(quiet_home):
    import pyarrow.parquet as pq

    results = quiet_home / "auditor-results"
    first = _auditor(quiet_home, "dataset", "build", "--spec", "quiet.json", "--quiet", "--compile-only",
                     "--jobs", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "4 (point, variant) compiles done or cached" in first.stdout and "nothing measured" in first.stdout
    assert _db_rows(results, "SELECT COUNT(*) FROM runs") == [(0,)]
    assert len([p for p in (results / "artifacts").iterdir() if (p / "artifact.json").is_file()]) == 4
    done = _auditor(quiet_home, "dataset", "build", "--spec", "quiet.json", "--quiet", "--allow-load", "--jobs", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 points measured, 1 measured again for their spread" in done.stdout
    runs = _db_rows(results, "SELECT variant, status, settings, artifact_notes, n FROM runs")
    assert len(runs) == 2 * 2 + 1 * 2 and all(r[1] == "ok" for r in runs)
    for variant, _, settings, notes, n in runs:
        settings = json.loads(settings)
        conditions = settings["conditions"]
        assert conditions["pinned"] and conditions["affinity"] == [os.cpu_count() - 1]
        assert len(conditions["loadavg"]) == 3 and conditions["other_cores_busy"] is not None
        assert conditions["under_load"] == bool(conditions["load_reason"])
        assert "artifact reused" in notes  # compiled ahead, before anything was measured
        quiet = conditions["quiet"]  # dataset builds gate their loops (auditor.timing)
        assert quiet["method"] == "probe-gated blocks" and quiet["probe_floor_us"] > 0
        assert len(quiet["probe_over_floor"]) == len(quiet["block_calls"]) == quiet["blocks"] and quiet["n"] <= 300
        assert sum(quiet["block_calls"]) == n and quiet["waited_s"] >= 0
        assert quiet["n"] == sum(b - a for a, b in quiet["quiet_ranges"]) and max(quiet["quiet_ranges"] or [[0, 0]])[1] <= n
        assert 50 <= n <= 300 * GATE_STRETCH
        assert (quiet["n"] < QUIET_MIN) == ("contended: " in conditions["load_reason"])
    pids = {(json.loads(s)["repeat"], json.loads(s)["worker"]["pid"]) for _, _, s, _, _ in runs}
    main, repeat = {p for k, p in pids if k == 0}, {p for k, p in pids if k == 1}
    assert len(main) == len(repeat) == 1 and main != repeat  # the repeat ran in a fresh process

    exported = _auditor(quiet_home, "dataset", "export", "quiet", "--output", "quiet.parquet")
    assert exported.returncode == 0, exported.stderr
    rows = pq.read_table(quiet_home / "quiet.parquet").to_pylist()
    assert len(rows) == 4  # repeats are not rows of their own
    spread = [r for r in rows if r["repeat_p50_us"]]
    assert len(spread) == 2 and {r["spec"] for r in spread} == {spread[0]["spec"]}
    for r in spread:
        p50s = r["repeat_p50_us"]
        assert len(p50s) == 2 and r["p50_us"] in p50s
        assert r["spread"] == pytest.approx((max(p50s) - min(p50s)) / (sum(p50s) / 2))
        quiet = r["repeat_quiet_p50_us"]  # the uncontended p50s, where both had enough such samples
        assert quiet is None or (len(quiet) == 2 and r["quiet_p50_us"] in quiet)
    for r in rows:
        quiet = json.loads(r["conditions"])["quiet"]
        assert (r["quiet_n"], r["quiet_p50_us"]) == (quiet["n"], quiet.get("p50_us"))
    assert all(json.loads(r["conditions"])["pinned"] and r["under_load"] is not None for r in rows)
    info = _auditor(quiet_home, "dataset", "info", "quiet", "--json")
    counted = json.loads(info.stdout)["runs"]
    assert sum(r["count"] for r in counted if not r["repeat"]) == 4  # a point per variant, not 6
    assert sum(r["count"] for r in counted if r["repeat"]) == 2
    assert "spread repeats (runs measured again, not counted above): 2 ok" in \
        _auditor(quiet_home, "dataset", "info", "quiet").stdout
    # everything stored (as after importing a partial build): nothing left to compile ahead
    again = _auditor(quiet_home, "dataset", "build", "--spec", "quiet.json", "--quiet", "--compile-only")
    assert "0 (point, variant) compiles done or cached" in again.stdout, again.stderr[-2000:]


def test_quiet_build_refuses_a_run_measured_under_load(quiet_home):
    results = quiet_home / "auditor-results"
    before = _db_rows(results, "SELECT run_id, status FROM runs")
    assert before, "needs the build of the test above"
    # a limit below zero: any CPU use by anything else counts as load
    refused = _auditor(quiet_home, "dataset", "build", "--spec", "quiet3.json", "--quiet", "--max-other-busy", "-1")
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]  # above it: the progress display
    assert "measured under load" in last and "Traceback" not in refused.stderr
    after = dict(_db_rows(results, "SELECT run_id, status FROM runs"))
    assert all(after[rid] == status for rid, status in before)  # what was stored stays
    new = [(rid, s) for rid, s in after.items() if rid not in dict(before)]
    assert new and all(s == "interrupted" for _, s in new)
    reasons = _db_rows(results, "SELECT reason FROM runs WHERE status='interrupted'")
    assert all(r[0].startswith("measured under load, not kept") for r in reasons)


def test_artifact_cache_reuses_finished_compiles_and_remembers_failures(tmp_path):
    from auditor import artifact_cache
    from compilers.base import Artifact
    from ground.targets import TARGETS

    calls = []

    def compile_into(directory, fail=None):
        calls.append(directory)
        (directory / "model.bin").write_bytes(b"x")
        if fail:
            raise fail
        return Artifact("c", "1.0", TARGETS["host"], {"o": 1}, directory, {"model": "model.bin"},
                        {"k": ["n"]}, ["note"])

    key = artifact_cache.cache_key("hash", "c", {"o": 1}, "host", "1.0")
    assert key != artifact_cache.cache_key("hash", "c", {"o": 1}, "host", "1.1")  # another version
    with pytest.raises(RuntimeError, match="compiler failed"):
        artifact_cache.get_or_compile(tmp_path, key, lambda d: compile_into(d, RuntimeError("compiler failed")))
    # the same compile (same key: compiler version included) fails again without running
    with pytest.raises(artifact_cache.CachedFailure, match=r"^RuntimeError: compiler failed \(cached: "):
        artifact_cache.get_or_compile(tmp_path, key, compile_into)
    assert len(calls) == 1
    # a compile stopped by its cap is retried only under a longer cap (or none)
    capped = artifact_cache.cache_key("hash", "c", {"o": 2}, "host", "1.0")
    with pytest.raises(artifact_cache.CompileTimedOut):
        artifact_cache.get_or_compile(tmp_path, capped, lambda d: compile_into(d, artifact_cache.CompileTimedOut(5)),
                                      cap_s=5)
    for cap in (5, 3):
        with pytest.raises(artifact_cache.CachedFailure, match="exceeded the 5 s cap"):
            artifact_cache.get_or_compile(tmp_path, capped, compile_into, cap_s=cap)
    assert len(calls) == 2
    assert not artifact_cache.get_or_compile(tmp_path, capped, compile_into, cap_s=60)[2] and len(calls) == 3

    shutil.rmtree(artifact_cache.root(tmp_path) / key)  # removing the entry retries it
    first, seconds, cached = artifact_cache.get_or_compile(tmp_path, key, compile_into)
    assert not cached and len(calls) == 4
    again, seconds_again, cached = artifact_cache.get_or_compile(tmp_path, key, compile_into)
    assert cached and len(calls) == 4 and seconds_again == seconds
    assert (again.files, again.kernel_map, again.notes, again.target.name) == \
        (first.files, first.kernel_map, first.notes, "host")
    (again.directory / "model.bin").unlink()  # an entry missing a file is compiled again
    artifact_cache.get_or_compile(tmp_path, key, compile_into)
    assert len(calls) == 5


class _SlowCompiler:
    """Stands in for a compiler class in compile_isolated: its compile sleeps."""

    def __init__(self, device="local"):
        pass

    def compile(self, bundle, target, options, workdir):
        time.sleep(options["sleep"])
        return "compiled"


def test_a_compile_past_its_cap_is_killed_and_named(tmp_path):
    from auditor.artifact_cache import CompileTimedOut
    from auditor.worker import compile_isolated

    t0 = time.perf_counter()
    with pytest.raises(CompileTimedOut, match="exceeded the 1 s cap"):
        compile_isolated(_SlowCompiler, None, None, {"sleep": 30}, tmp_path, tmp_path / "log", cap_s=1)
    assert time.perf_counter() - t0 < 10  # the sleeping child was killed, not waited for
    assert compile_isolated(_SlowCompiler, None, None, {"sleep": 0}, tmp_path, tmp_path / "log", cap_s=5) == "compiled"


def test_a_sampled_build_covers_every_family_and_repeats_what_the_whole_build_would():
    from auditor.dataset_quiet import repeat_subset
    from auditor.sweeps import load_sweep, round_robin

    sweep = load_sweep(ROOT / "datasets" / "sweeps" / "host-v2.json")
    families = {p.split(":")[1] for p in sweep.points}
    part, whole = round_robin(sweep.points, 100), round_robin(sweep.points, 10_000)
    assert {p.split(":")[1] for p in part} == families and len(part) == 100
    assert sorted(whole) == sorted(sweep.points) and set(part) <= set(whole)
    small, big = repeat_subset(part, 0.1, 2), repeat_subset(whole, 0.1, 2)
    assert set(small) <= set(big) and set(small) == set(big) & set(part)
    assert 0.05 < len(big) / len(whole) < 0.15


def test_every_compilers_warm_compile_loads_what_it_names():
    """A long-lived worker warms itself for a compiler before forking its compiles
    (Compiler.warm_compile): a module name that no longer imports would fail every compile
    of that compiler in a dataset build, so each available compiler's list is checked here."""
    from compilers import registry

    warmed = []
    for name in registry.names():
        cls = registry.get(name)
        if not cls.available()[0]:
            continue
        cls.warm_compile()
        assert all(module in sys.modules for module in cls.compile_imports), name
        warmed += cls.compile_imports
    # the slow ones the builder relies on sharing (litert_torch ~5 s, executorch.exir ~6.5 s)
    assert {"litert_torch", "executorch.exir", "torch._export.serde.serialize"} <= set(warmed)


def test_warmed_workers_answer_each_task_with_its_own_result(tmp_path):
    from auditor.measure_worker import MeasurePool

    pool = MeasurePool(tmp_path)
    try:
        pool.warm(["onnxruntime", "torch-eager"])  # not waited for: the next call reads past it
        assert pool.warming == {"onnxruntime", "torch-eager"}
        result, ended = pool.call("onnxruntime", {"kind": "compile", "compiler": "no-such-compiler"}, 120)
        assert ended.returncode == 0 and result["outcome"].startswith("failed: ")  # not the warm's answer
        pool.warm(["torch-eager"], wait=True, timeout_s=120)
        assert not pool.warming and len(pool.started) == 2  # warm workers are reused, not restarted
    finally:
        pool.close()


def test_a_compile_that_fails_ahead_is_recorded_by_its_run_without_compiling_again(tmp_path):
    """SOFIE fails this graph (its fused batch norm names a tensor twice): compile-ahead caches
    the failure, the measuring run records it as failed with the compiler's reason, and a
    resumed build does not compile it again."""
    spec = {"name": "fails", "compilers": ["sofie", "onnxruntime"],
            "timing": {"runs": 50, "warmup": 2, "max_seconds": 0.1, "profile_runs": 0},
            "families": [{"family": "transformer", "grid": {"d_model": [16], "ff": [64], "heads": [2],
                                                           "norm": ["batch"], "seq_len": [1]}}]}
    (tmp_path / "fails.json").write_text(json.dumps(spec))
    done = _auditor(tmp_path, "dataset", "build", "--spec", "fails.json", "--quiet", "--allow-load")
    assert done.returncode == 0, done.stderr[-2000:]
    results = tmp_path / "auditor-results"
    runs = dict(_db_rows(results, "SELECT variant, status || ': ' || reason FROM runs"))
    assert runs["onnxruntime"].startswith("ok")
    assert runs["sofie"].startswith("failed: compile: CachedFailure: RuntimeError: sofie: initialized tensor")
    assert "(cached: this compile failed the same way at " in runs["sofie"]
    failed = [p for p in (results / "artifacts").glob("*/failed.json")]
    assert len(failed) == 1 and json.loads(failed[0].read_text())["cap_s"] is None
    stamp = failed[0].stat().st_mtime_ns
    again = _auditor(tmp_path, "dataset", "build", "--spec", "fails.json", "--quiet", "--allow-load")
    assert again.returncode == 0, again.stderr[-2000:]
    assert failed[0].stat().st_mtime_ns == stamp  # not compiled (and failed) again
