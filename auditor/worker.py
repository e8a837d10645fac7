"""One compiler variant on one model, in its own process: compile, time, check, profile.

The orchestrator starts `python -m auditor.worker JOB.json` per variant, so a segfault or
hang here costs only this run. Every figure goes into the store as soon as it exists.
Phases are announced on stdout (`phase NAME`) for the progress display, never while timing.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
import time
import traceback
from pathlib import Path

import numpy as np

from auditor import accuracy, artifact_cache, deadline, state
from auditor.inputs import InputSet
from auditor.job import WorkerJob
from auditor.memory import RssSampler
from store import Measurement, Store
from auditor.timing import latency_stats, quiet_summary, time_calls
from compilers import registry
from ground.children import dies_with_me
from ground.errors import first_line
from ground.quiet import captured_output
from ground.probe import QUIET_MIN
from ground.quietness import Conditions
from ground.targets import TARGETS
from ground.tensors import ModelBundle


PYTHON_LOOP = "python: time.perf_counter_ns around each run() call"
# of a variant's time (--timeout), what is kept back after the native runner is killed for
# fetching what it wrote and storing why, before the orchestrator kills this worker
RUNNER_MARGIN_S = 5.0


def runner_timeout_s(job: WorkerJob, now: float | None = None) -> float:
    """Seconds the native runner may take: what is left of the variant's time (the job's
    wall-clock `timeout_at`, set by the orchestrator) less RUNNER_MARGIN_S, at least 1 s."""
    now = time.time() if now is None else now
    return max(1.0, job.timeout_at - now - RUNNER_MARGIN_S)


def _phase(name: str) -> None:
    print(f"phase {name}", flush=True)


def _compile(cls, bundle, target, options, workdir: Path, log: Path, device: str = "local"):
    with captured_output(log):
        return cls(device=device).compile(bundle, target, options, workdir)


class CompilerCrashed(RuntimeError):
    """The forked compile died (a signal or an exit) instead of returning or raising."""


def compile_isolated(cls, bundle, target, options, workdir: Path, log: Path, device: str = "local",
                     cap_s: float | None = None):
    """Compile in a forked child, so the measuring process's memory (RSS, ru_maxrss) holds the
    runtime and not what the compiler allocated, and a compiler crash is an error here (the
    caller's process lives on). The parent has imported the compiler's package (available()),
    which the child shares. cap_s: the child is killed after that long (CompileTimedOut)."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("fork"), initializer=dies_with_me())
    try:
        return pool.submit(_compile, cls, bundle, target, options, workdir, log, device).result(timeout=cap_s)
    except BrokenProcessPool:
        raise CompilerCrashed("the compiler's process died (crash or kill)") from None
    except TimeoutError:
        # Python 3.11's executor cannot stop a busy child (3.14 adds kill_workers): kill it
        for child in list((pool._processes or {}).values()):
            child.kill()
        raise artifact_cache.CompileTimedOut(cap_s) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _reference(data_dir: Path, examples: int, outputs: int) -> list[list[np.ndarray]]:
    with np.load(data_dir / "reference.npz") as z:
        return [[z[f"e{i}_{j}"] for j in range(outputs)] for i in range(examples)]


def _check_outputs(store, run_id, job, bundle, reference, actual, inputs,
                   sequence: bool = False) -> tuple[bool, list[dict]]:
    """Every example's outputs against the reference (with sequence: every call of a
    sequence from a fresh load); a wrong count or shape, NaN or inf where the reference has
    a number is never a pass."""
    compare = accuracy.compare_sequence if sequence else accuracy.compare_all
    if any(len(a) != len(bundle.outputs) for a in actual):
        rows = [{"output": "*", "passed": False, "max_abs_err": None, "rmse": None, "snr_db": None,
                 "reason": f"{len(actual[0])} outputs, reference has {len(bundle.outputs)}"}]
    else:
        rows = compare(reference, actual, [o.name for o in bundle.outputs], job.tolerance)
    passed = all(r["passed"] for r in rows)
    labelled = actual[:len(inputs.examples)]  # a sequence's first calls are the examples
    task = accuracy.task_accuracy(labelled, inputs.labels) if inputs.labels is not None else None
    store.record_measurement(run_id, Measurement(accuracy=rows, accuracy_passed=passed, task_accuracy=task))
    return passed, rows


def _call(runnable):
    """One call with given inputs -> its outputs (a step of state.run_sequence)."""
    def step(arrays):
        runnable.set_inputs(arrays)
        runnable.run()
        return runnable.outputs()
    return step


def _streamed(runnable, arrays, pairs):
    """The timed call of a streaming model: run, then feed each state output back as the
    next call's input, as an audio callback does."""
    current = list(arrays)
    runnable.set_inputs(current)

    def step():
        runnable.run()
        outs = runnable.outputs()
        for o, i in pairs:
            current[i] = outs[o]
        runnable.set_inputs(current)
    return step


def _store_profile(store, run_id, profile, whole_p50_us: float) -> None:
    per_op_p50_sum = profile.per_op_sum_p50_us  # medians on both sides of the ratio
    whole = whole_p50_us
    attribution = {
        "method": profile.method, "runs": profile.runs, "per_op_sum_us": profile.per_op_sum_us,
        "per_op_sum_p50_us": per_op_p50_sum,
        "instrumented_whole_us": profile.instrumented_whole_us,
        "uninstrumented_whole_us": whole,
        "overhead_ratio": (profile.instrumented_whole_us / whole
                           if profile.instrumented_whole_us and whole else None),
        "sum_to_whole": per_op_p50_sum / whole if whole else None,
        "notes": profile.notes,
    }
    ops = [{**op.__dict__, "share": op.p50_us / whole if whole else None} for op in profile.ops]
    store.record_measurement(run_id, Measurement(attribution=attribution, ops=ops))


def _timing(samples_ns, first_ns: float, stopped_early: bool, budget_us: float | None,
            emulated: bool) -> Measurement:
    """A harness's timed loop as a measurement: samples, statistics and the deadline audit
    (emulated timings say nothing about the board's deadline: not judged)."""
    samples = np.asarray(samples_ns, dtype=np.int64)
    return Measurement(
        samples_ns=samples.tolist(), first_us=first_ns / 1e3, stopped_early=bool(stopped_early),
        stats=latency_stats(samples),
        deadline=(deadline.audit(samples, budget_us) if not emulated
                  else {"budget_us": budget_us, "verdict": "not judged (emulated)"}))


def _final_status(store, run_id, passed: bool, rows: list[dict]) -> None:
    if passed:
        store.set_status(run_id, "ok")
    else:
        bad = next(r for r in rows if not r["passed"])
        store.set_status(run_id, "mismatch", f"output {bad['output']}: {bad['reason']}")


def _measure_native(store, run_id, job, compiler, artifact, bundle, inputs, reference, log):
    """Time, check and profile the artifact with the native runner on the job's device.
    Returns (passed, accuracy rows), or (None, None) when the run ended otherwise (its
    status is then set here)."""
    import onnx

    from device_runner.devices import parse_device
    from device_runner.native import RunnerSettings, op_profile, run_program

    sequence = job.sequence
    if sequence:  # its outputs after a timed loop say nothing call by call
        what = ("feed state outputs back (--stream-state)" if sequence["stream"] else
                "start a model that keeps state inside afresh to check its outputs call by call")
        store.set_status(run_id, "skipped", f"the native runner cannot {what}; use --harness python")
        return None, None
    with captured_output(log):
        program = compiler.native_program(artifact)
    if program is None:
        store.set_status(run_id, "skipped", f"{compiler.name} {compiler.no_native_runner}")
        return None, None
    timing = job.timing
    runner_settings = RunnerSettings(
        runs=timing.runs, warmup=timing.warmup, max_seconds=timing.max_seconds,
        min_runs=timing.min_runs, per_op_runs=job.profile_runs,
        rss_interval_ms=max(job.memory_interval_s * 1e3, 0.1),
        sched_fifo=job.sched_fifo, cpu=job.cpu,
        timeout_s=runner_timeout_s(job))
    device = parse_device(job.device)
    _phase("measure")
    try:
        result = run_program(device, program, inputs.timing_inputs, inputs.examples, runner_settings)
    finally:
        device.close()
    with open(log, "a") as f:
        f.write("\n".join(["native runner commands:", *result.commands, ""]))
    report = result.report
    if report is not None and report.get("samples_ns"):
        memory = report.get("memory") or {}
        rss = [kb for _, kb in memory.get("samples", [])] or [0]
        measured = _timing(report["samples_ns"], report["first_ns"], report["stopped_early"], job.budget_us,
                           device.emulated)
        measured.memory_samples = [(t, int(kb) * 1024) for t, kb in memory.get("samples", [])]
        measured.memory = {"rss_avg_bytes": float(np.mean(rss)) * 1024, "rss_peak_bytes": float(max(rss)) * 1024,
                           "rss_samples": len(measured.memory_samples),
                           "ru_maxrss_bytes": float(memory.get("maxrss_kb", 0)) * 1024}
        measured.runtime_memory = {**memory.get("runtime", {}), "runner": report["runner"],
                                   "scheduling": report.get("scheduling"), "notes": report.get("notes"),
                                   "commands": result.commands}
        store.record_measurement(run_id, measured)
    if result.failure is not None:
        store.set_status(run_id, "failed", f"runner on {job.device}: {result.failure}")
        return None, None
    _phase("check")
    passed, rows = _check_outputs(store, run_id, job, bundle, reference, result.outputs, inputs)
    if result.per_op_report is not None:
        graph = onnx.load(str(bundle.path("onnx")), load_external_data=False)
        op_types = {n.name: n.op_type for n in graph.graph.node}
        profile = op_profile(result.per_op_report, program.kernel_map, op_types,
                             f"{compiler.name}/native")
        if profile is not None:
            _store_profile(store, run_id, profile, measured.stats["p50_us"])
    if job.rt_audit:
        _rt_audit(store, run_id, job, log, program=program, timing_inputs=inputs.timing_inputs)
    return passed, rows


def _rt_audit(store, run_id, job, log, program=None, timing_inputs=None, artifact=None) -> None:
    """The real-time safety audit (job.rt_audit): the native runner's on the device, or the
    preloaded hooks in a Python child; stored with the run, a failure as its reason."""
    from auditor.rt_audit import audit_native, audit_python
    from device_runner.native import RtAuditSettings

    _phase("rt-audit")
    settings = RtAuditSettings(cpu=job.cpu, sched_fifo=job.sched_fifo, timeout_s=runner_timeout_s(job))
    try:
        if program is not None:
            result, failure, commands = audit_native(job, program, timing_inputs, settings)
        else:
            result, failure, commands = audit_python(job, artifact, settings, log)
    except Exception as e:  # noqa: BLE001 - the audit failing leaves the measured run as it is
        with open(log, "a") as f:
            traceback.print_exc(file=f)
        result, failure, commands = None, f"rt audit: {type(e).__name__}: {first_line(e)}", []
    with open(log, "a") as f:
        f.write("\n".join(["rt audit commands:", *commands, ""]))
    store.set_rt_safety(run_id, result, failure)


def _compile_warm(cls, bundle, target, job: WorkerJob, directory: Path, log: Path):
    """compile_isolated, after warming this process for the compiler (Compiler.warm_compile):
    only long-lived workers compile through the cache, and each of their later forked
    compiles shares the warm imports and caches (seconds each) instead of paying them again.
    Their measuring RSS includes them, as it includes what earlier runs left (a per-run
    worker's does not)."""
    cls.warm_compile()
    return compile_isolated(cls, bundle, target, job.options, directory, log, job.device, job.compile_cap_s)


def _compiled(cls, version: str, bundle, target, job: WorkerJob, workdir: Path, log: Path):
    """(artifact, compile seconds, reused?): through the artifact cache when the job says so."""
    if not job.artifact_cache:
        t0 = time.perf_counter()
        artifact = compile_isolated(cls, bundle, target, job.options, workdir, log, job.device, job.compile_cap_s)
        return artifact, time.perf_counter() - t0, False
    # the device is part of the key: tuning on an ssh device makes a different artifact;
    # runtime-only options are not (LiteRT with XNNPACK on and off loads one conversion)
    compiled_with = cls.compile_options(job.options)
    key = artifact_cache.cache_key(bundle.model_hash, cls.name, {**compiled_with, "device": job.device},
                                   target.name, version)
    artifact, seconds, reused = artifact_cache.get_or_compile(
        job.results_dir, key, lambda directory: _compile_warm(cls, bundle, target, job, directory, log),
        job.compile_cap_s)
    # a cached artifact carries the options it was compiled with: this run's runtime ones apply
    artifact.options = {**artifact.options, **{k: v for k, v in job.options.items() if k not in compiled_with}}
    return artifact, seconds, reused


def run_job(job: WorkerJob, served: int = 0) -> None:
    """One run. served: its number in a long-lived worker (auditor.measure_worker); 0: a
    worker of its own."""
    store = Store(job.results_dir)
    run_id = job.run_id
    workdir = job.workdir
    log = workdir / "worker.log"
    stage = "setup"
    try:
        cls = registry.get(job.compiler)
        ok, detail = cls.available()
        if not ok:
            store.set_status(run_id, "skipped", detail)
            return
        compiler = cls(device=job.device)
        bundle = ModelBundle.load(job.bundle_dir)
        target = TARGETS[job.target]
        why_not = compiler.can_compile(bundle, target, job.options)
        if why_not:
            store.set_status(run_id, "skipped", why_not)
            return
        store.set_status(run_id, "running")
        data_dir = job.data_dir
        inputs = InputSet.load(data_dir / "inputs.npz", bundle.inputs, job.inputs_source)
        reference = _reference(data_dir, len(inputs.examples), len(bundle.outputs))

        stage = "compile"
        _phase(stage)
        artifact, compile_s, cached = _compiled(cls, detail, bundle, target, job, workdir, log)
        # a converted graph's numbers are the converted graph's: the label goes with the run
        converted = bundle.converted.get(bundle.pick(cls.accepts), "")
        store.update_run(run_id, compile_s=compile_s,
                         compiler_version=artifact.compiler_version, kernel_map=artifact.kernel_map,
                         artifact_notes=artifact.notes + (
                             [f"artifact reused from {artifact.directory} (compile_s: when it was compiled)"]
                             if cached else [f"artifact kept in {artifact.directory}"] if job.artifact_cache
                             else []),
                         converted=converted or None)
        if job.harness == "native":
            stage = "native runner"
            passed, rows = _measure_native(store, run_id, job, compiler, artifact, bundle, inputs,
                                           reference, log)
            if passed is None:
                return
            _final_status(store, run_id, passed, rows)
            return
        if not target.is_host:  # a cross-compiled artifact: kept, measured only on its device
            store.set_status(run_id, "compiled", f"artifact for {target.name} kept in {workdir}; "
                             "it runs on a device of that architecture, not on local")
            return

        stage = "load"
        t0 = time.perf_counter()
        with captured_output(log):
            runnable = compiler.load(artifact, bundle)
        runnable.set_inputs(inputs.timing_inputs)
        store.update_run(run_id, load_s=time.perf_counter() - t0)

        stage = "measure"
        _phase(stage)
        settings = job.timing
        sequence = job.sequence
        timed, timed_runs, loop = runnable.run, runnable.timed_runs, runnable.timing_loop or PYTHON_LOOP
        if sequence and sequence["stream"]:
            timed, timed_runs = _streamed(runnable, inputs.timing_inputs, sequence["stream"]), None
            loop = f"{PYTHON_LOOP}; each call's state output(s) fed back as the next call's input(s)"
        with RssSampler(job.memory_interval_s) as sampler, Conditions(job.other_busy_limit, job.conditions_window_s) as conditions:
            timings = time_calls(timed, settings, timed_runs)
        measured = _timing(timings.samples_ns, timings.first_ns, timings.stopped_early, job.budget_us, False)
        measured.memory_samples, measured.memory = sampler.samples, sampler.summary()
        if served:  # ru_maxrss is the long-lived worker's peak over every run it served
            measured.memory["ru_maxrss_bytes"] = None
        measured.runtime_memory, measured.timing_loop = runnable.memory_info(), loop
        measured.conditions = conditions.to_dict()
        if timings.gate is not None:
            quiet = measured.conditions["quiet"] = quiet_summary(timings)
            if quiet["n"] < QUIET_MIN:  # no uncontended label: a neighbour the load figures cannot see
                why = (f"contended: {quiet['n']} of {len(timings.samples_ns)} samples in blocks where the "
                       f"probe read within {quiet['tolerance']:.0%} of its floor")
                measured.conditions.update(under_load=True, load_reason="; ".join(
                    r for r in (measured.conditions["load_reason"], why) if r))
        measured.worker = ({"kind": "long-lived", "pid": os.getpid(), "run_in_worker": served,
                            "note": "RSS includes what earlier runs in this worker left; "
                                    "ru_maxrss not per run (not stored)"}
                           if served else {"kind": "per-run", "pid": os.getpid()})
        store.record_measurement(run_id, measured)

        stage = "check outputs"
        _phase("check")
        if sequence:  # state: consecutive calls from a fresh load against the reference's
            reference = state.read_sequence(Path(sequence["file"]), len(bundle.outputs))
            with captured_output(log):
                fresh = compiler.load(artifact, bundle)
            actual = state.run_sequence(_call(fresh), inputs.examples, len(reference), sequence["stream"])
            fresh.close()
        else:
            actual = [_call(runnable)(example) for example in inputs.examples]
        passed, rows = _check_outputs(store, run_id, job, bundle, reference, actual, inputs,
                                      sequence=bool(sequence))

        if job.profile_runs > 0 and cls.per_op_method:
            stage = "per-op profile"
            _phase("profile")
            runnable.set_inputs(inputs.timing_inputs)
            with captured_output(log):
                profile = compiler.profile_ops(artifact, bundle, inputs.timing_inputs, job.profile_runs)
            if profile is not None:
                _store_profile(store, run_id, profile, measured.stats["p50_us"])
        runnable.close()
        if job.rt_audit:
            stage = "rt audit"
            _rt_audit(store, run_id, job, log, artifact=artifact)
        _final_status(store, run_id, passed, rows)
    except Exception as e:  # noqa: BLE001 - any compiler failure is recorded, never raised
        with open(log, "a") as f:
            traceback.print_exc(file=f)
        store.set_status(run_id, "failed", f"{stage}: {type(e).__name__}: {first_line(e)}")
    finally:
        store.close()


def main() -> int:
    run_job(WorkerJob.load(Path(sys.argv[1])))
    _phase("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
