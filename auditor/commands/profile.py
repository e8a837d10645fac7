"""`auditor profile MODEL --compiler C [--device D]`: where the time goes inside one
compiled model, from perf sampling the native runner on the device.

The model is compiled for the device's target, a short timed run checks the runner works
and sizes the profiling run, then the runner loops for `--seconds` under `perf record -g`
(hardware cycles where they sample, cpu-clock otherwise; which, and why, is stored). The
stacks are folded and stored with time per function, per thread and per compiler kernel
(joined to the ONNX nodes it covers), and an interactive flamegraph SVG is written.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import typer
from tabulate import tabulate

from auditor.commands.options import ARG, DEVICE, INPUT_SHAPE, JSON, RESULTS_DIR, TRUST_PICKLE
from auditor.commands.variants import parse_compiler_specs
from auditor.inputs import InputSet
from auditor.pipeline import AuditSettings, ModelRequest, prepare, resolve_device
from store import Store
from auditor.timing import latency_stats
from auditor.worker import CompilerCrashed, compile_isolated
from compilers import registry
from ground.errors import AuditorError, first_line
from ground.quiet import captured_output
from ground.targets import TARGETS


def profile(
    model: str = typer.Argument(..., help="model: .pt2, .pt/.ts, .onnx, file.py:factory or zoo:family:k=v"),
    compiler: str = typer.Option(..., "--compiler", "-c", help="one compiler variant: NAME or NAME:key=value,..."),
    device: str = DEVICE,
    seconds: float = typer.Option(5.0, min=0.1, help="how long the runner loops under perf"),
    frequency: int = typer.Option(999, min=1, help="samples per second"),
    input_shape: list[str] = INPUT_SHAPE,
    arg: list[str] = ARG,
    trust_pickle: bool = TRUST_PICKLE,
    results_dir: Path = RESULTS_DIR,
    top: int = typer.Option(15, min=1, help="functions to list"),
    as_json: bool = JSON,
) -> None:
    """Profile one compiled model with perf on a device: per function, thread and kernel, plus a flamegraph."""
    from device_runner.native import RunnerSettings, run_program, stage_program
    from device_runner.profile import analyse, choose_event, record
    from reports.flamegraph import flamegraph_svg

    variants = parse_compiler_specs([compiler])
    if len(variants) != 1:
        raise AuditorError("--compiler takes one variant, e.g. sofie or tvm:opt_level=3")
    variant = variants[0]
    cls = registry.get(variant.compiler)
    ok, why = cls.available()
    if not ok:
        raise AuditorError(f"{variant.compiler} is not available: {why}")
    store = Store(results_dir)
    settings = AuditSettings(results_dir=results_dir, device=device, harness="native")
    dev, target_name, _ = resolve_device(settings)
    try:
        event, event_why = choose_event(dev)  # fails early, before compiling, where perf cannot run
        prepared = prepare(ModelRequest(model, input_shape, trust_pickle=trust_pickle, args=arg), store)
        bundle = prepared.bundle
        target = TARGETS[target_name]
        comp = cls(device=dev.spec)
        reason = comp.can_compile(bundle, target, variant.options)
        if reason:
            raise AuditorError(reason)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        workdir = store.dir / "profiles" / f"{bundle.model_hash[:12]}-{variant.compiler}-{stamp}"
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / "compile.log"
        try:
            artifact = compile_isolated(cls, bundle, target, variant.options, workdir, log, dev.spec)
            with captured_output(log):
                program = comp.native_program(artifact)
        except CompilerCrashed:
            raise AuditorError(f"{variant.label} crashed while compiling: its process died "
                               f"(log: {log})") from None
        except Exception as e:  # noqa: BLE001 - a compiler failure is one line, log kept
            raise AuditorError(f"{variant.label} failed to compile: {first_line(e)} (log: {log})") from None
        if program is None:
            raise AuditorError(f"{variant.compiler} has no native runner backend to profile "
                               "(the runner's backends: sofie, tvm)")
        inputs = InputSet.load(prepared.data_dir / "inputs.npz", bundle.inputs, prepared.inputs_source)

        # A short timed run: proves the runner works here and sizes the profiling run.
        probe = run_program(dev, program, inputs.timing_inputs, [],
                            RunnerSettings(runs=200, warmup=20, min_runs=20, max_seconds=5))
        if probe.failure:
            raise AuditorError(f"the runner failed on {dev.spec}: {probe.failure}")
        p50_s = latency_stats(probe.report["samples_ns"])["p50_us"] / 1e6
        runs = max(100, int(seconds / max(p50_s, 1e-7)))

        with tempfile.TemporaryDirectory(prefix="auditor-profile-") as tmp:
            staged = stage_program(dev, program, inputs.timing_inputs, [], Path(tmp), instrumented=False)
            looping = RunnerSettings(runs=runs, warmup=50, min_runs=1, max_seconds=seconds, rss_interval_ms=0)
            argv = staged.argv(staged.runner, "profile.json", looping.argv(per_op_runs=0))
            capture = record(dev, argv, cwd=staged.work, frequency=frequency,
                             timeout_s=seconds * 4 + 120, event=event)
        if capture.failure:
            raise AuditorError(f"the runner failed under perf on {dev.spec}: {capture.failure}")
        prof = analyse(capture, program.kernel_map)
        svg_path = workdir / "flamegraph.svg"
        svg_path.write_text(flamegraph_svg(
            prof.folded, title=f"{prepared.model_source} · {variant.label} · {dev.spec}",
            subtitle=(f"{capture.event} sampling at {frequency} Hz ({event_why}); {capture.samples} "
                      "samples; times are sampling estimates"),
            highlight=prof.kernel_functions()), encoding="utf-8")
        profile_id = store.add_profile(prof.to_dict(), model_hash=bundle.model_hash,
                                       compiler=variant.label, device=dev.spec, svg_path=str(svg_path))
    finally:
        dev.close()

    stored = store.profile(profile_id)
    # the run pages of this model, variant and device show the new flamegraph
    from reports.run_page import write_run_page

    pages = [write_run_page(store, run_id) for run_id in store.run_ids_of(bundle.model_hash, variant.label, dev.spec)]
    store.close()
    if as_json:
        print(json.dumps(stored, indent=2, default=str))
        return
    print(f"profile {profile_id}: {prepared.model_source} · {variant.label} · {dev.spec} "
          f"({target_name}); {capture.event} at {frequency} Hz — {event_why}")
    print(f"{capture.samples} samples over {capture.wall_s:.1f} s; runner p50 {p50_s * 1e6:.2f} µs "
          f"(from the probe run); times below are sampling estimates")
    rows = [[f["function"][:70], f["dso"], f["self_samples"], f"{100 * f['self_share']:.1f}",
             f"{100 * f['total_share']:.1f}", f["kernel"] or ""] for f in stored["functions"][:top]]
    print(tabulate(rows, headers=["function", "dso", "self", "self %", "total %", "kernel"]))
    krows = [[k["name"][:50], k["kind"], k["samples"], f"{100 * k['share']:.1f}",
              ", ".join(k["onnx_nodes"])[:60]] for k in stored["kernels"] if k["samples"]]
    if krows:
        print(tabulate(krows, headers=["kernel / bucket", "kind", "samples", "%", "ONNX nodes"]))
    for note in stored["notes"]:
        print(f"note: {note}")
    print(f"flamegraph: {svg_path}" + (f"; shown on {len(pages)} run page(s) in {pages[0].parent}" if pages else ""))
