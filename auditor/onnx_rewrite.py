"""Exact ONNX rewrites that let onnx2torch convert graphs published models contain.

Each rewrite replaces a node by nodes that compute the same values and that onnx2torch
converts; the converted module is still checked against the reference afterwards.

- `Pad` in reflect/edge mode on one axis that is not the last (TF-converted audio models
  pad time in an NHWC-like layout): torch pads those modes on trailing axes only, so the
  axis is moved last with a Transpose, padded, and moved back.
- `Clip` whose min or max is computed (a dB floor from the signal's maximum): onnx2torch
  takes constant bounds only, so it becomes Max(x, min) then Min(., max).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _constants(graph) -> dict[str, list]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _pad_on_inner_axis(node, constants, fresh) -> list | None:
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
    if mode not in ("reflect", "edge") or len(node.input) < 2 or node.input[1] not in constants:
        return None
    if len(node.input) > 3 and node.input[3]:  # explicit axes: leave it to the converter
        return None
    pads = [int(p) for p in constants[node.input[1]].tolist()]
    rank = len(pads) // 2
    padded = [a for a in range(rank) if pads[a] or pads[a + rank]]
    if len(padded) != 1 or padded[0] == rank - 1:
        return None
    axis = padded[0]
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]  # a swap: its own inverse
    moved = [0] * (2 * rank)
    moved[rank - 1], moved[2 * rank - 1] = pads[axis], pads[axis + rank]
    pads_name, before, after = fresh("pads"), fresh("moved"), fresh("padded")
    return [
        helper.make_node("Constant", [], [pads_name], name=fresh("pads_const"),
                         value=numpy_helper.from_array(np.array(moved, dtype=constants[node.input[1]].dtype))),
        helper.make_node("Transpose", [node.input[0]], [before], perm=perm, name=fresh("to_last")),
        helper.make_node("Pad", [before, pads_name, *node.input[2:3]], [after], mode=mode, name=node.name),
        helper.make_node("Transpose", [after], [node.output[0]], perm=perm, name=fresh("back")),
    ]


def _clip_with_computed_bounds(node, constants, fresh) -> list | None:
    bounds = list(node.input[1:3])
    if not any(b and b not in constants for b in bounds):
        return None
    out, current = [], node.input[0]
    for i, (bound, op) in enumerate(zip(bounds, ("Max", "Min"))):
        if not bound:
            continue
        last = i == len(bounds) - 1 or not any(bounds[i + 1:])
        target = node.output[0] if last else fresh("clipped_low")
        out.append(helper.make_node(op, [current, bound], [target], name=f"{node.name}_{op.lower()}"))
        current = target
    return out or None


REWRITES = {"Pad": ("reflect/edge Pad moved to the last axis", _pad_on_inner_axis),
            "Clip": ("Clip with computed bounds as Max/Min", _clip_with_computed_bounds)}


def for_onnx2torch(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy of the model with the rewrites applied, and how many of each were made."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = _constants(graph)
    taken = {n.name for n in graph.node} | {v for n in graph.node for v in n.output}
    counter = [0]

    def fresh(stem: str) -> str:
        while True:
            counter[0] += 1
            name = f"_auditor_{stem}_{counter[0]}"
            if name not in taken:
                taken.add(name)
                return name

    nodes, made = [], {}
    for node in graph.node:
        label, rewrite = REWRITES.get(node.op_type, (None, None))
        replacement = rewrite(node, constants, fresh) if rewrite else None
        if replacement:
            nodes.extend(replacement)
            made[label] = made.get(label, 0) + 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model, made
