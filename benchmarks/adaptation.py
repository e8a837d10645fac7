"""The adaptation curve: how well `auditor fit --device D` (the shipped model as a prior,
corrected from a few graphs) predicts a new device after 10 / 25 / 50 / 100 graphs, and
the adaptation sweep (datasets/sweeps/adapt.json) those graphs come from.

No second device is measured here, so a setting measurable on this host stands in for the
new device: the prior is fitted on one variant, the "new device" is another variant on the
same graphs. Pairs: onnxruntime -> onnxruntime[graph_opt=disable] (same runtime, different
kernels per op: the closest stand-in for the same compiler on other hardware) and
torch-eager -> torchscript. Graphs are added in the sweep's order (k-center cover of the
feature space); accuracy is on every graph not used for adapting. Compared with fitting
from scratch on the same few graphs.

    python benchmarks/adaptation.py [--dataset datasets/host-v1.parquet] [--write-sweep]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cost_model.fit import adapt_variant, cover_points  # noqa: E402
from cost_model.records import read_parquet, read_rows  # noqa: E402
from cost_model.training import fit_variant, prepare, predict_hashes  # noqa: E402

PAIRS = [("onnxruntime", "onnxruntime[graph_opt=disable]"), ("torch-eager", "torchscript")]
SIZES = (10, 25, 50, 100)


def scores(prep, variant, model, hashes) -> tuple[float, float, float]:
    runs = prep.by_variant[variant]
    pred = predict_hashes(prep, model, hashes)
    e50 = np.array([abs(p / runs[h].p50_us - 1) for h, (p, _) in zip(hashes, pred)])
    e99 = np.array([abs(q / runs[h].p99_us - 1) for h, (_, q) in zip(hashes, pred)])
    return float(np.mean(e50 <= 0.1)), float(np.mean(e50 <= 0.2)), float(np.mean(e99 <= 0.2))


def write_sweep(rows, order, path: Path) -> None:
    by_hash = {r["model_hash"]: r for r in rows}
    seconds = {}
    for r in rows:
        if r["model_hash"] in order and r.get("finished_at") and r.get("started_at"):
            seconds[r["model_hash"]] = seconds.get(r["model_hash"], 0.0) + r["finished_at"] - r["started_at"]
    total = sum(seconds.values())
    spec = {
        "name": "adapt",
        "description": (f"{len(order)} graphs chosen to cover the feature space (k-center on log op/MAC/byte sums "
                        f"of host-v1), in cover order: any prefix (10, 25, 50) covers as well as it can. "
                        f"Measured on the host-v1 machine these {len(order)} points took {total / 60:.0f} min for "
                        f"the four variants (start to finish per run, two cores, loaded); on a board expect that "
                        f"times its slowdown (e.g. 10-30x on a Cortex-A8)."),
        "compilers": ["onnxruntime", "onnxruntime:graph_opt=disable", "torch-eager", "torchscript"],
        "timing": {"runs": 200, "warmup": 20, "max_seconds": 1.0, "profile_runs": 20},
        "families": [{"family": by_hash[h]["family"], "grid": {}, "fixed": json.loads(by_hash[h]["params"])}
                     for h in order],
    }
    path.write_text(json.dumps(spec, indent=1) + "\n")
    print(f"wrote {path}: {len(order)} points, {total / 60:.0f} min measured on the host")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default=str(ROOT / "datasets" / "host-v1.parquet"))
    ap.add_argument("--write-sweep", action="store_true", help="(re)write datasets/sweeps/adapt.json")
    args = ap.parse_args()
    rows = read_parquet([args.dataset])
    graphs, measured = read_rows(rows)
    prep = prepare(graphs, measured)
    order = cover_points(prep, 100)
    if args.write_sweep:
        import pyarrow.parquet as pq

        extra = pq.read_table(args.dataset, columns=["model_hash", "family", "params", "started_at",
                                                     "finished_at"]).to_pylist()
        write_sweep(extra, order, ROOT / "datasets" / "sweeps" / "adapt.json")
    print("share of held-out graphs within tolerance (p50 ±10% / p50 ±20% / p99 ±20%)")
    for source, target in PAIRS:
        prior = fit_variant(prep, source, list(prep.by_variant[source]))
        print(f"\nprior: {source} (all {len(prep.by_variant[source])} graphs) -> new device: {target}")
        for n in SIZES:
            few = order[:n]
            rest = [h for h in prep.by_variant[target] if h not in set(few)]
            adapted = adapt_variant(prep, target, few, prior)
            scratch = fit_variant(prep, target, few)
            a, s = scores(prep, target, adapted, rest), scores(prep, target, scratch, rest)
            print(f"  {n:3d} graphs: adapted {a[0]:.2f} / {a[1]:.2f} / {a[2]:.2f}   "
                  f"from scratch {s[0]:.2f} / {s[1]:.2f} / {s[2]:.2f}   ({len(rest)} held-out graphs)")
        full = fit_variant(prep, target, list(prep.by_variant[target]))
        f = scores(prep, target, full, list(prep.by_variant[target]))
        print(f"  reference, fitted on all graphs and scored on them (in-sample): {f[0]:.2f} / {f[1]:.2f} / {f[2]:.2f}")


if __name__ == "__main__":
    main()
