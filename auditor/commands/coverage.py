"""`auditor coverage`: an operator x compiler matrix over ONNX's own test models."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from auditor import coverage as cov
from auditor.commands.options import COMPILERS, JSON, RESULTS_DIR
from auditor.commands.variants import parse_compiler_specs
from store import Store
from compilers import registry
from ground.errors import AuditorError
from reports.coverage_page import write_coverage_page


def coverage(
    results_dir: Path = RESULTS_DIR,
    compilers: list[str] = COMPILERS,
    suites: list[str] = typer.Option(list(cov.SUITES), "--suite", help=f"suites: {', '.join(cov.SUITES)}"),
    sample: int = typer.Option(0, min=0, help="a seeded subset of N cases across the suites (0: all)"),
    seed: int = typer.Option(0, help="seed of --sample"),
    case_timeout: float = typer.Option(120.0, help="seconds one case may take before it counts as hung"),
    as_json: bool = JSON,
) -> None:
    """Run every compiler over the ONNX test cases; store and render the coverage matrix."""
    unknown = sorted(set(suites) - set(cov.SUITES))
    if unknown:
        raise AuditorError(f"unknown suite {unknown[0]!r} (suites: {', '.join(cov.SUITES)})")
    variants = parse_compiler_specs(compilers) if compilers else registry.coverage_variants()
    store = Store(results_dir)
    console = Console(stderr=True)
    with console.status("writing the test cases (once)"):
        cases = cov.sample(cov.materialize(store.dir / "coverage" / "cases", tuple(suites)), sample, seed)
    runnable, skipped = [], {}
    for v in variants:
        cls = registry.get(v.compiler)
        ok, detail = cls.available()
        if not ok:
            skipped[v.label] = detail
        elif "onnx" not in cls.accepts:
            skipped[v.label] = f"takes {' or '.join(cls.accepts)}; the test cases are ONNX only"
        else:
            runnable.append(v)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {v.label: bar.add_task(v.label, total=len(cases)) for v in runnable}
        for v in runnable:
            cov.run_compiler(store, v, cases, case_timeout,
                             lambda label, n: bar.update(tasks[label], completed=min(n, len(cases))))
            bar.update(tasks[v.label], completed=len(cases))
    matrix = cov.matrix(store, cases)
    labels = [v.label for v in runnable]
    md = cov.markdown(matrix, labels, skipped)
    out = store.dir / "reports"
    out.mkdir(exist_ok=True)
    (out / "coverage.md").write_text(md)
    html = write_coverage_page(out / "coverage.html", matrix, labels, skipped, len(cases),
                               {v: cov.first_failures(store, v) for v in labels})
    if as_json:
        print(json.dumps({"cases": len(cases), "totals": matrix["totals"], "skipped": skipped,
                          "markdown": str(out / "coverage.md"), "html": str(html)}, indent=2))
    else:
        print(md.split("\n\n| operator")[0])
        print(f"\n{len(cases)} cases; matrix: {out / 'coverage.md'}, {html}")
