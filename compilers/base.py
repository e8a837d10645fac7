"""The compiler adapter interface: the one seam every compiler/runtime plugs into.

A compiler declares what it accepts, its options with defaults and the variants that
`compile-all` runs, as class attributes, so a capability table can be printed without
running anything. `compile()` turns an exported model bundle into an Artifact (files on
disk + metadata + the map from emitted kernels back to ONNX nodes); `load()` gives a
Runnable the measurement harness times; `profile_ops()` attributes time to kernels.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ground.op_timing import OpProfile
from ground.targets import Target
from ground.tensors import ModelBundle


@dataclass
class Artifact:
    """What a compiler produced: files on disk plus everything needed to say what made them."""

    compiler: str
    compiler_version: str
    target: Target
    options: dict[str, Any]
    directory: Path
    files: dict[str, str] = field(default_factory=dict)  # role -> file name in directory
    # emitted kernel name -> canonical ONNX node names it covers ([] = inserted by the compiler)
    kernel_map: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def path(self, role: str) -> Path:
        return self.directory / self.files[role]


class Runnable(ABC):
    """One loaded artifact on the local device. `run()` is exactly what gets timed, by
    auditor.timing around each call, unless the runtime has its own timing loop: then
    `timed_runs(n)` runs n inferences with the bound inputs, each timed alone inside the
    runtime (int64 ns), and `timing_loop` says what that loop is."""

    timing_loop: str | None = None  # None: each run() is timed from Python
    timed_runs: Callable[[int], np.ndarray] | None = None

    @abstractmethod
    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        """Bind inputs once, as an audio callback keeps its buffers."""

    @abstractmethod
    def run(self) -> None:
        """One inference with the bound inputs."""

    @abstractmethod
    def outputs(self) -> list[np.ndarray]:
        """Outputs of the last run, as numpy arrays in the bundle's output order."""

    def memory_info(self) -> dict[str, int]:
        """Sizes the runtime reports itself (e.g. model/arena bytes); empty when none."""
        return {}

    def close(self) -> None:
        """Release the runtime's resources."""


@dataclass(frozen=True)
class OptionSpec:
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    # chosen when the artifact is loaded, not when it is compiled: one compiled artifact
    # serves every value (the artifact cache keys on the other options only)
    runtime: bool = False

    def parse(self, name: str, text: str) -> Any:
        kind = type(self.default)
        try:
            if kind is bool:
                if text.lower() not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
                    raise ValueError(text)
                value: Any = text.lower() in ("1", "true", "on", "yes")
            elif kind is int:
                value = int(text)
            elif kind is float:
                value = float(text)
            else:
                value = text
        except ValueError:
            raise ValueError(f"option {name}={text!r} is not a {kind.__name__}") from None
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ValueError(f"option {name}={text!r} is not one of: {allowed}")
        return value


# what torch.export.load imports on its first call (torch._dynamo with it: ~1.7 s)
TORCH_EXPORT_LOADER = "torch._export.serde.serialize"


class Compiler(ABC):
    """Base class of every adapter. Subclasses fill in the class attributes."""

    name: ClassVar[str]
    description: ClassVar[str]
    accepts: ClassVar[tuple[str, ...]]  # bundle formats it compiles from, in preference order
    targets: ClassVar[tuple[str, ...]] = ("host",)
    options: ClassVar[dict[str, OptionSpec]] = {}
    # option overrides compile-all runs by default, one run each ({} = the defaults)
    default_variants: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    # the variants `auditor coverage` runs by default (None: default_variants); a compiler
    # whose variants differ only in how they run or in an input the ONNX cases lack names
    # the one that tells whether an op compiles
    coverage_variants: ClassVar[tuple[dict[str, Any], ...] | None] = None
    per_op_method: ClassVar[str | None] = None
    install_hint: ClassVar[str] = ""
    # why a device measurement (the native runner) is not possible, when native_program is None
    no_native_runner: ClassVar[str] = "has no native runner backend (the runner's backends: sofie, tvm, libtorch)"
    # takes a model's Python number arguments (TensorSpec.scalar) as they are given
    takes_scalars: ClassVar[bool] = False
    # builds native code for a non-host target with the target's C++ cross compiler
    cross_cxx: ClassVar[bool] = True
    # modules compile() imports that take seconds (litert_torch ~5 s, executorch.exir ~6.5 s,
    # torch.export.load's serializer ~1.7 s): a long-lived worker imports them once, before
    # it forks its compiles (auditor.worker.compile_isolated), so every forked compile
    # shares them instead of importing them again
    compile_imports: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: str = "local") -> None:
        # the --device spec the artifact is measured on: a compiler that measures while it
        # compiles (TVM's tuning) measures there, or says why it cannot
        self.device = device

    @classmethod
    def warm_compile(cls) -> None:
        """Load once, in a long-lived worker about to fork its compiles, what each compile()
        would otherwise load again in its child: compile_imports, and a compiler's own
        first-call caches (an override)."""
        for module in cls.compile_imports:
            importlib.import_module(module)

    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """(True, version) when usable here, else (False, reason)."""

    @classmethod
    def version(cls) -> str:
        ok, detail = cls.available()
        return detail if ok else "unavailable"

    @classmethod
    def resolve_options(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(cls.options))
        if unknown:
            known = ", ".join(sorted(cls.options)) or "none"
            raise ValueError(f"{cls.name} has no option {unknown[0]!r} (options: {known})")
        resolved = {k: spec.default for k, spec in cls.options.items()}
        resolved.update(overrides)
        return resolved

    @classmethod
    def compile_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The options that change what compile() writes (runtime-only ones left out)."""
        return {k: v for k, v in options.items() if not (k in cls.options and cls.options[k].runtime)}

    @classmethod
    def variant_label(cls, options: dict[str, Any]) -> str:
        changed = [
            f"{k}={options[k]}" for k in sorted(options) if options[k] != cls.options[k].default
        ]
        return f"{cls.name}[{','.join(changed)}]" if changed else cls.name

    def can_compile(self, bundle: ModelBundle, target: Target, options: dict[str, Any] | None = None) -> str | None:
        """None when this compiler can take the bundle for the target (with these option
        overrides, on self.device), else why not."""
        if target.name not in self.targets:
            return f"{self.name} does not compile for target {target.name}"
        if not target.is_host and self.cross_cxx and shutil.which(target.cxx) is None:
            return f"{target.cxx} not found (apt-get install {target.cxx_package})"
        if not bundle.formats() & set(self.accepts):
            why = "; ".join(f"{f}: {bundle.problems[f]}" for f in self.accepts if f in bundle.problems)
            return f"{self.name} needs {' or '.join(self.accepts)}, which this model lacks" + (
                f" ({why})" if why else ""
            )
        scalars = [s.name for s in bundle.inputs if s.scalar]
        if scalars and not self.takes_scalars:
            return (f"{self.name} cannot take the model's non-tensor argument(s) "
                    f"{', '.join(scalars)} (a Python number in forward())")
        return None

    @abstractmethod
    def compile(
        self, bundle: ModelBundle, target: Target, options: dict[str, Any], workdir: Path
    ) -> Artifact:
        """Lower the bundle for the target; write files into workdir."""

    @abstractmethod
    def load(self, artifact: Artifact, bundle: ModelBundle) -> Runnable:
        """Load an artifact for timing on this machine."""

    def profile_ops(
        self, artifact: Artifact, bundle: ModelBundle, inputs: list[np.ndarray], runs: int
    ) -> OpProfile | None:
        """Per-kernel attribution, or None where this compiler has no way to make one."""
        return None

    def native_program(self, artifact: Artifact):
        """The native runner (device_runner) that runs this artifact on a device, as a
        device_runner.native.NativeProgram, or None where this compiler has no backend."""
        return None


def options_key(options: dict[str, Any]) -> str:
    """A stable key for a resolved option set (used to resume and to group rows)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
