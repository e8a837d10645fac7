"""Regression: whole-graph time as the sum of its kernels' times plus a per-inference overhead.

For one (device, compiler variant) the graph is cut into the units the compiler runs
(`grouping.group` with the variant's learned fusion rules); each unit has a kind (the op
type of its heaviest node) and is costed as

    t(unit) = c[kind] + m[kind] * MACs + b[kind] * bytes moved

on top of generic per-unit, per-MAC and per-byte terms that every kind shares (what an op
kind never seen in training falls back on), a cost per expected kernel dispatch (the
kernels its nodes' op types dispatch, `grouping.learn`: on host-v2 this took eager PyTorch's
p50 within +-10% from 20% to 32%), and one per-inference overhead term. Summed
over a graph this is linear in per-kind sums, so the coefficients are fitted on measured
whole-graph times (non-negative least squares on relative error): the per-op profilers'
own times are not needed, and they are 1.1-3.4x inflated on small blocks (APIS.md).
Fitted separately for p50 and for p99.

The heavy kinds' MACs are also split by the unit's reduction length K (the dot-product
length each output sums over: Gemm/MatMul's inner dimension, C_in/group x kernel for a
convolution, input + hidden for a recurrent cell) into bins with a coefficient each:
untuned TVM runs its reductions as scalar dependency chains, so its time per MAC grows
with K (0.1 ns at K 32 to 1.2 ns at K 128 on host-v2's matmuls, measured per kernel), and
other compilers' kernels change regime with K too. On host-v2, leave one family out, p50
within +-10% with these terms: TVM 9% -> 21%, SOFIE 33% -> 38%, ExecuTorch portable 40% ->
46%, the other seven within -2..+2 points (finer bins, log-4 hat bins and bins of weight size
measured no better).

Measured against alternatives on host-v1, leave one family out (ORT p50 within +-10%):
this additive model 0.34 (0.35 with the transcendental and recurrent-step kinds below, MAPE
36% -> 24%); a whole-graph gradient-boosted model (sklearn HistGradientBoosting on log
aggregated features) 0.21; the additive model with a boosted log-residual stage 0.21-0.24
(worse on every variant). The additive model is kept. Its coefficients are plain
numbers: the model file is JSON (cost_model/modelfile.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cost_model.features import GraphFeatures
from cost_model.grouping import FusionRules, group, recurrent_steps

GENERIC = ("overhead", "units", "macs", "bytes")
PRIOR_RIDGE = 0.1  # pull toward a prior's coefficients when adapting (per graph, relative units)

# Unit kinds: op types grouped by the kernel family that runs them. Coarse kinds carry over
# to graphs of families never seen in training far better than one kind per op type.
KINDS = {
    "matmul": "Gemm MatMul MatMulInteger QLinearMatMul Einsum",
    "conv": "Conv ConvTranspose ConvInteger QLinearConv",
    "recurrent": "GRU LSTM RNN",
    "normalize": "BatchNormalization LayerNormalization InstanceNormalization GroupNormalization "
                 "Softmax LogSoftmax ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL2 "
                 "ReduceLogSumExp CumSum TopK ArgMax ArgMin",
    "pool": "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool",
}
KIND_OF = {op: kind for kind, ops in KINDS.items() for op in ops.split()}
# elementwise ops that cost a function evaluation per element, not one instruction
TRANSCENDENTAL = frozenset("Cos Elu Erf Exp Gelu HardSwish Log Mish Pow Selu Sigmoid Sin Softplus Sqrt Tan Tanh "
                           "Celu Reciprocal Div".split())


def kind_of(op_type: str) -> str:
    """A unit's kind from its heaviest op: the kernel families above, else elementwise
    (counted per element) or data movement (no arithmetic) or other."""
    from cost_model.features import DATA_MOVEMENT, ELEMENTWISE

    if op_type in KIND_OF:
        return KIND_OF[op_type]
    if op_type in TRANSCENDENTAL:
        return "transcendental"
    if op_type in ELEMENTWISE:
        return "elementwise"
    if op_type in DATA_MOVEMENT:
        return "data"
    return "other"


def heaviest(nodes):
    """The node that names a unit's kind: most MACs, the earliest on a tie."""
    return max(nodes, key=lambda f: (f.macs or 0.0, -f.index))


REDUCTION_BINS = (16, 64, 256, 1024)  # K edges: bin b holds K in (edge[b-1], edge[b]]
REDUCING = ("matmul", "conv", "recurrent")


@dataclass
class Unit:
    nodes: list[str]
    kind: str
    macs: float
    bytes: float
    unknown: bool  # a node of this unit has no MAC counter
    steps: float = 0.0  # recurrent time steps (per direction and layer): each costs a loop iteration
    reduction: float = 0.0  # reduction length K of the heaviest node (0: not a reducing kind)
    kernels: float = 0.0  # kernels the variant is expected to dispatch for these nodes (grouping.learn)


def units_of(features: GraphFeatures, table: list[dict[str, Any]], rules: FusionRules | None) -> list[Unit]:
    """The units the variant runs, with summed features (rules None: every node alone)."""
    by_name = {n.name: n for n in features.nodes}
    rows = {n["name"]: n for n in table}
    groups = group(table, rules) if rules is not None else [[n["name"]] for n in table]
    units = []
    for names in groups:
        feats = [by_name[n] for n in names if n in by_name]
        if not feats:
            continue
        top = heaviest(feats)
        units.append(Unit(names, kind_of(top.op_type), float(sum(f.macs or 0.0 for f in feats)),
                          float(sum(f.bytes_in + f.bytes_out + f.weight_bytes for f in feats)),
                          any(f.macs is None for f in feats), float(sum(_steps(f) for f in feats)),
                          _reduction(top),
                          float(sum(rules.node_kernels(rows[f.name]) for f in feats)) if rules is not None else 0.0))
    return units


def _reduction(f) -> float:
    """How many products each output of a reducing node sums (0 when unknown or not one)."""
    s = f.input_shapes
    try:
        if f.op_type == "Gemm":
            return float(s[0][0] if f.attrs.get("transA") else s[0][-1])
        if f.op_type == "MatMul":
            return float(s[0][-1])
        if f.op_type == "Conv":  # W: [C_out, C_in/group, k...]
            return float(math.prod(s[1][1:]))
        if f.op_type == "ConvTranspose":  # W: [C_in, C_out/group, k...]; the chain a TVM-style
            return float(s[1][0] // (f.attrs.get("group") or 1) * math.prod(s[1][2:]))  # dilate-then-convolve runs
        if f.op_type in ("GRU", "LSTM", "RNN"):
            return float(s[0][-1] + f.attrs.get("hidden_size", 0))
    except (IndexError, TypeError):  # a shape the graph does not carry
        return 0.0
    return 0.0


def _steps(f) -> float:
    return recurrent_steps(f.op_type, f.input_shapes, f.attrs)


def aggregate(units: list[Unit]) -> dict[str, float]:
    """Named whole-graph sums: the generic terms, expected kernel dispatches, and per kind
    (n:K, macs:K, bytes:K, steps:K, and macs:K:kB for the reducing kinds, b the
    reduction-length bin)."""
    agg = {"overhead": 1.0, "units": float(len(units)), "macs": 0.0, "bytes": 0.0}
    for u in units:
        agg["macs"] += u.macs
        agg["bytes"] += u.bytes
        if u.kernels:
            agg["kernels"] = agg.get("kernels", 0.0) + u.kernels
        for key, value in ((f"n:{u.kind}", 1.0), (f"macs:{u.kind}", u.macs), (f"bytes:{u.kind}", u.bytes),
                           (f"steps:{u.kind}", u.steps)):
            if not value and key.startswith("steps:"):
                continue
            agg[key] = agg.get(key, 0.0) + value
        if u.kind in REDUCING and u.reduction:
            key = f"macs:{u.kind}:k{sum(u.reduction > edge for edge in REDUCTION_BINS)}"
            agg[key] = agg.get(key, 0.0) + u.macs
    return agg


@dataclass
class Additive:
    """t = sum_k coef[k] * agg[k]; terms are the aggregate names seen in training."""

    terms: list[str]
    coef: list[float]

    def predict(self, agg: dict[str, float]) -> float:
        return float(sum(c * agg.get(t, 0.0) for t, c in zip(self.terms, self.coef)))

    def to_dict(self) -> dict[str, Any]:
        return {"terms": self.terms, "coef": self.coef}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Additive:
        return cls(list(d["terms"]), [float(c) for c in d["coef"]])


def fit_additive(aggs: list[dict[str, float]], y: np.ndarray, ridge: float = 1e-3,
                 prior: Additive | None = None) -> Additive:
    """Non-negative least squares on relative error. With a prior, the fit is pulled toward
    the prior's coefficients (what adapting to a new device from a few graphs does)."""
    from scipy.optimize import nnls

    seen = {k for a in aggs for k in a if a[k]}
    if prior is not None:  # a term the few new graphs lack keeps the prior's coefficient
        seen |= {t for t, c in zip(prior.terms, prior.coef) if c}
        ridge = PRIOR_RIDGE
    terms = sorted(seen, key=lambda k: (k not in GENERIC, k))
    X = np.array([[a.get(t, 0.0) for t in terms] for a in aggs], dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    scale = np.abs(X / y[:, None]).max(axis=0)
    scale[scale == 0] = 1.0
    A = X / y[:, None] / scale  # each row: relative error of that graph
    b = np.ones(len(y))
    k = len(terms)
    reg = math.sqrt(ridge * len(y))
    if prior is not None:
        # rows pulling each coefficient toward the prior's (0 where the prior lacks the term)
        p = dict(zip(prior.terms, prior.coef))
        target = np.array([p.get(t, 0.0) for t in terms]) * scale
        A = np.vstack([A, reg * np.eye(k)])
        b = np.concatenate([b, reg * target])
    else:
        A = np.vstack([A, reg * np.eye(k)])
        b = np.concatenate([b, np.zeros(k)])
    coef, _ = nnls(A, b, maxiter=50 * k)
    return Additive(terms, list(coef / scale))


@dataclass
class VariantModel:
    """One (device, variant): additive p50 and p99, memory, training ranges, fusion rules."""

    variant: str
    p50: Additive
    p99: Additive
    memory: Additive  # peak RSS bytes = runtime base + per weight byte + per activation byte
    kinds: list[str]  # unit kinds seen in training
    ranges: dict[str, list[float]]  # generic aggregate -> [min, max] over training graphs
    rules: FusionRules | None

    def predict(self, agg: dict[str, float]) -> tuple[float, float]:
        p50 = max(self.p50.predict(agg), 1e-3)
        p99 = max(self.p99.predict(agg), 1e-3)
        return p50, max(p99, p50)


def unit_time(model: Additive, unit: Unit) -> float:
    """One unit's share of the additive prediction (the overhead term is not in any unit)."""
    return model.predict(aggregate([unit])) - model.predict({"overhead": 1.0})
