"""The cost model's leave-one-family-out evaluation on the pages: scatter and tables.

`auditor evaluate` writes RESULTS_DIR/cost-model-eval.json; this module only reads that
export (reports sits beside cost_model, not above it). The predictions are out of family:
each graph was predicted by a model fitted without its family, so "predicted" here is
honest about how the model does on something it has not seen.
"""

from __future__ import annotations

import json
from pathlib import Path

from reports import charts

EXPORT = "cost-model-eval.json"


def load(results_dir: Path) -> dict | None:
    """The exported evaluation, or None when there is none (or it cannot be read as one)."""
    try:
        report = json.loads((Path(results_dir) / EXPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("variants"), dict) else None


def table_rows(report: dict) -> list[dict]:
    """One flat row per variant and per (variant, family): what the CSV and the tables show."""
    rows = []
    for v, r in report["variants"].items():
        for fam, m in [("all", r["all"]), *sorted(r["families"].items())]:
            row = {"variant": v, "family": fam, "graphs": m["graphs"]}
            for which in ("p50", "p99"):
                for key, value in m.get(which, {}).items():
                    row[f"{which}_{key}"] = value
            rows.append(row)
    return rows


TOLERANCES = {"p50": 0.10, "p99": 0.20}  # the bands drawn: issue 15's targets


def points(report: dict, labels: dict[str, str] | None = None) -> list[dict]:
    """One scatter point per (variant, graph): the held-out predictions (pp50, pp99) and the
    measurements (mp50, mp99). labels: model hash -> its name in the store (a zoo
    spec), when the store holds the graph; else the hash."""
    labels = labels or {}
    out = []
    for v, held in report.get("held", {}).items():
        for h in held:
            if min(h["p50"], h["p99"], h["measured_p50"], h["measured_p99"]) > 0:  # log axes
                out.append({"variant": v, "family": h["family"], "graph": labels.get(h["model_hash"], h["model_hash"]),
                            "pp50": h["p50"], "mp50": h["measured_p50"], "pp99": h["p99"], "mp99": h["measured_p99"]})
    return out


def context(report: dict | None, labels: dict[str, str] | None = None) -> dict | None:
    """What the templates take: the tables' rows, the ranking and the scatter spec (JSON)."""
    if not report:
        return None
    rows = table_rows(report)
    spec = charts.predicted_vs_measured(points(report, labels), TOLERANCES)
    return {"overall": [r for r in rows if r["family"] == "all"], "families": [r for r in rows if r["family"] != "all"],
            "ranking": report.get("ranking") or {}, "method": report.get("method", ""),
            "sources": report.get("sources") or [], "spec": charts.spec_json(spec) if spec else None}
