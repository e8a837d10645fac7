"""Running a compiled artifact with the native runner on a device, and reading what it wrote.

A compiler that has a native backend returns a NativeProgram (`Compiler.native_program`):
the runner executable for the artifact's target, the file it loads, files staged beside it,
and (when its instrumentation is compiled in, as SOFIE's) a second, instrumented runner.
`run_program` stages all of it with the inputs on a device, runs it with a timeout, fetches
the JSON and the check outputs, and returns them in the bundle's tensor order; a runner
that crashes, hangs or cannot start comes back as a failure with its reason.
`run_rt_audit` runs the real-time safety audit of a program (device_runner.rt_safety).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ground.op_timing import OpProfile, OpTiming
from device_runner.device import Device
from device_runner.rt_safety import RtSafety, parse_rt_safety, syscall_counts


@dataclass
class NativeProgram:
    runner: Path  # executable built for the artifact's target
    model: Path  # the file given as --model
    extra_files: list[Path] = field(default_factory=list)  # staged next to the model
    instrumented_runner: Path | None = None  # when instrumentation is compiled in
    kernel_map: dict[str, list[str]] = field(default_factory=dict)
    instrumentable: bool = True  # False: the backend has no per-kernel timing at all
    # runner tensor k is bundle tensor order[k] (None: the same order)
    input_order: list[int] | None = None
    output_order: list[int] | None = None


@dataclass
class RunnerSettings:
    runs: int = 1000
    warmup: int = 50
    max_seconds: float = 10.0
    min_runs: int = 50
    per_op_runs: int = 0
    rss_interval_ms: float = 1.0
    sched_fifo: int = 0  # SCHED_FIFO priority; 0 = leave the policy alone
    cpu: int = -1  # pin to this CPU; -1 = no pinning
    timeout_s: float = 600.0

    def argv(self, per_op_runs: int, runs: int | None = None) -> list[str]:
        return ["--runs", str(runs or self.runs), "--warmup", str(self.warmup),
                "--max-seconds", str(self.max_seconds), "--min-runs", str(self.min_runs),
                "--per-op-runs", str(per_op_runs), "--rss-interval-ms", str(self.rss_interval_ms),
                "--sched-fifo", str(self.sched_fifo), "--cpu", str(self.cpu)]


@dataclass
class RunnerResult:
    report: dict | None  # the runner's JSON (None when it wrote none)
    outputs: list[list[np.ndarray]]  # per check example, in bundle output order
    per_op_report: dict | None  # the JSON whose per_op section holds the kernel times
    failure: str | None  # why it did not complete, or None
    commands: list[str] = field(default_factory=list)


class RunnerFailure(RuntimeError):
    pass


def _order(order: list[int] | None, n: int) -> list[int]:
    return list(range(n)) if order is None else list(order)


@dataclass
class Staged:
    """A program and its inputs on a device: paths there."""

    device: Device
    runner: str
    model: str
    instrumented: str | None
    work: str
    examples: int

    def argv(self, exe: str, json_name: str, extra: list[str]) -> list[str]:
        return [exe, "--model", self.model, "--inputs-dir", self.work, "--json",
                f"{self.work}/{json_name}", *extra]


def stage_program(device: Device, program: NativeProgram, timing_inputs: list[np.ndarray],
                  examples: list[list[np.ndarray]], local: Path, instrumented: bool) -> Staged:
    """Copy the runner(s), the model's files and the inputs (as .npy, in the runner's tensor
    order) into the device's working directory."""
    in_order = _order(program.input_order, len(timing_inputs))
    runner = device.put(program.runner, "auditor-runner")
    model = device.put(program.model, program.model.name)
    for extra in program.extra_files:
        device.put(extra, extra.name)
    for k, b in enumerate(in_order):
        np.save(local / f"timing_{k}.npy", np.ascontiguousarray(timing_inputs[b]))
        device.put(local / f"timing_{k}.npy", f"timing_{k}.npy")
    for e, example in enumerate(examples):
        for k, b in enumerate(in_order):
            np.save(local / f"example{e}_{k}.npy", np.ascontiguousarray(example[b]))
            device.put(local / f"example{e}_{k}.npy", f"example{e}_{k}.npy")
    staged_instrumented = None
    if program.instrumented_runner is not None and instrumented:
        staged_instrumented = device.put(program.instrumented_runner, "auditor-runner-instrumented")
    return Staged(device, runner, model, staged_instrumented, device.workdir(), len(examples))


def run_program(device: Device, program: NativeProgram, timing_inputs: list[np.ndarray],
                examples: list[list[np.ndarray]], settings: RunnerSettings) -> RunnerResult:
    """Stage, run (plain, then instrumented when that is another binary) and fetch."""
    import dataclasses
    import shlex

    if not program.instrumentable and settings.per_op_runs:
        settings = dataclasses.replace(settings, per_op_runs=0)

    with tempfile.TemporaryDirectory(prefix="auditor-native-") as tmp:
        local = Path(tmp)
        staged = stage_program(device, program, timing_inputs, examples, local,
                               instrumented=settings.per_op_runs > 0)
        runner, instrumented, work = staged.runner, staged.instrumented, staged.work
        commands: list[str] = []

        def invoke(exe: str, json_name: str, extra: list[str]) -> tuple[dict | None, str | None]:
            argv = staged.argv(exe, json_name, extra)
            commands.append(shlex.join(argv))
            done = device.run(argv, timeout_s=settings.timeout_s, cwd=work)
            report = None
            try:
                device.get(f"{work}/{json_name}", local / json_name)
                report = json.loads((local / json_name).read_text())
            except Exception:  # noqa: BLE001 - a crashed runner writes no JSON
                report = None
            failure = done.failure()
            error = (report or {}).get("error")
            if failure is None and error:
                failure = f"runner error: {error}"
            elif failure is None and report is None:
                failure = "the runner exited 0 but wrote no JSON"
            elif failure is not None and error and error not in failure:
                failure = f"{failure} ({error})"
            return report, failure

        per_op_in_plain = settings.per_op_runs if instrumented is None else 0
        report, failure = invoke(runner, "result.json",
                                 [*settings.argv(per_op_in_plain), "--outputs-dir", work,
                                  "--examples", str(len(examples))])
        if failure is not None:
            return RunnerResult(report, [], None, failure, commands)

        out_order = _order(program.output_order, len(report["outputs"]))
        outputs: list[list[np.ndarray]] = []
        for e in range(len(examples)):
            got: list[np.ndarray | None] = [None] * len(out_order)
            for k, b in enumerate(out_order):
                name = f"output{e}_{k}.npy"
                device.get(f"{work}/{name}", local / name)
                got[b] = np.load(local / name)
            outputs.append(got)  # type: ignore[arg-type]

        per_op_report = report if instrumented is None else None
        if instrumented is not None:
            # A short whole-timing phase (the instrumented build's timers are always on),
            # then the per-op runs.
            per_op_report, failure = invoke(
                instrumented, "per_op.json", settings.argv(settings.per_op_runs, runs=settings.min_runs))
            if failure is not None:
                return RunnerResult(report, outputs, None, f"instrumented runner: {failure}", commands)
        return RunnerResult(report, outputs, per_op_report, None, commands)


def op_profile(per_op_report: dict, kernel_map: dict[str, list[str]], op_types: dict[str, str],
               provider: str | None) -> OpProfile | None:
    """The runner's per-kernel times as an OpProfile (not rescaled), each kernel joined to
    the canonical ONNX nodes it covers."""
    per_op = per_op_report.get("per_op")
    if not per_op or not per_op.get("kernels"):
        return None
    runs = int(per_op["runs"])
    ops = []
    for k in per_op["kernels"]:
        nodes = kernel_map.get(k["name"], [])
        ops.append(OpTiming.from_runs(k["name"], "+".join(op_types.get(n, "?") for n in nodes) or "?",
                                      nodes, int(k["calls"]), np.asarray(k["ns"], dtype=np.float64) / 1e3,
                                      provider=provider))
    whole = np.asarray(per_op["whole_ns"], dtype=np.float64) / 1e3
    runner = per_op_report["runner"]
    unmapped = [op.kernel for op in ops if not op.onnx_nodes]
    notes = (f"native runner ({runner['backend']} backend, {runner['arch']}, {runner['compiler']}): "
             f"{runs} instrumented runs timed with std::chrono::steady_clock, not rescaled")
    if unmapped:
        notes += f"; kernels with no ONNX node (runtime or compiler-inserted): {', '.join(unmapped[:8])}"
    return OpProfile(method=runner["instrument_method"], ops=ops, runs=runs,
                     instrumented_whole_us=float(np.median(whole)), notes=notes)


@dataclass
class RtAuditSettings:
    runs: int = 200  # audited inferences after warm-up
    warmup: int = 50
    mlockall: bool = False  # --mlockall 1: lock memory and pre-fault the stack first
    malloc_keep: bool = False  # --malloc-keep 1: freed heap is never returned to the OS
    trace_syscalls: bool = True  # the second, syscall-traced pass
    sched_fifo: int = 0
    cpu: int = -1
    timeout_s: float = 600.0

    def argv(self, markers: bool) -> list[str]:
        return ["--rt-audit", str(self.runs), "--warmup", str(self.warmup),
                "--mlockall", "1" if self.mlockall else "0",
                "--malloc-keep", "1" if self.malloc_keep else "0", "--rt-markers", "1" if markers else "0",
                "--sched-fifo", str(self.sched_fifo), "--cpu", str(self.cpu)]


def run_rt_audit(device: Device, program: NativeProgram, timing_inputs: list[np.ndarray],
                 settings: RtAuditSettings) -> tuple[RtSafety | None, str | None, list[str]]:
    """The real-time audit of one variant: the runner's audit pass, then (when the device has
    a tracer) the same inferences again under a syscall tracer. Returns the result or why
    there is none, and the commands run."""
    import shlex

    commands: list[str] = []
    with tempfile.TemporaryDirectory(prefix="auditor-rt-") as tmp:
        local = Path(tmp)
        staged = stage_program(device, program, timing_inputs, [], local, instrumented=False)
        argv = staged.argv(staged.runner, "rt.json", settings.argv(markers=False))
        commands.append(shlex.join(argv))
        done = device.run(argv, timeout_s=settings.timeout_s, cwd=staged.work)
        try:
            device.get(f"{staged.work}/rt.json", local / "rt.json")
            report = json.loads((local / "rt.json").read_text())
        except Exception:  # noqa: BLE001 - a crashed runner writes no JSON
            report = None
        failure = done.failure()
        if failure is None and report is None:
            failure = "the runner wrote no JSON"
        elif failure is None and report.get("error"):
            failure = f"runner error: {report['error']}"
        if failure is not None:
            return None, f"rt audit: {failure}", commands
        result = parse_rt_safety(report, emulated=device.emulated)
        if not settings.trace_syscalls:
            result.syscalls_missing = "the traced pass was not asked for"
            return result, None, commands

        traced_argv = staged.argv(staged.runner, "rt_traced.json", settings.argv(markers=True))
        trace_path = f"{staged.work}/syscalls.trace"
        traced = device.run_syscall_traced(traced_argv, trace_path, settings.timeout_s, cwd=staged.work)
        if traced is None:
            result.syscalls_missing = f"no syscall tracer on {device.spec} (install strace there)"
            return result, None, commands
        tdone, method, threads_apart = traced
        commands.append(shlex.join(tdone.argv))
        if tdone.failure() is not None:
            result.syscalls_missing = f"the traced pass failed: {tdone.failure()}"
            return result, None, commands
        device.get(trace_path, local / "syscalls.trace")
        try:
            result.syscalls = syscall_counts((local / "syscalls.trace").read_text(errors="replace"),
                                             settings.runs, method, threads_apart, tdone.wall_s,
                                             done.wall_s)
            result.syscalls_missing = None
        except ValueError as e:
            result.syscalls_missing = f"the syscall trace could not be cut: {e}"
        return result, None, commands
