import math
import time

import numpy as np
import pytest

from auditor import accuracy, deadline
from auditor.memory import RssSampler
from auditor.timing import GATE_STRETCH, TimingSettings, latency_stats, quiet_summary, time_calls


def test_latency_stats_exact_values():
    samples_ns = np.arange(1, 101, dtype=np.int64) * 1000  # 1..100 µs
    s = latency_stats(samples_ns)
    assert s["n"] == 100
    assert s["mean_us"] == pytest.approx(50.5)
    assert s["p50_us"] == pytest.approx(50.5)
    assert s["p99_us"] == pytest.approx(99.01)
    assert s["max_us"] == 100 and s["min_us"] == 1
    assert s["std_us"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s["jitter_us"] == pytest.approx(99.01 - 50.5)
    assert s["cov"] == pytest.approx(s["std_us"] / 50.5)


def test_time_calls_counts_and_keeps_first_apart():
    calls = []
    t = time_calls(lambda: calls.append(1), TimingSettings(warmup=7, runs=40))
    assert len(calls) == 1 + 7 + 40
    assert t.samples_ns.shape == (40,) and (t.samples_ns > 0).all() and t.first_ns > 0
    assert not t.stopped_early


def test_time_calls_stops_at_time_limit_but_keeps_minimum():
    t = time_calls(lambda: time.sleep(0.002), TimingSettings(warmup=0, runs=1000, max_seconds=0.05, min_runs=30))
    assert t.stopped_early and 30 <= len(t.samples_ns) < 1000
    assert np.median(t.samples_ns) >= 2_000_000


def test_deadline_verdicts():
    budget = deadline.budget_us(16, 44100)
    assert budget == pytest.approx(362.811, abs=1e-3)
    assert deadline.budget_us(16, 44100, deadline_us=100) == 100
    fast = np.full(1000, 100_000)  # 100 µs
    assert deadline.audit(fast, budget)["verdict"] == "meets"
    tail = fast.copy()
    tail[:5] = 400_000  # 0.5 % over: p99 fits, max does not
    a = deadline.audit(tail, budget)
    assert a["verdict"] == "tail-risk" and a["over_budget_share"] == pytest.approx(0.005)
    assert a["headroom_max_us"] == pytest.approx(budget - 400)
    slow = np.full(100, 500_000)
    assert deadline.audit(slow, budget)["verdict"] == "misses"


def test_accuracy_figures():
    ref = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    same = accuracy.compare(ref, ref.copy(), accuracy.Tolerance())
    assert same["passed"] and same["max_abs_err"] == 0 and math.isinf(same["snr_db"])
    noisy = accuracy.compare(ref, ref + np.float32(0.1), accuracy.Tolerance(atol=0.2, rtol=0))
    assert noisy["passed"] and noisy["max_abs_err"] == pytest.approx(0.1, rel=1e-5)
    assert noisy["rmse"] == pytest.approx(0.1, rel=1e-5)
    assert noisy["snr_db"] == pytest.approx(10 * math.log10(14 / 0.03), rel=1e-4)
    assert not accuracy.compare(ref, ref + np.float32(0.1), accuracy.Tolerance(atol=0.01, rtol=0))["passed"]


def test_nan_and_shape_never_pass():
    ref = np.ones(4, np.float32)
    bad = ref.copy()
    bad[2] = np.nan
    result = accuracy.compare(ref, bad, accuracy.Tolerance(atol=1e9))
    assert not result["passed"] and "NaN" in result["reason"]
    inf = ref.copy()
    inf[0] = np.inf
    assert not accuracy.compare(ref, inf, accuracy.Tolerance(atol=1e9))["passed"]
    assert not accuracy.compare(ref, np.ones(5, np.float32), accuracy.Tolerance())["passed"]
    nan_ref = np.array([np.nan, 1.0])
    assert accuracy.compare(nan_ref, nan_ref.copy(), accuracy.Tolerance())["passed"]  # NaN where torch has NaN


def test_task_accuracy():
    outs = [[np.array([[0.1, 0.9]])], [np.array([[0.8, 0.2]])], [np.array([[0.3, 0.7]])]]
    assert accuracy.task_accuracy(outs, np.array([1, 0, 0])) == pytest.approx(2 / 3)


def test_rss_sampler_sees_allocation():
    with RssSampler(0.001) as sampler:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
        time.sleep(0.05)
        del block
    s = sampler.summary()
    assert s["rss_samples"] >= 10
    assert s["rss_peak_bytes"] - min(b for _, b in sampler.samples) >= 50 * 2**20
    assert s["ru_maxrss_bytes"] >= s["rss_peak_bytes"] * 0.99


def test_time_calls_uses_a_runtimes_own_loop_in_batches():
    calls, batches = [], []

    def timed_runs(n):
        batches.append(n)
        return np.full(n, 1000, dtype=np.int64)  # 1 us each

    t = time_calls(lambda: calls.append(1), TimingSettings(warmup=10, runs=50_000, max_seconds=60), timed_runs)
    assert calls == [1]  # only the first call goes through Python
    assert batches[0] == 10  # the warm-up
    assert len(t.samples_ns) == 50_000 and not t.stopped_early and set(t.samples_ns) == {1000}
    assert max(batches[1:]) == 20_000  # BATCH_S / 1 us: the time limit is checked between batches
    assert sum(batches[1:]) == 50_000


def test_time_calls_native_loop_stops_at_time_limit_but_keeps_minimum():
    def timed_runs(n):
        time.sleep(0.002 * n)
        return np.full(n, 2_000_000, dtype=np.int64)

    t = time_calls(lambda: None, TimingSettings(warmup=0, runs=1000, max_seconds=0.05, min_runs=30), timed_runs)
    assert t.stopped_early and 30 <= len(t.samples_ns) < 100


class _ScriptedProbe:
    """Stands in for ground.probe.PROBE: floor 100 ns, readings from a script (then 100)."""

    def __init__(self, readings):
        self.floor_ns, self.script = 100, list(readings)

    def calibrate(self):
        return self.floor_ns

    def read(self):
        return self.script.pop(0) if self.script else 100

    def quiet(self, reading):
        from ground.probe import TOLERANCE

        return reading <= self.floor_ns * (1 + TOLERANCE)


def test_gated_loop_keeps_every_sample_marks_the_contended_block_and_waits_out_contention(monkeypatch):
    """The reading after block 2 is 200 (contended): block 2 is marked, and before block 3
    the loop reads the probe (timing nothing) until it reads quiet again; it runs on until
    `runs` samples lie in uncontended blocks, and keeps every sample it timed."""
    import auditor.timing
    import ground.probe

    monkeypatch.setattr(ground.probe, "PROBE", _ScriptedProbe([100, 100, 200, 200, 100]))
    # blocks are runs / 8 calls unless a call is slower than BLOCK_S / 10: a first call
    # descheduled for 3-5 ms under CI's load made them 2 calls; a long BLOCK_S keeps them runs / 8
    monkeypatch.setattr(auditor.timing, "BLOCK_S", 3600.0)
    calls = []
    t = time_calls(lambda: calls.append(1), TimingSettings(warmup=0, runs=80, min_runs=80, max_seconds=60, gate=True))
    assert t.gate["quiet_ranges"] == [[0, 10], [20, 90]]  # blocks of runs / 8 = 10 calls
    assert len(t.samples_ns) == 90 and len(calls) == 91  # the first call is timed apart
    assert t.gate["blocks"] == 9 and t.gate["quiet_blocks"] == 8 and not t.stopped_early
    assert t.gate["block_calls"] == [10] * 9
    assert t.gate["probe_over_floor"][:3] == [[1.0, 1.0], [1.0, 2.0], [1.0, 1.0]]  # waited: 200 -> 100
    assert np.array_equal(t.quiet_samples(), np.concatenate([t.samples_ns[:10], t.samples_ns[20:]]))
    summary = quiet_summary(t)
    assert summary["n"] == 80 and summary["share"] == pytest.approx(80 / 90, abs=1e-4)
    assert summary["p50_us"] == pytest.approx(np.median(t.quiet_samples()) / 1e3)


def test_gated_loop_contended_throughout_waits_to_its_limit_then_times_min_runs(monkeypatch):
    import ground.probe

    monkeypatch.setattr(ground.probe, "PROBE", _ScriptedProbe([200] * 10**7))
    t0 = time.perf_counter()
    t = time_calls(lambda: None, TimingSettings(warmup=0, runs=40, min_runs=40, max_seconds=0.05, gate=True))
    assert time.perf_counter() - t0 >= 0.05 * GATE_STRETCH and t.gate["waited_s"] >= 0.05 * GATE_STRETCH - 0.01
    assert len(t.samples_ns) == 40 and t.gate["quiet_ranges"] == [] and t.stopped_early
    assert quiet_summary(t) == {**t.gate, "share": 0.0, "n": 0}


def test_gated_loop_uncontended_times_exactly_runs_and_waits_at_most_wait_s(monkeypatch):
    """Quiet: `runs` calls exactly (the last block is cut to fit). Contended throughout with a
    long max_seconds: the loop waits WAIT_S, not GATE_STRETCH x max_seconds, then times its
    GATE_STRETCH x runs calls, every block marked contended."""
    import auditor.timing
    import ground.probe

    monkeypatch.setattr(ground.probe, "PROBE", _ScriptedProbe([]))
    t = time_calls(lambda: None, TimingSettings(warmup=0, runs=50, min_runs=50, max_seconds=60, gate=True))
    assert len(t.samples_ns) == 50 and t.gate["block_calls"] == [6] * 8 + [2] and not t.stopped_early
    monkeypatch.setattr(auditor.timing, "WAIT_S", 0.05)
    monkeypatch.setattr(ground.probe, "PROBE", _ScriptedProbe([200] * 10**5))
    t0 = time.perf_counter()
    t = time_calls(lambda: None, TimingSettings(warmup=0, runs=40, min_runs=40, max_seconds=60, gate=True))
    assert 0.05 <= t.gate["waited_s"] < 1 and time.perf_counter() - t0 < 5
    assert len(t.samples_ns) == 40 * GATE_STRETCH and t.gate["quiet_ranges"] == [] and t.stopped_early


def test_gated_native_loop_gates_its_batches(monkeypatch):
    import ground.probe

    monkeypatch.setattr(ground.probe, "PROBE", _ScriptedProbe([100, 200, 100]))
    batches = []

    def timed_runs(n):
        batches.append(n)
        return np.full(n, 1000, dtype=np.int64)

    t = time_calls(lambda: None, TimingSettings(warmup=5, runs=64, min_runs=64, max_seconds=60, gate=True),
                   timed_runs)
    assert batches[0] == 5 and set(batches[1:]) == {8}  # warm-up, then runs / 8 a batch
    assert t.gate["quiet_ranges"] == [[8, 72]] and len(t.samples_ns) == 72  # batch 1 contended
