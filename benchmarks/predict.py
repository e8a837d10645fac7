"""`auditor predict` end to end (CLI start included) on ONNX graphs of 100 and 1,000 nodes.

Targets (issue 15): under 1 s for 100 nodes, under 5 s for 1,000. The graphs are chains of
Gemm -> Relu -> Add(residual) blocks built with onnx.helper (random weights); nothing runs
them. Prints the median of a few runs per size (wall time, and the CPU time of the process,
which a loaded machine inflates far less) and whether torch was imported.

    python benchmarks/predict.py [--runs 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def chain(nodes: int, width: int = 64) -> onnx.ModelProto:
    """A graph of `nodes` nodes: repeated Gemm -> Relu -> Add(skip) blocks."""
    rng = np.random.default_rng(0)
    made, inits, x = [], [], "x"
    k = 0
    while len(made) < nodes:
        w = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), f"w{k}")
        b = numpy_helper.from_array(np.zeros(width, np.float32), f"b{k}")
        inits += [w, b]
        made.append(helper.make_node("Gemm", [x, f"w{k}", f"b{k}"], [f"g{k}"], name=f"gemm{k}", transB=1))
        made.append(helper.make_node("Relu", [f"g{k}"], [f"r{k}"], name=f"relu{k}"))
        made.append(helper.make_node("Add", [f"r{k}", x], [f"a{k}"], name=f"add{k}"))
        x, k = f"a{k}", k + 1
    made = made[:nodes]
    last = made[-1].output[0]
    graph = helper.make_graph(made, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, width])],
                              initializer=[i for i in inits if i.name in {t for n in made for t in n.input}])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cli = Path(sys.executable).parent / "auditor"
    with tempfile.TemporaryDirectory() as tmp:
        for nodes, target in ((100, 1.0), (1000, 5.0)):
            path = Path(tmp) / f"chain{nodes}.onnx"
            onnx.save(chain(nodes), str(path))
            times, cpu = [], []
            for _ in range(args.runs):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                out = subprocess.run([str(cli), "predict", str(path), "--json"], cwd=tmp,
                                     capture_output=True, text=True)
                times.append(time.perf_counter() - t)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
                if out.returncode:
                    sys.exit(f"predict failed: {out.stderr.strip()}")
            probe = subprocess.run([sys.executable, "-c",
                                    "import sys; from auditor.cli import main; main(['predict', sys.argv[1], '--json']);"
                                    "print('torch' in sys.modules, 'onnxruntime' in sys.modules, file=sys.stderr)",
                                    str(path)], cwd=tmp, capture_output=True, text=True)
            torch_loaded, ort_loaded = probe.stderr.split()[-2:]
            print(f"{nodes:5d} nodes: wall median {statistics.median(times):.2f} s over {args.runs} runs "
                  f"(min {min(times):.2f}), CPU median {statistics.median(cpu):.2f} s; target < {target:.0f} s: "
                  f"wall {'met' if statistics.median(times) < target else 'MISSED'}, CPU "
                  f"{'met' if statistics.median(cpu) < target else 'MISSED'}; torch imported: {torch_loaded}, "
                  f"onnxruntime imported: {ort_loaded}")
    with open("/proc/loadavg") as f:
        print(f"machine load average (1 min) while measuring: {f.read().split()[0]} — figures under load are upper bounds")


if __name__ == "__main__":
    main()
