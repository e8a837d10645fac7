"""A cost model from measurements: fit per variant, calibrate, adapt to a new device, and
choose the adaptation sweep.

`fit_cost_model` fits every variant on all graphs and calibrates its intervals on the
out-of-family residuals of the leave-one-family-out fits (evaluation.lofo). `adapt` starts
from a fitted model (the prior, e.g. the shipped one) and corrects it from a few graphs
measured on the new device: first one scale factor per variant (a new CPU is mostly
uniformly faster or slower), then the coefficients, pulled toward the scaled prior's.
"""

from __future__ import annotations

import numpy as np

from cost_model import evaluation
from cost_model.features import FEATURE_VERSION, counter_version
from cost_model.intervals import Calibration
from cost_model.modelfile import CostModel, Fitted
from cost_model.records import Measured, fingerprint
from cost_model.regression import Additive, VariantModel
from cost_model.training import (
    KERNEL_FAMILIES, Prepared, aggregates, fit_variant, memory_aggregate, training_set)


def _single(values: list[str]) -> str:
    found = sorted({v for v in values if v})
    return found[0] if len(found) == 1 else " / ".join(found) or "unknown"


def fit_cost_model(prep: Prepared, measured: list[Measured], sources: list[str]) -> CostModel:
    variants = {}
    for v in prep.variants:
        runs = prep.by_variant[v]
        held = evaluation.lofo(prep, v)
        model = fit_variant(prep, v, list(runs))
        first = next(iter(runs.values()))
        variants[v] = Fitted(model, first.compiler, _single([r.compiler_version for r in runs.values()]),
                             len(runs), evaluation.calibration(held, "p50"), evaluation.calibration(held, "p99"))
    return CostModel(device=_single([m.device for m in measured]), cpu=_single([m.cpu for m in measured]),
                     fingerprint=fingerprint(measured), sources=sources, variants=variants,
                     feature_version=FEATURE_VERSION, counter_version=counter_version())


def _scaled(a: Additive, s: float) -> Additive:
    return Additive(list(a.terms), [c * s for c in a.coef])


def adapt_variant(prep: Prepared, variant: str, hashes: list[str], prior: VariantModel) -> VariantModel:
    """The prior corrected from a few graphs of the new device."""
    runs = prep.by_variant[variant]
    hashes = [h for h in hashes if h in runs]
    aggs = aggregates(prep, hashes, prior.rules)
    s50 = float(np.median([runs[h].p50_us / max(prior.p50.predict(a), 1e-3) for h, a in zip(hashes, aggs)]))
    s99 = float(np.median([runs[h].p99_us / max(prior.p99.predict(a), 1e-3) for h, a in zip(hashes, aggs)]))
    rss = [runs[h].rss_peak_bytes for h in hashes if runs[h].rss_peak_bytes]
    mem_prior = prior.memory
    if rss and prior.memory.terms:
        ratio = float(np.median([r / max(prior.memory.predict(memory_aggregate(prep.features[h])), 1.0)
                                 for h, r in zip(hashes, rss)]))
        mem_prior = _scaled(prior.memory, ratio)
    scaled = VariantModel(variant, _scaled(prior.p50, s50), _scaled(prior.p99, s99), mem_prior,
                          prior.kinds, prior.ranges, prior.rules)
    return fit_variant(prep, variant, hashes, prior=scaled)


def _folds(prep: Prepared, hashes: list[str]) -> list[list[str]]:
    """Held-out folds for the adapted model's residuals: one per block family, else five
    interleaved slices of the blocks; kernel-level graphs train every fold (as in
    evaluation.lofo) unless they are all there is."""
    blocks = [h for h in hashes if prep.graphs[h].family not in KERNEL_FAMILIES] or hashes
    fams: dict[str, list[str]] = {}
    for h in blocks:
        fams.setdefault(prep.graphs[h].family, []).append(h)
    if len(fams) >= 3:
        return list(fams.values())
    return [blocks[i::5] for i in range(5) if blocks[i::5]]


def adapt(prep: Prepared, measured: list[Measured], prior: CostModel, prior_name: str,
          sources: list[str]) -> CostModel:
    """A model of the new device: each variant measured there adapts the prior's same variant."""
    variants = {}
    for v in prep.variants:
        if v not in prior.variants:
            continue
        hashes = list(prep.by_variant[v])
        base = prior.variants[v].model
        residuals: dict[str, list[float]] = {"p50": [], "p99": []}
        for fold in _folds(prep, hashes):
            rest = training_set(prep, hashes, fold)
            if not rest:
                continue
            m = adapt_variant(prep, v, rest, base)
            for h, agg in zip(fold, aggregates(prep, fold, m.rules)):
                p50, p99 = m.predict(agg)
                residuals["p50"].append(np.log(prep.by_variant[v][h].p50_us / p50))
                residuals["p99"].append(np.log(prep.by_variant[v][h].p99_us / p99))
        first = next(iter(prep.by_variant[v].values()))
        variants[v] = Fitted(adapt_variant(prep, v, hashes, base), first.compiler, first.compiler_version,
                             len(hashes), Calibration.of(residuals["p50"]), Calibration.of(residuals["p99"]))
    return CostModel(device=_single([m.device for m in measured]), cpu=_single([m.cpu for m in measured]),
                     fingerprint=fingerprint(measured), sources=sources, variants=variants,
                     feature_version=FEATURE_VERSION, counter_version=counter_version(), prior=prior_name,
                     notes=[f"adapted from {prior_name} ({prior.device}, {prior.cpu}) with {len(measured)} runs"])


def cover_points(prep: Prepared, count: int) -> list[str]:
    """Graphs that cover the feature space: greedy farthest-point (k-center) selection on
    standardized log sums (units, MACs, bytes, per-kind counts) of the unfused graphs, in
    selection order, so any prefix covers as well as it can."""
    hashes = sorted(prep.graphs)
    aggs = aggregates(prep, hashes, None)
    keys = sorted({k for a in aggs for k in a if k != "overhead" and not k.startswith("bytes:")})
    X = np.log1p(np.array([[a.get(k, 0.0) for k in keys] for a in aggs]))
    X = (X - X.mean(axis=0)) / np.maximum(X.std(axis=0), 1e-9)
    start = int(np.argmin(np.linalg.norm(X, axis=1)))  # the most typical graph first
    chosen = [start]
    dist = np.linalg.norm(X - X[start], axis=1)
    while len(chosen) < min(count, len(hashes)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(X - X[nxt], axis=1))
    return [hashes[i] for i in chosen]
