"""compile-all: load -> reference -> export once -> one isolated worker per compiler variant.

Each variant runs in its own process (`auditor.worker`) with a timeout; a crash, hang or
kill is recorded against that run and the others go on. With `resume`, a variant whose
run is already stored for the same model, inputs, options, target, harness, tolerance,
deadline and device is reused (see resume_key).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from auditor import state
from auditor.accuracy import Tolerance
from auditor.export import prepare_bundle, write_reference
from auditor.inputs import build_inputs
from auditor.job import WorkerJob
from auditor.loaders import load_model
from store import Store
from auditor.timing import TimingSettings
from compilers import registry
from compilers.base import options_key
from cost_model.graph import node_table
from ground.children import Ended, run_child, worker_env
from ground.errors import AuditorError
from ground.host import host_facts, load_facts
from ground.targets import TARGETS

HARNESSES = ("auto", "python", "native")


@dataclass
class AuditSettings:
    results_dir: Path = Path("auditor-results")
    timing: TimingSettings = field(default_factory=TimingSettings)
    profile_runs: int = 100
    budget_us: float = 16 / 44100 * 1e6
    atol: float = 1e-4
    rtol: float = 1e-3
    device: str = "local"
    target: str = "host"
    # python: time the runtime's Python API in the worker; native: the C++ runner on the
    # device; auto: python on local, native anywhere else
    harness: str = "auto"
    sched_fifo: int = 0  # native runner: SCHED_FIFO priority (0: default policy)
    cpu: int = -1  # native runner: pin to this CPU (-1: no pinning)
    timeout_s: float = 600.0
    memory_interval_s: float = 0.005
    resume: bool = False
    rt_audit: bool = False  # the real-time safety audit after measuring (auditor.rt_audit)
    artifact_cache: bool = False  # compile through <results>/artifacts (auditor.artifact_cache)
    other_busy_limit: float = 0.25  # cores others may use while timing before a run is flagged
    conditions_window_s: float = 0.0  # see WorkerJob.conditions_window_s
    compile_cap_s: float | None = None  # see WorkerJob.compile_cap_s
    repeat: int = 0  # >0: a repeat measurement for run-to-run spread (a run of its own, see resume_key)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["results_dir"] = str(self.results_dir)
        return d


@dataclass
class ModelRequest:
    spec: str
    input_shapes: list[str] = field(default_factory=list)
    inputs_file: Path | None = None
    labels_file: Path | None = None
    trust_pickle: bool = False
    args: list[str] = field(default_factory=list)  # --arg name=value: number arguments
    stream_state: list[str] = field(default_factory=list)  # --stream-state OUT:IN


def run_worker(job: WorkerJob, timeout_s: float, on_phase) -> Ended:
    """Start the worker, follow its phases, until it ends or its timeout kills it."""
    job_path = job.save()
    with open(job.workdir / "worker.stderr", "w") as err:
        return run_child([sys.executable, "-m", "auditor.worker", str(job_path)], stderr=err,
                         env=worker_env(), cwd=job.workdir, timeout_s=timeout_s, on_phase=on_phase)


@dataclass
class Prepared:
    model_source: str
    model_format: str
    bundle: object
    data_dir: Path
    inputs_digest: str
    inputs_source: str
    # set when outputs are checked over a sequence of calls (a model with state)
    sequence: dict | None = None
    stream_state: list[str] = field(default_factory=list)


def prepare(request: ModelRequest, store: Store) -> Prepared:
    """Load, build inputs, look for state, export once and write the reference; store the graph."""
    import onnx

    model = load_model(request.spec, trust_pickle=request.trust_pickle)
    inputs = build_inputs(model, request.input_shapes, request.inputs_file, request.labels_file,
                          request.args)
    found = state.detect(model, inputs)
    if found["kind"] != "none":
        model = model.fresh()  # the detection's calls moved its state on
    bundle = prepare_bundle(model, inputs, store.dir)
    if bundle.state != found:
        bundle.state = found
        bundle.save()
    pairs = state.parse_stream_pairs(request.stream_state, bundle)
    data_dir = write_reference(model.fresh() if found["kind"] != "none" else model, inputs, bundle)
    sequence = None
    if pairs or found["kind"] != "none":
        path = state.write_sequence_reference(model, inputs, data_dir, pairs)
        sequence = {"file": str(path), "stream": pairs}
    nodes = node_table(onnx.load(str(bundle.path("onnx")))) if "onnx" in bundle.files else []
    store.add_model(bundle, str(model.source), model.format, nodes)
    return Prepared(str(model.source), model.format, bundle, data_dir, inputs.digest(), inputs.source,
                    sequence, list(request.stream_state))


def resolve_device(settings: AuditSettings):
    """(device, target name, harness) for the settings, or one clear error. A device fixes
    the target its code must be built for (an ssh device is asked for its architecture)."""
    from device_runner.devices import parse_device

    if settings.harness not in HARNESSES:
        raise AuditorError(f"unknown harness {settings.harness!r} (harnesses: {', '.join(HARNESSES)})")
    device = parse_device(settings.device)
    target = device.target_name
    if device.spec == "local":
        target = settings.target  # another target on local: compiled and kept, not measured
    elif settings.target != "host" and settings.target != target:
        raise AuditorError(f"device {device.spec} runs {target} code; --target {settings.target} "
                           "cannot run there")
    harness = settings.harness
    if harness == "auto":
        harness = "python" if device.spec == "local" else "native"
    if harness == "python" and device.spec != "local":
        raise AuditorError(f"the python harness runs only on local; {device.spec} needs --harness native")
    return device, target, harness


def resume_key(options: dict, harness: str, target: str, settings: AuditSettings,
               stream_state: list | None = None) -> str:
    """The key under which a finished run answers a later --resume: everything that changes
    what the run means (the compiler's options, the harness, the code's target, the accuracy
    tolerance, the deadline it was judged against, and a streamed state loop, which is another
    measurement than single calls). Timing counts are not in it (a run timed with other counts
    measured the same thing): they are stored with the run and shown when it is reused."""
    return options_key({**options, "_harness": harness, "_target": target, "_atol": settings.atol,
                        "_rtol": settings.rtol, "_budget_us": round(settings.budget_us, 6),
                        **({"_stream": stream_state} if stream_state else {}),
                        **({"_repeat": settings.repeat} if settings.repeat else {})})


def audit_variants(prepared: Prepared, variants: list[registry.Variant], settings: AuditSettings,
                   store: Store, command: str, progress=None, resolved=None, runner=None) -> list[str]:
    """Measure each variant in its own worker; returns run ids (reused ones on resume).
    resolved: resolve_device(settings) when the caller has already checked the device.
    runner: what serves one job (default run_worker, a fresh process per run; a dataset
    build passes a long-lived auditor.measure_worker.MeasurePool's run)."""
    device, target_name, harness = resolved or resolve_device(settings)
    target = TARGETS[target_name]
    facts = {**host_facts(), **load_facts()} if device.spec == "local" else \
        {**device.facts(), "controller": {**host_facts(), **load_facts()}}
    device.close()
    bundle = prepared.bundle
    audit_id = store.new_audit(bundle.model_hash, command, settings.to_dict())
    run_ids = []
    for variant in variants:
        options = variant.options
        key = resume_key(options, harness, target.name, settings, prepared.stream_state)
        if settings.resume:
            done = store.completed_run(bundle.model_hash, prepared.inputs_digest, variant.compiler,
                                       key, device.spec)
            if done is not None and settings.rt_audit and store.rt_safety(done["run_id"]) == (None, None):
                done = None  # measured without the real-time audit asked for now: measured again
            if done is not None:
                run_ids.append(done["run_id"])
                if progress:
                    progress(variant.label, "stored")
                continue
        run_id = store.new_run(
            audit_id=audit_id, model_hash=bundle.model_hash, inputs_digest=prepared.inputs_digest,
            compiler=variant.compiler, variant=variant.label, options=options, options_key=key,
            target=target.to_dict(), device=device.spec, emulated=device.emulated, host=facts,
            settings={**settings.to_dict(), "harness": harness, "target": target.name,
                      "stream_state": prepared.stream_state},
        )
        workdir = store.run_dir(run_id)
        workdir.mkdir(parents=True)
        store.set_status(run_id, "pending", pid=os.getpid())
        job = WorkerJob(
            run_id=run_id, results_dir=store.dir, workdir=workdir, bundle_dir=bundle.directory,
            data_dir=prepared.data_dir, inputs_source=prepared.inputs_source, compiler=variant.compiler,
            options=options, target=target.name, device=device.spec, harness=harness,
            timing=settings.timing, tolerance=Tolerance(atol=settings.atol, rtol=settings.rtol),
            budget_us=settings.budget_us, profile_runs=settings.profile_runs,
            memory_interval_s=settings.memory_interval_s, sched_fifo=settings.sched_fifo,
            cpu=settings.cpu, sequence=prepared.sequence, rt_audit=settings.rt_audit,
            timeout_at=time.time() + settings.timeout_s,  # the native runner gets what is left of it
            artifact_cache=settings.artifact_cache, other_busy_limit=settings.other_busy_limit,
            conditions_window_s=settings.conditions_window_s, compile_cap_s=settings.compile_cap_s,
        )
        ended = (runner or run_worker)(
            job, settings.timeout_s, lambda phase: progress and progress(variant.label, phase))
        row = store.run(run_id)
        if row["status"] in ("pending", "running"):
            store.set_status(run_id, "timeout" if ended.timed_out else "failed",
                             ended.failure("worker", settings.timeout_s)
                             or "worker exited with code 0 and stored no result")
        run_ids.append(run_id)
        if progress:
            progress(variant.label, "finished")
    return run_ids
