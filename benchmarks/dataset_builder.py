"""Dataset builder throughput: measured runs per minute, old path vs the long-lived workers.

Builds one small fixed sweep (SPEC below: 12 points of mlp and linear, four cheap variants
that run everywhere, short timing) into a fresh results directory with `auditor dataset
build`, once per mode, and prints wall time and runs/min:

  per-run     the old path: a fresh `python -m auditor.worker` per run (imports torch each time)
  long-lived  one measurement worker per compiler serving every run (the default)
  repeat      long-lived again into the same store (every run reused; artifacts cached)
  quiet       --quiet --allow-load: export all, compile all (--jobs), then measure pinned to one
              CPU, one run at a time (how a training set is built; no spread repeats here)

Runs/min counts finished runs (any final status) over the whole build's wall time, export
and compile included. The issue's target is >= 100 runs/min on a quiet 2-core machine.
Figures taken while other jobs share the cores are lower; compare modes within one
invocation (the ratio), not figures across invocations.

    .venv/bin/python benchmarks/dataset_builder.py [--modes per-run,long-lived] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SPEC = {
    "name": "bench",
    "compilers": ["onnxruntime", "onnxruntime:graph_opt=disable", "torch-eager", "torchscript"],
    "timing": {"runs": 100, "warmup": 10, "max_seconds": 0.2, "profile_runs": 5},
    "families": [
        {"family": "mlp", "grid": {"depth": [1, 2], "width": [16, 32, 64]}},
        {"family": "linear", "grid": {"in_features": [16, 64, 256], "out_features": [16, 64]}},
    ],
}

MODE_FLAGS = {"per-run": ["--worker", "per-run"], "long-lived": ["--worker", "long-lived"],
              "repeat": ["--worker", "long-lived"], "quiet": ["--quiet", "--allow-load", "--repeat-share", "0"]}


def finished_runs(results: Path) -> int:
    db = sqlite3.connect(results / "results.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM runs WHERE status NOT IN ('pending','running')").fetchone()[0]
    finally:
        db.close()


def build(spec: Path, results: Path, flags: list[str], jobs: int) -> tuple[float, int]:
    before = finished_runs(results) if (results / "results.sqlite").exists() else 0
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "auditor", "dataset", "build", "--spec", str(spec),
                           "--results-dir", str(results), "--jobs", str(jobs), *flags],
                          cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build failed ({' '.join(flags)}): {proc.stderr.strip().splitlines()[-1:]}")
    return wall, finished_runs(results) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="per-run,long-lived,repeat")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-flags", action="store_true",
                        help="run the build without a --worker flag (the code before the flag existed)")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores"
          + ("  (NOT quiet: other work shares the cores; compare the ratio)" if load[0] > 0.5 else ""))
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench.json"
        spec.write_text(json.dumps(SPEC))
        for mode in args.modes.split(","):
            results = Path(tmp) / ("long-lived" if mode == "repeat" else mode)
            wall, runs = build(spec, results, [] if args.no_flags else MODE_FLAGS[mode], args.jobs)
            figures[mode] = runs / wall * 60 if runs else 0.0
            reused = " (all reused from the store)" if mode == "repeat" else ""
            print(f"{mode:11s} {runs:3d} runs{reused} in {wall:6.1f} s: {figures[mode]:6.1f} runs/min"
                  if runs else f"{mode:11s}   0 new runs in {wall:6.1f} s (everything reused)")
    if figures.get("per-run") and figures.get("long-lived"):
        print(f"ratio long-lived / per-run: {figures['long-lived'] / figures['per-run']:.2f}x")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
