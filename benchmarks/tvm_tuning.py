"""Untuned vs MetaSchedule-tuned TVM against the fastest other runtime, on zoo defaults.

Runs `auditor compile-all --json` once per block with TVM untuned, TVM at each trial budget
and every other compiler's default variants, then prints per block and budget: tuning time
and cost model (from the cached database's `tuning-complete.json`), TVM untuned / tuned p50,
and the fastest other variant's p50. A budget already tuned for that model is a cache hit:
the time shown is the one recorded when it was tuned.

    .venv/bin/python benchmarks/tvm_tuning.py [--trials 64,256] [--blocks zoo:mlp,zoo:conv1d] [--runs 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BLOCKS = ("zoo:mlp", "zoo:conv1d", "zoo:audio_decoder")


def other_specs() -> list[str]:
    """Every compiler's default variants except TVM's, as -c specs."""
    from compilers import registry

    specs = []
    for variant in registry.default_variants():
        if variant.compiler == "tvm":
            continue
        rest = ",".join(f"{k}={v}" for k, v in variant.overrides)
        specs.append(f"{variant.compiler}:{rest}" if rest else variant.compiler)
    return specs


def tuning_record(model_hash: str, trials: int) -> dict:
    from ground.targets import TARGETS
    from compilers.tvm_relax import TvmRelax
    from compilers.tvm_tuning import COMPLETE, tuning_dir

    options = TvmRelax.resolve_options({"tune_trials": trials})
    path = tuning_dir(model_hash, TARGETS["host"], options) / COMPLETE
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", default="64")
    parser.add_argument("--blocks", default=",".join(BLOCKS))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one variant may take")
    parser.add_argument("--results-dir", default=None, help="keep the store here (default: a temp folder)")
    args = parser.parse_args()
    budgets = [int(t) for t in args.trials.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results_dir or tmp
        for block in args.blocks.split(","):
            cmd = [sys.executable, "-m", "auditor", "compile-all", block, "--runs", str(args.runs),
                   "--profile-runs", "0", "--timeout", str(args.timeout), "--results-dir", results, "--json",
                   "-c", "tvm", *[a for t in budgets for a in ("-c", f"tvm:tune_trials={t}")],
                   *[a for s in other_specs() for a in ("-c", s)]]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode not in (0, 1):
                print(f"{block}: {proc.stderr.strip()[-400:]}", file=sys.stderr)
                continue
            runs = json.loads(proc.stdout)["runs"]
            ok = [r for r in runs if r["status"] == "ok" and r["p50_us"] is not None]
            untuned = next((r for r in ok if r["variant"] == "tvm"), None)
            others = [r for r in ok if r["compiler"] != "tvm"]
            fastest = min(others, key=lambda r: r["p50_us"]) if others else None
            for trials in budgets:
                label = f"tvm[tune_trials={trials}]"
                tuned = next((r for r in runs if r["variant"] == label), None)
                record = tuning_record(tuned["model_hash"], trials) if tuned else {}
                fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
                rows.append([
                    block, trials, f"{record['seconds']:.0f}" if record else "—",
                    record.get("cost_model", "—"), record.get("kernels", "—"),
                    fmt(untuned and untuned["p50_us"]),
                    fmt(tuned["p50_us"]) if tuned and tuned["status"] == "ok" else (tuned or {}).get("status", "—"),
                    f"{fastest['variant']} {fastest['p50_us']:.1f}" if fastest else "—",
                ])
    print(tabulate(rows, headers=["block", "trials", "tuning s", "cost model", "kernels", "tvm untuned p50 µs",
                                  "tvm tuned p50 µs", "fastest other (p50 µs)"], tablefmt="github"))


if __name__ == "__main__":
    main()
