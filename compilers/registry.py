"""Every compiler adapter by name, and parsing of `name[:key=value,...]` variant specs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from compilers.base import Compiler

# name -> "module:Class"; modules are imported lazily so a broken or heavy compiler
# package never slows down or breaks the others.
ADAPTERS: dict[str, str] = {
    "torch-eager": "compilers.torch_eager:TorchEager",
    "torchscript": "compilers.torchscript_jit:TorchScriptJit",
    "onnxruntime": "compilers.ort:OnnxRuntime",
    "tvm": "compilers.tvm_relax:TvmRelax",
    "sofie": "compilers.sofie_cpp:Sofie",
    "litert": "compilers.litert_tflite:LiteRT",
    "executorch": "compilers.executorch_pte:ExecuTorch",
    "iree": "compilers.iree:Iree",
}


def names() -> list[str]:
    return list(ADAPTERS)


def get(name: str) -> type[Compiler]:
    """The adapter class; an adapter whose module cannot import becomes an unavailable stand-in."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown compiler {name!r} (known: {', '.join(ADAPTERS)})")
    module, cls = ADAPTERS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except Exception as e:  # noqa: BLE001 - a broken adapter must not take the others down
        return _broken(name, f"adapter {module} does not import: {type(e).__name__}: {e}")


def _broken(adapter_name: str, reason: str) -> type[Compiler]:
    class Broken(Compiler):
        name = adapter_name
        description = reason
        accepts = ()

        @classmethod
        def available(cls):
            return False, reason

        def compile(self, bundle, target, options, workdir):
            raise RuntimeError(reason)

        def load(self, artifact, bundle):
            raise RuntimeError(reason)

    return Broken


@dataclass(frozen=True)
class Variant:
    compiler: str
    overrides: tuple[tuple[str, Any], ...]

    @property
    def options(self) -> dict[str, Any]:
        return get(self.compiler).resolve_options(dict(self.overrides))

    @property
    def label(self) -> str:
        return get(self.compiler).variant_label(self.options)


def parse_variant(spec: str) -> Variant:
    """`onnxruntime` or `onnxruntime:graph_opt=basic,threads=2` -> Variant (ValueError if bad)."""
    name, _, rest = spec.strip().partition(":")
    try:
        cls = get(name)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    overrides: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{spec!r}: expected key=value, got {item!r}")
        if key not in cls.options:
            known = ", ".join(sorted(cls.options)) or "none"
            raise ValueError(f"{name} has no option {key!r} (options: {known})")
        overrides[key] = cls.options[key].parse(key, value)
    return Variant(name, tuple(sorted(overrides.items())))


def default_variants(compilers: list[str] | None = None) -> list[Variant]:
    """The variants compile-all runs when the user names none: each compiler's presets."""
    out = []
    for name in compilers or names():
        cls = get(name)
        for preset in cls.default_variants:
            out.append(Variant(name, tuple(sorted(preset.items()))))
    return out


def coverage_variants(compilers: list[str] | None = None) -> list[Variant]:
    """The variants `auditor coverage` runs when the user names none."""
    out = []
    for name in compilers or names():
        cls = get(name)
        presets = cls.coverage_variants if cls.coverage_variants is not None else cls.default_variants
        for preset in presets:
            out.append(Variant(name, tuple(sorted(preset.items()))))
    return out
