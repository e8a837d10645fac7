"""`auditor dataset build|export|import|info`: measured datasets from zoo sweeps."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from tabulate import tabulate

from auditor import dataset as ds
from auditor.commands.options import COMPILERS, DEVICE, JSON, RESULTS_DIR, TIMEOUT
from auditor.commands.variants import parse_compiler_specs
from auditor.dataset_quiet import build_quiet
from auditor.pipeline import AuditSettings, resolve_device
from store import Store
from auditor.sweeps import load_sweep, round_robin
from auditor.timing import TimingSettings
from ground.errors import AuditorError

app = typer.Typer(no_args_is_help=True, help="Measured datasets: sweeps over the block zoo.")


@app.command("build")
def build(spec: Path = typer.Option(..., "--spec", help="sweep spec (JSON), e.g. datasets/sweeps/host-v1.json"),
          results_dir: Path = RESULTS_DIR,
          compilers: list[str] = COMPILERS,
          device: str = DEVICE,
          jobs: int = typer.Option(1, min=1, help="processes; >1 exports points ahead in parallel "
                                                  "(measurements always run one at a time)"),
          limit: int = typer.Option(0, min=0, help="only the first N points (0: all)"),
          sample: int = typer.Option(0, min=0, help="only N points, taken from each family in turn (0: all); "
                                     "a larger N later measures only the points this one left out"),
          worker: str = typer.Option("long-lived", "--worker",
                                     help="long-lived: one measuring process per compiler serves every run "
                                          "(artifacts cached); per-run: a fresh process per run (the old path)"),
          quiet: bool = typer.Option(False, "--quiet", help="export all, compile all (in parallel), then measure "
                                     "one run at a time pinned to one CPU, recording the load; a run measured "
                                     "under load stops the build (see --allow-load); the spec's spread repeats"),
          compile_only: bool = typer.Option(False, "--compile-only", help="--quiet: export and compile every "
                                            "point into the artifact cache and stop; the same command "
                                            "without it measures them (later, on a quiet machine)"),
          allow_load: bool = typer.Option(False, "--allow-load", help="--quiet: keep runs measured under load "
                                          "(flagged) instead of stopping"),
          max_other_busy: float = typer.Option(0.25, "--max-other-busy",
                                               help="a run is measured under load when other processes used "
                                                    "more than this many cores while it was timed, or more "
                                                    "processes than CPUs were runnable at its start"),
          cpu: int = typer.Option(-1, "--cpu", help="--quiet: the CPU to measure on (default: the last one)"),
          repeat_share: float = typer.Option(None, "--repeat-share", min=0.0, max=1.0,
                                             help="--quiet: share of points measured again for their "
                                                  "run-to-run spread (default: the spec's spread.share, else 0)"),
          repeats: int = typer.Option(None, "--repeats", min=2,
                                      help="--quiet: measurements per repeated point (default: spec, else 3)"),
          compile_cap: float = typer.Option(None, "--compile-cap", min=1.0,
                                            help="seconds one compile may take; a compile past it is stopped "
                                                 "and recorded failed with that reason (cached: builds with "
                                                 "the same or a shorter cap do not try it again)"),
          timeout: float = TIMEOUT) -> None:
    """Export, compile and measure every point of a sweep; resumable after any interruption."""
    if worker not in ("long-lived", "per-run"):
        raise AuditorError(f"--worker {worker!r}: expected long-lived or per-run")
    if quiet and worker != "long-lived":
        raise AuditorError("--quiet measures in long-lived workers; drop --worker per-run")
    if cpu >= 0 and cpu not in os.sched_getaffinity(0):
        raise AuditorError(f"--cpu {cpu}: not a CPU this process may use ({sorted(os.sched_getaffinity(0))})")
    sweep = load_sweep(spec)
    variants = parse_compiler_specs(compilers or sweep.compilers)
    if compile_only and not quiet:
        raise AuditorError("--compile-only is a step of --quiet builds; add --quiet")
    if limit and sample:
        raise AuditorError("give --limit or --sample, not both")
    if limit:
        sweep.points = sweep.points[:limit]
    if sample:
        sweep.points = round_robin(sweep.points, sample)
    timing = sweep.timing
    settings = AuditSettings(
        results_dir=results_dir, device=device, timeout_s=timeout, resume=True,
        timing=TimingSettings(warmup=timing.get("warmup", 20), runs=timing.get("runs", 200),
                              max_seconds=timing.get("max_seconds", 2.0),
                              min_runs=timing.get("min_runs", min(50, timing.get("runs", 200))),
                              converge=timing.get("converge", 0.0), gate=timing.get("gate", quiet)),
        profile_runs=timing.get("profile_runs", 20), cpu=cpu, other_busy_limit=max_other_busy,
        compile_cap_s=compile_cap,
    )
    resolved = resolve_device(settings)  # a bad device is one line, before anything starts
    store = Store(results_dir)
    store.mark_dead_runs_interrupted()
    console = Console(stderr=True)
    console.print(f"dataset {sweep.name}: {len(sweep.points)} points x {len(variants)} variants "
                  f"({len(sweep.rejected)} rejected by the spec's ranges)")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[now]}"), console=console) as bar:
        task = bar.add_task(sweep.name, total=len(sweep.points), now="")

        reused = [0]

        def progress(point: str, label: str | None, phase: str) -> None:
            reused[0] += phase.endswith("stored")  # a run found done by the resume check
            if label is None:
                bar.advance(task)
            else:
                bar.update(task, now=f"{point.split(':')[1]} {label} {phase}")

        command = shlex.join(["auditor", *sys.argv[1:]])
        if quiet:
            spread = sweep.spread
            counts = build_quiet(sweep, store, variants, settings, jobs, progress, command, resolved,
                                 allow_load=allow_load,
                                 repeat_share=spread.get("share", 0.0) if repeat_share is None else repeat_share,
                                 repeats=spread.get("repeats", 3) if repeats is None else repeats,
                                 repeat_seed=spread.get("seed", 0), compile_only=compile_only)
        else:
            counts = ds.build(sweep, store, variants, settings, jobs, progress, command=command,
                              resolved=resolved, worker=worker)
    if "compiled" in counts:
        print(f"dataset {sweep.name}: {counts['compiled']} (point, variant) compiles done or cached, "
              f"{counts['failed']} points failed to export; nothing measured (--compile-only); store {store.path}")
        return
    repeated = f", {counts['repeated']} measured again for their spread" if counts.get("repeated") else ""
    print(f"dataset {sweep.name}: {counts['measured']} points measured{repeated}, {counts['failed']} failed "
          f"to build; store {store.path}")
    if reused[0]:  # resumed or imported: said, since times from another boot are not this one's
        print(f"{reused[0]} runs were already stored (an earlier build here, or an imported file) and were "
              "kept, not measured again; delete the results directory to measure everything on this machine now")


@app.command("export")
def export(name: str = typer.Argument(..., help="dataset name (the sweep's name)"),
           output: Path = typer.Option(..., "--output", help="Parquet file to write"),
           results_dir: Path = RESULTS_DIR) -> None:
    """Write a dataset's runs (with device facts, versions, options, samples, per-op rows, graphs) to Parquet."""
    store = _open(results_dir)
    count = ds.export_parquet(store, name, output)
    print(f"wrote {count} runs of {name} to {output} ({output.stat().st_size / 2**20:.1f} MiB)")


@app.command("import")
def import_(path: Path = typer.Argument(..., help="Parquet file from `dataset export`"),
            results_dir: Path = RESULTS_DIR) -> None:
    """Merge a dataset measured elsewhere (e.g. on a board); runs already present are skipped."""
    if not path.is_file():
        raise AuditorError(f"{path}: no such file")
    result = ds.import_parquet(Store(results_dir), path)
    print(f"{path}: {result['added']} runs added, {result['skipped']} already present")


@app.command("info")
def info(name: str = typer.Argument(None, help="dataset name (default: all)"), results_dir: Path = RESULTS_DIR,
         as_json: bool = JSON) -> None:
    """Points by family x compiler x device; failures and mismatches with their reasons."""
    summary = ds.info(_open(results_dir), name)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"datasets: {', '.join(summary['datasets'])}")
    print(tabulate([[p["family"], p["status"], p["count"]] for p in summary["points"]],
                   headers=["family", "point status", "points"]))
    pivot: dict[tuple, dict[str, int]] = {}
    repeats: dict[str, int] = {}
    for r in summary["runs"]:
        if r["repeat"]:  # spread repeats: counted apart, they are not more points
            repeats[r["status"]] = repeats.get(r["status"], 0) + r["count"]
            continue
        key = (r["family"], r["variant"], r["device"] + (" (emulated)" if r["emulated"] else ""))
        pivot.setdefault(key, {})[r["status"]] = r["count"]
    states = sorted({s for counts in pivot.values() for s in counts})
    print()
    print(tabulate([[*key, *[pivot[key].get(s, 0) for s in states]] for key in sorted(pivot)],
                   headers=["family", "variant", "device", *states]))
    if repeats:
        print(f"\nspread repeats (runs measured again, not counted above): "
              f"{', '.join(f'{n} {s}' for s, n in sorted(repeats.items()))}")
    if summary["run_problems"]:
        print()
        print(tabulate([[p["variant"], p["status"], p["count"], (p["reason"] or "")[:100]]
                        for p in summary["run_problems"]], headers=["variant", "status", "runs", "reason"]))
    for f in summary["point_failures"]:
        print(f"point failed: {f['spec']}: {f['reason']}")


def _open(results_dir: Path) -> Store:
    if not (results_dir / Store.FILE).exists():
        raise AuditorError(f"no results store in {results_dir}")
    return Store(results_dir)
