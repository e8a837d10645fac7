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


def points(report: dict, which: str = "p50", labels: dict[str, str] | None = None) -> list[dict]:
    """One scatter point per (variant, graph): the held-out prediction and the measurement.
    labels: model hash -> its name in the store (a zoo spec), when the store holds the graph."""
    labels = labels or {}
    out = []
    for v, held in report.get("held", {}).items():
        for h in held:
            pred, meas = h[which], h[f"measured_{which}"]
            if pred > 0 and meas > 0:
                out.append({"variant": v, "family": h["family"], "graph": labels.get(h["model_hash"], h["model_hash"][:12]),
                            "predicted_us": round(pred, 3), "measured_us": round(meas, 3),
                            "error": round(pred / meas - 1, 4)})
    return out


def context(report: dict | None, labels: dict[str, str] | None = None) -> dict | None:
    """What the templates take: the tables' rows, the ranking and the scatter specs (JSON)."""
    if not report:
        return None
    rows = table_rows(report)
    specs = {}
    for which, tol in (("p50", 0.10), ("p99", 0.20)):
        spec = charts.predicted_vs_measured(points(report, which, labels), which, tol)
        if spec:
            specs[which] = charts.spec_json(spec)
    return {"overall": [r for r in rows if r["family"] == "all"], "families": [r for r in rows if r["family"] != "all"],
            "ranking": report.get("ranking") or {}, "method": report.get("method", ""),
            "sources": report.get("sources") or [], "specs": specs}
