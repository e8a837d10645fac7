"""Report and serve speed on a store of 1,000+ runs: the shipped dataset imported.

    .venv/bin/python benchmarks/reports.py [--results-dir DIR] [--requests N]

Without --results-dir it imports datasets/host-v1.parquet (about 2,000 runs) into a
temporary store first. Prints: the overview page's render time (every run summarised), one
model's comparison page, and `auditor serve` answering run pages, model pages and the run
list (median and p95 over N requests, through Starlette's TestClient: the app's own time,
no network). With `auditor evaluate`'s export in the results dir, also the overview's
cost-model section (render time, added size) and serve's /evaluation. Target (issue 16): a
run page in under 200 ms. Figures taken on a loaded
machine say so; compare them as ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[max(0, int(round(0.95 * n)) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results-dir", type=Path)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--with-all", action="store_true", help="also time `report --all` (a page per model: minutes)")
    args = ap.parse_args()
    results = args.results_dir
    if results is None:
        results = Path(tempfile.mkdtemp(prefix="auditor-bench-reports-"))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "auditor", "dataset", "import", str(ROOT / "datasets" / "host-v1.parquet"),
                        "--results-dir", str(results)], check=True, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
        print(f"imported datasets/host-v1.parquet into {results} in {time.perf_counter() - t:.1f} s")

    from starlette.testclient import TestClient

    from store import Store
    from auditor.summary import run_summary
    from reports import charts
    from reports import evaluation as cost_eval
    from reports.comparison import latest_per_variant, render_comparison, render_overview
    from reports.server import create_app

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    store = Store(results)
    bundle = charts.vega_bundle()
    t = time.perf_counter()
    summaries = [run_summary(store, r) for r in store.run_records()]
    t_sum = time.perf_counter() - t
    t = time.perf_counter()
    html = render_overview(store, summaries, {}, bundle)
    t_over = time.perf_counter() - t
    print(f"{len(summaries)} runs, {len(store.models())} models: summaries {t_sum:.2f} s, "
          f"overview render {t_over:.2f} s, page {len(html) / 1e6:.2f} MB")
    evaluation = cost_eval.load(results)  # `auditor evaluate --results-dir DIR` writes it
    if evaluation:
        t = time.perf_counter()
        with_eval = render_overview(store, summaries, {}, bundle, evaluation=evaluation)
        points = sum(len(h) for h in evaluation["held"].values())
        print(f"overview with the cost-model evaluation ({points} predicted-vs-measured points, 2 charts): "
              f"render {time.perf_counter() - t:.2f} s, +{(len(with_eval) - len(html)) / 1e3:.0f} kB")
    else:
        print("no cost-model-eval.json in the results dir: overview without the evaluation section")
    by_model: dict[str, list[dict]] = {}
    for s in summaries:
        by_model.setdefault(s["model_hash"], []).append(s)
    model_hash, runs = max(by_model.items(), key=lambda kv: len(kv[1]))
    runs = latest_per_variant(runs)
    t = time.perf_counter()
    html = render_comparison(store, runs, runs[0]["model"], bundle)
    print(f"comparison page of {runs[0]['model']} ({len(runs)} variants): {time.perf_counter() - t:.2f} s, "
          f"{len(html) / 1e6:.2f} MB ({(len(html) - len(bundle)) / 1e3:.0f} kB without the vega bundle)")
    from reports.comparison import write_pages

    groups: dict[str, list[dict]] = {}
    for s in summaries:
        groups.setdefault(s["model_hash"], []).append(s)
    groups = {h[:12]: latest_per_variant(v) for h, v in groups.items()}
    with tempfile.TemporaryDirectory() as out:
        if not args.with_all:
            groups = dict(list(groups.items())[:20])
        t = time.perf_counter()
        pages = write_pages(store, groups, Path(out), summaries)
        took = time.perf_counter() - t
        size = sum(p.stat().st_size for p in Path(out).iterdir())
    print(f"report --all{'' if args.with_all else ' (first 20 models)'}: {len(pages)} pages (overview + one per "
          f"model) in {took:.1f} s, {size / 1e6:.1f} MB with one shared vega.js")
    measured = next(r for r in summaries if r["n"])
    client = TestClient(create_app(results, run_summary))
    client.get("/assets/vega.js")
    pages = [("run page", f"/run/{measured['run_id']}"), ("model page", f"/model/{model_hash}"),
             ("run list (200 rows)", "/"), ("run list filtered by status=failed", "/?status=failed")]
    if evaluation:
        pages.append(("cost-model evaluation", "/evaluation"))
    for label, url in pages:
        assert client.get(url).status_code == 200, url
        p50, p95 = timed(lambda: client.get(url), args.requests)
        print(f"serve {label}: median {p50:.0f} ms, p95 {p95:.0f} ms over {args.requests} requests")


if __name__ == "__main__":
    main()
