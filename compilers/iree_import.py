"""The two ways a bundle enters IREE, each as MLIR text whose op locations name their source.

onnx: the bundle's canonical ONNX graph through IREE's ONNX importer (the library behind
`iree-import-onnx`), which gives every op the location `loc("<ONNX node name>")`.

torch: the bundle's torch.export program, decomposed to core ATen here (so the decomposed
graph's provenance can be read, as compilers/tvm_relax_kernels does), then imported by
iree-turbine's `aot.export`. turbine's FX importer turns a node's stack trace into its op
location, so before import each node's stack trace is replaced by one frame
`File "fx:<node name>", line 1,`: every op's location then names its decomposed FX node,
which `cost_model.graph.fx_origins` takes back to the bundle's pt2 node and
`tvm_relax_kernels.pt2_to_onnx` to the canonical ONNX nodes.

Both print with debug info, so the locations survive into `iree-compile`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FX_PREFIX = "fx:"


@dataclass
class Imported:
    mlir: Path  # MLIR text with locations
    input_type: str  # iree-compile --iree-input-type
    function: str  # the entry function of the compiled module
    # a location name (ONNX node, or "fx:<decomposed FX node>") -> canonical ONNX nodes
    loc_to_onnx: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def import_onnx(onnx_path: Path, out: Path) -> Imported:
    import onnx
    from iree.compiler import ir
    from iree.compiler.extras import onnx_importer

    model = onnx.load(str(onnx_path))
    try:  # as iree-import-onnx does: shape inference with data propagation first
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - the importer then works from the graph's own shapes
        pass
    context = ir.Context()
    info = onnx_importer.ModelInfo(model)
    module = info.create_module(context=context).operation
    onnx_importer.NodeImporter.define_function(info.main_graph, module).import_all()
    module.verify()
    out.write_text(module.get_asm(enable_debug_info=True))
    names = [n.name for n in model.graph.node]
    return Imported(out, "onnx", model.graph.name or "main_graph", {n: [n] for n in names},
                    ["imported from the bundle's ONNX graph with IREE's ONNX importer "
                     "(iree.compiler.extras.onnx_importer, as iree-import-onnx); op locations are "
                     "the ONNX node names"])


def import_torch(pt2_path: Path, onnx_path: Path | None, out: Path) -> Imported:
    import torch
    from iree.turbine import aot

    from ground.fx_nodes import fx_origins
    from compilers.tvm_relax_kernels import _aten_name, pt2_to_onnx

    ep = torch.export.load(str(pt2_path))
    original = {n.name for n in ep.graph.nodes}
    fx_nodes = [(n.name, _aten_name(n.target)) for n in ep.graph.nodes if n.op == "call_function"]
    dec = ep.run_decompositions(_decompositions())
    for node in dec.graph.nodes:
        node.meta["stack_trace"] = f'  File "{FX_PREFIX}{node.name}", line 1, in forward\n'
    exported = aot.export(dec)
    out.write_text(exported.mlir_module.operation.get_asm(enable_debug_info=True))
    notes = ["imported from the bundle's torch.export program with iree-turbine aot.export "
             "(core-ATen decomposition run first, aten.squeeze.dims as a view without its size-1 dims: "
             "IREE's torch input conversion has no pattern for it, and the recurrent blocks' "
             "exports use it); op locations are the decomposed FX node names"]
    loc_to_onnx: dict[str, list[str]] = {}
    if onnx_path is not None:
        pt2_onnx, more = pt2_to_onnx(fx_nodes, onnx_path)
        notes.extend(more)
        roots = fx_origins(dec.graph, original)
        for node in dec.graph.nodes:
            root = roots.get(node.name)
            if root and pt2_onnx.get(root):
                loc_to_onnx[FX_PREFIX + node.name] = pt2_onnx[root]
    return Imported(out, "torch", "main", loc_to_onnx, notes)


def _decompositions():
    """torch.export's default (core ATen) table plus aten.squeeze.dims, which core ATen keeps
    and IREE's torch input conversion does not legalise."""
    import torch

    table = torch.export.default_decompositions()
    aten = torch.ops.aten

    def squeeze_dims(x, dims):
        # a view without the size-1 dims (dropping them never breaks the view's strides)
        rank = x.dim()
        drop = {d % rank for d in dims} if rank else set()
        return aten.view.default(x, [s for i, s in enumerate(x.shape) if not (i in drop and s == 1)])

    table[aten.squeeze.dims] = squeeze_dims
    return table


_QUOTED = re.compile(r'"([^"]*)"')


def location_names(location: str, loc_to_onnx: dict[str, list[str]]) -> list[str]:
    """The canonical ONNX nodes named in one printed MLIR location (a name, a file of a
    torch import's "fx:<node>", or a fused/callsite location of several)."""
    out: list[str] = []
    for text in _QUOTED.findall(location):
        for node in loc_to_onnx.get(text, []):
            if node not in out:
                out.append(node)
    return out
