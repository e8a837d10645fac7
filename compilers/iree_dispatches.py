"""IREE dispatches: which ONNX nodes each covers, and their time from IREE's HAL profiler.

Kernel map: `iree-compile --iree-hal-dump-executable-sources-to` writes every executable's
MLIR (with `--mlir-print-debuginfo`, its op locations). Inside each dispatch function the
compute ops (linalg and iree_linalg_ext, except `linalg.fill`, whose zero-init constant IREE
shares between matmuls before it forms dispatches) keep the location of the op they were
lowered from, which compilers/iree_import made name the source node.

Timing: the runtime's HAL-native profiler (`iree-benchmark-module
--device_profiling_mode=host-execution`) records one host-execution event per dispatch with
start and end on IREE's host clock; `iree-profile dispatch --dispatch_events --format=jsonl`
lists them with their submission, so the events of one inference are grouped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ground.op_timing import OpProfile, OpTiming
from compilers.iree_import import location_names

SKIPPED_OPS = {"linalg.fill", "linalg.yield", "linalg.index"}


def _walk(op, out: list) -> None:
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                out.append(child.operation)
                _walk(child.operation, out)


def dispatch_sources(sources_dir: Path, loc_to_onnx: dict[str, list[str]]) -> dict[str, dict]:
    """Dispatch export name -> {"onnx": covered ONNX nodes, "ops": compute ops it holds}."""
    from iree.compiler import ir

    context = ir.Context()
    context.allow_unregistered_dialects = True
    out: dict[str, dict] = {}
    for path in sorted(sources_dir.glob("*.mlir")):
        module = ir.Module.parse(path.read_text(), context)
        ops: list = []
        _walk(module.operation, ops)
        exports = [str(op.attributes["sym_name"]).strip('"') for op in ops if op.name == "hal.executable.export"]
        for func in (op for op in ops if op.name == "func.func"):
            name = str(func.attributes["sym_name"]).strip('"')
            if name not in exports:
                continue
            body: list = []
            _walk(func, body)
            nodes: list[str] = []
            kinds: list[str] = []
            for op in body:
                if op.name in SKIPPED_OPS or not op.name.startswith(("linalg.", "iree_linalg_ext.")):
                    continue
                kind = op.name.split(".", 1)[1]
                if kind not in kinds:
                    kinds.append(kind)
                for node in location_names(str(op.location), loc_to_onnx):
                    if node not in nodes:
                        nodes.append(node)
            out[name] = {"onnx": nodes, "ops": kinds}
    return out


def op_type(name: str, ops: list[str]) -> str:
    """`main_graph$async_dispatch_1_matmul_1x64x64_f32` -> its compute ops, e.g. 'matmul+generic'."""
    return "+".join(ops) if ops else name.rsplit("$", 1)[-1]


def parse_events(lines: list[str]) -> dict[int, list[tuple[str, int]]]:
    """iree-profile's JSONL dispatch events -> submission id -> [(dispatch, duration ns)] in order."""
    per_submission: dict[int, list[tuple[int, str, int]]] = {}
    for line in lines:
        if not line.strip():
            continue
        event = json.loads(line)
        if not event.get("type", "").endswith("dispatch_event") or not event.get("valid", False):
            continue
        per_submission.setdefault(int(event["submission_id"]), []).append(
            (int(event.get("start_host_time_ns", 0)), event["key"], int(event["duration_ns"])))
    return {sid: [(key, dur) for _, key, dur in sorted(events)] for sid, events in sorted(per_submission.items())}


def per_inference(submissions: dict[int, list[tuple[str, int]]], calls: int) -> list[list[tuple[str, int]]] | None:
    """Submissions -> the dispatches of each of `calls` inferences. An inference is one
    submission, or several in a row when host code between dispatches splits it (a recurrent
    loop submits once per step); None when the count does not divide evenly."""
    ordered = list(submissions.values())
    if calls <= 0 or not ordered or len(ordered) % calls:
        return None
    k = len(ordered) // calls
    return [[event for sub in ordered[i:i + k] for event in sub] for i in range(0, len(ordered), k)]


def profile_from_events(runs: list[list[tuple[str, int]]], kernels: dict[str, dict],
                        instrumented_us: float | None, plain_us: float | None, notes: str) -> OpProfile:
    """Per-dispatch time per inference, summed over its calls in that inference."""
    order: list[str] = []
    for events in runs:
        for key, _ in events:
            if key not in order:
                order.append(key)
    ops = []
    for key in order:
        per_run = np.array([sum(d for k, d in events if k == key) for events in runs], dtype=np.float64) / 1e3
        calls = sum(1 for k, _ in runs[0] if k == key) if runs else 0
        info = kernels.get(key, {"onnx": [], "ops": []})
        ops.append(OpTiming.from_runs(key, op_type(key, info["ops"]), list(info["onnx"]), calls, per_run,
                                      provider="iree-llvm-cpu"))
    overhead = ""
    if instrumented_us and plain_us:
        overhead = (f"; profiling overhead: whole inference {plain_us:.1f} µs unprofiled -> {instrumented_us:.1f} µs "
                    f"profiled ({instrumented_us / plain_us:.2f}x), medians of iree-benchmark-module's own loop "
                    "with and without profiling")
    return OpProfile(method="iree-hal-profile", ops=ops, runs=len(runs), instrumented_whole_us=instrumented_us,
                     notes=notes + overhead)
