"""ONNX Runtime (CPU execution provider).

"Compiling" is ORT's graph optimisation: the optimised graph is written next to the run
so its node names (the ones ORT's profiler reports) can be mapped back to the canonical
ONNX nodes they cover. A fused node keeps the first original node's inputs and the last
one's outputs, so the covered nodes are found by walking the original graph from the
fused node's outputs back to its inputs.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from compilers.base import Artifact, Compiler, OptionSpec, Runnable
from ground.op_timing import OpProfile, OpTiming
from ground.tensors import ModelBundle

GRAPH_OPT = ("disable", "basic", "extended", "all")


def _session_options(options: dict[str, Any]):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options["graph_opt"]]
    so.intra_op_num_threads = options["threads"]
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The board has one core: no spinning worker threads stealing it from the audio thread.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options["spinning"] else "0")
    so.log_severity_level = 3
    return so


def covered_nodes(original, optimized) -> dict[str, list[str]]:
    """Optimised node name -> the original node names it stands for ([] = ORT inserted it)."""
    producer = {out: node for node in original.graph.node for out in node.output}
    by_name = {node.name: node for node in original.graph.node}
    mapping: dict[str, list[str]] = {}
    for node in optimized.graph.node:
        same = by_name.get(node.name)
        if same is not None and list(same.output) == list(node.output):
            mapping[node.name] = [node.name]
            continue
        stop = set(node.input)
        seen: list[str] = []
        frontier = [t for t in node.output if t in producer]
        while frontier:
            src = producer[frontier.pop()]
            if src.name in seen:
                continue
            seen.append(src.name)
            frontier.extend(t for t in src.input if t in producer and t not in stop)
        order = {n.name: i for i, n in enumerate(original.graph.node)}
        mapping[node.name] = sorted(seen, key=order.get)
    return mapping


class OrtRunnable(Runnable):
    def __init__(self, session, bundle: ModelBundle):
        import onnxruntime as ort

        self.session = session
        self.bundle = bundle
        self.binding = session.io_binding()
        # Outputs go into buffers allocated once, as a real-time callback would keep them.
        self._out = [np.empty(s.shape, dtype=s.dtype) for s in bundle.outputs]
        for spec, buf in zip(bundle.outputs, self._out):
            self.binding.bind_ortvalue_output(spec.name, ort.OrtValue.ortvalue_from_numpy(buf))
        self._inputs: list[np.ndarray] = []
        # a torch model's Python number argument is a graph input only where the exporter
        # kept it; otherwise it is a constant of the graph and nothing is bound for it
        graph_inputs = {i.name for i in session.get_inputs()}
        self._bound = [spec.name in graph_inputs for spec in bundle.inputs]
        # The timed call with no Python frame of ours around ORT's (~0.1 µs on a 4 µs model).
        self.run = functools.partial(session.run_with_iobinding, self.binding)

    def set_inputs(self, arrays):
        self._inputs = [np.ascontiguousarray(a) for a in arrays]  # keep them alive while bound
        for spec, bound, a in zip(self.bundle.inputs, self._bound, self._inputs):
            if bound:
                self.binding.bind_cpu_input(spec.name, a)

    def run(self):
        self.session.run_with_iobinding(self.binding)

    def outputs(self):
        return [buf.copy() for buf in self._out]


class OnnxRuntime(Compiler):
    name = "onnxruntime"
    description = "ONNX Runtime, CPU execution provider"
    accepts = ("onnx",)
    options = {
        "graph_opt": OptionSpec("all", "graph optimisation level", GRAPH_OPT),
        "threads": OptionSpec(1, "intra-op threads (the board has one core)"),
        "spinning": OptionSpec(False, "let idle intra-op threads spin"),
    }
    # compile-all runs full optimisation and none: how much ORT's graph rewrites buy
    default_variants = ({}, {"graph_opt": "disable"})
    per_op_method = "ort-profiler"
    install_hint = "pip install onnxruntime"
    takes_scalars = True  # as an int64/float 0-d tensor, or baked into the exported graph

    @classmethod
    def available(cls):
        try:
            import onnxruntime as ort
        except Exception as e:  # noqa: BLE001 - any import failure means unavailable
            return False, f"onnxruntime does not import: {e}"
        return True, ort.__version__

    def compile(self, bundle, target, options, workdir):
        import onnx
        import onnxruntime as ort

        optimized = workdir / "ort_optimized.onnx"
        so = _session_options(options)
        so.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(bundle.path("onnx")), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(bundle.path("onnx")))
        kernel_map = covered_nodes(graph, onnx.load(str(optimized)))
        graph_inputs = {i.name for i in graph.graph.input}
        notes = [f"number argument {s.name} is a constant of the exported graph (the value audited): "
                 "this graph computes that case only" for s in bundle.inputs if s.scalar and s.name not in graph_inputs]
        return Artifact(
            compiler=self.name, compiler_version=ort.__version__, target=target, options=options,
            directory=workdir, files={"optimized": optimized.name}, kernel_map=kernel_map, notes=notes,
        )

    def _session(self, bundle, options, extra=None):
        import onnxruntime as ort

        so = _session_options(options)
        for key, value in (extra or {}).items():
            setattr(so, key, value)
        return ort.InferenceSession(str(bundle.path("onnx")), so, providers=["CPUExecutionProvider"])

    def load(self, artifact, bundle):
        return OrtRunnable(self._session(bundle, artifact.options), bundle)

    def profile_ops(self, artifact, bundle, inputs, runs):
        warmup = 10
        session = self._session(bundle, artifact.options, {
            "enable_profiling": True,
            "profile_file_prefix": str(artifact.directory / "ort_profile"),
        })
        runnable = OrtRunnable(session, bundle)
        runnable.set_inputs(inputs)
        for _ in range(warmup + runs):
            runnable.run()
        trace = Path(session.end_profiling())
        return parse_profile(json.loads(trace.read_text()), artifact.kernel_map, skip_runs=warmup)


def parse_profile(events: list[dict], kernel_map: dict[str, list[str]], skip_runs: int) -> OpProfile:
    """ORT's trace -> per-kernel time per inference. Durations are whole microseconds."""
    run_spans = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )[skip_runs:]
    nodes = sorted(
        (e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
        key=lambda e: e["ts"],
    )
    per_run: list[dict[str, float]] = [dict() for _ in run_spans]
    calls: dict[str, int] = {}
    info: dict[str, tuple[str, str]] = {}
    order: list[str] = []
    span_index = 0
    for e in nodes:
        while span_index < len(run_spans) and e["ts"] > run_spans[span_index][1]:
            span_index += 1
        if span_index == len(run_spans):
            break
        if e["ts"] < run_spans[span_index][0]:
            continue  # a warm-up run's node
        kernel = e["name"].removesuffix("_kernel_time")
        if kernel not in info:
            order.append(kernel)
            info[kernel] = (e["args"].get("op_name", "?"), e["args"].get("provider", ""))
        totals = per_run[span_index]
        totals[kernel] = totals.get(kernel, 0.0) + e["dur"]
        if span_index == 0:
            calls[kernel] = calls.get(kernel, 0) + 1
    ops = []
    for kernel in order:
        values = np.array([totals.get(kernel, 0.0) for totals in per_run], dtype=np.float64)
        op_type, provider = info[kernel]
        ops.append(OpTiming.from_runs(kernel, op_type, kernel_map.get(kernel, []), calls.get(kernel, 1),
                                      values, provider=provider))
    whole = [end - start for start, end in run_spans]
    return OpProfile(
        method="ort-profiler", ops=ops, runs=len(run_spans),
        instrumented_whole_us=float(np.median(whole)) if whole else None,
        notes="ORT SessionOptions.enable_profiling node events (whole-µs durations), not rescaled",
    )
