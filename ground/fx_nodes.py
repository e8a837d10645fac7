"""Which torch FX node each canonical ONNX node came from: how compilers that see the
torch.export graph join their kernels to ONNX nodes."""

from __future__ import annotations

import onnx


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
