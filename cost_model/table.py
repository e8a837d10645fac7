"""A graph rebuilt from its stored node table, so stored graphs get the same features as a
user's ONNX file.

Datasets and the store keep each graph as a node table (op types, attributes, tensor
names and shapes; no weights). `model_from_table` turns it back into a shape-annotated
ONNX graph whose weights are zeros of the right shape: every static feature (MACs,
bytes, positions) depends on shapes and attributes only, never on weight values, so
`features.graph_features` gives the same numbers on it as on the original file.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _attribute(name: str, value: Any):
    """An ONNX attribute from its stored JSON form (tensors were kept as small lists or shapes)."""
    if isinstance(value, dict):
        if "tensor_shape" in value:
            return helper.make_attribute(name, numpy_helper.from_array(
                np.zeros(value["tensor_shape"], np.float32)))
        return None  # a subgraph: its body is not stored
    if isinstance(value, list) and value and isinstance(value[0], list):
        return None  # nested list: not an ONNX attribute form
    return helper.make_attribute(name, value)


def model_from_table(rows: list[dict[str, Any]], graph_inputs: list[str], opset: int = 20) -> onnx.ModelProto:
    """rows: node-table rows (inputs/outputs/shapes/attrs as JSON text or values);
    graph_inputs: the names of the graph's real inputs (all other unproduced tensors are weights)."""
    produced = {o for r in rows for o in _loads(r["outputs"])}
    shapes: dict[str, Any] = {}
    nodes, domains = [], set()
    for r in rows:
        ins, outs = _loads(r["inputs"]), _loads(r["outputs"])
        for name, shape in zip(ins, _loads(r["input_shapes"])):
            if name and shape is not None:
                shapes.setdefault(name, shape)
        for name, shape in zip(outs, _loads(r["output_shapes"])):
            if shape is not None:
                shapes[name] = shape
        domain = "" if r.get("domain") in (None, "", "ai.onnx") else r["domain"]
        domains.add(domain)
        node = helper.make_node(r["op_type"], ins, outs, name=r["name"], domain=domain)
        for key, value in (_loads(r["attrs"]) or {}).items():
            attr = _attribute(key, value)
            if attr is not None:
                node.attribute.append(attr)
        nodes.append(node)
    weights = []
    seen: set[str] = set()
    for r in rows:
        for name in _loads(r["inputs"]):
            if name and name not in produced and name not in graph_inputs and name not in seen:
                seen.add(name)
                shape = shapes.get(name)
                static = shape is not None and all(isinstance(d, int) for d in shape)
                weights.append(numpy_helper.from_array(np.zeros(shape if static else [0], np.float32), name))

    def info(name: str):
        shape = shapes.get(name)
        dims = None if shape is None else [d if isinstance(d, int) else None for d in shape]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    read = {t for r in rows for t in _loads(r["inputs"])}
    outputs = [o for r in rows for o in _loads(r["outputs"]) if o and o not in read]
    graph = helper.make_graph(
        nodes, "table", [info(n) for n in graph_inputs], [info(n) for n in outputs], initializer=weights,
        value_info=[info(n) for n in produced if n not in outputs])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in sorted(domains) if d]
    return helper.make_model(graph, opset_imports=opsets)
