"""LiteRT (TensorFlow Lite): the user's .tflite as is, or the bundle's torch.export program
converted with litert-torch.

`litert_torch.convert` lowers the program to a .tflite flatbuffer; the interpreter of
ai-edge-litert runs it, with the XNNPACK delegate (its default) or with the builtin
kernels only. Dynamic-range int8 (int8 weights, float activations quantised on the fly)
is made from the float model with ai-edge-quantizer.

Kernel map: the converter's MLIR locations name the torch FX nodes each TFLite op came
from (`loc(fused["<module path>;"("<fx node>"(file:line)), ...])`). They are read from
the converted module before it is written, matched to the flatbuffer's operators by
order and type, and joined to the canonical ONNX nodes with `fx_node_map`.

Per-op: no profiler is reachable from Python, so each operator is cut into its own
one-op model (same tensors, buffers and options), fed the values the whole model
computes at that point, and timed alone with the same interpreter settings
("tflite-op-slicing"). Slices are never rescaled; the notes say how far their sum is
from the whole model timed the same way.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from compilers.base import TORCH_EXPORT_LOADER, Artifact, Compiler, OptionSpec, Runnable
from ground.errors import first_line
from ground.op_timing import OpProfile, OpTiming
from ground.tensors import ModelBundle

QUANTIZE = ("none", "dynamic-int8")
PER_OP_METHOD = "tflite-op-slicing"
_WARMUP = 10
FLOAT_FILE = "model_float.tflite"
INT8_FILE = "model_dynamic_int8.tflite"
LOCATIONS_FILE = "mlir_locations.json"
KERNELS_FILE = "kernels.json"
# MLIR operations that become buffers or nothing in the flatbuffer, not operators.
_NOT_OPERATORS = {"arith.constant", "tfl.pseudo_const", "tfl.pseudo_qconst", "tfl.no_value",
                  "tfl.pseudo_sparse_const", "tfl.pseudo_sparse_qconst", "func.return",
                  "tfl.yield", "stablehlo.constant"}


def _interpreter(options: dict[str, Any], model_path: str | None = None,
                 model_content: bytes | None = None, preserve_all: bool = False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs: dict[str, Any] = {"num_threads": int(options["threads"])}
    if not options["xnnpack"] or preserve_all:
        # XNNPACK is the default delegate; this resolver leaves every op on the builtin kernels.
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve_all:
        kwargs["experimental_preserve_all_tensors"] = True
    if model_content is not None:
        return Interpreter(model_content=model_content, **kwargs)
    return Interpreter(model_path=model_path, **kwargs)


def _read_model(path: Path):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))


def _op_type(model, op) -> str:
    from ai_edge_litert.tools import flatbuffer_utils

    code = model.operatorCodes[op.opcodeIndex]
    name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "UNKNOWN"
    if name == "CUSTOM" and code.customCode:
        return f"CUSTOM:{code.customCode.decode(errors='replace')}"
    if name == "STABLEHLO_COMPOSITE":
        opts = op.builtinOptions2
        if getattr(opts, "name", None):
            return f"STABLEHLO_COMPOSITE:{opts.name.decode(errors='replace')}"
    return name


def _kernel_name(index: int, op_type: str, count: int) -> str:
    """`op0007_FULLY_CONNECTED`: zero-padded so names sort in execution order (the store
    keeps the kernel map as JSON with sorted keys)."""
    return f"op{index:0{max(4, len(str(count - 1)))}d}_{op_type}"


def _calls_subgraph(op) -> bool:
    for opts in (op.builtinOptions, getattr(op, "builtinOptions2", None)):
        if opts is not None and any(k.endswith("SubgraphIndex") or k == "subgraphIndex"
                                    for k in vars(opts)):
            return True
    return False


def _signature_tensors(model, which: str) -> list[int]:
    """Tensor indices of the serving signature's inputs/outputs in torch's flat order."""
    sg = model.subgraphs[0]
    default = list(sg.inputs if which == "inputs" else sg.outputs)
    sigs = [s for s in (model.signatureDefs or []) if s.subgraphIndex == 0]
    if len(sigs) != 1:
        return default
    entries = sigs[0].inputs if which == "inputs" else sigs[0].outputs
    keyed = []
    for entry in entries or []:
        m = re.fullmatch(r"(?:args|output)_(\d+)", entry.name.decode())
        if not m:
            return default
        keyed.append((int(m.group(1)), int(entry.tensorIndex)))
    return [t for _, t in sorted(keyed)] if keyed else default


REFERENCE_KERNELS = "LiteRT interpreter, builtin reference kernels (OpResolverType.BUILTIN_REF, no XNNPACK)"


def tflite_inputs(path: Path) -> list[tuple[str, tuple[int | None, ...], str]]:
    """(name, shape with None for a dynamic dim, numpy dtype name) of a .tflite's inputs, in
    the order every runner here feeds them."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    out = []
    for t in _signature_tensors(_read_model(path), "inputs"):
        d = details[t]
        signature = d.get("shape_signature")
        dims = signature if signature is not None and len(signature) else d["shape"]
        out.append((d["name"], tuple(None if int(x) < 0 else int(x) for x in dims), np.dtype(d["dtype"]).name))
    return out


def reference_outputs(path: Path, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """A .tflite's outputs with LiteRT's reference kernels: the ground truth for a model
    the user gives as .tflite (REFERENCE_KERNELS)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    model = _read_model(path)
    ins, outs = _signature_tensors(model, "inputs"), _signature_tensors(model, "outputs")
    for t, a in zip(ins, arrays):
        interp.resize_tensor_input(t, list(a.shape), strict=False)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    for t, a in zip(ins, arrays):
        interp.set_tensor(t, np.ascontiguousarray(a, dtype=details[t]["dtype"]))
    interp.invoke()
    return [np.array(interp.get_tensor(t)) for t in outs]


def _mlir_locations(edge_model) -> list[list] | None:
    """[MLIR op name, quoted names in its location] per flatbuffer operator, in order, read
    from the converted MLIR module; None when that module is not reachable or its ops do
    not form one flat list (several functions, ops with bodies)."""
    module = getattr(getattr(edge_model, "_exporter", None), "module", None)
    if module is None:
        return None
    funcs = [op for op in module.body.operations if op.operation.name == "func.func"]
    if len(funcs) != 1 or len(module.body.operations) != 1:
        return None
    rows = []
    for op in funcs[0].regions[0].blocks[0].operations:
        name = op.operation.name
        if name in _NOT_OPERATORS:
            continue
        if any(len(r.blocks) for r in op.operation.regions):
            return None
        strings = re.findall(r'"((?:[^"\\]|\\.)*)"', str(op.location))
        rows.append([name, list(dict.fromkeys(strings))])
    return rows


def _convert(bundle_dir: Path, workdir: Path, quantize: str) -> None:
    """The conversion itself, in this process: compile runs in a forked child
    (auditor.worker.compile_isolated), so torch, jax and the converter (~550 MiB) are not
    resident while the model is timed; a long-lived worker has imported litert_torch before
    forking (compile_imports), so a conversion no longer pays ~5 s of imports."""
    import torch

    import litert_torch

    bundle = ModelBundle.load(bundle_dir)
    module = torch.export.load(str(bundle.path("torch-export"))).module()
    gen = torch.Generator().manual_seed(0)
    args = tuple(
        torch.randn(spec.shape, generator=gen).to(getattr(torch, spec.dtype))
        if np.issubdtype(np.dtype(spec.dtype), np.floating)
        else torch.zeros(spec.shape, dtype=getattr(torch, spec.dtype))
        for spec in bundle.inputs
    )
    edge_model = litert_torch.convert(module, args)
    float_path = workdir / FLOAT_FILE
    edge_model.export(str(float_path))
    (workdir / LOCATIONS_FILE).write_text(json.dumps(_mlir_locations(edge_model)))
    if quantize == "dynamic-int8":
        _run_quantizer(float_path, workdir / INT8_FILE)


def _run_quantizer(float_path: Path, out_path: Path) -> None:
    from ai_edge_quantizer import quantizer, recipe

    result = quantizer.Quantizer(str(float_path), recipe.dynamic_wi8_afp32()).quantize(
        enable_progress_report=False)
    out_path.write_bytes(bytes(result.quantized_model))


def _run_converter(bundle: ModelBundle, workdir: Path, quantize: str) -> None:
    try:
        _convert(bundle.directory, workdir, quantize)
    except Exception as e:  # noqa: BLE001 - any converter failure is this compile's failure
        raise RuntimeError(f"litert-torch conversion failed: {type(e).__name__}: {first_line(e)}") from e


def _onnx_numel(onnx_model) -> dict[str, int]:
    """ONNX node name -> element count of its first output (from inferred shapes)."""
    shapes = {}
    for vi in list(onnx_model.graph.value_info) + list(onnx_model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = int(np.prod([d.dim_value for d in dims]))
    return {n.name: shapes[n.output[0]] for n in onnx_model.graph.node
            if n.output and n.output[0] in shapes}


def _drop_read_only_claims(model, claims: list[list[str]], fx_numel: dict[str, int]) -> int:
    """Layout passes move a transpose of an op's input into the consumer together with the
    producer's location (conv -> relu -> conv: the second conv's location names `relu`).
    Drop FX node X from op K when a direct producer P of K also claims X, P's output that K
    reads has X's element count (P computed X's value whole), and K claims something P does
    not. Returns how many claims were dropped."""
    sg = model.subgraphs[0]
    producer = {t: i for i, op in enumerate(sg.operators) for t in op.outputs if t >= 0}
    dropped = 0
    for k, op in enumerate(sg.operators):
        if k >= len(claims) or not claims[k]:
            continue
        mine = set(claims[k])
        for t in op.inputs:
            p = producer.get(t, -1)
            if p < 0 or p >= len(claims) or mine <= set(claims[p]):
                continue
            numel = int(np.prod(sg.tensors[t].shape)) if sg.tensors[t].shape is not None else -1
            for x in set(claims[p]) & mine:
                if fx_numel.get(x) == numel and len(claims[k]) > 1:
                    claims[k].remove(x)
                    mine.discard(x)
                    dropped += 1
    return dropped


def _kernel_map(model, op_locs, fx_map: dict[str, list[str]], onnx_order: dict[str, int],
                fx_numel: dict[str, int]) -> tuple[dict[str, list[str]], list[str]]:
    """Kernel name -> canonical ONNX nodes for every operator of subgraph 0, and notes."""
    sg = model.subgraphs[0]
    types = [_op_type(model, op) for op in sg.operators]
    notes = []
    claims: list[list[str]] = [[] for _ in types]
    aligned = op_locs is not None and len(op_locs) == len(types) and all(
        mlir.removeprefix("tfl.").replace("_", "") == t.lower().replace("_", "").split(":")[0]
        or t.startswith(("CUSTOM", "STABLEHLO"))
        for (mlir, _), t in zip(op_locs, types)
    )
    if aligned:
        claims = [list(names) for _, names in op_locs]
        dropped = _drop_read_only_claims(model, claims, fx_numel)
        notes.append(
            "kernel_map from the converter's MLIR locations (torch FX node names per TFLite op, "
            "matched to flatbuffer operators by order and type) joined through fx_node_map"
            + (f"; {dropped} claim(s) of a producer's FX node by a consumer that only reads "
               "its value were dropped" if dropped else ""))
    else:
        notes.append("kernel_map unavailable: the converter's MLIR locations could not be "
                     "matched to the flatbuffer's operators; every kernel maps to []")
    kernel_map: dict[str, list[str]] = {}
    unmatched = 0
    for i, t in enumerate(types):
        nodes = [n for fx in claims[i] for n in fx_map.get(fx, [])]
        nodes = sorted(dict.fromkeys(nodes), key=lambda n: onnx_order.get(n, 1 << 30))
        kernel_map[_kernel_name(i, t, len(types))] = nodes
        unmatched += not nodes
    if aligned and unmatched:
        notes.append(f"{unmatched} of {len(types)} TFLite ops name no FX node that has a canonical "
                     "ONNX node (layout ops the lowering inserted, or ONNX nodes the simplifier "
                     "created without an FX origin): mapped to []")
    if len(model.subgraphs) > 1:
        notes.append(f"{len(model.subgraphs) - 1} extra subgraph(s) (control flow/composites) "
                     "are not in the kernel map")
    return kernel_map, notes


def _requantized_map(float_model, quant_model, float_map: dict[str, list[str]]) -> dict[str, list[str]]:
    """Carry the float model's kernel map to the quantised model by output tensor names
    (the quantiser keeps them); ops it inserted map to []."""
    fsg, qsg = float_model.subgraphs[0], quant_model.subgraphs[0]
    f_types = [_op_type(float_model, op) for op in fsg.operators]
    f_names = list(float_map)
    by_outputs = {}
    for i, op in enumerate(fsg.operators):
        by_outputs.setdefault(tuple(fsg.tensors[t].name for t in op.outputs if t >= 0), i)
    out = {}
    for i, op in enumerate(qsg.operators):
        t = _op_type(quant_model, op)
        j = by_outputs.get(tuple(qsg.tensors[x].name for x in op.outputs if x >= 0))
        out[_kernel_name(i, t, len(qsg.operators))] = list(float_map[f_names[j]]) if j is not None and f_types[j] == t else []
    return out


def _slice(model, index: int) -> tuple[bytes, list[int], list[int]]:
    """One operator of subgraph 0 as its own model: (flatbuffer, the original tensor indices
    of its inputs, of its outputs). Constant tensors keep their buffers."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    sg = model.subgraphs[0]
    op = sg.operators[index]
    if _calls_subgraph(op):
        raise ValueError("op calls a subgraph")
    used = list(dict.fromkeys(t for t in list(op.inputs) + list(op.outputs)
                              + list(op.intermediates if op.intermediates is not None else [])
                              if t >= 0))
    buffers = [fb.BufferT()]
    tensors, remap = [], {}
    for t in used:
        tensor = copy.copy(sg.tensors[t])
        data = model.buffers[tensor.buffer].data if tensor.buffer > 0 else None
        if data is not None and len(data):
            buf = fb.BufferT()
            buf.data = data
            buffers.append(buf)
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
        remap[t] = len(tensors)
        tensors.append(tensor)
    is_const = {t: tensors[remap[t]].buffer > 0 for t in used}
    outputs = [t for t in op.outputs if t >= 0]
    inputs = list(dict.fromkeys(t for t in op.inputs if t >= 0 and not is_const[t]
                                and t not in outputs and not sg.tensors[t].isVariable))
    new_op = copy.copy(op)
    new_op.opcodeIndex = 0
    new_op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
    new_op.outputs = [remap[t] if t >= 0 else -1 for t in op.outputs]
    if op.intermediates is not None:
        new_op.intermediates = [remap[t] for t in op.intermediates if t >= 0]
    sub = fb.SubGraphT()
    sub.tensors = tensors
    sub.inputs = [remap[t] for t in inputs]
    sub.outputs = [remap[t] for t in outputs]
    sub.operators = [new_op]
    sub.name = b"slice"
    one = fb.ModelT()
    one.version = model.version
    one.operatorCodes = [model.operatorCodes[op.opcodeIndex]]
    one.subgraphs = [sub]
    one.buffers = buffers
    one.description = b"auditor one-op slice"
    return bytes(flatbuffer_utils.convert_object_to_bytearray(one)), inputs, outputs


def _provider(interp, options) -> str:
    """'xnnpack' when the delegate took the slice's op (a DELEGATE node appears), else 'builtin'."""
    if not options["xnnpack"]:
        return "builtin"
    try:
        names = [d["op_name"] for d in interp._get_ops_details()]
    except Exception:  # noqa: BLE001 - a private helper: unknown rather than wrong
        return "xnnpack?"
    return "xnnpack" if "DELEGATE" in names else "builtin"


def _time_invokes(interp, runs: int) -> np.ndarray:
    clock = time.perf_counter_ns
    for _ in range(_WARMUP):
        interp.invoke()
    samples = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = clock()
        interp.invoke()
        samples[i] = clock() - t0
    return samples / 1e3


class LiteRTRunnable(Runnable):
    def __init__(self, model_path: Path, options: dict[str, Any], bundle: ModelBundle,
                 preserve_all: bool = False):
        self.path = model_path
        self.interp = _interpreter(options, model_path=str(model_path), preserve_all=preserve_all)
        model = _read_model(model_path)
        self._in = _signature_tensors(model, "inputs")
        self._out = _signature_tensors(model, "outputs")
        for t, spec in zip(self._in, bundle.inputs):  # a user's .tflite may have dynamic dims
            self.interp.resize_tensor_input(t, list(spec.shape), strict=False)
        self.interp.allocate_tensors()  # once: set_tensor/invoke reuse the arena
        details = {d["index"]: d for d in self.interp.get_tensor_details()}
        for kind, specs, idx in (("input", bundle.inputs, self._in), ("output", bundle.outputs, self._out)):
            shapes = [tuple(int(s) for s in details[t]["shape"]) for t in idx]
            want = [tuple(s.shape) for s in specs]
            if len(shapes) != len(want) or any(
                    int(np.prod(a)) != int(np.prod(b)) for a, b in zip(shapes, want)):
                raise RuntimeError(f"tflite {kind}s {shapes} do not match the bundle's {want}")
        self._in_dtypes = [details[t]["dtype"] for t in self._in]
        self._in_shapes = [tuple(int(s) for s in details[t]["shape"]) for t in self._in]
        self._out_shapes = [tuple(s.shape) for s in bundle.outputs]

    def set_inputs(self, arrays):
        for t, a, dtype, shape in zip(self._in, arrays, self._in_dtypes, self._in_shapes):
            self.interp.set_tensor(t, np.ascontiguousarray(a, dtype=dtype).reshape(shape))

    def run(self):
        self.interp.invoke()

    def outputs(self):
        return [self.interp.get_tensor(t).reshape(shape)
                for t, shape in zip(self._out, self._out_shapes)]

    def memory_info(self):
        return {"model_bytes": self.path.stat().st_size}

    def close(self):
        self.interp = None


class LiteRT(Compiler):
    name = "litert"
    description = "LiteRT (TFLite) interpreter from litert-torch, XNNPACK delegate or builtin kernels"
    accepts = ("tflite", "torch-export")
    options = {
        "xnnpack": OptionSpec(True, "XNNPACK delegate (off: builtin kernels only)", runtime=True),
        "threads": OptionSpec(1, "interpreter threads (the board has one core)", runtime=True),
        "quantize": OptionSpec("none", "dynamic-int8: int8 weights, activations quantised at "
                               "run time (ai-edge-quantizer)", QUANTIZE),
        "profile_max_ops": OptionSpec(400, "per-op profile: slice and time at most this many ops", runtime=True),
    }
    default_variants = ({}, {"xnnpack": False}, {"quantize": "dynamic-int8"})
    per_op_method = PER_OP_METHOD
    install_hint = "pip install litert-torch==0.10.0 'ai-edge-litert[model-utils]==2.3.0' (with torch)"
    compile_imports = (TORCH_EXPORT_LOADER, "litert_torch")

    @classmethod
    def available(cls):
        # litert_torch itself takes seconds to import (jax, torchao): only look it up here.
        from importlib.metadata import version
        from importlib.util import find_spec

        try:
            if find_spec("litert_torch") is None:
                return False, "litert-torch is not installed"
            import ai_edge_litert.interpreter  # noqa: F401

            return True, f"litert-torch {version('litert-torch')}, ai-edge-litert {version('ai-edge-litert')}"
        except Exception as e:  # noqa: BLE001 - any import failure means unavailable
            return False, f"litert-torch/ai-edge-litert unusable: {e}"

    def compile(self, bundle, target, options, workdir):
        import onnx

        from ground.fx_nodes import fx_node_map

        if options["quantize"] not in QUANTIZE:
            raise ValueError(f"quantize={options['quantize']!r} is not one of {QUANTIZE}")
        float_path = workdir / FLOAT_FILE
        if bundle.pick(self.accepts) == "tflite":
            shutil.copyfile(bundle.path("tflite"), float_path)
            if options["quantize"] != "none":
                _run_quantizer(float_path, workdir / INT8_FILE)
            (workdir / LOCATIONS_FILE).write_text("null")
        else:
            _run_converter(bundle, workdir, options["quantize"])

        if bundle.pick(self.accepts) == "tflite":
            fx_map, onnx_order, fx_numel = {}, {}, {}
        elif "onnx" in bundle.files:
            onnx_model = onnx.load(str(bundle.path("onnx")), load_external_data=False)
            fx_map = fx_node_map(onnx_model)
            onnx_order = {n.name: i for i, n in enumerate(onnx_model.graph.node)}
            node_numel = _onnx_numel(onnx_model)
            fx_numel = {fx: node_numel.get(nodes[-1]) for fx, nodes in fx_map.items()}
        else:
            fx_map, onnx_order, fx_numel = {}, {}, {}
        locations = json.loads((workdir / LOCATIONS_FILE).read_text())
        op_locs = None if locations is None else [
            (name, [s for s in strings if s in fx_map]) for name, strings in locations]
        float_model = _read_model(float_path)
        kernel_map, notes = _kernel_map(float_model, op_locs, fx_map, onnx_order, fx_numel)
        if bundle.pick(self.accepts) == "tflite":
            notes = ["the user's .tflite, run as published; its kernels are not mapped to ONNX nodes"]
        elif not fx_map:
            notes.append("the bundle has no canonical ONNX graph: kernels map to []")

        files = {"float": FLOAT_FILE, "locations": LOCATIONS_FILE}
        if options["quantize"] == "dynamic-int8":
            path = workdir / INT8_FILE
            kernel_map = _requantized_map(float_model, _read_model(path), kernel_map)
            notes.append("dynamic-range int8 (ai-edge-quantizer dynamic_wi8_afp32: per-channel "
                         "int8 weights, float activations quantised at run time): outputs differ "
                         "from the float reference, so a 'mismatch' status is expected")
        else:
            path = float_path
        files["tflite"] = path.name
        # The kernel map with how it was made (the store keeps the map, not Artifact.notes).
        table = {"notes": notes, "kernels": [{"kernel": k, "onnx_nodes": v} for k, v in kernel_map.items()]}
        (workdir / KERNELS_FILE).write_text(json.dumps(table, indent=1))
        files["kernels"] = KERNELS_FILE
        ok, version = self.available()
        return Artifact(
            compiler=self.name, compiler_version=version, target=target, options=options,
            directory=workdir, files=files, kernel_map=kernel_map, notes=notes,
        )

    def load(self, artifact, bundle):
        return LiteRTRunnable(artifact.path("tflite"), artifact.options, bundle)

    def profile_ops(self, artifact, bundle, inputs, runs):
        options = artifact.options
        path = artifact.path("tflite")
        model = _read_model(path)
        sg = model.subgraphs[0]
        count = len(sg.operators)
        limit = min(count, max(0, int(options["profile_max_ops"])))

        # Every intermediate value of one inference, so each slice sees real data.
        # (builtin kernels: a delegate's internal tensors are not readable)
        full = LiteRTRunnable(path, options, bundle, preserve_all=True)
        full.set_inputs(inputs)
        full.run()
        values: dict[int, np.ndarray] = {}

        def value(t: int) -> np.ndarray:
            if t not in values:
                values[t] = full.interp.get_tensor(t)
            return values[t]

        ops: list[OpTiming] = []
        skipped: list[str] = []
        floor = []
        for i in range(limit):
            op = sg.operators[i]
            op_type = _op_type(model, op)
            kernel = _kernel_name(i, op_type, count)
            try:
                content, ins, _ = _slice(model, i)
                interp = _interpreter(options, model_content=content)
                interp.allocate_tensors()
                provider = _provider(interp, options)
                for pos, t in enumerate(ins):
                    interp.set_tensor(interp.get_input_details()[pos]["index"], value(t))
                us = _time_invokes(interp, runs)
                del interp
            except Exception as e:  # noqa: BLE001 - one op that cannot run alone is skipped, said in notes
                skipped.append(f"{kernel} ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})")
                continue
            floor.append(float(np.median(us)))
            ops.append(OpTiming.from_runs(kernel, op_type, artifact.kernel_map.get(kernel, []), 1, us,
                                          provider=provider))
        full.close()

        whole_runner = LiteRTRunnable(path, options, bundle)
        whole_runner.set_inputs(inputs)
        whole = float(np.median(_time_invokes(whole_runner.interp, runs)))
        whole_runner.close()
        total = sum(o.mean_us for o in ops)
        total_p50 = sum(o.p50_us for o in ops)
        notes = (
            f"{PER_OP_METHOD}: each TFLite op cut into its own one-op model (same tensors, buffers, "
            f"options), fed the values the whole model computes, timed alone ({runs} invokes after "
            f"{_WARMUP} warm-up, each invoke timed with perf_counter_ns) with the same interpreter "
            f"settings (xnnpack={options['xnnpack']}, threads={options['threads']}). "
            f"Sum of slice means {total:.2f} us (of slice medians {total_p50:.2f} us) vs whole model "
            f"median {whole:.2f} us timed the same way (ratio {total / whole if whole else float('nan'):.2f}); "
            "not rescaled. Every slice pays "
            f"the interpreter's per-invoke floor (fastest slice p50 {min(floor) if floor else 0:.2f} us): "
            "close to the whole for a few big ops, far above it for many tiny ops."
        )
        if limit < count:
            notes += f" Only the first {limit} of {count} ops were profiled (profile_max_ops)."
        if skipped:
            notes += f" {len(skipped)} op(s) could not run alone and have no row: " + "; ".join(skipped[:5])
        return OpProfile(method=PER_OP_METHOD, ops=ops, runs=runs,
                         instrumented_whole_us=whole, notes=notes)
