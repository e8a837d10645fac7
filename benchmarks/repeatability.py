"""How repeatable is an audit? The median latency over N full `auditor compile-all` runs.

Each repeat is a whole audit in fresh processes (load, export reuse, worker, timing),
so this includes everything that varies between two audits of the same model. Prints each
audit's p50 and the CoV of those medians (the spine issue wants <= 3 %).

    .venv/bin/python benchmarks/repeatability.py [--repeats 5] [--runs 2000] [-c onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("-c", "--compiler", action="append", default=None)
    args = parser.parse_args()
    compilers = args.compiler or ["onnxruntime", "torch-eager"]
    with tempfile.TemporaryDirectory() as tmp:
        for spec in ("examples/blocks.py:mlp", "examples/blocks.py:conv1d"):
            medians: dict[str, list[float]] = {c: [] for c in compilers}
            for _ in range(args.repeats):
                cmd = [sys.executable, "-m", "auditor", "compile-all", spec, "--runs", str(args.runs),
                       "--profile-runs", "0", "--results-dir", tmp, "--json"]
                for c in compilers:
                    cmd += ["-c", c]
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                for run in json.loads(out)["runs"]:
                    medians[run["variant"]].append(run["p50_us"])
            for compiler, values in medians.items():
                v = np.array(values)
                print(f"{spec:<28} {compiler:<12} p50 per audit: {', '.join(f'{x:.2f}' for x in v)} µs; "
                      f"CoV of medians {100 * v.std(ddof=1) / v.mean():.2f} %")


if __name__ == "__main__":
    main()
