"""A self-contained HTML page for one run (reports/comparison.py compares the variants)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from reports import charts
from store import RunRecord, Store

_env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape())


def describe_state(model_state: dict | None, stream: list[str]) -> str | None:
    """One phrase for tables and pages on the state a model carries between calls (None: none)."""
    if stream:
        return f"streamed state ({', '.join(s.replace(':', ' -> ') for s in stream)})"
    if model_state and model_state.get("kind") == "internal":
        return "stateful (state kept inside the module)"
    return None


def profiles_of(store: Store, run: RunRecord) -> list[dict]:
    """perf profiles of the same model, compiler variant and device, with their flamegraphs
    inline (interactive: the SVG carries its own script)."""
    out = []
    for profile_id, svg_path in store.profiles_of(run.model_hash, run.variant, run.device):
        if svg_path and Path(svg_path).exists():
            p = store.profile(profile_id)
            out.append({**p, "svg": Path(svg_path).read_text(encoding="utf-8")})
    return out


# The real-time audit's counters shown per inference on the page (host_* are Python's own).
RT_KEYS = ("allocs", "alloc_bytes", "frees", "locks", "waits", "wakeups", "threads_created",
           "minor_faults", "major_faults", "voluntary_switches", "other_allocs", "other_locks",
           "host_allocs", "host_locks")


def run_context(store: Store, run_id: str) -> dict:
    run = store.run_record(run_id)
    samples = np.array(store.samples_ns(run.run_id), dtype=np.float64) / 1e3
    memory = run.runtime_memory
    model_state = store.model_state(run.model_hash)
    rt, rt_failure = store.rt_safety(run.run_id)
    return {
        "rt": rt, "rt_failure": rt_failure, "rt_keys": RT_KEYS,
        "state": describe_state(model_state, run.settings.get("stream_state") or []),
        "model_state": model_state,
        "settings": run.settings,
        "runner": memory if "runner" in memory else None,
        "profiles": profiles_of(store, run),
        "run": run,
        "options": run.options,
        "target": run.target,
        "host": run.host,
        "notes": run.artifact_notes,
        "accuracy": store.accuracy_rows(run.run_id),
        "attribution": store.attribution_of(run.run_id),
        "ops": [op.to_dict() for op in store.op_timings(run.run_id)],
        # emulated timings get no deadline line: it does not apply to them
        "histogram": charts.spec_json(h) if (h := charts.histogram(
            samples, None if run.emulated else run.budget_us)) else None,
    }


def write_run_page(store: Store, run_id: str) -> Path:
    context = run_context(store, run_id)
    out = store.dir / "reports" / f"run-{context['run'].run_id}.html"
    out.parent.mkdir(exist_ok=True)
    out.write_text(_env.get_template("run.html.j2").render(bundle=charts.vega_bundle(), **context))
    return out
