"""The native runner's acceptance figures on local: does it agree with the Python harness,
what does per-op instrumentation cost, and do per-op times add up to the whole?

For each model and compiler with a native backend (SOFIE; TVM when its backend is built),
rounds alternate in shuffled order between
  - the plain runner (`--runs N`: one block of N timed inferences), its RSS sampled at
    compile-all's interval (5 ms),
  - the Python harness on the same artifact as compile-all's worker times it (the adapter's
    Runnable under auditor.timing, through the runtime's own timing loop when it has one,
    with the RSS sampling thread running at the same interval),
  - the same Runnable with every run() timed from Python (for scale: the per-call cost of
    crossing from Python into the runtime),
  - the instrumented runner (SOFIE: the kProfile binary; TVM: the same binary's per-op runs),
so each figure is a median over rounds of per-block medians, and the ratios compare blocks
measured under the same conditions. Prints, per model and compiler:
  runner p50, harness p50, runner / harness (issue: within 5 %), Python-loop p50,
  instrumented / plain p50 (issue: overhead <= 3 %),
  per-op sum of medians / plain whole p50 (issue: within 10 %).

Before anything is timed, the runner's and the Python harness's outputs on the bundle's
check example are compared with the torch reference (compile-all's tolerance); a model
where either differs is a row saying so, not figures. What differs from compile-all: the
instrumented runner times N whole runs here (compile-all: min_runs), and per-op runs are
N too (compile-all: --profile-runs); the warm-up is 50 everywhere.

    .venv/bin/python benchmarks/native_runner.py [--rounds 15] [--runs 2000] [--compilers sofie,tvm]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor import accuracy  # noqa: E402
from auditor.inputs import InputSet  # noqa: E402
from auditor.memory import RssSampler  # noqa: E402
from auditor.pipeline import AuditSettings, ModelRequest, prepare  # noqa: E402
from store import Store  # noqa: E402
from auditor.timing import TimingSettings, time_calls  # noqa: E402
from compilers import registry  # noqa: E402
from device_runner.local import LocalDevice  # noqa: E402
from device_runner.native import RunnerSettings, run_program  # noqa: E402
from ground.targets import TARGETS  # noqa: E402

MODELS = ["zoo:mlp", "zoo:mlp:width=256,depth=3", "zoo:conv1d", "zoo:sensor_autoencoder",
          "zoo:audio_decoder"]


def p50(ns) -> float:
    return float(np.median(np.asarray(ns, dtype=np.float64))) / 1e3


def _check_outputs(device, program, runnable, inputs, data_dir, bundle, audit) -> str | None:
    """None when the runner and the Python harness both match the torch reference on every
    check example, else which one does not and why."""
    n = len(bundle.outputs)
    with np.load(data_dir / "reference.npz") as z:
        reference = [[z[f"e{i}_{j}"] for j in range(n)] for i in range(len(inputs.examples))]
    names = [o.name for o in bundle.outputs]
    tol = accuracy.Tolerance(audit.atol, audit.rtol)
    r = run_program(device, program, inputs.timing_inputs, inputs.examples,
                    RunnerSettings(runs=10, warmup=1, min_runs=10))
    if r.failure:
        return f"runner: {r.failure}"
    python = []
    for example in inputs.examples:
        runnable.set_inputs(example)
        runnable.run()
        python.append(runnable.outputs())
    for who, actual in (("runner", r.outputs), ("python harness", python)):
        bad = [row for row in accuracy.compare_all(reference, actual, names, tol) if not row["passed"]]
        if bad:
            return f"{who} output {bad[0]['output']} differs from the reference: {bad[0]['reason']}"
    return None


def bench(spec: str, compiler_name: str, rounds: int, runs: int, tmp: Path) -> dict | None:
    cls = registry.get(compiler_name)
    ok, why = cls.available()
    if not ok:
        return {"model": spec, "compiler": compiler_name, "error": why}
    prepared = prepare(ModelRequest(spec), Store(tmp / "results"))
    bundle = prepared.bundle
    compiler = cls()
    artifact = compiler.compile(bundle, TARGETS["host"], cls.resolve_options({}), tmp / f"{compiler_name}-{bundle.model_hash}")
    program = compiler.native_program(artifact)
    inputs = InputSet.load(prepared.data_dir / "inputs.npz", bundle.inputs, prepared.inputs_source)
    x = inputs.timing_inputs
    runnable = compiler.load(artifact, bundle)
    device = LocalDevice()
    plain, python, python_loop, instrumented, sums = [], [], [], [], []
    audit = AuditSettings()
    rss_ms = max(audit.memory_interval_s * 1e3, 0.1)  # as auditor/worker.py passes it
    settings = RunnerSettings(runs=runs, warmup=50, max_seconds=60, min_runs=runs, rss_interval_ms=rss_ms)
    instrumented_settings = RunnerSettings(runs=runs, warmup=50, max_seconds=60, min_runs=runs,
                                           rss_interval_ms=rss_ms, per_op_runs=runs)
    wrong = _check_outputs(device, program, runnable, inputs, prepared.data_dir, bundle, audit)
    if wrong:
        runnable.close()
        device.close()
        return {"model": spec, "compiler": compiler_name, "error": wrong}
    runnable.set_inputs(x)
    kinds = ["plain", "python", "python-loop", "instrumented"]
    timing = TimingSettings(warmup=50, runs=runs, max_seconds=60, min_runs=runs)
    try:
        for _ in range(rounds):
            random.shuffle(kinds)
            for kind in kinds:
                if kind == "python":
                    with RssSampler(audit.memory_interval_s):
                        t = time_calls(runnable.run, timing, runnable.timed_runs)
                    python.append(p50(t.samples_ns))
                elif kind == "python-loop":
                    python_loop.append(p50(time_calls(runnable.run, timing).samples_ns))
                elif kind == "plain":
                    r = run_program(device, program, x, [], settings)
                    if r.failure:
                        raise RuntimeError(r.failure)
                    plain.append(p50(r.report["samples_ns"]))
                else:
                    if program.instrumented_runner is not None:
                        # the kProfile build: its timers are on in every run it times
                        r = run_program(device, program, x, [], instrumented_settings)
                        report = r.per_op_report
                    else:
                        r = run_program(device, program, x, [], instrumented_settings)
                        report = r.report
                    if r.failure:
                        raise RuntimeError(r.failure)
                    per_op = report["per_op"]
                    instrumented.append(p50(per_op["whole_ns"]))
                    sums.append(sum(p50(k["ns"]) for k in per_op["kernels"]))
    finally:
        runnable.close()
        device.close()
    med = statistics.median
    return {
        "model": spec, "compiler": compiler_name, "kernels": len(program.kernel_map),
        "runner_p50_us": med(plain), "python_p50_us": med(python), "python_loop_p50_us": med(python_loop),
        "timing_loop": runnable.timing_loop or "python",
        "runner_over_python": med(a / b for a, b in zip(plain, python)),
        "runner_over_python_range": (min(a / b for a, b in zip(plain, python)),
                                     max(a / b for a, b in zip(plain, python))),
        "instrumented_over_plain": med(a / b for a, b in zip(instrumented, plain)),
        "per_op_sum_over_whole": med(a / b for a, b in zip(sums, plain)),
        "per_op_sum_over_instrumented_whole": med(a / b for a, b in zip(sums, instrumented)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--compilers", default="sofie,tvm")
    ap.add_argument("--models", default=";".join(MODELS), help="model specs, separated by ';'")
    args = ap.parse_args()
    models = [m for m in args.models.split(";") if m]
    from tabulate import tabulate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in models:
            for name in args.compilers.split(","):
                try:
                    r = bench(spec, name, args.rounds, args.runs, Path(tmp))
                except Exception as e:  # noqa: BLE001 - one model's failure is a row, not the end
                    r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"}
                if r is None:
                    continue
                if "error" in r:
                    rows.append([spec, name, r["error"], "", "", "", "", "", ""])
                    continue
                lo, hi = r["runner_over_python_range"]
                rows.append([spec, name, f"{r['runner_p50_us']:.2f}", f"{r['python_p50_us']:.2f}",
                             f"{r['runner_over_python']:.3f} ({lo:.3f}-{hi:.3f})", f"{r['python_loop_p50_us']:.2f}",
                             f"{r['instrumented_over_plain']:.3f}", f"{r['per_op_sum_over_whole']:.3f}",
                             f"{r['per_op_sum_over_instrumented_whole']:.3f}"])
                print(rows[-1], flush=True)
    print(tabulate(rows, headers=["model", "compiler", "runner p50 µs", "harness p50 µs",
                                  "runner/harness (min-max)", "python-loop p50 µs", "instr/plain",
                                  "op sum/whole", "op sum/instr whole"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
