"""Long-lived measurement workers: one process per compiler serves run after run.

A fresh `python -m auditor.worker` per run pays ~2 s of interpreter start and imports
(torch, the runtimes) each time; a dataset build has thousands of runs. Here the
orchestrator (MeasurePool, in the build's process) keeps one worker per compiler (so a
runtime's crash or leaked state stays inside that compiler's runs) and hands it jobs one
line at a time on stdin; the worker runs each exactly as `auditor.worker` does (run_job:
compile in a forked child, load, time, check, profile, everything stored as produced) and
announces `phase served` when the run is stored.

The orchestrator creates each run's row (pending) before sending its job, so when a worker
dies or hangs the run it was serving is known exactly: it is recorded failed/timeout with
the signal or the timeout, the worker is started again for the next run, and the build
goes on (as `auditor coverage` restarts its worker past a crashing case). A SIGKILL of the
build kills the workers with it (die-with-parent); the runs they were serving are marked
interrupted on the next start and measured afresh, never half-kept.

Honest labels: a run in a long-lived worker stores `settings.worker` (kind, pid, its number
in the worker); its RSS includes what earlier runs in the process left behind, and
ru_maxrss (the process's lifetime peak) is not stored for it.

    python -m auditor.measure_worker --cpu N --compiler NAME --results-dir DIR
    (jobs: one WorkerJob JSON path per line on stdin; --cpu -1: not pinned)
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

from auditor.job import WorkerJob
from ground.children import Child, Ended, worker_env

SERVED = "served"


class MeasurePool:
    """The build-side end: one long-lived worker per compiler, restarted after it dies.
    cpu >= 0 pins every worker to that CPU (os.sched_setaffinity in the worker)."""

    def __init__(self, results_dir: Path, cpu: int = -1):
        self.results_dir = Path(results_dir)
        self.cpu = cpu
        self.workers: dict[str, tuple[Child, object]] = {}
        self.started: list[int] = []  # pids of every worker started, in order

    def _worker(self, compiler: str) -> Child:
        found = self.workers.get(compiler)
        if found is not None and found[0].proc.poll() is None:
            return found[0]
        if found is not None:
            self._forget(compiler)
        logs = self.results_dir / "measure-workers"
        logs.mkdir(parents=True, exist_ok=True)
        err = open(logs / f"{compiler}-{len(self.started)}.stderr", "w")
        # compiler and results dir only name the process (ps, pgrep); jobs come on stdin
        child = Child([sys.executable, "-m", "auditor.measure_worker", "--cpu", str(self.cpu), "--compiler",
                       compiler, "--results-dir", str(self.results_dir)],
                      stdin=subprocess.PIPE, stderr=err, env=worker_env(), cwd=self.results_dir)
        self.workers[compiler] = (child, err)
        self.started.append(child.proc.pid)
        return child

    def _forget(self, compiler: str) -> None:
        child, err = self.workers.pop(compiler)
        err.close()

    def run(self, job: WorkerJob, timeout_s: float, on_phase=None) -> Ended:
        """Serve one run (its row already stored, pending); how it ended, as run_worker says it."""
        path = job.save()
        t0 = time.perf_counter()
        child = self._worker(job.compiler)
        if not child.send(str(path)):  # it died between runs: a fresh one takes the job
            self._forget(job.compiler)
            child = self._worker(job.compiler)
            child.send(str(path))
        ended = child.until(SERVED, timeout_s, on_phase)
        if ended is None:
            return Ended(child.argv, 0, "", "", time.perf_counter() - t0)
        self._forget(job.compiler)
        return ended

    def restart(self) -> None:
        """End every worker (the next run starts fresh ones): repeats in separate processes."""
        for compiler in list(self.workers):
            child, _ = self.workers[compiler]
            child.close()
            self._forget(compiler)

    close = restart


def precompile(job: dict) -> str:
    """In a compile-ahead process: fill the artifact cache for one (point, variant); stores
    nothing else (the measuring run records a failure itself). Returns what happened."""
    from auditor.worker import _compiled
    from compilers import registry
    from ground.errors import first_line
    from ground.targets import TARGETS
    from ground.tensors import ModelBundle

    try:
        cls = registry.get(job["compiler"])
        ok, version = cls.available()
        if not ok:
            return f"unavailable: {version}"
        bundle = ModelBundle.load(Path(job["bundle_dir"]))
        target = TARGETS[job["target"]]
        if cls().can_compile(bundle, target):
            return "cannot compile"
        options = cls.resolve_options(dict(job["overrides"]))
        log = Path(job["log"])
        log.parent.mkdir(parents=True, exist_ok=True)
        fake = WorkerJob(run_id="", results_dir=Path(job["results_dir"]), workdir=log.parent,
                         bundle_dir=bundle.directory, data_dir=log.parent, inputs_source="", compiler=cls.name,
                         options=options, target=target.name, device="local", harness="python",
                         artifact_cache=True)
        _, seconds, cached = _compiled(cls, version, bundle, target, fake, log.parent, log)
        return "cached" if cached else f"compiled in {seconds:.1f} s"
    except Exception as e:  # noqa: BLE001 - measured later, where the failure is recorded
        return f"failed: {type(e).__name__}: {first_line(e)}"


def main() -> int:
    from auditor.worker import run_job

    args = sys.argv[1:]
    cpu = int(args[args.index("--cpu") + 1]) if "--cpu" in args else -1
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    served = 0
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        served += 1
        run_job(WorkerJob.load(Path(path)), served)
        gc.collect()
        print(f"phase {SERVED}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
