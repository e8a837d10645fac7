"""compile-all with the native runner through the CLI: scheduling requests reach the runner
(and it says when the OS refuses them), and --timeout bounds the runner itself."""

import json
import os
import resource
import subprocess
import sys

import pytest

from tests.conftest import ROOT

MODEL = "examples/blocks.py:mlp"
CPU = min(os.sched_getaffinity(0))  # a CPU this process may run on


def _no_realtime():
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))  # an unprivileged user's default


def _compile_all(results, *extra, timeout=300):
    # as root, drop CAP_SYS_NICE so that the OS refuses SCHED_FIFO as it does for a normal user
    prefix = ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice"] if os.geteuid() == 0 else []
    proc = subprocess.run([*prefix, sys.executable, "-m", "auditor", "compile-all", MODEL, "-c", "sofie",
                           "--harness", "native", "--results-dir", str(results), "--json", *map(str, extra)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, preexec_fn=_no_realtime,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return proc


def _detail(results, run_id):
    from tests.conftest import run_cli

    return json.loads(run_cli("results", "show", run_id, "--results-dir", results, "--json", check=True).stdout)


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    """One native measurement pinned to one CPU with SCHED_FIFO asked for and refused (this also
    builds the runner into the cache for the timeout test)."""
    results = tmp_path_factory.mktemp("native")
    proc = _compile_all(results, "--runs", 50, "--warmup", 5, "--profile-runs", 5, "--sched-fifo", 10, "--cpu", CPU)
    assert proc.returncode == 0, proc.stderr
    (run,) = json.loads(proc.stdout)["runs"]
    return results, run


def test_cpu_and_sched_fifo_reach_the_runner_which_says_what_the_os_refused(native_run):
    results, run = native_run
    assert run["status"] == "ok", run["reason"]
    assert run["n"] == 50 and run["accuracy_passed"] == 1 and run["max_abs_err"] < 1e-5
    detail = _detail(results, run["run_id"])
    scheduling = detail["runtime_memory"]["scheduling"]
    assert scheduling["cpu"] == CPU  # pinned as asked
    assert scheduling["policy"] != "SCHED_FIFO"
    assert any(n.startswith("SCHED_FIFO priority 10 refused: Operation not permitted; timed under SCHED_OTHER")
               for n in scheduling["notes"]), scheduling
    assert detail["settings"]["sched_fifo"] == 10 and detail["settings"]["cpu"] == CPU
    assert detail["settings"]["harness"] == "native"
    commands = " ".join(detail["runtime_memory"]["commands"])
    assert f"--sched-fifo 10 --cpu {CPU}" in commands
    # the per-op times come from the runner's own timers
    assert detail["per_op_attribution"]["runs"] == 5 and detail["per_op"]


def test_a_runner_that_outlives_the_variant_timeout_is_killed_and_recorded(native_run, tmp_path):
    # A runner that would time for a day: the variant's --timeout must bound it, and the
    # worker (not the orchestrator) records why, before its own time is up. The budget leaves
    # room for compiling SOFIE's runner on a loaded machine (it took over 15 s at load 5).
    timeout = 45
    proc = _compile_all(tmp_path, "--runs", 10**9, "--max-seconds", 86400, "--profile-runs", 0,
                        "--timeout", timeout)
    assert proc.returncode == 1, proc.stderr  # nothing could be measured
    (run,) = json.loads(proc.stdout)["runs"]
    assert run["status"] == "failed", run
    assert run["reason"].startswith("runner on local: timed out after "), run["reason"]
    assert run["finished_at"] - run["started_at"] < timeout
