"""Does the harness distort what it measures? auditor's timing path vs a bare ORT loop.

For each example model's canonical ONNX graph, in one process, in rounds: each round runs
one block of calls through auditor's path (OnnxRuntime adapter, time_calls, the RSS sampling
thread running at compile-all's interval), one block of a bare loop over the same ORT call on
its own session and, for information, one of plain `InferenceSession.run`, in an order
shuffled per round. Prints medians and the ratio auditor / bare, which the spine issue wants
within 1.05, and the spread of the per-round ratios (each pairs two blocks run one after
the other, so a slow spell of the machine affects both sides of a pair).

    .venv/bin/python benchmarks/harness_overhead.py [--blocks 30] [--per-block 500]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.memory import RssSampler  # noqa: E402
from auditor.pipeline import AuditSettings, ModelRequest, prepare  # noqa: E402
from store import Store  # noqa: E402
from auditor.timing import TimingSettings, time_calls  # noqa: E402
from compilers.ort import OnnxRuntime, _session_options  # noqa: E402
from ground.targets import TARGETS  # noqa: E402


def bare_block(session, binding, n):
    clock = time.perf_counter_ns
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = clock()
        session.run_with_iobinding(binding)
        out[i] = clock() - t0
    return out


def plain_run_block(session, feed, n):
    clock = time.perf_counter_ns
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = clock()
        session.run(None, feed)
        out[i] = clock() - t0
    return out


def measure(spec: str, blocks: int, per_block: int, results: Path) -> dict:
    store = Store(results)
    prepared = prepare(ModelRequest(spec), store)
    bundle = prepared.bundle
    x = [np.random.default_rng(0).standard_normal(s.shape).astype(s.dtype) for s in bundle.inputs]
    compiler = OnnxRuntime()
    options = compiler.resolve_options({})
    workdir = results / "bench"
    workdir.mkdir(exist_ok=True)
    artifact = compiler.compile(bundle, TARGETS["host"], options, workdir)
    runnable = compiler.load(artifact, bundle)
    runnable.set_inputs(x)
    session = ort.InferenceSession(str(bundle.path("onnx")), _session_options(options),
                                   providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    for spec_in, a in zip(bundle.inputs, x):
        binding.bind_cpu_input(spec_in.name, a)
    for spec_out in bundle.outputs:
        binding.bind_output(spec_out.name)
    feed = {s.name: a for s, a in zip(bundle.inputs, x)}
    samples = {"auditor": [], "bare": [], "plain-run": []}
    settings = TimingSettings(warmup=50, runs=per_block, max_seconds=60, min_runs=per_block)
    rng = random.Random(0)
    for _ in range(blocks):  # one round: each kind once, back to back, in a shuffled order
        order = list(samples)
        rng.shuffle(order)
        for kind in order:
            if kind == "auditor":  # as the worker times it (auditor/worker.py)
                with RssSampler(AuditSettings().memory_interval_s):
                    samples[kind].append(time_calls(runnable.run, settings, runnable.timed_runs).samples_ns)
            elif kind == "bare":
                bare_block(session, binding, 50)
                samples[kind].append(bare_block(session, binding, per_block))
            else:
                plain_run_block(session, feed, 50)
                samples[kind].append(plain_run_block(session, feed, per_block))
    medians = {k: float(np.median(np.concatenate(v))) / 1e3 for k, v in samples.items()}
    # paired within a round: samples[k][i] of every kind ran in round i
    block_ratio = [float(np.median(a) / np.median(b)) for a, b in zip(samples["auditor"], samples["bare"])]
    return {"model": spec, **medians, "ratio": medians["auditor"] / medians["bare"],
            "block_ratio_p25": float(np.percentile(block_ratio, 25)),
            "block_ratio_p75": float(np.percentile(block_ratio, 75))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=30, help="rounds (one block of each kind per round)")
    parser.add_argument("--per-block", type=int, default=500)
    args = parser.parse_args()
    print(f"{'model':<28} {'auditor µs':>11} {'bare µs':>9} {'ratio':>7} {'block ratio p25-p75':>21} {'sess.run µs':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in ("examples/blocks.py:mlp", "examples/blocks.py:conv1d"):
            r = measure(str(ROOT / spec), args.blocks, args.per_block, Path(tmp))
            print(f"{spec:<28} {r['auditor']:>11.2f} {r['bare']:>9.2f} {r['ratio']:>7.3f} "
                  f"{r['block_ratio_p25']:>10.3f}-{r['block_ratio_p75']:<10.3f} {r['plain-run']:>12.2f}")


if __name__ == "__main__":
    main()
