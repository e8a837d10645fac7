"""A self-contained HTML page for one run (reports/comparison.py compares the variants)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from auditor.store import Store
from reports import charts

_env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape())


def describe_state(model_state: dict | None, stream: list[str]) -> str | None:
    """One phrase for tables and pages on the state a model carries between calls (None: none)."""
    if stream:
        return f"streamed state ({', '.join(s.replace(':', ' -> ') for s in stream)})"
    if model_state and model_state.get("kind") == "internal":
        return "stateful (state kept inside the module)"
    return None


def profiles_of(store: Store, run) -> list[dict]:
    """perf profiles of the same model, compiler variant and device, with their flamegraphs
    inline (interactive: the SVG carries its own script)."""
    out = []
    for profile_id, svg_path in store.profiles_for(run["model_hash"], run["variant"], run["device"]):
        if svg_path and Path(svg_path).exists():
            p = store.profile(profile_id)
            out.append({**p, "svg": Path(svg_path).read_text(encoding="utf-8")})
    return out


def run_context(store: Store, run_id: str) -> dict:
    run = dict(store.run(run_id))
    samples = np.array([r["latency_ns"] for r in store.rows("samples", run["run_id"])], dtype=np.float64) / 1e3
    attribution = store.attribution(run["run_id"])
    memory = json.loads(run["runtime_memory"] or "{}")
    settings = json.loads(run["settings"] or "{}")
    return {
        "state": describe_state(store.model_state(run["model_hash"]), settings.get("stream_state") or []),
        "model_state": store.model_state(run["model_hash"]),
        "settings": json.loads(run["settings"] or "{}"),
        "runner": memory if "runner" in memory else None,
        "profiles": profiles_of(store, run),
        "run": run,
        "options": json.loads(run["options"] or "{}"),
        "target": json.loads(run["target"] or "{}"),
        "host": json.loads(run["host"] or "{}"),
        "notes": json.loads(run["artifact_notes"] or "[]"),
        "accuracy": [dict(r) for r in store.rows("accuracy", run["run_id"])],
        "attribution": dict(attribution) if attribution else None,
        "ops": [dict(r, onnx_nodes=json.loads(r["onnx_nodes"])) for r in store.rows("op_timings", run["run_id"])],
        # emulated timings get no deadline line: it does not apply to them
        "histogram": charts.spec_json(h) if (h := charts.histogram(
            samples, None if run["emulated"] else run["budget_us"])) else None,
    }


def write_run_page(store: Store, run_id: str) -> Path:
    context = run_context(store, run_id)
    out = store.dir / "reports" / f"run-{context['run']['run_id']}.html"
    out.parent.mkdir(exist_ok=True)
    out.write_text(_env.get_template("run.html.j2").render(bundle=charts.vega_bundle(), **context))
    return out
