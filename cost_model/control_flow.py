"""A graph with If nodes, flattened for costing: each If becomes the nodes of the branch that
runs. Published streaming models keep their whole network inside If branches (Silero VAD
picks its 16 kHz or 8 kHz network on `sr`, then squeezes by a state's shape), so costing the
top-level graph alone would predict a few Identities.

The branch that runs is known without running anything when the condition folds from
constants, the given scalar inputs (--arg sr=16000) and static shapes (Shape, Size, Gather,
Equal, ...): `_value` evaluates only those ops, on those values. Otherwise the heavier
branch (more MACs) is costed, which a deadline wants, and the caller says so. Loop and Scan
stay as they are (one unknown op each: their trip counts are data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cost_model.features import graph_features, tensor_info

MAX_IFS = 256  # a bound on the flattening, far above any published audio model's Ifs
FOLD_LIMIT = 4096  # elements: shape operands and conditions, never a tensor of data


@dataclass
class Flattened:
    model: onnx.ModelProto
    decided: int = 0  # If nodes whose condition folded from constants, arguments and shapes
    guessed: list[str] = field(default_factory=list)  # If nodes costed by their heavier branch

    def flag(self) -> str | None:
        if not self.guessed:
            return None
        return (f"control flow: {len(self.guessed)} If node(s) costed by their heavier branch (the condition "
                f"depends on data; {self.decided} more were decided from shapes and --arg values)")


_FOLD: dict[str, Callable] = {
    "Identity": lambda a: a, "Not": np.logical_not, "Equal": np.equal, "Greater": np.greater,
    "Less": np.less, "GreaterOrEqual": np.greater_equal, "LessOrEqual": np.less_equal,
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor, "Add": np.add, "Sub": np.subtract,
    "Mul": np.multiply, "Neg": np.negative, "Abs": np.abs, "Max": np.maximum, "Min": np.minimum,
}


def _known(model: onnx.ModelProto, numbers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Values known before anything runs: the number inputs and the small initializers."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
              if int(np.prod(t.dims)) <= FOLD_LIMIT}
    return {**values, **{k: np.asarray(v) for k, v in numbers.items()}}


def _constant(attrs: dict):
    """A Constant node's value (any of its attribute forms), None for a sparse one."""
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    return None


def _ints(a) -> list[int]:
    return [int(x) for x in np.asarray(a).reshape(-1)]


def _reshape(data, shape, allowzero: int):
    dims = _ints(shape)
    if not allowzero:
        dims = [data.shape[k] if d == 0 else d for k, d in enumerate(dims)]
    return data.reshape(dims)


def _slice(data, starts, ends, axes=None, steps=None):
    axes = _ints(axes) if axes is not None else list(range(len(_ints(starts))))
    steps = _ints(steps) if steps is not None else [1] * len(axes)
    index = [slice(None)] * data.ndim
    for a, b, e, st in zip(axes, _ints(starts), _ints(ends), steps):
        index[a] = slice(b, e, st)
    return data[tuple(index)]


def _evaluate(op: str, args: list, attrs: dict):
    """One node on known small values; None for an op this does not evaluate."""
    if op in _FOLD:
        return _FOLD[op](*args)
    if op == "Div":
        a, b = args
        return np.trunc(a / b).astype(a.dtype) if a.dtype.kind in "iu" else a / b
    if op == "Cast":
        return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "Gather":
        return np.take(args[0], args[1], axis=attrs.get("axis", 0))
    if op in ("Squeeze", "Unsqueeze"):
        axes = tuple(_ints(args[1] if len(args) > 1 else attrs.get("axes", ())))
        if op == "Squeeze":
            return np.squeeze(args[0], axis=axes or None)
        return np.expand_dims(args[0], axis=axes)
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=attrs.get("axis", 0))
    if op == "Reshape":
        return _reshape(args[0], args[1], attrs.get("allowzero", 0))
    if op == "Slice":
        return _slice(*args)
    if op == "Transpose":
        return np.transpose(args[0], attrs.get("perm"))
    if op == "ConstantOfShape":
        fill = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
        return np.full(_ints(args[0]), fill.reshape(-1)[0], dtype=fill.dtype)
    if op == "Range":
        return np.arange(args[0], args[1], args[2])
    return None


def _value(node, values: dict, shapes: dict):
    """The node's one output from known values (constants, number inputs, what earlier
    nodes folded to) and static shapes, or None: a condition or a shape operand, never
    anything computed from the model's data."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Constant":
        return _constant(attrs)
    if node.op_type in ("Shape", "Size"):
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return np.array(int(np.prod(shape)), dtype=np.int64)
        return np.array(shape, dtype=np.int64)[attrs.get("start", 0):attrs.get("end", len(shape))]
    if any(i and i not in values for i in node.input):
        return None
    try:
        result = _evaluate(node.op_type, [values[i] if i else None for i in node.input], attrs)
    except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError):
        return None
    return None if result is None or np.asarray(result).size > FOLD_LIMIT else np.asarray(result)


def fold_shape_arithmetic(model: onnx.ModelProto, numbers: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Nodes whose small output follows from constants, number inputs and static shapes (a
    computed Pad or Reshape operand) become initializers, so shape inference reaches the
    kernels after them, and Constant nodes become initializers: what onnxsim does for
    compile-all's graphs (the training data has no Constant node), without running anything.
    The caller's model is left as it was."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    model = copy
    for _ in range(16):  # the caller's graph is shape-inferred already: infer again only after a fold
        graph = model.graph
        values = _known(model, numbers)
        shapes = {name: tuple(shape) for name, (shape, _) in tensor_info(model).items() if shape is not None}
        keep, folded = [], []
        for node in graph.node:
            if node.op_type in ("If", "Loop", "Scan") or len(node.output) != 1:
                keep.append(node)
                continue
            # a Constant is an initializer in compile-all's (onnxsim's) graphs, whatever its size
            value = _value(node, values, shapes)
            if value is None:
                keep.append(node)
            else:  # in node order, so a chain of shape arithmetic folds in one pass
                values[node.output[0]] = value
                folded.append(numpy_helper.from_array(value, node.output[0]))
        if not folded:
            return model
        done = {t.name for t in folded}
        graph.initializer.extend(folded)
        del graph.node[:]
        graph.node.extend(keep)
        kept_values = [vi for vi in graph.value_info if vi.name not in done]
        del graph.value_info[:]
        graph.value_info.extend(kept_values)
        model = _infer(model)
    return model


def _rename_inputs(nodes, old: str, new: str) -> None:
    """Every use of tensor `old` by these nodes, and by the subgraphs they hold, reads `new`."""
    for node in nodes:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(attr.g.node, old, new)


def _with_branch(model: onnx.ModelProto, index: int, branch: onnx.GraphProto) -> onnx.ModelProto:
    """`model` with its node `index` (an If) replaced by `branch`'s nodes, writing the If's outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    node = graph.node[index]
    body = [onnx.NodeProto() for _ in branch.node]
    for copy, original in zip(body, branch.node):
        copy.CopyFrom(original)
    produced = {o for n in body for o in n.output}
    for result, target in zip(branch.output, node.output):
        if not target:
            continue
        if result.name in produced:  # the branch's node writes the If's output directly
            for n in body:
                for k, o in enumerate(n.output):
                    if o == result.name:
                        n.output[k] = target
            _rename_inputs(body, result.name, target)
        else:  # the branch passes an outer tensor through
            body.append(helper.make_node("Identity", [result.name], [target], name=f"{node.name}/{target}"))
    graph.initializer.extend(branch.initializer)
    rest = list(graph.node[index + 1:])
    del graph.node[index:]
    graph.node.extend(body + rest)
    return out


def flatten_ifs(model: onnx.ModelProto, args: dict[str, np.ndarray]) -> Flattened:
    """Replace every If (nested ones too) by the branch that runs, or the heavier one (more
    MACs). `args`: values of scalar inputs."""
    result = Flattened(fold_shape_arithmetic(model, args))
    for _ in range(MAX_IFS):
        index = next((k for k, n in enumerate(result.model.graph.node) if n.op_type == "If"), None)
        if index is None:
            return result
        current = result.model
        node = current.graph.node[index]
        branches = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
        condition = _known(current, args).get(node.input[0])  # folded already, if it can be
        if condition is not None and condition.size == 1:
            result.decided += 1
            chosen = "then_branch" if bool(condition.reshape(())) else "else_branch"
            result.model = fold_shape_arithmetic(_infer(_with_branch(current, index, branches[chosen])), args)
            continue
        candidates = [fold_shape_arithmetic(_infer(_with_branch(current, index, branches[b])), args)
                      for b in ("then_branch", "else_branch")]
        weights = [graph_features(m).total_macs for m in candidates]
        result.guessed.append(node.name)
        result.model = candidates[0] if weights[0] >= weights[1] else candidates[1]
    return result


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
