"""Predictions for one graph from a fitted cost model, without running it.

Per variant: p50 and p99 with 90% intervals, the probability of meeting a deadline (p99
under it, from the calibration residuals), a memory estimate, the top units by predicted
time, and confidence flags: ops no counter covers (unknown-op), unit kinds the variant never
saw, graph sums outside the training range, an installed compiler version that differs
from the trained one, and op types the variant is known to fail or mismatch on
(cost_model/known_failures.py). Then one recommendation a musician can read, which never
picks a variant known to fail on this graph while another is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from cost_model.control_flow import flatten_ifs
from cost_model.features import graph_features
from cost_model.graph import node_table
from cost_model.modelfile import CostModel
from cost_model.regression import aggregate, unit_time, units_of
from cost_model.training import memory_aggregate


@dataclass
class VariantPrediction:
    variant: str
    p50_us: float
    p99_us: float
    p50_interval: tuple[float, float]
    p99_interval: tuple[float, float]
    memory_bytes: float | None
    top_units: list[dict[str, Any]]
    flags: list[str] = field(default_factory=list)
    deadline_probability: float | None = None  # P(p99 <= deadline)
    known_bad: list[str] = field(default_factory=list)  # op types of this graph it is known to fail on

    @property
    def low_confidence(self) -> bool:
        return bool(self.flags)

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "p50_us": self.p50_us, "p99_us": self.p99_us,
                "p50_interval90_us": list(self.p50_interval), "p99_interval90_us": list(self.p99_interval),
                "memory_bytes": self.memory_bytes, "deadline_probability": self.deadline_probability,
                "top_units": self.top_units, "flags": self.flags, "low_confidence": self.low_confidence,
                "known_to_fail_on": self.known_bad,
                "label": "predicted"}


def predict_graph(model: onnx.ModelProto, cost: CostModel, deadline_us: float | None,
                  variants: list[str] | None = None, numbers: dict | None = None,
                  top: int = 3) -> list[VariantPrediction]:
    """`numbers`: values of the graph's number inputs (sample rate...), which decide If branches."""
    flat = flatten_ifs(model, numbers or {})
    model = flat.model
    features = graph_features(model)
    table = node_table(model)
    unknown = features.unknown_ops
    version_flags = cost.version_flags()
    op_types = {n.op_type for n in model.graph.node}
    out = []
    for name in variants or sorted(cost.variants):
        fitted = cost.variants[name]
        vm = fitted.model
        units = units_of(features, table, vm.rules)
        agg = aggregate(units)
        p50, p99 = vm.predict(agg)
        flags = []
        if unknown:
            flags.append(f"ops with no cost counter: {', '.join(unknown)}")
        if flat.flag():
            flags.append(flat.flag())
        new_kinds = sorted({u.kind for u in units} - set(vm.kinds))
        if new_kinds:
            flags.append(f"kernel kinds never measured for this compiler: {', '.join(new_kinds)}")
        outside = [k for k, (lo, hi) in vm.ranges.items() if not lo <= agg.get(k, 0.0) <= hi]
        if outside:
            flags.append(f"outside the training range in {', '.join(outside)}")
        if name in version_flags:
            flags.append(version_flags[name])
        known_bad = cost.known_failures.bad_ops(name, op_types)
        flags += known_bad.values()
        node_op = {n.name: n.op_type for n in features.nodes}
        by_ops: dict[str, dict[str, Any]] = {}
        for u in units:  # units running the same op chain add up (an MLP's 30 Gemm+Relu)
            entry = by_ops.setdefault("+".join(node_op[n] for n in u.nodes), {"count": 0, "p50_us": 0.0})
            entry["count"] += 1
            entry["p50_us"] += unit_time(vm.p50, u)
        top_units = [{"ops": ops, "count": e["count"], "p50_us": e["p50_us"],
                      "share": e["p50_us"] / p50 if p50 else 0.0}
                     for ops, e in sorted(by_ops.items(), key=lambda kv: -kv[1]["p50_us"])[:top]]
        memory = vm.memory.predict(memory_aggregate(features)) if vm.memory.terms else None
        prob = fitted.p99_calibration.probability_within(p99, deadline_us) if deadline_us else None
        out.append(VariantPrediction(name, p50, p99, fitted.p50_calibration.interval(p50),
                                     fitted.p99_calibration.interval(p99), memory, top_units, flags, prob,
                                     sorted(known_bad)))
    return out


def _caveat(p: VariantPrediction) -> str:
    """For a pick flagged for more than known failures (those get their own clause)."""
    unlike = len(p.flags) > len(p.known_bad)
    return " (a rough guess: this graph is unlike what the model was trained on)" if unlike else ""


def recommend(preds: list[VariantPrediction], deadline_us: float | None) -> str:
    """One sentence: which compiler to use and why (never one known to fail on this graph
    while another is left; the clause after ';' says which were passed over)."""
    if not preds:
        return "No compiler variant has a fitted model for this device."
    usable = [p for p in preds if not p.known_bad]
    if usable and len(usable) < len(preds):
        avoided = "; not " + " or ".join(f"{p.variant} (known to fail on {', '.join(p.known_bad)})"
                                         for p in preds if p.known_bad)
    elif not usable:
        usable, avoided = preds, "; careful: every compiler here is known to fail on some op of this graph"
    else:
        avoided = ""
    fastest = min(usable, key=lambda p: p.p50_us)
    caveat = _caveat(fastest)
    if deadline_us is None:
        return (f"Use {fastest.variant}: it is predicted fastest, about {fastest.p50_us:.0f} µs per block"
                f"{caveat}{avoided}.")
    safe = [p for p in usable if (p.deadline_probability or 0.0) >= 0.9]
    if safe:
        pick = min(safe, key=lambda p: p.p99_us)
        caveat = _caveat(pick)
        return (f"Use {pick.variant}: its slowest blocks ({pick.p99_us:.0f} µs) should fit the "
                f"{deadline_us:.0f} µs budget with {pick.deadline_probability:.0%} confidence{caveat}{avoided}.")
    best = max(usable, key=lambda p: (p.deadline_probability or 0.0, -p.p99_us))
    caveat = _caveat(best)
    return (f"Risky: even {best.variant}, the best bet, has only a {best.deadline_probability:.0%} chance of "
            f"keeping every block under {deadline_us:.0f} µs; expect clicks, use a bigger block size or a "
            f"smaller model{caveat}{avoided}.")
