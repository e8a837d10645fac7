"""Vega-Lite charts (built with altair) and the Vega JavaScript bundle they need.

Every page inlines the bundle once (vl-convert builds it from the Vega, Vega-Lite and
vega-embed releases it ships: no network, opens from file://); `auditor serve` sends it once
as /assets/vega.js instead. The raw samples go into the specs untrimmed: the tail is the point.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path

import altair as alt
import numpy as np

# the chart's own data limit is for notebooks; our pages carry the raw samples on purpose
alt.data_transformers.disable_max_rows()

_BUNDLE: str | None = None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auditor"


def vega_bundle() -> str:
    """vega + vega-lite + vega-embed as one script (about 0.9 MB). Building it takes a few
    seconds, so it is kept in memory and in ~/.cache/auditor/ per vl-convert version."""
    global _BUNDLE
    if _BUNDLE is not None:
        return _BUNDLE
    import vl_convert

    version = getattr(vl_convert, "__version__", "unknown")
    path = _cache_dir() / f"vega-bundle-{version}.js"
    try:
        _BUNDLE = path.read_text(encoding="utf-8")
    except OSError:
        _BUNDLE = vl_convert.javascript_bundle()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(_BUNDLE, encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # an unwritable cache only costs the next process the build time
    return _BUNDLE


def spec_json(chart: alt.TopLevelMixin | dict) -> str:
    """A chart's Vega-Lite spec as JSON safe inside a <script> element."""
    spec = chart if isinstance(chart, dict) else chart.to_dict(validate=False)
    return json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")


def _with_data(spec: dict, **datasets: list[dict]) -> dict:
    """Attach the rows as top-level named datasets: altair validates inline values row by
    row (seconds for a few thousand samples), named data it leaves alone."""
    spec["datasets"] = {**spec.get("datasets", {}), **datasets}
    return spec


def _deadline_rows(budget_us: float | None) -> list[dict]:
    return [] if budget_us is None else [{"deadline": budget_us, "label": f"deadline {budget_us:.0f} µs"}]


def _deadline_rule(deadline: bool, axis: str) -> list:
    """A red rule and label at the deadline (rows in the named dataset `deadline`)."""
    if not deadline:
        return []
    frame = alt.Data(name="deadline")
    enc = {axis: alt.X("deadline:Q") if axis == "x" else alt.Y("deadline:Q")}
    rule = alt.Chart(frame).mark_rule(color="#c0392b", strokeWidth=2).encode(**enc)
    text = alt.Chart(frame).mark_text(color="#c0392b", align="left", dx=3, dy=-4, baseline="bottom").encode(
        text="label:N", **enc, **({"y": alt.value(0)} if axis == "x" else {"x": alt.value(0)}))
    return [rule, text]


# Building a chart with altair costs 0.1-0.2 s (its schema wrappers), more than a served page
# may take: each chart's spec is built once per shape (variant order, deadline or not) and
# its rows attached as named datasets.

@functools.lru_cache(maxsize=256)
def _dist_spec(variants: tuple[str, ...], deadline: bool, width: int) -> dict:
    data = alt.Data(name="samples")
    x = alt.X("us:Q", title="latency per inference, µs (log scale)", scale=alt.Scale(type="log"))
    y = alt.Y("variant:N", title=None, sort=list(variants))
    color = alt.Color("variant:N", legend=None, sort=list(variants))
    box = alt.Chart(data).mark_boxplot(extent="min-max", size=16, opacity=0.75).encode(x=x, y=y, color=color)
    ticks = alt.Chart(data).mark_tick(opacity=0.25, thickness=1, size=10, yOffset=14).encode(x=x, y=y, color=color)
    return alt.layer(box, ticks, *_deadline_rule(deadline, "x")).properties(
        width=width, height=max(60, 46 * len(variants)),
        title="Latency distribution (every timed run)").to_dict(validate=False)


def latency_distribution(samples: dict[str, np.ndarray], budget_us: float | None, width: int = 640) -> dict | None:
    """Per variant: a box over the raw samples (whiskers at min and max: the tail is never
    trimmed) on a log axis, every sample beside it as a tick, and the deadline."""
    values = [{"variant": v, "us": float(x)} for v, arr in samples.items() for x in arr if x > 0]
    if not values:
        return None
    spec = copy.deepcopy(_dist_spec(tuple(samples), budget_us is not None, width))
    return _with_data(spec, samples=values, deadline=_deadline_rows(budget_us))


@functools.lru_cache(maxsize=256)
def _cdf_spec(variants: tuple[str, ...], deadline: bool, width: int) -> dict:
    line = alt.Chart(alt.Data(name="cdf")).mark_line(interpolate="step-after").encode(
        x=alt.X("us:Q", title="latency, µs (log scale)", scale=alt.Scale(type="log")),
        y=alt.Y("share:Q", title="share of runs ≤ latency", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("variant:N", sort=list(variants)))
    return alt.layer(line, *_deadline_rule(deadline, "x")).properties(
        width=width, height=220, title="Cumulative distribution (the tail is at the top right)").to_dict(
        validate=False)


def latency_cdf(samples: dict[str, np.ndarray], budget_us: float | None, width: int = 640) -> dict | None:
    """Share of runs at or below each latency, per variant (all samples), with the deadline."""
    values = []
    for v, arr in samples.items():
        xs = np.sort(arr[arr > 0])
        n = xs.size
        values += [{"variant": v, "us": float(x), "share": (i + 1) / n} for i, x in enumerate(xs)]
    if not values:
        return None
    spec = copy.deepcopy(_cdf_spec(tuple(samples), budget_us is not None, width))
    return _with_data(spec, cdf=values, deadline=_deadline_rows(budget_us))


@functools.lru_cache(maxsize=256)
def _memory_spec(variants: tuple[str, ...], points: bool, width: int) -> dict:
    return alt.Chart(alt.Data(name="rss")).mark_line(point=points).encode(
        x=alt.X("t_ms:Q", title="time since the sampler started, ms"),
        y=alt.Y("MiB:Q", title="RSS, MiB", scale=alt.Scale(zero=False)),
        color=alt.Color("variant:N", sort=list(variants))).properties(
        width=width, height=200, title="Memory (RSS) over the timed runs").to_dict(validate=False)


def memory_over_time(memory: dict[str, list[tuple[float, int]]], width: int = 640) -> dict | None:
    """Resident set size over the timed loop, per variant, from the sampler's readings."""
    values = [{"variant": v, "t_ms": float(t), "MiB": b / 2**20} for v, rows in memory.items() for t, b in rows]
    if not values:
        return None
    return _with_data(copy.deepcopy(_memory_spec(tuple(memory), len(values) < 200, width)), rss=values)


@functools.lru_cache(maxsize=4)
def _top_spec(width: int) -> dict:
    return alt.Chart(alt.Data(name="ops")).mark_bar().encode(
        x=alt.X("p50_us:Q", title="per-op median, µs"),
        y=alt.Y("kernel:N", sort="-x", title=None),
        tooltip=["kernel:N", "op_type:N", "p50_us:Q", "share:Q"]).properties(width=width).to_dict(validate=False)


def top_ops(rows: list[dict], variant: str, width: int = 640) -> dict | None:
    """The kernels that take most of the chosen variant's time (per-op medians)."""
    if not rows:
        return None
    spec = copy.deepcopy(_top_spec(width))
    spec.update(height=max(60, 18 * len(rows)), title=f"Where {variant}'s time goes")
    return _with_data(spec, ops=rows)


@functools.lru_cache(maxsize=4)
def _hist_spec(deadline: bool, width: int) -> dict:
    bars = alt.Chart(alt.Data(name="samples")).mark_bar(color="#4a7bb7").encode(
        x=alt.X("us:Q", bin=alt.Bin(maxbins=60), title="latency, µs"), y=alt.Y("count():Q", title="runs"))
    return alt.layer(bars, *_deadline_rule(deadline, "x")).properties(
        width=width, height=180, title="Latency histogram (every timed run)").to_dict(validate=False)


def histogram(samples_us: np.ndarray, budget_us: float | None, width: int = 640) -> dict | None:
    """One run's latency histogram (linear bins chosen by Vega-Lite over every sample) with the deadline."""
    if samples_us.size == 0:
        return None
    return _with_data(copy.deepcopy(_hist_spec(budget_us is not None, width)),
                      samples=[{"us": float(x)} for x in samples_us if x > 0], deadline=_deadline_rows(budget_us))


def _pvm_panel(variants: tuple[str, ...], which: str, tol: float, width: int) -> alt.LayerChart:
    scale = alt.Scale(type="log", nice=False)
    ytitle = f"predicted {which} (leave-one-family-out), µs (log scale)"
    xtitle = f"measured {which}, µs (log scale)"
    x = alt.X(f"m{which}:Q", title=xtitle, scale=scale)
    band_data = alt.Data(name=f"band_{which}")
    band = alt.Chart(band_data).mark_area(color="#2a7", opacity=0.15).encode(
        x=alt.X("m:Q", title=xtitle, scale=scale), y=alt.Y("lo:Q", title=ytitle, scale=scale), y2="hi:Q")
    diag = alt.Chart(band_data).mark_line(color="#555", strokeDash=[4, 3]).encode(
        x=alt.X("m:Q", title=xtitle, scale=scale), y=alt.Y("m:Q", title=ytitle, scale=scale))
    dots = alt.Chart(alt.Data(name="pvm")).transform_calculate(e=f"datum.p{which} / datum.m{which} - 1").mark_point(
        filled=True, size=22, opacity=0.6).encode(
        x=x, y=alt.Y(f"p{which}:Q", title=ytitle, scale=scale), color=alt.Color("v:N", sort=list(variants),
                                                                                 title="variant"),
        tooltip=[alt.Tooltip("v:N", title="variant"), alt.Tooltip("f:N", title="family"),
                 alt.Tooltip("g:N", title="graph"),
                 alt.Tooltip(f"p{which}:Q", title=f"predicted {which} µs", format=".1f"),
                 alt.Tooltip(f"m{which}:Q", title=f"measured {which} µs", format=".1f"),
                 alt.Tooltip("e:Q", title="error", format="+.0%")])
    # band and diagonal under the points, on the same log scales
    return alt.layer(band, diag, dots).properties(
        width=width, height=width, title=f"{which}: predicted vs measured (dashed: y = x; band: ±{tol:.0%})")


@functools.lru_cache(maxsize=64)
def _pvm_spec(variants: tuple[str, ...], tolerances: tuple[tuple[str, float], ...], width: int) -> dict:
    return alt.hconcat(*(_pvm_panel(variants, which, tol, width) for which, tol in tolerances)).to_dict(
        validate=False)


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def predicted_vs_measured(points: list[dict], tolerances: dict[str, float], width: int = 410) -> dict | None:
    """Log-log scatters of held-out predictions against measurements, one panel per statistic
    (tolerances: "p50" -> 0.10, ...), coloured per variant, with y = x and the ±tol band.
    points: variant, family, graph and p<stat>/m<stat> (predicted/measured µs) per statistic;
    one dataset serves every panel."""
    if not points:
        return None
    rows = [{"v": p["variant"], "f": p["family"], "g": p["graph"],
             **{f"{k}{w}": _sig(p[f"{k}{w}"]) for w in tolerances for k in "pm"}} for p in points]
    bands = {}
    for which, tol in tolerances.items():
        values = [r[f"{k}{which}"] for r in rows for k in "pm"]
        bands[f"band_{which}"] = [{"m": v, "lo": v * (1 - tol), "hi": v * (1 + tol)}
                                  for v in (min(values) / 1.2, max(values) * 1.2)]
    variants = tuple(dict.fromkeys(r["v"] for r in rows))
    return _with_data(copy.deepcopy(_pvm_spec(variants, tuple(tolerances.items()), width)), pvm=rows, **bands)
