"""MetaSchedule tuning of a TVM Relax module, with a database cached across audits.

The database lives under the cache root (`device_runner.build.cache_root()/tvm-tuning/`), one
folder per (model hash, target, trial budget, fuse, opt level, TVM version): fuse and opt level
change which kernels there are to tune, a TVM upgrade changes the schedules. MetaSchedule's
JSON database keeps one line per measured candidate, but in TVM 0.27 the lines reach the
file only when the database object is destroyed (a killed tune_relax leaves none), so
tuning runs in short rounds (one tune_relax each, ROUND_PER_KERNEL trials per
kernel) and a kill loses at most the round in flight: the next compile counts the records on
disk and tunes only the rest of the budget (one XGB model learns across the rounds of a
process; a resumed tuning starts a new one, seeded by the records).
`tuning-complete.json`, written last, marks a finished tuning (a cache hit) and records its
cost model, time and budget. Progress (trials done, best time of the task just measured)
goes to stderr, which the worker keeps in the run's log.

Where candidates are measured: tuning measures on the device the artifact is for. On
`local` (host target) MetaSchedule's local runner times them here. On an `ssh://` device
they are built here for the device's target (cross-compiled to a shared library for the
board, so the device needs no compiler), and timed there by MetaSchedule's RPCRunner
through TVM's RPC server on the device (device_runner.ssh_tvm_rpc: started over ssh,
reached through an ssh port forward, no tracker); the database is then keyed by the
device too. Under emulation (qemu-armv7) tuning is refused: see tuning_refusal().
"""

from __future__ import annotations

import gc
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from compilers.tvm_target import is_prim_func, tvm_target_dict
from ground.targets import Target

COMPLETE = "tuning-complete.json"
ROUND_PER_KERNEL = 16  # trials per kernel in one tune_relax round (what a kill can lose)
RECORDS = "database_tuning_record.json"


def tvm_version() -> str:
    import tvm

    return str(tvm.__version__)


def tuning_dir(model_hash: str, target: Target, options: dict[str, Any], device: str = "local") -> Path:
    """Where MetaSchedule's database for this model, target, budget, TVM version (and the
    device its candidates were timed on, when not this machine) lives."""
    from device_runner.build import cache_root

    key = (f"{model_hash}-{target.name}-{options['tune_trials']}"
           f"-fuse{int(options['fuse'])}-O{options['opt_level']}-tvm{tvm_version()}")
    if device != "local":
        key += "-on-" + re.sub(r"[^A-Za-z0-9.@_-]+", "_", device.strip().removeprefix("ssh://")).strip("_")
    return cache_root() / "tvm-tuning" / key


def tuning_refusal(trials: int, target: Target, device: str) -> str | None:
    """Why tuning `trials` for target on device cannot be done (None: it can): timings from
    an emulator or from another machine would pick schedules for the wrong processor."""
    if trials <= 0:
        return None
    from device_runner.devices import parse_device
    from device_runner.ssh_tvm_rpc import is_ssh

    if is_ssh(device):
        return None  # measured on the device through TVM's RPC
    if device != "local" and parse_device(device).emulated:
        return (f"tune_trials={trials} is refused under {device}: MetaSchedule keeps the schedules "
                f"that time fastest, and emulated timings (17-185x slower than native, +-40 % noise) "
                f"rank schedules for the emulator, not for the board; tune on the board itself "
                f"(--device ssh://user@board) or use untuned tvm here")
    if not target.is_host:
        return (f"tune_trials={trials} for {target.name} needs the board: MetaSchedule measures "
                f"candidates on the device it tunes for; give --device ssh://user@board")
    return None


def records_in(work_dir: Path) -> int:
    """Measured candidates already in the database (one JSON line each). A line cut short by
    a kill is dropped, so the database loads when the tuning resumes."""
    path = work_dir / RECORDS
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    complete = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            continue
        complete.append(line)
    if len(complete) != len(lines):
        path.write_text("".join(line + "\n" for line in complete))
    return len(complete)


def cost_model_name() -> tuple[str, str]:
    """MetaSchedule's learned XGBoost model when xgboost imports, else random (and why)."""
    try:
        import xgboost

        return "xgb", f"xgboost {xgboost.__version__}"
    except ImportError:
        return "random", "xgboost is not installed (pip install xgboost-cpu): candidates drawn at random"


def _check_json_serialisation() -> None:
    """MetaSchedule serialises IRModules to JSON; with apache-tvm 0.27.0.post1 and
    apache-tvm-ffi 0.1.15.x that segfaults. Probe it in a child process so a bad pair ends
    in a clear error instead of killing the worker."""
    from ground.children import run_child

    probe = ("import tvm\nfrom tvm import te\n"
             "a = te.placeholder((4,), name='a'); b = te.compute((4,), lambda i: a[i] * 2, name='b')\n"
             "tvm.ir.save_json(tvm.IRModule({'main': te.create_prim_func([a, b])}))\n")
    result = run_child([sys.executable, "-c", probe], timeout_s=120)
    if result.returncode != 0:
        import tvm_ffi

        raise RuntimeError(
            f"MetaSchedule cannot run here: tvm.ir.save_json crashes ({result.failure('the probe', 120)}) with "
            f"apache-tvm {tvm_version()} and apache-tvm-ffi {tvm_ffi.__version__}; "
            "apache-tvm-ffi==0.1.14.post1 works")
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise RuntimeError("MetaSchedule needs psutil (pip install psutil)") from None


def _exporter(target: Target):
    """How a candidate becomes a file a runner loads: the host's shared library, or for the
    board one cross-compiled with the target's C++ compiler (so the device needs none; the
    stock export is a tar of objects that the device would have to link itself)."""
    import os
    import tempfile

    def export(mod) -> str:
        path = os.path.join(tempfile.mkdtemp(prefix="auditor-ms-"), "candidate.so")
        if target.is_host:
            mod.export_library(path)
        else:
            from tvm.support import cc

            mod.export_library(path, fcompile=cc.cross_compiler(target.cxx, options=list(target.cxx_flags)))
        return path

    return export


def connect_forwarded(rpc_config):
    """MetaSchedule's session factory for a server reached without a tracker: the config's
    tracker host and port are the ssh forward to the device's RPC server (run in the
    RPCRunner's worker processes)."""
    from tvm import rpc

    return rpc.connect(rpc_config.tracker_host, rpc_config.tracker_port,
                       session_timeout=rpc_config.session_timeout_sec)


def _in_process_builder(export=None):
    """A MetaSchedule builder that compiles candidates in this process.

    The stock LocalBuilder starts a fresh worker pool for every batch, and each worker's
    first build imports tvm.s_tir.tensor_intrin: ~30 s per batch here, enough to hit its
    build timeout. Building in this process pays that import once (a crashing candidate
    takes the compile down with it; the worker runs compile in its own process)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    path = (export or default_export)(default_build(item.mod, item.target, None))
                    results.append(BuilderResult(path, None))
                except Exception as e:  # noqa: BLE001 - a failed candidate is a result
                    results.append(BuilderResult(None, f"{type(e).__name__}: {e}"))
            return results

    return InProcessBuilder()


def _progress_callback(total: int, already: int):
    """A measure callback printing one stderr line per measured batch: trials done of the
    budget and the best time of that task so far."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    state = {"done": already, "best": {}}

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            state["done"] += len(measure_candidates)
            times = [sum(float(s) for s in r.run_secs) / len(r.run_secs)
                     for r in runner_results if r.run_secs and r.error_msg is None]
            best = state["best"]
            if times:
                best[task_id] = min([best.get(task_id, float("inf")), *times])
            shown = f"{best[task_id] * 1e6:.3g} µs" if task_id in best else "none valid yet"
            print(f"tvm tuning: {state['done']} trials measured (budget {total}); task {task_id} best {shown}",
                  file=sys.stderr, flush=True)

    return Progress()


def tune(mod, model_hash: str, target: Target, tvm_target, options: dict[str, Any], notes: list[str],
         device: str = "local"):
    """Tune every kernel of `mod` (or reuse the cached database) and apply the best schedules.
    Candidates are timed on `device` (an ssh:// device through TVM's RPC)."""
    from tvm import relax

    trials = options["tune_trials"]
    refusal = tuning_refusal(trials, target, device)
    if refusal:
        raise ValueError(refusal)
    work_dir = tuning_dir(model_hash, target, options, device)
    complete = work_dir / COMPLETE
    if complete.exists() and records_in(work_dir) > 0:
        done = json.loads(complete.read_text())
        notes.append(f"MetaSchedule tuning cache hit: reused {work_dir} ({trials} trials, tuned in "
                     f"{done['seconds']:.1f} s with cost model {done['cost_model']}, candidates timed on "
                     f"{done.get('measured_on', 'this machine')})")
    else:
        _check_json_serialisation()
        from tvm.s_tir import meta_schedule as ms

        cost_model, cost_detail = cost_model_name()
        work_dir.mkdir(parents=True, exist_ok=True)
        already = records_in(work_dir)
        remaining = max(trials - already, 0)
        t0 = time.perf_counter()
        tasks = len(ms.relax_integration.extract_tasks(mod, tvm_target))
        per_task = max(1, -(-trials // max(tasks, 1)))  # spread the budget over every kernel
        print(f"tvm tuning: {tasks} kernels, {trials} trials ({already} measured before), "
              f"cost model {cost_model}, database {work_dir}", file=sys.stderr, flush=True)
        measured_on = "this machine (MetaSchedule's local runner)"
        if remaining > 0:
            model = ms.cost_model.CostModel.create(cost_model)  # one model, learning across rounds
            progress = _progress_callback(trials, already)
            step = min(ROUND_PER_KERNEL, per_task)
            measurer = _measurer(device, target)
            with measurer as (builder, runner, measured_on):
                remaining = _rounds(ms, mod, tvm_target, work_dir, trials, remaining, step, tasks, model,
                                    builder, runner, progress)
                if measurer.server is not None:
                    measured_on += f" ({measurer.server.sessions()} RPC sessions)"
        seconds = time.perf_counter() - t0
        complete.write_text(json.dumps({
            "trials": trials, "kernels": tasks, "per_kernel": per_task, "seconds": seconds,
            "resumed_from": already, "cost_model": cost_model, "cost_model_detail": cost_detail,
            "device": device, "measured_on": measured_on,
            "tvm": tvm_version(), "tvm_target": tvm_target_dict(target)}))
        resumed = f", resumed after {already} trials of a stopped tuning" if already else ""
        notes.append(f"MetaSchedule tuning cache miss: tuned {trials} trials over {tasks} "
                     f"kernels ({per_task} each at most) in {seconds:.1f} s in this compile{resumed} "
                     f"(cost model {cost_model}: {cost_detail}), candidates timed on {measured_on}, "
                     f"database kept in {work_dir}")
    mod = relax.transform.MetaScheduleApplyDatabase(str(work_dir))(mod)
    kernels = [f for f in mod.functions.values() if is_prim_func(f)]
    scheduled = sum(1 for f in kernels if f.attrs is not None and any(
        key in f.attrs for key in ("tirx.is_scheduled", "tir.is_scheduled")))
    notes.append(f"{scheduled} of {len(kernels)} kernels took a tuned schedule from the database")
    return mod


def _rounds(ms, mod, tvm_target, work_dir: Path, trials: int, remaining: int, step: int, tasks: int, model,
            builder, runner, progress) -> int:
    """Tune in rounds until the budget is measured; returns what is left (0)."""
    while remaining > 0:
        # TVM 0.27's JSON database reaches its files when the database object is
        # destroyed: a killed tune_relax leaves nothing. Short rounds, each its own
        # tune_relax, bound what a kill loses to one round.
        before = records_in(work_dir)
        ms.relax_integration.tune_relax(
            mod=mod, params={}, target=tvm_target, work_dir=str(work_dir),
            max_trials_global=min(remaining, step * tasks), max_trials_per_task=step,
            num_trials_per_iter=step, cost_model=model, seed=0,
            builder=builder, runner=runner,
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress],
        )
        gc.collect()  # the round's database object writes its records when collected
        after = records_in(work_dir)
        if after <= before:
            raise RuntimeError(f"MetaSchedule round added no tuning record to {work_dir} "
                               f"({after} of {trials} trials measured)")
        remaining = trials - after
    return remaining


# how long TVM's RPC server may live on the device, whatever the tuning does
RPC_SERVER_LIMIT_S = 24 * 3600.0
RPC_SESSION_TIMEOUT_S = 120  # one candidate's upload, argument fill and timing on the device


class _measurer:
    """(builder, runner, where) for the device: this process's builder and the local runner
    on `local`; for an ssh:// device the builder exports for its target and the RPCRunner
    times on the device through its RPC server, which this context starts and stops."""

    def __init__(self, device: str, target: Target) -> None:
        self.device, self.target = device, target
        self.server = self._dev = None

    def __enter__(self):
        from device_runner.ssh_tvm_rpc import TvmRpcServer, is_ssh

        if not is_ssh(self.device):
            return _in_process_builder(), "local", "this machine (MetaSchedule's local runner)"
        from tvm.s_tir.meta_schedule.runner import RPCConfig, RPCRunner

        from device_runner.devices import parse_device

        self._dev = parse_device(self.device)
        if self._dev.target_name != self.target.name:
            raise ValueError(f"{self.device} runs {self._dev.target_name} code, not {self.target.name}")
        self.server = TvmRpcServer(self._dev, RPC_SERVER_LIMIT_S).start()
        print(f"tvm tuning: candidates timed on {self.server.describe()} (127.0.0.1:{self.server.port} here)",
              file=sys.stderr, flush=True)
        runner = RPCRunner(RPCConfig(tracker_host="127.0.0.1", tracker_port=self.server.port,
                                     tracker_key="ssh-forward", session_timeout_sec=RPC_SESSION_TIMEOUT_S),
                           f_create_session=connect_forwarded)
        return _in_process_builder(_exporter(self.target)), runner, self.server.describe()

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.stop()
        if self._dev is not None:
            self._dev.close()
