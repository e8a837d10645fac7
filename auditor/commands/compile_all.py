"""`auditor compile-all MODEL`: every compiler variant on one model, side by side."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from auditor import deadline
from auditor.commands.variants import parse_compiler_specs
from auditor.pipeline import AuditSettings, ModelRequest, audit_variants, prepare, resolve_device
from auditor.commands.predict import beside_measurement
from store import Store
from auditor.summary import run_summary, table
from auditor.timing import TimingSettings
from ground.errors import AuditorError
from auditor.commands.options import (
    ARG, COMPILERS, DEVICE, INPUT_SHAPE, JSON, RESULTS_DIR, TIMEOUT, TRUST_PICKLE,
)
from ground.targets import TARGETS
from reports.run_page import describe_state, write_run_page
from reports.verdict import choose

PHASES = ("compile", "measure", "check", "profile", "rt-audit", "finished")


def compile_all(
    model: str = typer.Argument(..., help="model: .pt2, .pt/.ts/.jit (TorchScript), .onnx, .tflite, or file.py:factory"),
    compilers: list[str] = COMPILERS,
    input_shape: list[str] = INPUT_SHAPE,
    inputs: Path = typer.Option(None, "--inputs", help=".npz of input arrays (with --labels: a leading example axis)"),
    labels: Path = typer.Option(None, "--labels", help=".npy of class labels for task accuracy"),
    arg: list[str] = ARG,
    stream_state: list[str] = typer.Option(
        [], "--stream-state", help="OUTPUT:INPUT: feed this state output back as the next call's input, "
        "when timing and when checking a sequence of calls (repeatable)"),
    trust_pickle: bool = TRUST_PICKLE,
    results_dir: Path = RESULTS_DIR,
    runs: int = typer.Option(1000, min=1, help="timed runs"),
    warmup: int = typer.Option(50, min=0, help="warm-up runs before timing"),
    max_seconds: float = typer.Option(10.0, help="stop timing after this long (keeping >= 50 runs)"),
    profile_runs: int = typer.Option(100, min=0, help="instrumented runs for per-op times (0: none)"),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="python harness: time in blocks between "
                              "readings of a reference probe, and report the uncontended blocks' statistics "
                              "beside all samples' (a busy neighbour moves a p50 by up to 2x on a shared VM)"),
    block_size: int = typer.Option(deadline.BELA_BLOCK_SIZE, help="audio frames per block"),
    sample_rate: float = typer.Option(deadline.BELA_SAMPLE_RATE, help="audio sample rate, Hz"),
    deadline_us: float = typer.Option(None, help="deadline in µs (overrides block size / sample rate)"),
    atol: float = typer.Option(1e-4, help="absolute tolerance against the reference"),
    rtol: float = typer.Option(1e-3, help="relative tolerance (times the reference's max |value|)"),
    device: str = DEVICE,
    harness: str = typer.Option("auto", help="python (runtime's Python API, local only), native (the C++ "
                                "runner), auto (python on local, native elsewhere)"),
    sched_fifo: int = typer.Option(0, min=0, max=99, help="native runner: SCHED_FIFO priority (0: default policy)"),
    cpu: int = typer.Option(-1, min=-1, help="native runner: pin to this CPU (-1: no pinning)"),
    target: str = typer.Option("host", help=f"code generation target: {', '.join(TARGETS)}"),
    timeout: float = TIMEOUT,
    resume: bool = typer.Option(False, "--resume", help="reuse variants already run for this model with the same "
                                "options, target, harness, device, tolerance and deadline"),
    rt_audit: bool = typer.Option(False, "--rt-audit", help="also audit real-time safety after warm-up: heap, "
                                  "locks, wake-ups, faults, system calls per inference (two extra passes)"),
    wide: bool = typer.Option(False, "--wide", help="every column and whole reasons (default: fits 100 columns)"),
    as_json: bool = JSON,
) -> None:
    """Compile MODEL with every compiler variant, measure each, compare to the reference."""
    variants = parse_compiler_specs(compilers)
    if target not in TARGETS:
        raise AuditorError(f"unknown target {target!r} (targets: {', '.join(TARGETS)})")
    settings = AuditSettings(
        results_dir=results_dir,
        timing=TimingSettings(warmup=warmup, runs=runs, max_seconds=max_seconds, min_runs=min(50, runs), gate=gate),
        profile_runs=profile_runs,
        budget_us=deadline.budget_us(block_size, sample_rate, deadline_us),
        atol=atol, rtol=rtol, device=device, target=target, timeout_s=timeout, resume=resume,
        harness=harness, sched_fifo=sched_fifo, cpu=cpu, rt_audit=rt_audit,
    )
    # the device, target and harness first: a bad one is one line, before anything is exported
    resolved = resolve_device(settings)
    store = Store(results_dir)
    stale = store.mark_dead_runs_interrupted()
    console = Console(stderr=True)
    if stale:
        console.print(f"{stale} run(s) left unfinished by an earlier audit marked interrupted")
    with console.status("loading, exporting and running the reference"):
        prepared = prepare(ModelRequest(model, input_shape, inputs, labels, trust_pickle, arg, stream_state),
                           store)
    command = shlex.join(["auditor", *sys.argv[1:]])
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.fields[phase]}"), TimeElapsedColumn(), console=console) as bar:
        tasks = {v.label: bar.add_task(v.label, total=len(PHASES), phase="queued") for v in variants}

        reused: list[str] = []

        def progress(label: str, phase: str) -> None:
            if phase == "stored":
                reused.append(label)
            done = len(PHASES) if phase in ("finished", "stored") else PHASES.index(phase) if phase in PHASES else None
            bar.update(tasks[label], phase=phase, **({"completed": done} if done is not None else {}))

        run_ids = audit_variants(prepared, variants, settings, store, command, progress, resolved)
    summaries = [run_summary(store, store.run_record(r)) for r in run_ids]
    for s in summaries:
        if s["variant"] in reused:
            t = s["timing"] or {}
            console.print(f"{s['variant']}: stored run {s['run_id']} reused ({s['status']}; timed with "
                          f"runs={t.get('runs')} warmup={t.get('warmup')} max_seconds={t.get('max_seconds')})")
    # the cost model's forecast beside each measurement, stored with the run (every audit checks it)
    predicted = beside_measurement(prepared.bundle, summaries, device, settings.budget_us, results_dir, store,
                                   prepared.data_dir)
    pages = [write_run_page(store, r) for r in run_ids]
    verdict = choose(summaries)
    if as_json:
        print(json.dumps({"model": prepared.model_source, "model_hash": prepared.bundle.model_hash,
                          "state": prepared.bundle.state, "stream_state": prepared.stream_state,
                          "budget_us": settings.budget_us, "runs": summaries,
                          "verdict": {"winner": verdict.winner, "line": verdict.line, "why": verdict.why},
                          "reused": [s["run_id"] for s in summaries if s["variant"] in reused],
                          "reports": [str(p) for p in pages]}, indent=2, default=str))
    else:
        held = describe_state(prepared.bundle.state, prepared.stream_state)
        print(f"model {prepared.model_source} ({prepared.model_format}, hash {prepared.bundle.model_hash}"
              f"{'; ' + held + ', outputs checked over a sequence of calls from a fresh load' if held else ''}); "
              f"deadline {settings.budget_us:.1f} µs; device {device}")
        print(textwrap.fill(verdict.line, 100) if not wide else verdict.line)
        print(table(summaries, wide=wide))
        for variant, why in verdict.why.items():
            if not why.startswith(("chosen", "slower")):
                print(f"{variant}: {why}" if wide else textwrap.shorten(f"{variant}: {why}", 100, placeholder="…"))
        for line in predicted:
            print(line)
        print(f"results: {store.path}; pages: {pages[0].parent if pages else '-'}")
    store.close()
    if not any(s["status"] in ("ok", "mismatch", "compiled") for s in summaries):
        raise typer.Exit(1)  # nothing at all could be measured
