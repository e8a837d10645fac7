"""A minimal self-contained HTML page for one run (the full comparison report comes later)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from store import RunRecord, Store

_env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape())


def describe_state(model_state: dict | None, stream: list[str]) -> str | None:
    """One phrase for tables and pages on the state a model carries between calls (None: none)."""
    if stream:
        return f"streamed state ({', '.join(s.replace(':', ' -> ') for s in stream)})"
    if model_state and model_state.get("kind") == "internal":
        return "stateful (state kept inside the module)"
    return None


def histogram_svg(samples_us: np.ndarray, budget_us: float | None, width=640, height=180, bins=60) -> str:
    """Latency histogram as inline SVG, with the deadline drawn when it is in range."""
    if samples_us.size == 0:
        return ""
    hi = float(np.percentile(samples_us, 99.9)) * 1.05
    lo = float(samples_us.min())
    counts, edges = np.histogram(np.clip(samples_us, lo, hi), bins=bins, range=(lo, hi))
    peak = counts.max() or 1
    bw = width / bins
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{height - 20 - c / peak * (height - 30):.1f}" width="{bw - 1:.1f}" '
        f'height="{c / peak * (height - 30):.1f}" fill="#4a7bb7"><title>{edges[i]:.1f}-{edges[i + 1]:.1f} µs: {c}</title></rect>'
        for i, c in enumerate(counts))
    marks = f'<text x="0" y="{height - 4}" font-size="11">{lo:.1f} µs</text>' \
            f'<text x="{width}" y="{height - 4}" font-size="11" text-anchor="end">{hi:.1f} µs (p99.9+5%)</text>'
    if budget_us is not None and lo <= budget_us <= hi:
        x = (budget_us - lo) / (hi - lo) * width
        marks += f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 20}" stroke="#c0392b" stroke-width="2"/>' \
                 f'<text x="{x + 3:.1f}" y="12" font-size="11" fill="#c0392b">deadline</text>'
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{bars}{marks}</svg>'


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
        "histogram": histogram_svg(samples, run.budget_us),
    }


def write_run_page(store: Store, run_id: str) -> Path:
    context = run_context(store, run_id)
    out = store.dir / "reports" / f"run-{context['run'].run_id}.html"
    out.parent.mkdir(exist_ok=True)
    out.write_text(_env.get_template("run.html.j2").render(**context))
    return out
