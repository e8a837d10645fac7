"""Static features of every node of a canonical ONNX graph: what the cost model learns from.

Nothing runs: shapes come from the graph's own shape inference (the canonical graphs of
`auditor.export` carry them), multiply-accumulates from `onnx-tool`'s per-operator
counters where it covers the op, and from one rule of our own where it does not
(elementwise ops: one operation per output element). An op neither covers is flagged
`unknown-op` with no count, never dropped or given a made-up zero. Graph position
(depth from the inputs, fan-in and fan-out) comes from a topological pass over the nodes.

FEATURE_VERSION changes whenever a feature's meaning changes: a cost model fitted on
features of another version must not be used with these.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import onnx
from onnx import helper

FEATURE_VERSION = 1

# Ops whose cost is one operation per output element (onnx-tool counts most of them too;
# this rule covers the ones it does not, e.g. newer opsets or a failed counter).
ELEMENTWISE = frozenset(
    "Abs Add And Ceil Celu Clip Cos Div Elu Equal Erf Exp Floor Gelu Greater GreaterOrEqual "
    "HardSigmoid HardSwish LeakyRelu Less LessOrEqual Log Max Mean Min Mish Mod Mul Neg Not Or "
    "PRelu Pow Reciprocal Relu Round Selu Sigmoid Sign Sin Softplus Softsign Sqrt Sub Sum Tan Tanh "
    "ThresholdedRelu Where Xor".split())
# Ops that only move or relabel data: no arithmetic, their cost is bytes.
DATA_MOVEMENT = frozenset(
    "Cast Concat Expand Flatten Gather GatherElements GatherND Identity Pad Reshape Shape Slice "
    "Split Squeeze Tile Transpose Unsqueeze Constant ConstantOfShape".split())
CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
# Attributes that change a kernel's shape of work, kept as features (others are dropped).
SHAPE_ATTRS = ("kernel_shape", "strides", "dilations", "group", "pads", "hidden_size", "direction",
               "axis", "transA", "transB", "perm")


@dataclass
class NodeFeatures:
    """One ONNX node's static features. Byte counts assume the tensors' own dtypes."""

    index: int
    name: str
    op_type: str
    domain: str
    macs: float | None  # multiply-accumulates; None: no counter covers this op (see flags)
    counter: str  # what counted macs: "onnx-tool", "elementwise-rule", "data-movement", "none"
    bytes_in: int  # activations read (inputs that are not weights)
    bytes_out: int  # outputs written
    weight_bytes: int  # initializers (weights, constants) read
    elements_out: int
    intensity: float | None  # macs per byte moved (in + out + weights)
    depth: int  # longest path, in nodes, from a graph input
    fan_in: int  # nodes feeding this one
    fan_out: int  # nodes fed by this one
    input_shapes: list[list[int] | None] = field(default_factory=list)
    output_shapes: list[list[int] | None] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # unknown-op, dynamic-shape, control-flow

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GraphFeatures:
    nodes: list[NodeFeatures]
    feature_version: int = FEATURE_VERSION
    counter_version: str = ""

    @property
    def total_macs(self) -> float:
        return float(sum(n.macs or 0.0 for n in self.nodes))

    @property
    def weight_bytes(self) -> int:
        return sum(n.weight_bytes for n in self.nodes)

    @property
    def activation_bytes(self) -> int:
        return sum(n.bytes_out for n in self.nodes)

    @property
    def unknown_ops(self) -> list[str]:
        return sorted({n.op_type for n in self.nodes if "unknown-op" in n.flags})

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        return counts


def counter_version() -> str:
    try:
        return f"onnx-tool {metadata.version('onnx-tool')}"
    except metadata.PackageNotFoundError:
        return "onnx-tool missing"


def tensor_info(model: onnx.ModelProto) -> dict[str, tuple[list[int] | None, int]]:
    """Tensor name -> (static shape or None when any dimension is unknown, bytes per element)."""
    info: dict[str, tuple[list[int] | None, int]] = {}
    graph = model.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        size = _itemsize(tt.elem_type)
        if not tt.HasField("shape"):
            info[vi.name] = (None, size)
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        info[vi.name] = (None if any(d is None for d in dims) else dims, size)
    for init in graph.initializer:
        info[init.name] = (list(init.dims), _itemsize(init.data_type))
    for node in graph.node:  # Constant nodes hold weights too
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    info[node.output[0]] = (list(attr.t.dims), _itemsize(attr.t.data_type))
    return info


def _itemsize(elem_type: int) -> int:
    try:
        return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return 4  # float8/int4 and friends: counted as 4 bytes, rare in our graphs


def _numel(shape: list[int] | None) -> int:
    return int(math.prod(shape)) if shape is not None else 0


def _onnx_tool_macs(model: onnx.ModelProto) -> dict[str, float]:
    """Node name -> MACs from onnx-tool's per-op counters, fed the graph's own shapes (its
    whole-graph shape inference is not used: it fails on some recurrent graphs). Ops it
    cannot count are left out."""
    import onnx_tool

    counted: dict[str, float] = {}
    # onnx-tool warns (and would answer 0) for ops it has no counter for: neither is a count
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            graph = onnx_tool.Model(model).graph
        except Exception:  # noqa: BLE001 - a graph onnx-tool cannot read falls back to our rules
            return counted
        uncounted = {m[1] for w in caught if (m := re.search(r"node (\S+) is not regist", str(w.message)))}
        for name, node in graph.nodemap.items():
            if node.op_type in uncounted:
                continue
            try:
                ins = [graph.tensormap[i] for i in node.input if i]
                outs = [graph.tensormap[o] for o in node.output if o]
                macs = node.profile(ins, outs)
            except Exception:  # noqa: BLE001 - a counter that cannot take these shapes
                continue
            try:  # a dimension onnx-tool could not resolve leaves a symbol ('unk__0...'), not a count
                counted[name] = float(macs[0] if isinstance(macs, (list, tuple)) else macs)
            except (TypeError, ValueError):
                continue
    return counted


def _attrs(node) -> dict[str, Any]:
    out = {}
    for attr in node.attribute:
        if attr.name in SHAPE_ATTRS:
            value = helper.get_attribute_value(attr)
            out[attr.name] = value.decode() if isinstance(value, bytes) else (
                list(value) if isinstance(value, (list, tuple)) else value)
    return out


def _positions(model: onnx.ModelProto) -> dict[str, tuple[int, int, int]]:
    """Node name -> (depth from the inputs, fan-in, fan-out) over the producer->consumer DAG.

    A plain Kahn pass over the edges (networkx did this before; importing it cost more than
    `auditor predict`'s whole budget for a small graph)."""
    producer = {}
    for node in model.graph.node:
        for out in node.output:
            producer[out] = node.name
    preds: dict[str, set[str]] = {node.name: set() for node in model.graph.node}
    succs: dict[str, set[str]] = {node.name: set() for node in model.graph.node}
    for node in model.graph.node:
        for tensor in node.input:
            if tensor in producer and producer[tensor] != node.name:
                preds[node.name].add(producer[tensor])
                succs[producer[tensor]].add(node.name)
    waiting = {name: len(p) for name, p in preds.items()}
    ready = [name for name, count in waiting.items() if count == 0]
    depth: dict[str, int] = {}
    while ready:
        name = ready.pop()
        depth[name] = 1 + max((depth[p] for p in preds[name]), default=-1)
        for nxt in succs[name]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    return {name: (depth.get(name, 0), len(preds[name]), len(succs[name])) for name in preds}


def graph_features(model: onnx.ModelProto) -> GraphFeatures:
    """Features of every node of a shape-inferred ONNX graph, in graph order."""
    info = tensor_info(model)
    weights = {i.name for i in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    counted = _onnx_tool_macs(model)
    positions = _positions(model)
    nodes = []
    for index, node in enumerate(model.graph.node):
        flags = []
        ins = [info.get(t, (None, 4)) for t in node.input if t]
        outs = [info.get(t, (None, 4)) for t in node.output if t]
        if any(shape is None for shape, _ in ins + outs):
            flags.append("dynamic-shape")
        act_in = [(s, b) for t, (s, b) in zip([t for t in node.input if t], ins) if t not in weights]
        w_in = [(s, b) for t, (s, b) in zip([t for t in node.input if t], ins) if t in weights]
        bytes_in = sum(_numel(s) * b for s, b in act_in)
        weight_bytes = sum(_numel(s) * b for s, b in w_in)
        bytes_out = sum(_numel(s) * b for s, b in outs)
        elements_out = sum(_numel(s) for s, _ in outs)
        if node.op_type in CONTROL_FLOW:
            flags.append("control-flow")
        if node.op_type == "Constant":
            macs, counter = 0.0, "data-movement"
        elif node.name in counted and node.domain in ("", "ai.onnx") and not (
                counted[node.name] == 0 and node.op_type in ELEMENTWISE):  # onnx-tool's 0 for Erf
            macs, counter = counted[node.name], "onnx-tool"
        elif node.op_type in ELEMENTWISE and node.domain in ("", "ai.onnx"):
            macs, counter = float(elements_out), "elementwise-rule"
        elif node.op_type in DATA_MOVEMENT and node.domain in ("", "ai.onnx"):
            macs, counter = 0.0, "data-movement"
        else:
            macs, counter = None, "none"
            flags.append("unknown-op")
        moved = bytes_in + bytes_out + weight_bytes
        depth, fan_in, fan_out = positions.get(node.name, (0, 0, 0))
        nodes.append(NodeFeatures(
            index=index, name=node.name, op_type=node.op_type, domain=node.domain or "ai.onnx",
            macs=macs, counter=counter, bytes_in=bytes_in, bytes_out=bytes_out,
            weight_bytes=weight_bytes, elements_out=elements_out,
            intensity=(macs / moved) if macs is not None and moved else None,
            depth=depth, fan_in=fan_in, fan_out=fan_out,
            input_shapes=[s for s, _ in ins], output_shapes=[s for s, _ in outs],
            attrs=_attrs(node), flags=flags))
    return GraphFeatures(nodes, counter_version=counter_version())
