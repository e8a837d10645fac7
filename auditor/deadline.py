"""The real-time deadline audit: would this run have clicked on a Bela audio block?"""

from __future__ import annotations

import numpy as np

BELA_BLOCK_SIZE = 16
BELA_SAMPLE_RATE = 44100


def budget_us(block_size: int, sample_rate: float, deadline_us: float | None = None) -> float:
    """The time one block gives: block_size / sample_rate, unless a deadline is given."""
    if deadline_us is not None:
        return float(deadline_us)
    return block_size / sample_rate * 1e6


def audit(samples_ns: np.ndarray, budget: float) -> dict:
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    p99 = float(np.percentile(us, 99))
    worst = float(us.max())
    over = float(np.mean(us > budget))
    if worst <= budget:
        verdict = "meets"  # every measured run fit
    elif p99 <= budget:
        verdict = "tail-risk"  # typical runs fit, the worst ones would click
    else:
        verdict = "misses"
    return {
        "budget_us": budget,
        "over_budget_share": over,
        "headroom_p99_us": budget - p99,
        "headroom_max_us": budget - worst,
        "verdict": verdict,
    }
