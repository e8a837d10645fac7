"""Outputs vs the reference: max abs error, RMSE, SNR; a NaN or a wrong shape never passes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-3


def compare(reference: np.ndarray, actual: np.ndarray, tol: Tolerance) -> dict:
    """One output's error figures and verdict (passed: max|a-r| <= atol + rtol*max|r|)."""
    ref = np.asarray(reference)
    out = np.asarray(actual)
    if ref.shape != out.shape:
        return {"passed": False, "max_abs_err": None, "rmse": None, "snr_db": None,
                "reason": f"shape {list(out.shape)} != reference {list(ref.shape)}"}
    ref64 = ref.astype(np.float64)
    out64 = out.astype(np.float64)
    finite_ref = np.isfinite(ref64)
    # Non-finite values must match the reference exactly (same NaN/inf positions and signs).
    nonfinite_ok = (np.array_equal(np.isnan(ref64), np.isnan(out64))
                    and np.array_equal(ref64[np.isinf(ref64)], out64[np.isinf(ref64)])
                    and bool(np.isfinite(out64[finite_ref]).all()))
    both = finite_ref & np.isfinite(out64)  # error figures over the positions both have numbers
    diff = np.abs(out64[both] - ref64[both])
    max_abs = float(diff.max()) if diff.size else 0.0
    rmse = float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0
    signal = float(np.sum(ref64[both] ** 2))
    noise = float(np.sum(diff**2))
    snr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    scale = float(np.abs(ref64[finite_ref]).max()) if finite_ref.any() else 0.0
    passed = bool(nonfinite_ok and max_abs <= tol.atol + tol.rtol * scale)
    reason = "" if passed else ("NaN/inf where the reference has none" if not nonfinite_ok
                                else f"max abs error {max_abs:.3g} over tolerance")
    return {"passed": passed, "max_abs_err": max_abs, "rmse": rmse, "snr_db": snr, "reason": reason}


def compare_all(references: list[list[np.ndarray]], actuals: list[list[np.ndarray]],
                names: list[str], tol: Tolerance) -> list[dict]:
    """Per output name, the worst figures over all examples."""
    rows = []
    for j, name in enumerate(names):
        per_example = [compare(r[j], a[j], tol) for r, a in zip(references, actuals)]
        failed = [c for c in per_example if not c["passed"]]
        worst = failed[0] if failed else max(per_example, key=lambda c: c["max_abs_err"] or 0.0)
        rows.append({"output": name, **worst,
                     "snr_db": min((c["snr_db"] for c in per_example if c["snr_db"] is not None), default=None)})
    return rows


def compare_sequence(references: list[list[np.ndarray]], actuals: list[list[np.ndarray]],
                     names: list[str], tol: Tolerance) -> list[dict]:
    """compare_all over consecutive calls from a fresh load (a model with state): a failing
    output's reason names the first call that differs."""
    rows = compare_all(references, actuals, names, tol)
    for j, row in enumerate(rows):
        if row["passed"]:
            continue
        k = next(k for k, (r, a) in enumerate(zip(references, actuals)) if not compare(r[j], a[j], tol)["passed"])
        row["reason"] += f" at call {k} of {len(actuals)} from a fresh load"
        if k > 0:
            row["reason"] += f" (calls before it matched: state not carried as in the reference)"
    return rows


def task_accuracy(outputs: list[list[np.ndarray]], labels: np.ndarray) -> float:
    """Share of predictions equal to their label. Each example's first output gives one
    prediction per row (argmax over the last axis: a batch of 4 gives 4), in example order;
    they are matched to the labels in order (labels of shape (examples, batch) or flat)."""
    predictions = np.concatenate([np.argmax(np.asarray(o[0]).reshape(-1, np.asarray(o[0]).shape[-1]), axis=-1)
                                  for o in outputs])
    flat = np.asarray(labels).reshape(-1)
    if predictions.shape != flat.shape:
        raise ValueError(f"the outputs give {len(predictions)} predictions for {len(flat)} labels")
    return float(np.mean(predictions == flat))
