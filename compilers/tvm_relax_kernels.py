"""Where TVM Relax kernels come from: import with provenance, then fused-kernel membership.

Relax carries no source spans through fusion, so provenance is attached at import time:
every binding the frontend emits while converting one source node (a torch FX node of the
decomposed ExportedProgram, or an ONNX node) is *named* after that node (BlockBuilder
name hints). LegalizeOps and FoldConstant keep binding variables, so after them each
binding of `main` still names its origin; bindings created without a name (nested
expressions the normaliser emits, helper bindings of a legalisation) precede the binding
they feed and inherit the next named binding's origin.

FuseOps keeps the variables of a group's internal bindings (same objects) but re-creates
each group output as a fresh `gv`, and rebinds the call in `main` to a fresh `lv`. Outputs
are therefore resolved by dataflow: a fused binding whose variable is unknown is matched
to the pre-fusion binding with the same operator/callee and the same (resolved)
arguments. That join is exact; when it fails (it has not here) the binding is matched by
operator and order and the count is reported.

Everything here imports TVM lazily; the module is only imported by the adapter's compile().
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ground.fx_nodes import fx_origins

# Name hints are "<source>__src"; the BlockBuilder makes repeated hints unique by appending
# digits ("addmm__src", "addmm__src1"), which the suffix keeps unambiguous.
HINT_SUFFIX = "__src"
_HINT = re.compile(r"^(?P<base>.+)__src\d*$")
_AUTO = re.compile(r"^lv\d*$")


# ----------------------------------------------------------------------------------------
# Import with provenance
# ----------------------------------------------------------------------------------------

def _naming_block_builder():
    from tvm import relax

    class NamingBlockBuilder(relax.BlockBuilder):
        """Gives every binding emitted without a name hint the current source node's name."""

        current = ""

        def emit(self, expr, name_hint=""):
            if not name_hint and NamingBlockBuilder.current:
                name_hint = NamingBlockBuilder.current + HINT_SUFFIX
            return super().emit(expr, name_hint)

    return NamingBlockBuilder


def _lv_number(name: str) -> int:
    return int(name[2:] or 0)


class _Tracker:
    """Which source node each binding of the imported `main` comes from.

    Converters name what they emit through `emit` (the name hint), but nested expressions
    the C++ normaliser binds get automatic names `lv<N>` from a counter. Probing the counter
    (`get_unique_name("lv")`, which only consumes a name) before and after each source
    node's conversion brackets the automatic names that node produced."""

    def __init__(self, bb_cls):
        self.bb_cls = bb_cls
        self.ranges: list[tuple[int, int, str]] = []  # (after, before, hint base)

    def convert(self, bb, hint: str, call):
        previous, self.bb_cls.current = self.bb_cls.current, hint
        low = _lv_number(bb.get_unique_name("lv")) if bb is not None and hint else None
        try:
            return call()
        finally:
            self.bb_cls.current = previous
            if low is not None:
                high = _lv_number(bb.get_unique_name("lv"))
                if high > low + 1:
                    self.ranges.append((low, high, hint))

    def sources(self, mod, hints: dict[str, str]) -> dict[Any, str]:
        """Imported main's binding variables -> source node names."""
        out: dict[Any, str] = {}
        for binding in _main_bindings(mod["main"]):
            name = binding.var.name
            match = _HINT.match(name)
            base = match.group("base") if match else None
            if base is None and _AUTO.match(name):
                n = _lv_number(name)
                base = next((h for low, high, h in self.ranges if low < n < high), None)
            if base is not None and base in hints:
                out[binding.var] = hints[base]
        return out


@dataclass
class Imported:
    mod: Any  # tvm.IRModule
    frontend: str  # "torch-export" or "onnx"
    hints: dict[str, str]  # name-hint base -> source node (decomposed FX node / ONNX node)
    var_sources: dict[Any, str] = field(default_factory=dict)  # imported main var -> source
    fx_roots: dict[str, str] = field(default_factory=dict)  # decomposed FX -> bundle pt2 node
    fx_nodes: list[tuple[str, str]] = field(default_factory=list)  # bundle pt2: (name, aten op)
    fx_onnx: dict[str, list[str]] = field(default_factory=dict)  # bundle pt2 node -> ONNX nodes
    notes: list[str] = field(default_factory=list)


def import_torch_export(pt2_path, onnx_path=None) -> Imported:
    """`from_exported_program` with each binding named after its decomposed FX node."""
    import torch
    from tvm import relax
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    bb_cls = _naming_block_builder()
    tracker = _Tracker(bb_cls)

    class Importer(ExportedProgramImporter):
        @property
        def block_builder(self):
            return self._naming_bb

        @block_builder.setter
        def block_builder(self, bb):
            self._naming_bb = bb_cls() if type(bb) is relax.BlockBuilder else bb

        def create_convert_map(self):
            def wrap(fn):
                def converter(node, *args):
                    return tracker.convert(self.block_builder, node.name, lambda: fn(node, *args))
                return converter

            return {k: wrap(v) for k, v in super().create_convert_map().items()}

        def _select(self, node):
            # TVM 0.27 lowers aten.select to take(mode="fast") with the index as given: a
            # negative index (x[:, -1]) reads out of bounds. Normalise it from the FX shape.
            x, dim, index = self.env[node.args[0]], node.args[1], node.args[2]
            if isinstance(index, int) and index < 0:
                size = node.args[0].meta["val"].shape[dim]
                index += int(size)
                fixed.append(node.name)
            return self.block_builder.emit(relax.op.take(x, relax.const(index, "int64"), dim))

    fixed: list[str] = []
    ep = torch.export.load(str(pt2_path))
    original = {n.name for n in ep.graph.nodes}
    # The same decomposition from_exported_program runs by default, done here so the
    # decomposed graph's provenance (from_node) can be read.
    dec = ep.run_decompositions()
    mod = Importer().from_exported_program(dec, False, False, False, None)
    names = {n.name: n.name for n in dec.graph.nodes if n.op == "call_function"}
    fx_nodes = [(n.name, _aten_name(n.target)) for n in ep.graph.nodes if n.op == "call_function"]
    notes = []
    if fixed:
        notes.append("workaround: negative aten.select index normalised before import "
                     f"({', '.join(fixed)}); TVM 0.27's take(mode='fast') reads out of bounds")
    fx_onnx: dict[str, list[str]] = {}
    if onnx_path is not None:
        fx_onnx, more = pt2_to_onnx(fx_nodes, onnx_path)
        notes.extend(more)
    return Imported(mod, "torch-export", names, tracker.sources(mod, names),
                    fx_origins(dec.graph, original), fx_nodes, fx_onnx, notes)


def pt2_to_onnx(fx_nodes, onnx_path) -> tuple[dict[str, list[str]], list[str]]:
    """Bundle pt2 node -> canonical ONNX nodes, with notes on how the join was made."""
    import onnx

    from ground.fx_nodes import fx_node_map, fx_node_of

    model = onnx.load(str(onnx_path), load_external_data=False)
    fx_map = fx_node_map(model)  # keyed by bundle pt2 node names (auditor.export traces them)
    original = {name for name, _ in fx_nodes}
    by_root = {name: nodes for name, nodes in fx_map.items() if name in original}
    notes = ["ONNX nodes joined to bundle pt2 nodes through the canonical graph's auditor.fx_node"]
    table = [(n.name, n.op_type, fx_node_of(n)) for n in model.graph.node]
    result, by_order = fx_to_onnx(fx_nodes, by_root, table)
    if by_order:
        notes.append("FX nodes whose ONNX nodes lost their origin record (onnxsim rewrote them) "
                     "joined by op type and order: " + ", ".join(by_order))
    return result, notes


def _aten_name(target) -> str:
    name = getattr(target, "__name__", str(target))  # "linear.default"
    return name.split(".")[0]


# aten op of a bundle pt2 node -> ONNX op types it may have become (for the order fallback)
_ONNX_TYPES = {
    "linear": {"Gemm", "MatMul"}, "addmm": {"Gemm", "MatMul"}, "mm": {"Gemm", "MatMul"},
    "matmul": {"MatMul", "Gemm"}, "bmm": {"MatMul"}, "conv1d": {"Conv"}, "conv2d": {"Conv"},
    "convolution": {"Conv"}, "relu": {"Relu"}, "tanh": {"Tanh"}, "sigmoid": {"Sigmoid"},
    "gelu": {"Gelu"}, "add": {"Add"}, "sub": {"Sub"}, "mul": {"Mul"}, "div": {"Div"},
    "layer_norm": {"LayerNormalization"}, "softmax": {"Softmax"}, "_softmax": {"Softmax"},
    "view": {"Reshape"}, "reshape": {"Reshape"}, "unflatten": {"Reshape"}, "flatten": {"Reshape"},
    "transpose": {"Transpose"}, "permute": {"Transpose"}, "cat": {"Concat"},
}


def fx_to_onnx(fx_nodes: list[tuple[str, str]], fx_map: dict[str, list[str]],
               onnx_nodes: list[tuple[str, str, str | None]]) -> tuple[dict[str, list[str]], list[str]]:
    """Bundle pt2 node -> canonical ONNX nodes: `fx_node_map` where it has the node, else
    (onnxsim rewrote the node and dropped its origin, e.g. MatMul+Add -> Gemm) the first
    ONNX node of a compatible type that no FX node claims, between the ONNX nodes of the
    nearest mapped FX nodes before and after it. Returns the map and the nodes so matched."""
    position = {name: i for i, (name, _, _) in enumerate(onnx_nodes)}
    claimed = {n for ns in fx_map.values() for n in ns}
    free = [i for i, (name, _, origin) in enumerate(onnx_nodes) if name not in claimed]
    result = {fx: list(fx_map[fx]) for fx, _ in fx_nodes if fx_map.get(fx)}
    by_order: list[str] = []
    for k, (fx, op) in enumerate(fx_nodes):
        if fx in result or op not in _ONNX_TYPES:
            continue
        before = max((position[n] for f, _ in fx_nodes[:k] for n in result.get(f, [])), default=-1)
        after = min((position[n] for f, _ in fx_nodes[k + 1:] for n in fx_map.get(f, [])),
                    default=len(onnx_nodes))
        for i in free:
            if before < i < after and onnx_nodes[i][1] in _ONNX_TYPES[op]:
                result[fx] = [onnx_nodes[i][0]]
                free.remove(i)
                by_order.append(f"{fx}->{onnx_nodes[i][0]}")
                break
    return result, by_order


def import_onnx(onnx_path, inputs) -> Imported:
    """The ONNX frontend with each node's result emitted as a binding named after the node."""
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    bb_cls = _naming_block_builder()
    tracker = _Tracker(bb_cls)

    class Importer(ONNXGraphImporter):
        @property
        def bb(self):
            return self._naming_bb

        @bb.setter
        def bb(self, value):
            self._naming_bb = bb_cls() if type(value) is relax.BlockBuilder else value

        def _convert_operator(self, op_name, inputs, attrs, opset):
            # ONNX names are not identifiers: hint with the node's index instead
            hint = index_of.get(attrs.get("tvm_custom", {}).get("name", ""), "")

            def convert():
                sym = super(Importer, self)._convert_operator(op_name, inputs, attrs, opset)
                # Bind what the node computes now, under its name (left unbound, it would be
                # bound later, unnamed, inside the next node's binding).
                if isinstance(sym, (relax.Call, relax.TupleGetItem)):
                    sym = self.bb.emit(sym)
                elif isinstance(sym, relax.Tuple):
                    sym = relax.Tuple([self.bb.emit(f) if isinstance(f, (relax.Call, relax.TupleGetItem))
                                       else f for f in sym.fields])
                return sym

            return tracker.convert(self.bb, hint, convert)

    model = onnx.load(str(onnx_path))
    index_of = {n.name: f"n{i}" for i, n in enumerate(model.graph.node)}
    shapes = {s.name: list(s.shape) for s in inputs}
    dtypes = {s.name: s.dtype for s in inputs}
    importer = Importer(shapes, dtypes, keep_params_in_input=False, sanitize=True)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    mod = importer.from_onnx(model.graph, opset)
    hints = {hint: name for name, hint in index_of.items()}
    return Imported(mod, "onnx", hints, tracker.sources(mod, hints))


# ----------------------------------------------------------------------------------------
# Fused-kernel membership
# ----------------------------------------------------------------------------------------

@dataclass
class CallSite:
    kernel: str  # the PrimFunc (or fused function) the VM calls
    members: list[int]  # indices into the pre-fusion bindings of main


@dataclass
class Membership:
    bindings: list[tuple[str, str]]  # pre-fusion main: (variable name, op / callee)
    calls: list[CallSite]
    variables: list[Any] = field(default_factory=list)  # pre-fusion main's binding variables
    order_matched: int = 0  # outputs joined by op and order only (no exact dataflow match)
    unmatched: int = 0


def _op_label(value) -> str:
    from tvm import relax

    if isinstance(value, relax.Call):
        if isinstance(value.op, relax.GlobalVar):
            return value.op.name_hint
        if value.op.name == "relax.call_tir":
            return value.args[0].name_hint
        return value.op.name
    return type(value).__name__


def _main_bindings(func) -> list:
    return [b for block in func.body.blocks for b in block.bindings]


class _Keyer:
    """A hashable key of a binding's value with its arguments resolved by `resolve`."""

    def __init__(self, resolve):
        self.resolve = resolve

    def arg(self, expr):
        import tvm
        from tvm import relax

        if isinstance(expr, relax.Var):
            return self.resolve(expr)
        if isinstance(expr, tvm.ir.expr.Constant):
            return ("const", expr)
        if isinstance(expr, relax.Tuple):
            return ("tuple", tuple(self.arg(f) for f in expr.fields))
        if isinstance(expr, relax.GlobalVar):
            return ("gv", expr.name_hint)
        return ("expr", tvm.ir.structural_hash(expr))

    def key(self, value):
        from tvm import relax

        if isinstance(value, relax.Call):
            return (_op_label(value), tuple(self.arg(a) for a in value.args))
        if isinstance(value, relax.TupleGetItem):
            return ("getitem", self.arg(value.tuple_value), int(value.index))
        return self.arg(value)


def membership(pre_mod, post_mod) -> Membership:
    """Which pre-fusion bindings of `main` each kernel call of post-fusion `main` computes.

    `pre_mod` is the module right before FuseOps (or the legalised module when nothing is
    fused); `post_mod` right after it (the same module when nothing is fused)."""
    from tvm import relax

    pre = _main_bindings(pre_mod["main"])
    index = {b.var: i for i, b in enumerate(pre)}
    result = Membership([(b.var.name, _op_label(b.value)) for b in pre], [], [b.var for b in pre])

    def pre_resolve(var):
        return ("b", index[var]) if var in index else ("var", var)

    by_key: dict[Any, list[int]] = {}
    pre_keyer = _Keyer(pre_resolve)
    for i, b in enumerate(pre):
        by_key.setdefault(pre_keyer.key(b.value), []).append(i)
    used: set[int] = set()
    by_op: dict[str, list[int]] = {}
    for i, (_, op) in enumerate(result.bindings):
        by_op.setdefault(op, []).append(i)

    def claim(key, op) -> int | None:
        for i in by_key.get(key, []):
            if i not in used:
                used.add(i)
                return i
        for i in by_op.get(op, []):  # no exact dataflow match: same op, first unused
            if i not in used:
                used.add(i)
                result.order_matched += 1
                return i
        result.unmatched += 1
        return None

    post_ref: dict[Any, Any] = {}  # post-fusion var -> ("b", i) | tuple of refs

    def post_resolve(var):
        if var in post_ref:
            return post_ref[var]
        return pre_resolve(var)

    post_keyer = _Keyer(post_resolve)
    functions = {gv.name_hint: f for gv, f in post_mod.functions.items()}
    for b in _main_bindings(post_mod["main"]):
        value = b.value
        callee = value.op if isinstance(value, relax.Call) else None
        fused = (isinstance(callee, relax.GlobalVar)
                 and isinstance(functions.get(callee.name_hint), relax.Function)
                 and functions[callee.name_hint].attrs is not None
                 and "Primitive" in functions[callee.name_hint].attrs)
        if fused:
            func = functions[callee.name_hint]
            local: dict[Any, Any] = {p: post_keyer.arg(a) for p, a in zip(func.params, value.args)}

            def resolve(var, local=local):
                if var in local:
                    return local[var]
                return pre_resolve(var)

            keyer = _Keyer(resolve)
            members: list[int] = []
            for inner in _main_bindings(func):
                if inner.var in index:
                    i = index[inner.var]
                    used.add(i)
                else:
                    i = claim(keyer.key(inner.value), _op_label(inner.value))
                if i is not None:
                    members.append(i)
                    local[inner.var] = ("b", i)
            out = func.body.body
            post_ref[b.var] = keyer.arg(out)
            result.calls.append(CallSite(callee.name_hint, sorted(set(members))))
            continue
        if isinstance(value, relax.TupleGetItem):
            ref = post_resolve(value.tuple_value) if isinstance(value.tuple_value, relax.Var) else None
            if isinstance(ref, tuple) and ref and ref[0] == "tuple":
                post_ref[b.var] = ref[1][int(value.index)]
                continue
        if b.var in index:
            i = index[b.var]
            used.add(i)
        else:
            i = claim(post_keyer.key(value), _op_label(value))
        if i is not None:
            post_ref[b.var] = ("b", i)
        if _is_call_tir(value):
            result.calls.append(CallSite(value.args[0].name_hint, [i] if i is not None else []))
    return result


def _is_call_tir(value) -> bool:
    from tvm import relax

    return isinstance(value, relax.Call) and not isinstance(value.op, relax.GlobalVar) \
        and value.op.name == "relax.call_tir"


def binding_origins(member: Membership, imported: Imported) -> list[str | None]:
    """Each pre-fusion binding's source node: the imported binding's it is (LegalizeOps and
    FoldConstant keep variables), else the one its name hint names, else the next such
    binding's (bindings a pass adds are emitted just before the binding they feed)."""
    bindings = member.bindings
    origins: list[str | None] = [None] * len(bindings)
    following: str | None = None
    for i in range(len(bindings) - 1, -1, -1):
        source = imported.var_sources.get(member.variables[i]) if member.variables else None
        if source is None:
            match = _HINT.match(bindings[i][0])
            source = imported.hints.get(match.group("base")) if match else None
        if source is not None:
            following = source
        origins[i] = following
    return origins
