"""The compiler-comparison report of one model (or one audit), and the overview of a store.

The pages take run summaries (dicts, as auditor.summary.run_summary makes them) and read the
rest (samples, memory, per-op rows, ONNX nodes, profiles) through Store methods. The verdict
comes from reports.verdict.choose, the same function the terminal uses.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from store import Store
from reports import charts
from reports import evaluation as cost_eval
from reports.run_page import profiles_of
from reports.verdict import Verdict, choose

templates = _env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape())
_env.filters["us"] = lambda v: "—" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}")
_env.filters["mib"] = lambda v: "—" if not v else f"{v / 2**20:.1f}"


def model_family(label: str) -> str:
    """zoo:mlp:depth=3 -> mlp; a file -> 'files'."""
    return label.split(":")[1] if label.startswith("zoo:") else "files"


def latest_per_variant(summaries: list[dict]) -> list[dict]:
    """One run per (variant, device, target): the newest that reached a final state."""
    keep: dict[tuple, dict] = {}
    for s in sorted(summaries, key=lambda s: s["started_at"] or 0):
        keep[(s["variant"], s["device"], s["target"])] = s
    return list(keep.values())


def environment(store: Store, runs: list[dict]) -> dict:
    """The facts every page states: device, CPU, OS, compilers and options, timing loop, events."""
    if not runs:
        return {}
    first = store.run_record(runs[0]["run_id"])
    host, target, settings = first.host, first.target, first.settings
    devices = sorted({r["device"] for r in runs})
    return {
        "devices": devices, "emulated": any(r["emulated"] for r in runs),
        "cpu": host.get("cpu_model"), "cores": host.get("cores"), "os": host.get("uname") or host.get("os"),
        "target": target.get("name"), "triple": target.get("triple"),
        "timing_loop": sorted({r["timing_loop"] for r in runs if r.get("timing_loop")}),
        "timing": settings.get("timing"), "harness": settings.get("harness") or "python",
        "compilers": [(r["variant"], r["compiler"], r["compiler_version"], r["options"]) for r in runs],
        "perf_events": [],
    }


def per_op_table(store: Store, model_hash: str, runs: list[dict]) -> dict:
    """Canonical ONNX nodes x variants. A kernel covering several consecutive nodes spans
    their rows; each column names its instrument, overhead and sum-vs-whole gap."""
    nodes = [asdict(n) for n in store.nodes(model_hash)]
    index = {n["name"]: i for i, n in enumerate(nodes)}
    columns, cells, inserted = [], [dict() for _ in nodes], []
    for r in runs:
        a = store.attribution_of(r["run_id"])
        ops = [o.to_dict() for o in store.op_timings(r["run_id"])]
        if a is None:
            continue
        columns.append({"variant": r["variant"], "method": a["method"], "overhead": a["overhead_ratio"],
                        "sum_to_whole": a["sum_to_whole"], "runs": a["runs"]})
        v = r["variant"]
        for o in ops:
            rows = sorted(index[n] for n in o["onnx_nodes"] if n in index)
            if not rows:
                inserted.append({"variant": v, "kernel": o["kernel"], "p50_us": o["p50_us"]})
                continue
            # consecutive runs of rows: one cell spanning each
            start = prev = rows[0]
            for i in [*rows[1:], None]:
                if i is not None and i == prev + 1:
                    prev = i
                    continue
                cells[start][v] = {"kernel": o["kernel"], "p50_us": o["p50_us"], "share": o["share"],
                                   "span": prev - start + 1, "fused": len(rows) > 1}
                for covered in range(start + 1, prev + 1):
                    cells[covered][v] = None  # under the spanning cell
                if i is not None:
                    start = prev = i
    by_type: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for n, row in zip(nodes, cells):
        for v, c in row.items():
            if c:
                by_type[n["op_type"]][v] += c["p50_us"] / c["span"]
    return {"nodes": nodes, "cells": cells, "columns": columns, "inserted": inserted,
            "by_type": {k: dict(v) for k, v in sorted(by_type.items())}}


def comparison_context(store: Store, summaries: list[dict], title: str) -> dict:
    runs = sorted(summaries, key=lambda s: (s["p50_us"] is None, s["p50_us"] or 0))
    verdict: Verdict = choose(runs)
    samples, memory = {}, {}
    for r in runs:
        if r["n"]:
            samples[r["variant"]] = np.array(store.samples_ns(r["run_id"]),
                                             dtype=np.float64) / 1e3
            memory[r["variant"]] = list(store.memory_samples(r["run_id"]))
    budget = next((r["budget_us"] for r in runs if r["budget_us"] is not None), None)
    if all(r["emulated"] for r in runs if r["n"]):
        budget_line = None  # emulated: no deadline drawn as if it applied
    else:
        budget_line = budget
    model_hash = runs[0]["model_hash"] if runs else None
    model = store.model_record(model_hash) if model_hash else None
    per_op = per_op_table(store, model_hash, runs) if model_hash else {"columns": []}
    winner_ops = []
    if verdict.winner:
        w = next(r for r in runs if r["variant"] == verdict.winner)
        winner_ops = sorted(({"kernel": o["kernel"], "op_type": o["op_type"], "p50_us": o["p50_us"],
                              "share": o["share"]} for o in (t.to_dict() for t in store.op_timings(w["run_id"]))),
                            key=lambda o: -(o["p50_us"] or 0))[:10]
    profiles = []
    for r in runs:
        for p in profiles_of(store, store.run_record(r["run_id"])):
            profiles.append({**p, "variant": r["variant"]})
    specs = {
        "dist": charts.latency_distribution(samples, budget_line),
        "cdf": charts.latency_cdf(samples, budget_line),
        "memory": charts.memory_over_time(memory),
        "top": charts.top_ops(winner_ops, verdict.winner) if winner_ops else None,
    }
    env = environment(store, runs)
    env["perf_events"] = sorted({p["event"] for p in profiles})
    return {
        "title": title, "runs": runs, "verdict": verdict, "budget": budget, "model": dict(model) if model else {},
        "model_label": runs[0].get("model") if runs else title, "env": env, "per_op": per_op,
        "specs": {k: charts.spec_json(v) for k, v in specs.items() if v}, "profiles": profiles,
    }


def render_comparison(store: Store, summaries: list[dict], title: str, bundle: str | None,
                      bundle_src: str = "/assets/vega.js", served: bool = False) -> str:
    """The page as a string. bundle: the vega JavaScript to inline; None links bundle_src
    instead (serve's /assets/vega.js, or the vega.js written beside a set of pages)."""
    return _env.get_template("comparison.html.j2").render(bundle=bundle, bundle_src=bundle_src, served=served,
                                                            **comparison_context(store, summaries, title))


def overview_context(store: Store, summaries: list[dict]) -> dict:
    """Every model with its verdict, points by family x compiler, failures, and which ONNX
    operators each compiler handled across the stored models."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        by_model[s["model_hash"]].append(s)
    models, families = [], defaultdict(lambda: defaultdict(Counter))
    for model_hash, runs in by_model.items():
        runs = latest_per_variant(runs)
        label = runs[0]["model"]
        v = choose(runs)
        models.append({"hash": model_hash, "label": label, "runs": len(runs), "winner": v.winner,
                       "line": v.line, "emulated": v.emulated,
                       "statuses": Counter(r["status"] for r in runs)})
        for r in runs:
            families[model_family(label)][r["variant"]][r["status"]] += 1
    compilers = sorted({s["variant"] for s in summaries})
    ops_of = store.op_types_by_model()
    coverage: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for model_hash, runs in by_model.items():
        for r in latest_per_variant(runs):
            for op in ops_of.get(model_hash, ()):
                coverage[op][r["variant"]]["run"] += 1
                coverage[op][r["variant"]]["matched"] += r["status"] == "ok"
    failures = [s for s in summaries if s["status"] not in ("ok", "compiled", "skipped")][:200]
    return {"models": sorted(models, key=lambda m: m["label"]), "compilers": compilers,
            "families": {f: dict(v) for f, v in sorted(families.items())},
            "coverage": {op: dict(v) for op, v in sorted(coverage.items())}, "failures": failures,
            "n_runs": len(summaries), "statuses": Counter(s["status"] for s in summaries)}


def render_overview(store: Store, summaries: list[dict], links: dict[str, str], bundle: str | None,
                    coverage_page: str | None = None, bundle_src: str = "/assets/vega.js",
                    evaluation: dict | None = None) -> str:
    """links: model hash -> the href of its comparison page. evaluation: the cost model's
    exported evaluation (reports.evaluation.load), shown as its own section when given."""
    ctx = overview_context(store, summaries)
    env = environment(store, summaries[:1])
    ev = cost_eval.context(evaluation, {s["model_hash"]: s["model"] for s in summaries})
    return _env.get_template("overview.html.j2").render(bundle=bundle, bundle_src=bundle_src, links=links, env=env,
                                                         coverage_page=coverage_page, ev=ev, **ctx)


def write_pages(store: Store, groups: dict[str, list[dict]], out: Path, overview: list[dict] | None,
                evaluation: dict | None = None) -> list[Path]:
    """groups: page name -> run summaries. Writes one comparison page per group (and the
    overview, when given the summaries for it) into out; their paths. One page inlines the
    vega bundle (a single self-contained file); a set of pages shares one vega.js beside them
    (still no network: a relative file)."""
    out.mkdir(parents=True, exist_ok=True)
    bundle = charts.vega_bundle()
    shared = overview is not None or len(groups) > 1
    if shared:
        (out / "vega.js").write_text(bundle, encoding="utf-8")
    inline = None if shared else bundle
    written = []
    links = {}
    for name, summaries in groups.items():
        path = out / f"compare-{name}.html"
        title = summaries[0]["model"] if summaries else name
        path.write_text(render_comparison(store, summaries, title, inline, "vega.js"), encoding="utf-8")
        written.append(path)
        if summaries:
            links[summaries[0]["model_hash"]] = path.name
    if overview is not None:
        cov = store.dir / "reports" / "coverage.html"
        path = out / "index.html"
        path.write_text(render_overview(store, overview, links, inline, str(cov) if cov.exists() else None,
                                        "vega.js", evaluation), encoding="utf-8")
        written.insert(0, path)
    return written
