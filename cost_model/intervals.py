"""Prediction intervals and deadline probabilities from out-of-family residuals (CV+ style
conformal prediction, Barber et al. 2021, with families as the folds).

While fitting, every family is predicted by a model fitted without it; the log-ratios
r = log(measured / predicted) of those predictions are the calibration set. A 90% interval
is [pred * exp(q05), pred * exp(q95)] with the finite-sample conformal quantiles of r, and
P(time <= deadline) is the share of r with pred * exp(r) <= deadline. The residuals are
kept in the model file (rounded), so both come out of it without refitting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Calibration:
    residuals: list[float]  # sorted log(measured / out-of-family prediction)

    @classmethod
    def of(cls, residuals) -> Calibration:
        return cls(sorted(round(float(r), 4) for r in residuals if np.isfinite(r)))

    def quantile(self, q: float) -> float:
        """Conformal quantile: the ceil((n+1)q)-th smallest residual (clamped to the ends)."""
        if not self.residuals:
            return 0.0
        n = len(self.residuals)
        k = math.ceil((n + 1) * q) if q >= 0.5 else math.floor((n + 1) * q)
        return self.residuals[min(max(k, 1), n) - 1]

    def interval(self, pred: float, coverage: float = 0.9) -> tuple[float, float]:
        tail = (1 - coverage) / 2
        return pred * math.exp(self.quantile(tail)), pred * math.exp(self.quantile(1 - tail))

    def probability_within(self, pred: float, limit: float) -> float:
        """P(measured <= limit) given the prediction, from the calibration residuals."""
        if not self.residuals or pred <= 0:
            return float(pred <= limit)
        cut = math.log(limit / pred) if limit > 0 else -math.inf
        return float(np.searchsorted(self.residuals, cut, side="right") / len(self.residuals))
