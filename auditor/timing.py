"""The timing loop and latency statistics. Nothing is dropped: the tail is the product."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class TimingSettings:
    warmup: int = 50
    runs: int = 1000
    max_seconds: float = 10.0  # stop early (keeping >= min_runs) on slow models
    min_runs: int = 50
    # > 0: stop once the median is pinned down: after min_runs, at every CHECK_EVERY runs, the
    # distribution-free 95% interval of the median (order statistics n/2 -+ 0.98 sqrt(n)) is
    # narrower than converge x the median (0.02: the p50 known within about +-1%). Tails
    # (p99, max) then rest on fewer runs; the run's n says how many.
    converge: float = 0.0
    # time in blocks of about BLOCK_S with a probe reading between blocks (ground.probe), and
    # keep which blocks were uncontended: on a shared VM a neighbour moves a p50 by up to 2x;
    # the loop then runs until `runs` uncontended samples (or the stretched limits below)
    gate: bool = False


CHECK_EVERY = 25
BLOCK_S = 0.01  # a gated Python loop's block: contention episodes here last 0.1-1 s
MIN_BLOCKS = 8  # a gated loop cuts even a short run into at least this many blocks
GATE_STRETCH = 4  # a gated loop times up to this many times max_seconds (and runs) for uncontended samples
# ...and waits, timing nothing, at most this long in all: episodes here last 0.1-1 s and 99% of a
# quiet build's runs waited under 3 s; a neighbour still there after this is sustained load,
# which waiting does not outlast (the rest is timed, its blocks marked contended)
WAIT_S = 4.0


def median_converged(samples: np.ndarray, rel: float) -> bool:
    """The 95% confidence interval of the median of samples is narrower than rel x median."""
    n = len(samples)
    if n < 10:
        return False
    half = 0.98 * np.sqrt(n)
    lo, hi = int(np.floor(n / 2 - half)), int(np.ceil(n / 2 + half))
    lo, hi = max(lo, 0), min(hi, n - 1)
    ordered = np.partition(samples, (lo, n // 2, hi))
    median = ordered[n // 2]
    return median > 0 and (ordered[hi] - ordered[lo]) <= rel * median


@dataclass
class Timings:
    first_ns: int  # the very first inference: cold start, kept apart
    samples_ns: np.ndarray  # every timed run, in order
    stopped_early: bool
    # a gated loop's blocks: the probe, its floor, each block's readings, which samples were
    # uncontended (quiet_ranges: [start, end) indexes into samples_ns)
    gate: dict | None = None

    def quiet_samples(self) -> np.ndarray | None:
        if self.gate is None:
            return None
        return np.concatenate([self.samples_ns[a:b] for a, b in self.gate["quiet_ranges"]] or
                              [np.empty(0, dtype=np.int64)])


def time_calls(fn: Callable[[], object], settings: TimingSettings,
               timed_runs: Callable[[int], np.ndarray] | None = None) -> Timings:
    """First call, warm-up, then timed calls; each call timed alone with a monotonic clock.

    With `timed_runs` (a runtime's own loop: n calls, each timed alone, in native code) the
    timed calls go through it in batches of about BATCH_S, so no Python call sits inside a
    sample; the first call is still fn() timed from here (a loop may warm up untimed).
    """
    clock = time.perf_counter_ns
    t0 = clock()
    fn()
    first = clock() - t0
    if settings.gate:
        if timed_runs is not None:
            per_call = max(1, int(np.median(timed_runs(settings.warmup)))) if settings.warmup else first
            return _time_gated(timed_runs, per_call, BATCH_S, settings, first)
        block = _python_block(fn)
        per_call = max(1, int(np.median(block(settings.warmup)))) if settings.warmup else first
        return _time_gated(block, per_call, BLOCK_S, settings, first)
    if timed_runs is not None:
        return _time_batches(timed_runs, settings, first)
    for _ in range(settings.warmup):
        fn()
    samples = np.empty(settings.runs, dtype=np.int64)
    deadline = clock() + int(settings.max_seconds * 1e9)
    count = 0
    while count < settings.runs:
        t0 = clock()
        fn()
        t1 = clock()
        samples[count] = t1 - t0
        count += 1
        if t1 > deadline and count >= settings.min_runs:
            break
        if settings.converge and count >= settings.min_runs and count % CHECK_EVERY == 0 and \
                median_converged(samples[:count], settings.converge):
            break
    return Timings(first, samples[:count], count < settings.runs)


BATCH_S = 0.02  # a native batch's length: the max_seconds stop overshoots by at most this


def _time_batches(timed_runs: Callable[[int], np.ndarray], settings: TimingSettings, first: int) -> Timings:
    """Batches sized from the last batch's median to last about BATCH_S each."""
    clock = time.perf_counter_ns
    per_call = None  # unknown until the loop has timed a call (fn()'s first call is cold)
    if settings.warmup:
        per_call = max(1, int(np.median(timed_runs(settings.warmup))))
    batches: list[np.ndarray] = []
    count = 0
    deadline = clock() + int(settings.max_seconds * 1e9)
    while count < settings.runs:
        size = 1 if per_call is None else int(min(settings.runs - count, max(1, BATCH_S * 1e9 // per_call)))
        batch = np.asarray(timed_runs(size), dtype=np.int64)
        batches.append(batch)
        count += len(batch)
        per_call = max(1, int(np.median(batch)))
        if clock() > deadline and count >= settings.min_runs:
            break
        if settings.converge and count >= settings.min_runs and \
                median_converged(np.concatenate(batches), settings.converge):
            break
    samples = np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)
    return Timings(first, samples, count < settings.runs)


def _python_block(fn: Callable[[], object]) -> Callable[[int], np.ndarray]:
    clock = time.perf_counter_ns

    def block(n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        for i in range(n):
            t0 = clock()
            fn()
            out[i] = clock() - t0
        return out
    return block


def _time_gated(block: Callable[[int], np.ndarray], per_call: int, block_s: float,
                settings: TimingSettings, first: int) -> Timings:
    """Blocks of about block_s (at most runs / MIN_BLOCKS calls) between probe readings; a
    block is uncontended when the readings on both sides of it are within the probe's
    tolerance of its floor (judged at the end, against the lowest floor seen). While the
    probe reads contended the loop waits, reading the probe and timing nothing, until it reads
    quiet again: contention episodes here last 0.1-1 s, longer than a fast model's whole run,
    which timed straight through one had no uncontended sample. Stops at `runs` uncontended
    samples, at max_seconds once min_runs of them are in (or the converge test passes on
    them), and in any case at GATE_STRETCH times max_seconds or runs; a run still short of
    min_runs samples then at the time limit is timed on, contended, up to min_runs. Waiting
    stops after WAIT_S in all. An uncontended run times exactly `runs` calls."""
    from ground.probe import DESCRIPTION, PROBE, TOLERANCE

    clock = time.perf_counter_ns
    PROBE.calibrate()
    before = PROBE.read()
    blocks: list[np.ndarray] = []
    readings: list[tuple[int, int]] = []  # each block's probe reading before and after it
    quiet: list[np.ndarray] = []
    start = clock()
    soft, hard = start + int(settings.max_seconds * 1e9), start + int(settings.max_seconds * GATE_STRETCH * 1e9)
    total, cap, waited, n_quiet = 0, settings.runs * GATE_STRETCH, 0, 0
    wait_until = min(hard, start + int(WAIT_S * 1e9))
    while True:
        if not PROBE.quiet(before) and clock() < wait_until:
            t0 = clock()
            while not PROBE.quiet(before) and clock() < wait_until:
                before = PROBE.read()
            waited += clock() - t0
        size = int(min(cap - total, settings.runs - n_quiet,
                       max(1, min(block_s * 1e9 // per_call, settings.runs // MIN_BLOCKS))))
        samples = np.asarray(block(size), dtype=np.int64)
        after = PROBE.read()
        blocks.append(samples)
        readings.append((before, after))
        total += len(samples)
        per_call = max(1, int(np.median(samples)))
        if PROBE.quiet(before) and PROBE.quiet(after):
            quiet.append(samples)
        before = after
        n_quiet = sum(len(q) for q in quiet)
        now = clock()
        if n_quiet >= settings.runs or total >= cap or (now > hard and total >= settings.min_runs):
            break
        if n_quiet >= settings.min_runs and (
                now > soft or (settings.converge and median_converged(np.concatenate(quiet), settings.converge))):
            break
    floor = PROBE.floor_ns
    flags = [b <= floor * (1 + TOLERANCE) and a <= floor * (1 + TOLERANCE) for b, a in readings]
    ranges, at = [], 0
    for flag, samples in zip(flags, blocks):  # merged [start, end) of the uncontended blocks
        if flag and ranges and ranges[-1][1] == at:
            ranges[-1][1] = at + len(samples)
        elif flag:
            ranges.append([at, at + len(samples)])
        at += len(samples)
    n_quiet = sum(b - a for a, b in ranges)
    gate = {"method": "probe-gated blocks", "probe": DESCRIPTION, "probe_floor_us": floor / 1e3,
            "tolerance": TOLERANCE, "block_s": block_s, "blocks": len(blocks), "quiet_blocks": sum(flags),
            "waited_s": round(waited / 1e9, 4), "quiet_ranges": ranges,
            # with each block's call count, the readings can be judged again at another tolerance
            "block_calls": [len(b) for b in blocks],
            "probe_over_floor": [[round(b / floor, 3), round(a / floor, 3)] for b, a in readings]}
    return Timings(first, np.concatenate(blocks), n_quiet < settings.runs, gate)


def latency_stats(samples_ns: np.ndarray) -> dict[str, float]:
    """Summary in microseconds: mean, p50, p95, p99, max, min, std, jitter (p99-p50), CoV."""
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    p50, p95, p99 = np.percentile(us, [50, 95, 99])
    mean = float(us.mean())
    std = float(us.std(ddof=1)) if us.size > 1 else 0.0
    return {
        "n": int(us.size),
        "mean_us": mean,
        "p50_us": float(p50),
        "p95_us": float(p95),
        "p99_us": float(p99),
        "max_us": float(us.max()),
        "min_us": float(us.min()),
        "std_us": std,
        "jitter_us": float(p99 - p50),
        "cov": std / mean if mean > 0 else 0.0,
    }


def quiet_summary(timings: Timings) -> dict:
    """A gated loop's record: the gate (probe, floor, readings, uncontended ranges), and the
    statistics of the uncontended samples alone (their share of all; none when no block was)."""
    quiet = timings.quiet_samples()
    stats = latency_stats(quiet) if len(quiet) else {"n": 0}
    return {**timings.gate, "share": round(len(quiet) / max(1, len(timings.samples_ns)), 4), **stats}
