"""The node table of a canonical ONNX graph: what per-op rows join to.

One row per node with its op type, attributes, tensor names and inferred shapes; weights
are not kept (their shapes are). The results store saves this table per model so a cost
model can join measured kernels (via their `onnx_nodes`) to graph structure.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper, numpy_helper

from ground.fx_nodes import fx_node_of


def _shape_of(value_info) -> list[int | str] | None:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]


def _attr_value(attr) -> Any:
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, onnx.TensorProto):
        array = numpy_helper.to_array(value)
        return array.tolist() if array.size <= 16 else {"tensor_shape": list(array.shape)}
    if isinstance(value, (list, tuple)):
        return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in value
                if not isinstance(v, (onnx.GraphProto, onnx.TensorProto))]
    if isinstance(value, onnx.GraphProto):
        return {"subgraph_nodes": len(value.node)}
    return value


def node_table(model: onnx.ModelProto) -> list[dict[str, Any]]:
    """Rows of {index, name, op_type, domain, inputs, outputs, input_shapes, output_shapes, attrs}."""
    graph = model.graph
    shapes: dict[str, Any] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        shapes[vi.name] = _shape_of(vi)
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    rows = []
    for index, node in enumerate(graph.node):
        rows.append(
            {
                "index": index,
                "name": node.name,
                "op_type": node.op_type,
                "domain": node.domain or "ai.onnx",
                "inputs": list(node.input),
                "outputs": list(node.output),
                "input_shapes": [shapes.get(n) for n in node.input],
                "output_shapes": [shapes.get(n) for n in node.output],
                "attrs": {a.name: _attr_value(a) for a in node.attribute},
                "fx_node": fx_node_of(node),
            }
        )
    return rows


def ensure_unique_node_names(model: onnx.ModelProto) -> None:
    """Name every node uniquely: per-op rows of every compiler refer to these names."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        while name in seen:
            name = f"{name}_{index}"
        node.name = name
        seen.add(name)
