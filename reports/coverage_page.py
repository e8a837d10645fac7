"""The coverage matrix as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

_env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape())
STATES = ("matched", "mismatch", "failed", "crashed", "timeout", "harness-limit")


def write_coverage_page(path: Path, matrix: dict, variants: list[str], skipped: dict[str, str], cases: int,
                        failures: dict[str, list]) -> Path:
    rows = []
    for op in sorted(matrix["ops"]):
        cells = []
        for v in variants:
            counts = matrix["ops"][op].get(v, {})
            total = sum(counts.values())
            matched = counts.get("matched", 0)
            kind = "none" if not total else "all" if matched == total else "some" if matched else "no"
            cells.append({"text": f"{matched}/{total}" if total else "", "kind": kind,
                          "title": ", ".join(f"{k} {n}" for k, n in counts.items())})
        rows.append({"op": op, "cells": cells})
    path.write_text(_env.get_template("coverage.html.j2").render(
        rows=rows, variants=variants, skipped=skipped, cases=cases, states=STATES,
        totals=matrix["totals"], failures=failures))
    return path
