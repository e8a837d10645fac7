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

    python -m auditor.measure_worker --cpu N --name NAME --results-dir DIR
    (tasks: one JSON object per line on stdin, see serve(); --cpu -1: not pinned)

The same workers export points and compile artifacts ahead for `dataset build --quiet`
(in_parallel: --jobs workers, each driven by a thread of the build).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.job import WorkerJob
from ground.children import Child, Ended, worker_env

if TYPE_CHECKING:
    from auditor.pipeline import Prepared

SERVED = "served"
RESULT = "result "


class MeasurePool:
    """The build-side end: one long-lived worker per name (a compiler's name when measuring),
    restarted after it dies. cpu >= 0 pins every worker to that CPU (os.sched_setaffinity in
    the worker). Used from one thread at a time."""

    def __init__(self, results_dir: Path, cpu: int = -1):
        self.results_dir = Path(results_dir)
        self.cpu = cpu
        self.workers: dict[str, tuple[Child, object]] = {}
        self.started: list[int] = []  # pids of every worker started, in order
        self.warming: set[str] = set()  # workers sent a warm task whose `served` is not read yet

    def _worker(self, name: str) -> Child:
        found = self.workers.get(name)
        if found is not None and found[0].proc.poll() is None:
            return found[0]
        if found is not None:
            self._forget(name)
        logs = self.results_dir / "measure-workers"
        logs.mkdir(parents=True, exist_ok=True)
        err = open(logs / f"{name}-{os.getpid()}-{len(self.started)}.stderr", "w")
        # the name and results dir only label the process (ps, pgrep); tasks come on stdin
        child = Child([sys.executable, "-m", "auditor.measure_worker", "--cpu", str(self.cpu), "--name",
                       name, "--results-dir", str(self.results_dir)],
                      stdin=subprocess.PIPE, stderr=err, env=worker_env(), cwd=self.results_dir)
        self.workers[name] = (child, err)
        self.started.append(child.proc.pid)
        return child

    def _forget(self, name: str) -> None:
        child, err = self.workers.pop(name)
        self.warming.discard(name)
        err.close()

    def warm(self, names: list[str], wait: bool = False, timeout_s: float | None = None) -> None:
        """Start the workers for `names` now, each importing its compiler's runtime (a warm
        task): their start-ups (seconds each: torch, the runtime) overlap one another and the
        build's exports instead of each delaying its compiler's first run. Runs measured while
        others still warm record that load in their conditions. wait: return when all are warm."""
        for name in dict.fromkeys(names):
            if name in self.workers and self.workers[name][0].proc.poll() is None:
                continue
            if self._worker(name).send(json.dumps({"kind": "warm", "compiler": name})):
                self.warming.add(name)
        if wait:
            for name in list(self.warming):
                self._settle(name, timeout_s)

    def _settle(self, name: str, timeout_s: float | None) -> None:
        """Read the `served` of the worker's warm task, so the next task's is its own; a
        worker that died warming is forgotten (the next task starts a fresh one)."""
        self.warming.discard(name)
        if self.workers[name][0].until(SERVED, timeout_s) is not None:
            self._forget(name)

    def call(self, name: str, task: dict, timeout_s: float | None = None,
             on_phase=None) -> tuple[dict | None, Ended]:
        """One task in worker `name`: (its result, how it ended: returncode 0 when served;
        otherwise the worker died or was killed at timeout_s, and is started afresh next time)."""
        t0 = time.perf_counter()
        if name in self.warming:
            self._settle(name, timeout_s)
        child = self._worker(name)
        if not child.send(json.dumps(task)):  # it died between tasks: a fresh one takes this
            self._forget(name)
            child = self._worker(name)
            child.send(json.dumps(task))
        seen = len(child.stdout_lines())
        ended = child.until(SERVED, timeout_s, on_phase)
        if ended is not None:
            self._forget(name)
            return None, ended
        result = next((json.loads(line[len(RESULT):]) for line in reversed(child.stdout_lines()[seen:])
                       if line.startswith(RESULT)), {})
        return result, Ended(child.argv, 0, "", "", time.perf_counter() - t0)

    def run(self, job: WorkerJob, timeout_s: float, on_phase=None) -> Ended:
        """Serve one measuring run (its row already stored, pending) in its compiler's worker;
        how it ended, as run_worker says it."""
        path = job.save()
        return self.call(job.compiler, {"kind": "measure", "job": str(path)}, timeout_s, on_phase)[1]

    def restart(self) -> None:
        """End every worker (the next task starts fresh ones): repeats in separate processes."""
        for name in list(self.workers):
            child, _ = self.workers[name]
            child.close()
            self._forget(name)

    close = restart


def in_parallel(results_dir: Path, tasks: list[dict], jobs: int, timeout_s: float | None = None,
                done=None) -> list[dict]:
    """Each task in one of `jobs` long-lived workers (tasks of every kind but measure); the
    results in order. A worker that dies fails its task ({"failed": why}) and is replaced."""
    todo = list(enumerate(tasks))
    results: list[dict] = [{} for _ in tasks]
    lock = threading.Lock()

    def drive(slot: int) -> None:
        pool = MeasurePool(results_dir)
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    index, task = todo.pop(0)
                result, ended = pool.call(f"ahead{slot}", task, timeout_s)
                results[index] = result if result is not None else {"failed": ended.failure("worker", timeout_s)}
                if done:
                    done(tasks[index], results[index])
        finally:
            pool.close()

    threads = [threading.Thread(target=drive, args=(slot,), daemon=True) for slot in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def prepare_point(spec: str, results_dir: str) -> Prepared | str:
    """In a worker exporting ahead (dataset build): the prepared point, or why it failed."""
    from auditor.pipeline import ModelRequest, prepare
    from store import Store
    from ground.errors import AuditorError, first_line

    store = Store(Path(results_dir))
    try:
        return prepare(ModelRequest(spec), store)
    except AuditorError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - an exporter crash fails this point only
        return f"export failed: {type(e).__name__}: {first_line(e)}"
    finally:
        store.close()


def prepared_to_dict(prepared) -> dict:
    return {"model_source": prepared.model_source, "model_format": prepared.model_format,
            "bundle_dir": str(prepared.bundle.directory), "data_dir": str(prepared.data_dir),
            "inputs_digest": prepared.inputs_digest, "inputs_source": prepared.inputs_source,
            "sequence": prepared.sequence, "stream_state": prepared.stream_state}


def prepared_from_dict(d: dict):
    from auditor.pipeline import Prepared
    from ground.tensors import ModelBundle

    return Prepared(d["model_source"], d["model_format"], ModelBundle.load(Path(d["bundle_dir"])),
                    Path(d["data_dir"]), d["inputs_digest"], d["inputs_source"], d["sequence"], d["stream_state"])


def precompile(job: dict) -> str:
    """In a compile-ahead process: fill the artifact cache for one (point, variant); stores
    no run (a failure is cached, and the measuring run records it without compiling again).
    Returns what happened."""
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
                         artifact_cache=True, compile_cap_s=job.get("cap_s"))
        _, seconds, cached = _compiled(cls, version, bundle, target, fake, log.parent, log)
        return "cached" if cached else f"compiled in {seconds:.1f} s"
    except Exception as e:  # noqa: BLE001 - measured later, where the failure is recorded
        return f"failed: {type(e).__name__}: {first_line(e)}"


def serve(task: dict, served: int) -> dict:
    """One task in this worker: measure (a WorkerJob file), compile (precompile), export (a
    zoo point, as the build's export step), warm (import a compiler's runtime)."""
    kind = task["kind"]
    if kind == "warm":  # what the compiler's first run would import (MeasurePool.warm)
        from compilers import registry
        import auditor.worker  # noqa: F401 - the run path's own imports (numpy, the store)

        ok, detail = registry.get(task["compiler"]).available()
        return {"available": ok, "detail": detail}
    if kind == "measure":
        from auditor.worker import run_job

        run_job(WorkerJob.load(Path(task["job"])), served)
        return {}
    if kind == "compile":
        return {"outcome": precompile(task)}
    if kind == "export":
        prepared = prepare_point(task["spec"], task["results_dir"])
        return {"failed": prepared} if isinstance(prepared, str) else {"prepared": prepared_to_dict(prepared)}
    raise ValueError(f"unknown task kind {kind!r}")


def main() -> int:
    args = sys.argv[1:]
    cpu = int(args[args.index("--cpu") + 1]) if "--cpu" in args else -1
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    served = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        served += task["kind"] != "warm"  # a run's number counts the tasks before it, warming aside
        result = serve(task, served)
        gc.collect()
        print(RESULT + json.dumps(result, default=str), flush=True)
        print(f"phase {SERVED}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
