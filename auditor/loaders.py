"""Model loaders chosen by file suffix (after tvmc's Frontend registry).

Each loader turns a user's file into a LoadedModel: a callable torch module or an ONNX
graph, plus what is known of its inputs (a dimension of None is dynamic and must be given
with --input-shape). Untrusted pickles are refused: `torch.load` never runs with full
unpickling unless the user passes --trust-pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ground.errors import AuditorError, first_line
from ground.quiet import captured_output


@dataclass
class InputInfo:
    name: str
    shape: tuple[int | None, ...] | None  # None: unknown rank; a None dim: dynamic
    dtype: str = "float32"
    dim_names: tuple[str | None, ...] = ()  # symbolic names of dynamic dims, for messages
    scalar: bool = False  # a Python number argument of a torch model (shape ())


SCALAR_DTYPES = {"int": "int64", "float": "float64", "bool": "bool"}


@dataclass(frozen=True)
class Param:
    """One argument of a torch model's forward(): kind is tensor, int, float, bool or other."""

    name: str
    kind: str
    required: bool

    @property
    def scalar(self) -> bool:
        return self.kind in SCALAR_DTYPES


@dataclass
class LoadedModel:
    source: Path
    format: str  # torch-export | torchscript | python-factory | pickle | onnx | tflite
    inputs: list[InputInfo]
    module: Any = None  # torch module (all formats but onnx and tflite)
    onnx_model: Any = None  # onnx.ModelProto (format onnx)
    example_inputs: list[Any] | None = None  # tensors the model file carries
    entry: str = ""  # factory function name
    identity: str = ""  # set when the model has no file of its own (zoo instances)
    notes: list[str] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)  # forward()'s arguments, torch models
    reload: Any = None  # () -> a freshly loaded LoadedModel (load_model sets it)

    def fresh(self) -> LoadedModel:
        """The same model loaded anew: a module that keeps state between calls starts over."""
        return self.reload() if self.reload is not None else self

    @property
    def is_torch(self) -> bool:
        return self.format not in ("onnx", "tflite")

    def content_hash(self) -> str:
        if self.identity:
            return self.identity
        h = hashlib.sha256(self.source.read_bytes())
        h.update(self.entry.encode())
        return h.hexdigest()


class Loader(ABC):
    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]

    @abstractmethod
    def load(self, path: Path, entry: str, trust_pickle: bool) -> LoadedModel: ...


def _torch():
    import torch

    return torch


def _dtype_name(torch_dtype) -> str:
    return str(torch_dtype).removeprefix("torch.")


class ExportedProgramLoader(Loader):
    name = "torch-export"
    suffixes = (".pt2",)

    def load(self, path, entry, trust_pickle):
        # torch logs a full traceback before raising on a file that is not an archive:
        # check first, and keep its logger quiet for what the check cannot see
        _require_zip(path, "torch.export archive")
        torch = _torch()
        try:
            with _quiet_torch_logs():
                ep = torch.export.load(str(path))
        except Exception as e:
            raise AuditorError(f"{path}: not a readable torch.export archive ({first_line(e)})")
        user_inputs = set(ep.graph_signature.user_inputs)
        inputs = []
        for node in ep.graph.nodes:
            if node.op != "placeholder" or node.name not in user_inputs:
                continue
            val = node.meta.get("val")
            dims, names = [], []
            for d in getattr(val, "shape", ()):
                static = isinstance(d, int) or (hasattr(d, "node") and d.node.is_constant())
                dims.append(int(d) if static else None)
                names.append(None if static else str(d))
            dtype = _dtype_name(val.dtype) if val is not None else "float32"
            inputs.append(InputInfo(node.name, tuple(dims), dtype, tuple(names)))
        examples = None
        if getattr(ep, "example_inputs", None):
            args, kwargs = ep.example_inputs
            if not kwargs and all(hasattr(a, "shape") for a in args):
                examples = list(args)
        return LoadedModel(path, self.name, inputs, module=ep.module(), example_inputs=examples)


def _require_zip(path: Path, what: str) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise AuditorError(f"{path}: not a readable {what} ({first_line(e)})") from None


@contextlib.contextmanager
def _quiet_torch_logs():
    """torch's own loggers (torch.export, torch.jit...) write tracebacks to stderr at WARNING."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry compiled code; a torch.save pickle does not."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except zipfile.BadZipFile:
        return False


class TorchScriptLoader(Loader):
    """.pt/.ts/.jit/.pth: TorchScript when the archive holds code, otherwise a pickle."""

    name = "torchscript"
    suffixes = (".pt", ".ts", ".jit", ".pth", ".pkl")

    def load(self, path, entry, trust_pickle):
        torch = _torch()
        if not _is_torchscript(path):
            return PickleLoader().load(path, entry, trust_pickle)
        try:
            with _quiet_torch_logs():
                module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:
            raise AuditorError(f"{path}: not a readable TorchScript archive ({first_line(e)})")
        # TorchScript keeps no input shapes: they come from --input-shape.
        return LoadedModel(path, self.name, [], module=module, params=_script_params(module))


def _script_params(module) -> list[Param]:
    try:
        arguments = module.forward.schema.arguments[1:]  # [0] is self
    except Exception:  # noqa: BLE001 - a module without a scripted forward: nothing known
        return []
    kinds = {"Tensor": "tensor", **{k: k for k in SCALAR_DTYPES}}
    return [Param(a.name, kinds.get(str(a.type), "other"), not a.has_default_value()) for a in arguments]


def module_params(module) -> list[Param]:
    """forward()'s arguments from its signature; an annotation (or a default) of int, float
    or bool makes a Python number argument."""
    import inspect

    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    params = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            break
        hint = p.annotation if p.annotation is not p.empty else (
            type(p.default) if p.default is not p.empty and p.default is not None else None)
        name = hint if isinstance(hint, str) else getattr(hint, "__name__", "")
        kind = name if name in SCALAR_DTYPES else "tensor"
        params.append(Param(p.name, kind, p.default is p.empty))
    return params


def _example_info(position: int, value, params: list[Param]) -> InputInfo:
    """An example argument of a factory: a tensor, or a Python number (scalar)."""
    if isinstance(value, (bool, int, float)):
        name = params[position].name if position < len(params) else f"input_{position}"
        return InputInfo(name, (), SCALAR_DTYPES[type(value).__name__], scalar=True)
    return InputInfo(f"input_{position}", tuple(value.shape), _dtype_name(value.dtype))


class PickleLoader(Loader):
    name = "pickle"
    suffixes = ()

    def load(self, path, entry, trust_pickle):
        if not trust_pickle:
            raise AuditorError(
                f"{path} is a pickled Python object, and unpickling runs arbitrary code: "
                "refusing it. Export it with torch.export (.pt2) or TorchScript, or pass "
                "--trust-pickle if you trust where it came from"
            )
        torch = _torch()
        try:
            with _quiet_torch_logs():
                obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e:
            raise AuditorError(f"{path}: cannot unpickle ({first_line(e)})")
        if not isinstance(obj, torch.nn.Module):
            raise AuditorError(
                f"{path} holds a {type(obj).__name__}, not a torch.nn.Module "
                "(a state_dict needs the model's code: use a python factory file.py:make_model)"
            )
        return LoadedModel(path, self.name, [], module=obj.eval(), params=module_params(obj))


class FactoryLoader(Loader):
    """`file.py:make_model`: calls the factory (seeded). It may return a module, or
    (module, example_inputs); a module attribute `example_inputs` is used too."""

    name = "python-factory"
    suffixes = (".py",)

    def load(self, path, entry, trust_pickle):
        torch = _torch()
        if not entry:
            raise AuditorError(f"{path}: name the factory function, as {path}:make_model")
        spec = importlib.util.spec_from_file_location(f"_auditor_user_{path.stem}", path)
        module_code = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module_code)
        except Exception as e:
            raise AuditorError(f"{path}: importing it failed ({type(e).__name__}: {first_line(e)})")
        factory = getattr(module_code, entry, None)
        if not callable(factory):
            raise AuditorError(f"{path} has no function {entry!r}")
        torch.manual_seed(0)  # factories initialise weights randomly: make them repeatable
        try:
            made = factory()
        except Exception as e:
            raise AuditorError(f"{path}:{entry}() failed ({type(e).__name__}: {first_line(e)})")
        examples = None
        if isinstance(made, tuple) and len(made) == 2:
            made, examples = made
        if not isinstance(made, torch.nn.Module):
            raise AuditorError(f"{path}:{entry}() returned {type(made).__name__}, not an nn.Module")
        examples = examples if examples is not None else getattr(made, "example_inputs", None)
        if examples is not None:
            examples = list(examples) if isinstance(examples, (tuple, list)) else [examples]
        params = module_params(made)
        inputs = [_example_info(i, t, params) for i, t in enumerate(examples or [])]
        return LoadedModel(
            path, self.name, inputs, module=made.eval(), example_inputs=examples, entry=entry,
            params=params,
        )


class OnnxLoader(Loader):
    name = "onnx"
    suffixes = (".onnx",)

    def load(self, path, entry, trust_pickle):
        import onnx

        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as e:
            raise AuditorError(f"{path}: not a valid ONNX model ({first_line(e)})")
        initializers = {i.name for i in model.graph.initializer}
        inputs = []
        for vi in model.graph.input:
            if vi.name in initializers:
                continue
            tt = vi.type.tensor_type
            dims, names = [], []
            for d in tt.shape.dim:
                static = d.HasField("dim_value") and d.dim_value > 0
                dims.append(d.dim_value if static else None)
                names.append(None if static else (d.dim_param or "?"))
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            # no shape field: rank unknown (None), unlike a 0-d scalar input (shape ())
            shape = tuple(dims) if tt.HasField("shape") else None
            inputs.append(InputInfo(vi.name, shape, dtype, tuple(names)))
        return LoadedModel(path, self.name, inputs, onnx_model=model)


class TfliteLoader(Loader):
    """A TFLite flatbuffer, run as is by LiteRT; its reference is LiteRT's reference kernels."""

    name = "tflite"
    suffixes = (".tflite",)

    def load(self, path, entry, trust_pickle):
        try:
            from compilers.litert_tflite import tflite_inputs
        except ImportError as e:
            raise AuditorError(f"{path}: reading .tflite needs ai-edge-litert ({first_line(e)})")
        try:
            with captured_output(Path(os.devnull)):  # the interpreter's C++ logs fd 2 directly
                found = tflite_inputs(path)
        except Exception as e:  # noqa: BLE001 - the flatbuffer reader raises many kinds
            raise AuditorError(f"{path}: not a readable TFLite model ({first_line(e)})")
        inputs = [InputInfo(name, shape, dtype, tuple("?" if d is None else None for d in shape))
                  for name, shape, dtype in found]
        return LoadedModel(path, self.name, inputs)


LOADERS: tuple[Loader, ...] = (
    ExportedProgramLoader(),
    TorchScriptLoader(),
    FactoryLoader(),
    OnnxLoader(),
    TfliteLoader(),
)


def split_model_spec(spec: str) -> tuple[Path, str]:
    """'dir/file.py:make_model' -> (Path, 'make_model'); other paths have no entry."""
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        return Path(head), tail
    return Path(spec), ""


def load_zoo(spec: str) -> LoadedModel:
    from auditor import zoo

    fam, params = zoo.parse_spec(spec)
    module, args = zoo.build(fam, params)
    inputs = [InputInfo(f"input_{i}", tuple(t.shape), str(t.dtype).removeprefix("torch."))
              for i, t in enumerate(args)]
    return LoadedModel(Path(zoo.spec_string(fam.name, params)), "zoo", inputs, module=module,
                       example_inputs=args, identity=zoo.identity(fam.name, params),
                       reload=lambda: load_zoo(spec))


def load_model(spec: str, trust_pickle: bool = False) -> LoadedModel:
    if spec.startswith("zoo:"):
        return load_zoo(spec)
    path, entry = split_model_spec(spec)
    if not path.exists():
        raise AuditorError(f"{path}: no such file")
    if not path.is_file():
        raise AuditorError(f"{path}: not a file")
    suffix = path.suffix.lower()
    for loader in LOADERS:
        if suffix in loader.suffixes:
            model = loader.load(path, entry, trust_pickle)
            model.reload = lambda: load_model(spec, trust_pickle)
            return model
    known = sorted(s for loader in LOADERS for s in loader.suffixes)
    raise AuditorError(f"{path}: unknown model format {suffix or '(no suffix)'!r}; takes {', '.join(known)}")

