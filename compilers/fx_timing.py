"""Per-FX-node timing of a torch.export program run node by node (torch.fx.Interpreter).

Used by the torch-side eager runtimes: FX node names join exactly to canonical ONNX nodes
through `ground.fx_nodes.fx_node_map`. The interpreter adds Python dispatch per node, so
the instrumented whole is slower than the plain call: the worker stores both.
"""

from __future__ import annotations

import time

import numpy as np

from ground.op_timing import OpProfile, OpTiming


def fx_kernel_map(graph_module, fx_to_onnx: dict[str, list[str]]) -> dict[str, list[str]]:
    return {n.name: fx_to_onnx.get(n.name, []) for n in graph_module.graph.nodes
            if n.op in ("call_function", "call_module", "call_method")}


def profile_fx(graph_module, args: tuple, runs: int, kernel_map: dict[str, list[str]],
               warmup: int = 10) -> OpProfile:
    import torch

    clock = time.perf_counter_ns
    totals: dict[str, list[int]] = {}

    class Timed(torch.fx.Interpreter):
        def run_node(self, node):
            if node.op not in ("call_function", "call_module", "call_method"):
                return super().run_node(node)
            t0 = clock()
            result = super().run_node(node)
            totals.setdefault(node.name, []).append(clock() - t0)
            return result

    interpreter = Timed(graph_module)
    whole = []
    with torch.no_grad():
        for i in range(warmup + runs):
            if i == warmup:
                totals.clear()
            t0 = clock()
            interpreter.run(*args)
            whole.append(clock() - t0)
    whole_us = np.array(whole[warmup:], dtype=np.float64) / 1e3
    ops = []
    for node in graph_module.graph.nodes:
        if node.name not in totals:
            continue
        per_run = np.array(totals[node.name], dtype=np.float64).reshape(runs, -1).sum(axis=1) / 1e3
        ops.append(OpTiming.from_runs(node.name, str(node.target), kernel_map.get(node.name, []),
                                      len(totals[node.name]) // runs, per_run))
    return OpProfile(
        method="fx-node-timer", ops=ops, runs=runs, instrumented_whole_us=float(np.median(whole_us)),
        notes="each FX node of the torch.export program timed with perf_counter_ns inside "
              "torch.fx.Interpreter (adds Python dispatch per node)",
    )
