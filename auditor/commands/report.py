"""`auditor report [MODEL | RUN_ID | --audit ID | --all] [--output DIR]`: compiler-comparison pages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from auditor.commands.options import JSON, RESULTS_DIR
from store import Store
from auditor.summary import run_summary
from ground.errors import AuditorError
from reports import evaluation as cost_eval
from reports.comparison import latest_per_variant, write_pages


def open_store(results_dir: Path) -> Store:
    if not (results_dir / Store.FILE).exists():
        raise AuditorError(f"no results store in {results_dir} (run `auditor compile-all` first)")
    return Store(results_dir)


def find_model(store: Store, text: str) -> str:
    """A model hash from a hash prefix, a model file's path or name, or a zoo spec."""
    hits = [m for m in store.models() if m["model_hash"].startswith(text)]
    if not hits:
        name = Path(text).name
        hits = [m for m in store.models()
                if m["source"] in (text, str(Path(text).expanduser().absolute()))
                or (m["source"] and not m["source"].startswith("zoo:") and Path(m["source"]).name == name)]
    if len({m["model_hash"] for m in hits}) > 1:
        raise AuditorError(f"{text!r} names {len(hits)} models; give a hash prefix "
                           f"({', '.join(m['model_hash'][:10] for m in hits[:5])})")
    return hits[0]["model_hash"] if hits else ""


def page_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:80] or "report"


def report(
    target: str = typer.Argument(None, help="a model (file, name, zoo spec or hash prefix) or a run id"),
    audit: str = typer.Option(None, "--audit", help="the runs of this audit (id or unique prefix)"),
    every: bool = typer.Option(False, "--all", help="an overview page and one page per model"),
    # no -o: every verb spells --results-dir that way (auditor/commands/options.py)
    output: Path = typer.Option(None, "--output", help="directory for the pages (default: RESULTS_DIR/reports)"),
    results_dir: Path = RESULTS_DIR,
    as_json: bool = JSON,
) -> None:
    """Self-contained HTML comparing the compiler variants of a model: verdict, table, charts,
    per-operator times, profiles, environment. Opens from a file; needs no network."""
    if sum(x is not None and x is not False for x in (target, audit, every or None)) != 1:
        raise AuditorError("give one of MODEL, RUN_ID, --audit ID or --all")
    store = open_store(results_dir)
    out = (output or store.dir / "reports").expanduser().absolute()
    overview, evaluation = None, None
    if every:
        summaries = [run_summary(store, r) for r in store.run_records()]
        if not summaries:
            raise AuditorError(f"no runs in {store.path}")
        groups: dict[str, list[dict]] = {}
        for s in summaries:
            groups.setdefault(s["model_hash"], []).append(s)
        groups = {f"{page_name(v[0]['model'])}-{h[:8]}": latest_per_variant(v) for h, v in groups.items()}
        overview = summaries
        evaluation = cost_eval.load(store.dir)  # `auditor evaluate`'s export, when it was run here
    elif audit:
        a = store.audit(audit)
        summaries = [run_summary(store, r) for r in store.runs_where(audit_id=a["audit_id"])]
        if not summaries:
            raise AuditorError(f"audit {a['audit_id']} has no runs")
        groups = {f"audit-{a['audit_id']}": summaries}
    else:
        model_hash = find_model(store, target)
        if model_hash:
            rows = store.runs_where(model_hash=model_hash)
            if not rows:
                raise AuditorError(f"model {target!r} has no runs in {store.path}")
            summaries = latest_per_variant([run_summary(store, r) for r in rows])
        else:
            try:
                run = store.run_record(target)
            except AuditorError:
                raise AuditorError(f"no model or run {target!r} in {store.path}") from None
            summaries = [run_summary(store, r) for r in store.runs_where(audit_id=run["audit_id"])]
        groups = {f"{page_name(summaries[0]['model'])}-{summaries[0]['model_hash'][:8]}": summaries}
    try:
        pages = write_pages(store, groups, out, overview, evaluation)
    except OSError as e:
        raise AuditorError(f"cannot write the pages to {out} ({e.strerror or e})")
    if as_json:
        print(json.dumps({"pages": [{"path": str(p), "bytes": p.stat().st_size} for p in pages]}, indent=2))
    else:
        for p in pages:
            print(f"{p} ({p.stat().st_size / 1e6:.1f} MB)")
    store.close()
