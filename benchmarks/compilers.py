"""Compile time and latency of every compiler variant on the example blocks, as one table.

Runs `auditor compile-all --json` once per block with every compiler's default variants
(or the ones given with -c) and prints: status, compile seconds, p50/p99 latency, deadline
verdict, per-op instrument and its sum-of-medians / whole ratio.

    .venv/bin/python benchmarks/compilers.py [--runs 500] [-c onnxruntime -c tvm ...] [--blocks mlp,lstm]
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
BLOCKS = {
    "mlp": "examples/blocks.py:mlp",
    "conv1d": "examples/blocks.py:conv1d",
    "gru": "zoo:recurrent:cell=gru,hidden=32,seq_len=16",
    "lstm": "zoo:recurrent:cell=lstm,hidden=32,seq_len=16",
    "transformer": "zoo:transformer:d_model=32,heads=2,ff=64,seq_len=16",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("-c", "--compiler", action="append", default=[])
    parser.add_argument("--blocks", default=",".join(BLOCKS))
    parser.add_argument("--results-dir", default=None, help="keep the store here (default: a temp folder)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results_dir or tmp
        for block in args.blocks.split(","):
            cmd = [sys.executable, "-m", "auditor", "compile-all", BLOCKS[block], "--runs", str(args.runs),
                   "--profile-runs", "50", "--results-dir", results, "--json"]
            for c in args.compiler:
                cmd += ["-c", c]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode not in (0, 1):
                print(f"{block}: {proc.stderr.strip()}", file=sys.stderr)
                continue
            for r in json.loads(proc.stdout)["runs"]:
                fmt = lambda v, f="{:.1f}": "—" if v is None else f.format(v)  # noqa: E731
                rows.append([block, r["variant"], r["status"], fmt(r["compile_s"], "{:.2f}"), fmt(r["p50_us"]),
                             fmt(r["p99_us"]), r["verdict"] or "—", r["per_op_method"] or "—",
                             fmt(r["per_op_sum_to_whole"], "{:.2f}"),
                             (r["reason"] or "")[:60] if r["status"] != "ok" else ""])
    print(tabulate(rows, headers=["block", "variant", "status", "compile s", "p50 µs", "p99 µs", "deadline",
                                  "per-op", "sum/whole", "reason"], tablefmt="github"))


if __name__ == "__main__":
    main()
