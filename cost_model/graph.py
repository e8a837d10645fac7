"""The node table of a canonical ONNX graph: what per-op rows join to.

One row per node with its op type, attributes, tensor names and inferred shapes; weights
are not kept (their shapes are). The results store saves this table per model so a cost
model can join measured kernels (via their `onnx_nodes`) to graph structure.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper, numpy_helper


# Metadata key on canonical ONNX nodes: the torch FX node (torch.export graph) it came from.
FX_NODE_KEY = "auditor.fx_node"


def fx_node_of(node) -> str | None:
    for prop in node.metadata_props:
        if prop.key == FX_NODE_KEY:
            return prop.value
    return None


def exporter_fx_name(node) -> str | None:
    """The FX node name torch's ONNX exporter recorded ('%linear_1 : ...' -> 'linear_1')."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.fx_node" and prop.value.startswith("%"):
            return prop.value[1:].split(" ", 1)[0]
    return None


def fx_origins(graph, original_names: set[str]) -> dict[str, str]:
    """Decomposed FX node name -> the node of the bundle's (undecomposed) program it came from.

    torch records each decomposed node's ancestry in `node.meta["from_node"]` (NodeSource
    chains); the nearest ancestor whose name is a node of the original program wins."""
    roots: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        chain: list[str] = []
        sources = list(node.meta.get("from_node") or [])
        while sources:
            source = sources.pop()
            chain.append(getattr(source, "name", ""))
            sources.extend(getattr(source, "from_node", None) or [])
        root = next((name for name in chain if name in original_names), None)
        if root is None and node.name in original_names:
            root = node.name
        if root is not None:
            roots[node.name] = root
    return roots


def fx_node_map(model: onnx.ModelProto) -> dict[str, list[str]]:
    """FX node name -> canonical ONNX node names it became (how torch-side compilers,
    which see the torch.export graph, join their kernels to the ONNX graph)."""
    mapping: dict[str, list[str]] = {}
    for node in model.graph.node:
        fx = fx_node_of(node)
        if fx:
            mapping.setdefault(fx, []).append(node.name)
    return mapping


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
