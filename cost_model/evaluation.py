"""Leave-one-family-out evaluation, and the out-of-family residuals that calibrate intervals.

For every variant and every zoo family, the variant's model is fitted on the other
families (fusion rules included) and predicts the held-out family's graphs; kernel-level
families (`training.KERNEL_FAMILIES`: single operators and layers) train every fold, less any
that is one of the held-out family's own nodes, and are never held out. Metrics per variant
(and per family): share of graphs within +-10% / +-20% for p50 and p99 (also "within
tolerance or the point's own measured spread, whichever is larger"), MAPE, coverage of the
90% intervals, and across variants the ranking: how often the predicted fastest variant is
the measured fastest, and the median regret (measured time of the predicted pick / measured
best).

Intervals for a held-out family are calibrated on the residuals of the other families'
out-of-family predictions only (CV+), so the coverage figure is honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cost_model.intervals import Calibration
from cost_model.training import (
    KERNEL_FAMILIES, Prepared, fit_variant, graph_families, predict_hashes, training_set)


@dataclass
class Held:
    """One graph's out-of-family prediction for one variant."""

    model_hash: str
    family: str
    variant: str
    p50: float
    p99: float
    measured_p50: float
    measured_p99: float
    p50_spread: float
    p99_spread: float
    repeats: tuple[float, ...] = ()  # the point's fresh-process p50s, when it was repeated


def lofo(prep: Prepared, variant: str) -> list[Held]:
    fams = graph_families(prep)
    runs = prep.by_variant[variant]
    out = []
    for fam, hashes in sorted(fams.items()):
        if fam in KERNEL_FAMILIES:
            continue
        test = [h for h in hashes if h in runs]
        train = training_set(prep, [h for hs in fams.values() for h in hs if h in runs], test)
        if not test or len(train) < 5:
            continue
        model = fit_variant(prep, variant, train)
        for h, (p50, p99) in zip(test, predict_hashes(prep, model, test)):
            m = runs[h]
            out.append(Held(h, fam, variant, p50, p99, m.p50_us, m.p99_us, m.p50_spread, m.p99_spread,
                            m.repeats))
    return out


def calibration(held: list[Held], which: str, exclude_family: str | None = None) -> Calibration:
    return Calibration.of(np.log(getattr(h, f"measured_{which}") / getattr(h, which))
                          for h in held if h.family != exclude_family)


def _share(errors: np.ndarray, spreads: np.ndarray, tol: float) -> dict[str, float]:
    return {f"within_{int(tol * 100)}": float(np.mean(errors <= tol)),
            f"within_{int(tol * 100)}_or_spread": float(np.mean(errors <= np.maximum(tol, spreads)))}


def metrics(held: list[Held], pool: list[Held]) -> dict[str, Any]:
    """Accuracy and interval coverage of a set of out-of-family predictions; each one's
    interval is calibrated on the pool's residuals of the other families."""
    if not held:
        return {"graphs": 0}
    out: dict[str, Any] = {"graphs": len(held)}
    for which in ("p50", "p99"):
        pred = np.array([getattr(h, which) for h in held])
        meas = np.array([getattr(h, f"measured_{which}") for h in held])
        spread = np.array([getattr(h, f"{which}_spread") for h in held])
        err = np.abs(pred / meas - 1)
        cover = []
        for h, p, m in zip(held, pred, meas):
            lo, hi = calibration_by_family(pool, which, h.family).interval(p)
            cover.append(lo <= m <= hi)
        out[which] = {**_share(err, spread, 0.10), **_share(err, spread, 0.20),
                      "mape": float(np.mean(err)), "median_ape": float(np.median(err)),
                      "interval90_coverage": float(np.mean(cover))}
    out["p50"].update(noise_ceiling(held))
    return out


def noise_ceiling(held: list[Held]) -> dict[str, Any]:
    """How often one process's p50 lies within +-10% (+-20%) of its point's median over
    fresh processes, on the repeated points: what even a perfect model could score against
    labels measured once, i.e. the measurement's own ceiling on the 'within' shares."""
    errs = np.array([abs(x / float(np.median(h.repeats)) - 1) for h in held if h.repeats for x in h.repeats])
    if not len(errs):
        return {"repeated": 0}
    return {"repeated": sum(1 for h in held if h.repeats), "ceiling_10": float(np.mean(errs <= 0.10)),
            "ceiling_20": float(np.mean(errs <= 0.20))}


_CAL_CACHE: dict[tuple[int, str, str], Calibration] = {}


def calibration_by_family(held: list[Held], which: str, family: str) -> Calibration:
    key = (id(held), which, family)
    if key not in _CAL_CACHE:
        _CAL_CACHE[key] = calibration(held, which, exclude_family=family)
    return _CAL_CACHE[key]


def ranking(held_by_variant: dict[str, list[Held]]) -> dict[str, Any]:
    """Across variants, per graph measured by all: predicted best vs measured best (p50)."""
    table: dict[str, dict[str, Held]] = {}
    for v, held in held_by_variant.items():
        for h in held:
            table.setdefault(h.model_hash, {})[v] = h
    variants = set(held_by_variant)
    hits, regrets = [], []
    for row in table.values():
        if set(row) != variants or len(variants) < 2:
            continue
        pick = min(row, key=lambda v: row[v].p50)
        best = min(row, key=lambda v: row[v].measured_p50)
        hits.append(pick == best)
        regrets.append(row[pick].measured_p50 / row[best].measured_p50 - 1)
    if not hits:
        return {"graphs": 0}
    return {"graphs": len(hits), "variants": sorted(variants), "best_hit": float(np.mean(hits)),
            "median_regret": float(np.median(regrets)), "p90_regret": float(np.quantile(regrets, 0.9))}


def evaluate(prep: Prepared, variants: list[str] | None = None) -> dict[str, Any]:
    """The whole report: per variant overall and per family, and the ranking."""
    held_by_variant = {v: lofo(prep, v) for v in (variants or prep.variants)}
    report: dict[str, Any] = {"method": "leave-one-family-out; intervals CV+ conformal over families",
                              "variants": {}, "ranking": ranking(held_by_variant)}
    for v, held in held_by_variant.items():
        fams = sorted({h.family for h in held})
        report["variants"][v] = {"all": metrics(held, held),
                                 "families": {f: metrics([h for h in held if h.family == f], held) for f in fams}}
    report["held"] = {v: [h.__dict__ for h in held] for v, held in held_by_variant.items()}
    return report
