"""Experiment (issue 15): a kernel-level regressor (nn-Meter style) against the additive model.

Per variant with per-op rows (ONNX Runtime's profiler, torch-eager's FX node timer), each
run's per-op times are attributed to the units it ran (grouping.measured_units of its kernel
map); a time on no ONNX node (torch's guard function) is left to the per-inference overhead.
The profilers inflate small kernels, so their absolute times are not trusted: per variant a
per-inference overhead `a` is fitted on the training graphs (p50 ~ a + b * sum(per-op) +
c * ops, least squares on relative error), and each run's unit times are rescaled so they
sum to (its measured p50 - a), i.e. only their shares are used. A regressor then learns
log(unit time) from log features of the unit; a graph is predicted as a + the sum over the
units the learned fusion rules cut it into (grouping.group), exactly what `predict` sees.

Regressors compared: HistGradientBoosting on all units with the kind as a categorical
feature ("kernel-hgb"), per-kind ridge in log-log features ("kernel-loglin"; extrapolates
to bigger units than trained on, which trees cannot), and the additive model
(cost_model/regression.py). Protocol as `auditor evaluate`: leave one family out, share of
graphs with p50 within +-10% / +-20%, MAPE. TorchScript has no per-op rows: additive only.

    nice -n 10 .venv/bin/python benchmarks/kernel_model.py [--dataset datasets/host-v1.parquet]

Measured 2026-12-01 on host-v1 (519 graphs, leave one family out), 20 min wall / 8.4 min
CPU at load average 2-5 (`time nice -n 10 .venv/bin/python benchmarks/kernel_model.py`):

    variant                         model            p50 +-10% p50 +-20%    MAPE
    onnxruntime                     additive               35%       56%     24%
    onnxruntime                     kernel-hgb             15%       34%     37%
    onnxruntime                     kernel-loglin          14%       27%    453%
    onnxruntime[graph_opt=disable]  additive               35%       56%     23%
    onnxruntime[graph_opt=disable]  kernel-hgb             19%       38%     34%
    onnxruntime[graph_opt=disable]  kernel-loglin          15%       32%   2128%
    torch-eager                     additive               16%       37%     60%
    torch-eager                     kernel-hgb             23%       46%     29%
    torch-eager                     kernel-loglin          21%       41%     56%
    torchscript                     additive                6%       17%     66%

Result: negative for ONNX Runtime (the kernel-level models lose to the additive one on both
ORT variants: 15-19% against 35% within +-10%); for torch-eager kernel-hgb is better
(23% against 16% within +-10%, MAPE 29% against 60%) but still far below the 80% target, and
not integrated yet. Likely reasons: ORT's profiler times are whole microseconds (most kernels
read 3-4 us) and inflated on small blocks, so the per-unit targets mostly record the
profiler's per-op cost, not the kernel's; the per-kind log-linear fit explodes when it
extrapolates to unseen families (MAPE 453-2128%).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cost_model import evaluation, grouping  # noqa: E402
from cost_model.records import read_parquet, read_rows  # noqa: E402
from cost_model.regression import TRANSCENDENTAL, kind_of  # noqa: E402
from cost_model.training import graph_families, learn_rules, prepare  # noqa: E402

KINDS = ["matmul", "conv", "recurrent", "normalize", "pool", "transcendental", "elementwise", "data", "other"]


def per_op_rows(path: str) -> dict[tuple[str, str], list[dict]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["model_hash", "variant", "status", "emulated", "per_op"]).to_pylist()
    return {(r["model_hash"], r["variant"]): r["per_op"] for r in t
            if r["status"] == "ok" and not r["emulated"] and r["per_op"]}


def unit_features(feats) -> list[float]:
    """Log features of one unit (its nodes' NodeFeatures): what a kernel's time depends on."""
    heavy = max(feats, key=lambda f: (f.macs or 0.0, -f.index))
    lg = np.log1p
    macs = sum(f.macs or 0.0 for f in feats)
    b_in = sum(f.bytes_in for f in feats)
    b_out = sum(f.bytes_out for f in feats)
    w = sum(f.weight_bytes for f in feats)
    elems = sum(f.elements_out for f in feats)
    shape_in = (heavy.input_shapes or [None])[0] or []
    shape_out = (heavy.output_shapes or [None])[0] or []
    a = heavy.attrs or {}
    ks = a.get("kernel_shape") or [0]
    steps = 0.0
    if heavy.op_type in ("LSTM", "GRU", "RNN") and shape_in:
        steps = shape_in[0] * (2 if a.get("direction") == "bidirectional" else 1)
    return [float(KINDS.index(kind_of(heavy.op_type))), lg(macs), lg(b_in), lg(b_out), lg(w), lg(elems),
            float(len(feats)), float(sum(f.op_type in TRANSCENDENTAL for f in feats)),
            lg(shape_in[-1] if shape_in else 0), lg(shape_out[-1] if shape_out else 0),
            lg(float(np.prod(shape_in[:-1])) if len(shape_in) > 1 else 1), lg(float(np.prod(ks))),
            float((a.get("strides") or [1])[0]), float((a.get("dilations") or [1])[0]), lg(a.get("group") or 1),
            lg(steps), lg(a.get("hidden_size") or 0)]


def graph_units(prep, h, rules) -> list[list[float]]:
    by_name = {n.name: n for n in prep.features[h].nodes}
    groups = grouping.group(prep.graphs[h].nodes, rules) if rules else [[n["name"]] for n in prep.graphs[h].nodes]
    return [unit_features([by_name[n] for n in g if n in by_name]) for g in groups if any(n in by_name for n in g)]


def measured(prep, h, variant, per_op) -> tuple[list[list[float]], list[float], float, int]:
    """(unit features, profiled unit times, profiled total on units, ops) of one run."""
    nodes = prep.graphs[h].nodes
    by_name = {n.name: n for n in prep.features[h].nodes}
    units = grouping.measured_units(prep.by_variant[variant][h].kernel_map, nodes)
    unit_of = {n: i for i, u in enumerate(units) for n in u}
    times = np.zeros(len(units))
    ops = 0
    for op in per_op:
        covered = [n for n in json.loads(op["onnx_nodes"] or "[]") if n in unit_of]
        if covered:  # a kernel on no node (a guard) is overhead, left to the intercept
            times[unit_of[covered[0]]] += (op["mean_us"] or 0.0) * (op["calls"] or 1)
            ops += 1
    keep = [i for i, u in enumerate(units) if times[i] > 0 and any(n in by_name for n in u)]
    X = [unit_features([by_name[n] for n in units[i] if n in by_name]) for i in keep]
    return X, [float(times[i]) for i in keep], float(times.sum()), ops


class KernelModel:
    def __init__(self, kind: str):
        self.kind = kind

    def fit(self, prep, variant, hashes, per_ops):
        runs = prep.by_variant[variant]
        rows = [(h, *measured(prep, h, variant, per_ops[(h, variant)])) for h in hashes if (h, variant) in per_ops]
        rows = [r for r in rows if r[3] > 0]
        y = np.array([runs[h].p50_us for h, *_ in rows])
        S = np.array([r[3] for r in rows])
        N = np.array([r[4] for r in rows], dtype=float)
        A = np.column_stack([np.ones_like(S), S, N]) / y[:, None]
        coef, *_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)
        self.overhead = float(max(coef[0], 0.0))
        X, T = [], []
        for (h, xs, ts, total, _), p50 in zip(rows, y):
            scale = max(p50 - self.overhead, 0.05 * p50) / total  # shares of the measured time
            X += xs
            T += [t * scale for t in ts]
        X, T = np.array(X), np.log(np.array(T))
        if self.kind == "hgb":
            from sklearn.ensemble import HistGradientBoostingRegressor

            self.reg = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, categorical_features=[0],
                                                     random_state=0).fit(X, T)
        else:
            from sklearn.linear_model import Ridge

            self.regs = {}
            for k in set(X[:, 0]):
                m = X[:, 0] == k
                self.regs[k] = Ridge(alpha=1.0).fit(X[m, 1:], T[m])
            self.regs[-1] = Ridge(alpha=1.0).fit(X[:, 1:], T)  # a kind never seen in training
        self.rules = learn_rules(prep, variant, hashes)
        return self

    def predict(self, prep, h) -> float:
        X = np.array(graph_units(prep, h, self.rules))
        if self.kind == "hgb":
            t = np.exp(self.reg.predict(X))
        else:
            t = np.array([np.exp(self.regs.get(x[0], self.regs[-1]).predict(x[None, 1:])[0]) for x in X])
        return self.overhead + float(t.sum())


def lofo_kernel(prep, variant, per_ops, kind, in_sample=False) -> list[tuple[str, float, float]]:
    fams = graph_families(prep)
    runs = prep.by_variant[variant]
    out = []
    for fam, hs in sorted(fams.items()):
        test = [h for h in hs if h in runs]
        train = list(runs) if in_sample else [h for f, g in fams.items() if f != fam for h in g if h in runs]
        model = KernelModel(kind).fit(prep, variant, train, per_ops)
        out += [(fam, model.predict(prep, h), runs[h].p50_us) for h in test]
    return out


def scores(held: list[tuple[str, float, float]]) -> tuple[float, float, float]:
    err = np.array([abs(p / m - 1) for _, p, m in held])
    return float(np.mean(err <= 0.1)), float(np.mean(err <= 0.2)), float(np.mean(err))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default=str(ROOT / "datasets" / "host-v1.parquet"))
    ap.add_argument("--families", action="store_true", help="also print per family")
    args = ap.parse_args()
    t0 = time.perf_counter()
    graphs, runs = read_rows(read_parquet([args.dataset]))
    prep = prepare(graphs, runs)
    per_ops = per_op_rows(args.dataset)
    print(f"prepared {len(graphs)} graphs in {time.perf_counter() - t0:.1f} s")
    print(f"{'variant':<32}{'model':<16}{'p50 +-10%':>10}{'p50 +-20%':>10}{'MAPE':>8}   (leave one family out)")
    for v in prep.variants:
        results = {"additive": [(h.family, h.p50, h.measured_p50) for h in evaluation.lofo(prep, v)]}
        if any(k[1] == v for k in per_ops):
            for kind in ("hgb", "loglin"):
                results[f"kernel-{kind}"] = lofo_kernel(prep, v, per_ops, kind)
        for name, held in results.items():
            w10, w20, mape = scores(held)
            print(f"{v:<32}{name:<16}{w10:>10.0%}{w20:>10.0%}{mape:>8.0%}")
            if args.families:
                for fam in sorted({f for f, *_ in held}):
                    w10, w20, mape = scores([x for x in held if x[0] == fam])
                    print(f"{'':<4}{fam:<44}{w10:>10.0%}{w20:>10.0%}{mape:>8.0%}")
        sys.stdout.flush()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
