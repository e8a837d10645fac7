"""Export once: a loaded model -> its bundle of interchange files, plus reference outputs.

The bundle lives in `<results>/models/<model_hash>/` and is reused by later audits of the
same model (same file, same input shapes). The reference (torch eager, ONNX's reference
evaluator for a bare .onnx, LiteRT's reference kernels for a .tflite) is ground truth for
every compiler's outputs. A model published as ONNX or tflite only gets the other formats
by conversion (auditor.convert), each labelled in `bundle.converted`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from auditor import convert
from auditor.inputs import InputSet
from auditor.loaders import LoadedModel
from cost_model.graph import ensure_unique_node_names
from ground.errors import AuditorError, first_line
from ground.fx_nodes import FX_NODE_KEY, exporter_fx_name, fx_origins
from ground.host import package_version
from ground.quiet import captured_output
from ground.tensors import ModelBundle, TensorSpec

OPSET = 20
CONTROL_FLOW = ("If", "Loop", "Scan")


def model_hash(model: LoadedModel, inputs: InputSet) -> str:
    h = hashlib.sha256(model.content_hash().encode())
    h.update(json.dumps([s.to_dict() for s in inputs.specs], sort_keys=True).encode())
    return h.hexdigest()[:16]


def reference_outputs(model: LoadedModel, example: list[np.ndarray],
                      specs: list[TensorSpec] | None = None) -> list[np.ndarray]:
    """Ground-truth outputs for one example (specs mark number arguments: a Python number
    for torch). Bad shapes and unsupported ops end here."""
    if model.is_torch:
        import torch
        from torch.utils._pytree import tree_flatten

        from compilers.torch_eager import torch_args

        specs = specs or [TensorSpec(f"input_{k}", np.shape(a), "") for k, a in enumerate(example)]
        args = torch_args(specs, example)
        try:
            with torch.no_grad():
                out = model.module(*args)
        except Exception as e:
            shapes = ", ".join(str(list(a.shape)) if a.ndim else str(a.item()) for a in map(np.asarray, example))
            raise AuditorError(f"the model rejects inputs of shape {shapes}: {first_line(e)}")
        leaves, _ = tree_flatten(out)
        return [leaf.detach().cpu().numpy() for leaf in leaves if hasattr(leaf, "detach")]
    if model.format == "tflite":
        from compilers.litert_tflite import reference_outputs as litert_reference

        try:
            with captured_output(Path(os.devnull)):
                return litert_reference(model.source, example)
        except Exception as e:  # noqa: BLE001 - bad shapes, unsupported ops
            raise AuditorError(f"{model.source}: LiteRT's reference kernels cannot run it: {first_line(e)}")
    from onnx.reference import ReferenceEvaluator

    try:
        evaluator = ReferenceEvaluator(model.onnx_model)
        feed = {i.name: a for i, a in zip(model.inputs, example)}
        return [np.asarray(o) for o in evaluator.run(None, feed)]
    except Exception as e:
        raise AuditorError(f"{model.source}: the ONNX reference evaluator cannot run it: {first_line(e)}")


def _canonical_onnx(model, input_shapes: dict[str, list[int]], log: Path, pt2_names: dict[str, str]):
    """Simplify (onnxsim), fix input shapes, name nodes, check and infer shapes.

    pt2_names maps the exporter's FX node names (its own decomposed program) to the saved
    model.pt2's node names, which is what torch-side compilers see."""
    import onnx
    import onnxsim

    origins = {n.name: pt2_names.get(exporter_fx_name(n) or "") for n in model.graph.node if n.name}
    # A node onnxsim rebuilds (MatMul+Add -> Gemm) gets a new name but keeps the output
    # tensor of the node it replaces: carry the origin by tensor too.
    by_output = {out: origins.get(n.name) for n in model.graph.node for out in n.output}
    control_flow = sorted({n.op_type for n in model.graph.node if n.op_type in CONTROL_FLOW})
    try:
        if control_flow:  # onnxsim rewrote a published If graph into one ORT rejects
            raise ValueError(f"not run on a graph with control flow ({', '.join(control_flow)})")
        with captured_output(log):
            simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=input_shapes)
        if ok:
            model = simplified
    except Exception as e:  # a simplifier failure leaves the exported graph as it was
        with open(log, "a") as f:
            f.write(f"onnxsim failed, graph kept unsimplified: {first_line(e)}\n")
    ensure_unique_node_names(model)
    for node in model.graph.node:  # onnxsim drops metadata: carry each node's torch origin
        origin = origins.get(node.name) or next((by_output[o] for o in node.output if by_output.get(o)), None)
        if origin:
            node.metadata_props.add(key=FX_NODE_KEY, value=origin)
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model, strict_mode=False)


_TORCHLIB_REGISTRIES: dict = {}


@contextmanager
def _torchlib_registry_built_once():
    """torch.onnx.export (dynamo) rebuilds its op registry on every call: onnxscript re-reads
    and re-parses the source of ~500 torchlib functions, 1.3 s of a 2.1 s export of a small
    MLP here. A dataset build exports hundreds of points in one process, so the registry is
    built once per opset and each export gets a copy of it (the exporter only adds to a
    registry when given a custom_translation_table, which auditor never passes; the copy
    keeps even that from leaking between exports). The exported graph is the same
    (tests/test_export_cache.py). Where torch's private registry does not look as expected,
    nothing is patched."""
    try:
        from torch.onnx._internal.exporter import _registration
        registry_cls = _registration.ONNXRegistry
        original = registry_cls.__dict__.get("from_torchlib")
        expected = isinstance(original, classmethod) and hasattr(registry_cls(), "functions")
    except ImportError:
        expected = False
    if not expected:
        yield
        return

    def from_torchlib(cls, opset_version=_registration._constants.TORCHLIB_OPSET):
        key = (cls, opset_version)
        if key not in _TORCHLIB_REGISTRIES:
            _TORCHLIB_REGISTRIES[key] = original.__func__(cls, opset_version)
        built = _TORCHLIB_REGISTRIES[key]
        fresh = cls()
        fresh._opset_version = built._opset_version
        fresh.functions = {op: list(metas) for op, metas in built.functions.items()}
        return fresh

    registry_cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        registry_cls.from_torchlib = original


def _export_torch(model: LoadedModel, args, directory: Path, log: Path, bundle: ModelBundle):
    """-> (exported ONNX graph or None, exporter FX name -> saved pt2 node name)."""
    import onnx
    import torch

    ep = None
    if model.format != "torchscript":
        try:
            with captured_output(log):
                ep = torch.export.export(model.module, tuple(args))
            torch.export.save(ep, str(directory / "model.pt2"))
            bundle.files["torch-export"] = "model.pt2"
        except Exception as e:
            bundle.problems["torch-export"] = f"torch.export failed: {first_line(e)}"
    else:
        shutil.copyfile(model.source, directory / "model.ts")
        bundle.files["torchscript"] = "model.ts"
    raw = directory / "exported.onnx"
    try:
        pt2_names: dict[str, str] = {}
        with captured_output(log), _torchlib_registry_built_once():
            if ep is not None:
                program = torch.onnx.export(ep, tuple(args), str(raw), dynamo=True, external_data=False,
                                            opset_version=OPSET, verbose=False)
                # The exporter decomposes first; its node names drift from the pt2's (an
                # unflatten becomes view, every later view_k shifts): trace them back.
                pt2_names = fx_origins(program.exported_program.graph, {n.name for n in ep.graph.nodes})
            else:  # TorchScript cannot go through torch.export: the TorchScript exporter
                torch.onnx.export(model.module, tuple(args), str(raw), dynamo=False,
                                  opset_version=OPSET)
        return onnx.load(str(raw)), pt2_names
    except Exception as e:
        bundle.problems["onnx"] = f"ONNX export failed: {first_line(e)}"
        return None, {}


REFERENCE_NAMES = {"onnx": "the ONNX reference", "tflite": "the LiteRT reference"}


def prepare_bundle(model: LoadedModel, inputs: InputSet, results_dir: Path) -> ModelBundle:
    """Export the model's interchange files once; reuse them when already there."""
    import onnx

    digest = model_hash(model, inputs)
    directory = results_dir / "models" / digest
    if (directory / ModelBundle.META).exists():
        return ModelBundle.load(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "export.log"
    bundle = ModelBundle(digest, directory, list(inputs.specs), [])
    args = inputs.timing_inputs
    if model.is_torch:
        from compilers.torch_eager import torch_args

        graph, pt2_names = _export_torch(model, torch_args(inputs.specs, args), directory, log, bundle)
    elif model.format == "tflite":
        shutil.copyfile(model.source, directory / "model.tflite")
        bundle.files["tflite"] = "model.tflite"
        graph, pt2_names = _tflite_onnx(model, directory, log, bundle), {}
    else:
        graph, pt2_names = model.onnx_model, {}
    if graph is not None:
        shapes = {s.name: list(s.shape) for s in inputs.specs}
        if model.format != "onnx":  # exported input names differ from ours: rename ours to match
            real = [i.name for i in graph.graph.input if i.name not in {t.name for t in graph.graph.initializer}]
            bundle.inputs = _renamed(inputs.specs, real)
            shapes = {s.name: list(s.shape) for s in bundle.inputs if s.name in real}
        try:
            graph = _canonical_onnx(graph, shapes, log, pt2_names)
            onnx.save(graph, str(directory / "model.onnx"))
            bundle.files["onnx"] = "model.onnx"
        except Exception as e:
            if model.format == "onnx":
                raise AuditorError(f"{model.source}: the ONNX graph is not usable: {first_line(e)}")
            bundle.problems["onnx"] = f"{'exported' if model.is_torch else 'converted'} ONNX is invalid: {first_line(e)}"
            bundle.converted.pop("onnx", None)
    # after the export: a model with state inside changes it on every call, and the
    # exported program must start from the state the user's file holds
    reference = reference_outputs(model, args, inputs.specs)
    if not model.is_torch and "onnx" in bundle.files:
        _onnx_torch(model, graph, args, reference, directory, log, bundle)
    elif not model.is_torch:
        bundle.problems["torch-export"] = f"converted from ONNX, which is missing ({bundle.problems['onnx']})"
    bundle.outputs = _output_specs(graph if "onnx" in bundle.files else None, reference)
    bundle.save()
    return bundle


def canonical_graph(model: LoadedModel, inputs: InputSet, results_dir: Path):
    """The canonical ONNX graph of any model form, without running the model: the export half
    of prepare_bundle (no reference outputs). What `auditor predict` features."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="predict-", dir=results_dir if results_dir.is_dir() else None))
    log = directory / "export.log"
    bundle = ModelBundle(model_hash(model, inputs), directory, list(inputs.specs), [])
    if model.is_torch:
        from compilers.torch_eager import torch_args

        graph, pt2_names = _export_torch(model, torch_args(inputs.specs, inputs.timing_inputs), directory, log,
                                         bundle)
    elif model.format == "tflite":
        graph, pt2_names = _tflite_onnx(model, directory, log, bundle), {}
    else:
        graph, pt2_names = model.onnx_model, {}
    if graph is None:
        raise AuditorError(f"{model.source}: no ONNX graph to predict from ({bundle.problems.get('onnx', 'export failed')})")
    real = [i.name for i in graph.graph.input if i.name not in {t.name for t in graph.graph.initializer}]
    shapes = {s.name: list(s.shape) for s in _renamed(inputs.specs, real) if s.name in real}
    try:
        return _canonical_onnx(graph, shapes, log, pt2_names)
    except Exception as e:  # noqa: BLE001 - onnx checker / shape inference
        raise AuditorError(f"{model.source}: the exported ONNX graph is not usable: {first_line(e)}")


def _renamed(specs: list[TensorSpec], real: list[str]) -> list[TensorSpec]:
    """Our specs under the exported graph's input names. A number argument the exporter made
    a constant is not a graph input: it keeps its own name (and only torch runtimes take it)."""
    if len(real) == len(specs):
        return [TensorSpec(n, s.shape, s.dtype, s.scalar) for n, s in zip(real, specs)]
    names = iter(real)
    return [s if s.scalar else TensorSpec(next(names, s.name), s.shape, s.dtype) for s in specs]


def _tflite_onnx(model: LoadedModel, directory: Path, log: Path, bundle: ModelBundle):
    """The .tflite as ONNX (tflite2onnx), labelled converted; None with the reason recorded."""
    try:
        return convert.tflite_to_onnx(model.source, directory / "converted.onnx", log)
    except convert.ConversionError as e:
        bundle.problems["onnx"] = str(e)
        return None


def _onnx_torch(model: LoadedModel, graph, args, reference, directory: Path, log: Path,
                bundle: ModelBundle) -> None:
    """Check a converted ONNX graph against the reference, then give the torch-side
    compilers a torch.export program of it (onnx2torch). Failures are recorded reasons."""
    what = REFERENCE_NAMES[model.format]
    if model.format == "tflite":
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
            feed = {s.name: a for s, a in zip(bundle.inputs, args)}
            err = convert.max_error(session.run(None, feed), reference, "the tflite2onnx graph")
        except Exception as e:  # noqa: BLE001 - a mismatch or a graph ONNX Runtime rejects
            bundle.problems["onnx"] = f"the tflite2onnx graph is unusable: {first_line(e)}"
            bundle.problems["torch-export"] = f"converted from ONNX, which is missing ({bundle.problems['onnx']})"
            del bundle.files["onnx"]
            return
        bundle.converted["onnx"] = (f"tflite2onnx {package_version('tflite2onnx')} from tflite, "
                                    f"max err vs {what} {err:.2g}")
    import torch

    try:
        program, err, rewrites = convert.onnx_to_torch(graph, args, reference, log)
        torch.export.save(program, str(directory / "model.pt2"))
    except convert.ConversionError as e:
        bundle.problems["torch-export"] = str(e)
        return
    except Exception as e:  # noqa: BLE001 - saving a program torch cannot serialise
        bundle.problems["torch-export"] = f"saving the onnx2torch program failed: {type(e).__name__}: {first_line(e)}"
        return
    origin = "the tflite2onnx graph" if model.format == "tflite" else "ONNX"
    bundle.files["torch-export"] = "model.pt2"
    exact = f" after exact rewrites ({'; '.join(rewrites)})" if rewrites else ""
    bundle.converted["torch-export"] = (f"onnx2torch {package_version('onnx2torch')} from {origin}{exact}, "
                                        f"max err vs {what} {err:.2g}")


def _output_specs(graph, outs: list[np.ndarray]) -> list[TensorSpec]:
    names = [o.name for o in graph.graph.output] if graph is not None else []
    if len(names) != len(outs):
        names = [f"output_{i}" for i in range(len(outs))]
    return [TensorSpec(n, o.shape, o.dtype.name) for n, o in zip(names, outs)]


def write_reference(model: LoadedModel, inputs: InputSet, bundle: ModelBundle) -> Path:
    """Inputs and reference outputs for every example, in `data-<digest>/` of the bundle."""
    directory = bundle.directory / f"data-{inputs.digest()}"
    if (directory / "reference.npz").exists():
        return directory
    directory.mkdir(exist_ok=True)
    inputs.save(directory / "inputs.npz")
    outputs = {}
    for i, example in enumerate(inputs.examples):
        for j, out in enumerate(reference_outputs(model, example, inputs.specs)):
            outputs[f"e{i}_{j}"] = out
    np.savez(directory / "reference.tmp.npz", **outputs)
    (directory / "reference.tmp.npz").rename(directory / "reference.npz")
    return directory
