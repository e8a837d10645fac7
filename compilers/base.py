"""The compiler adapter interface: the one seam every compiler/runtime plugs into.

A compiler declares what it accepts, its options with defaults and the variants that
`compile-all` runs, as class attributes, so a capability table can be printed without
running anything. `compile()` turns an exported model bundle into an Artifact (files on
disk + metadata + the map from emitted kernels back to ONNX nodes); `load()` gives a
Runnable the measurement harness times; `profile_ops()` attributes time to kernels.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Target:
    """What code is generated for. `host` is this machine; the board is ARMv7 Cortex-A8."""

    name: str
    triple: str
    cpu: str | None = None
    features: tuple[str, ...] = ()
    float_abi: str | None = None
    cxx: str = "g++"  # the C++ compiler that builds native code for this target
    cxx_flags: tuple[str, ...] = ()
    cxx_package: str = "g++"  # the Debian package that provides it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_host(self) -> bool:
        return self.name == "host"


TARGETS: dict[str, Target] = {
    "host": Target(name="host", triple="x86_64-linux-gnu"),
    "armv7-cortex-a8": Target(
        name="armv7-cortex-a8",
        triple="armv7a-linux-gnueabihf",
        cpu="cortex-a8",
        features=("+neon",),
        float_abi="hard",
        cxx="arm-linux-gnueabihf-g++",
        cxx_flags=("-mcpu=cortex-a8", "-mfpu=neon", "-mfloat-abi=hard"),
        cxx_package="g++-arm-linux-gnueabihf",
    ),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32"
    # a Python number argument of a torch model (forward(x, sr: int)): torch gets a Python
    # int/float, an ONNX graph a 0-d tensor (or the exporter made it a constant)
    scalar: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        return {**d, "scalar": True} if self.scalar else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(int(s) for s in d["shape"]), d["dtype"], bool(d.get("scalar", False)))


@dataclass
class ModelBundle:
    """The interchange files of one model, written once by `auditor.export`.

    Every compiler reads from here. `files` maps a format to its file name:
    "onnx" is the canonical graph (simplified, shape-inferred, every node uniquely named;
    per-op rows refer to these node names), "torch-export" a static torch.export program,
    "torchscript" the user's TorchScript archive, "tflite" the user's TFLite flatbuffer.
    `problems` says why a format is missing. `converted` labels each format that is not the
    user's graph but a converter's product (e.g. "onnx2torch 1.5.15 from ONNX, max err vs
    ONNX reference 2e-05"): a run compiled from it is measured on the converted graph.
    `state` says whether the model keeps state between calls (auditor.state.detect).
    """

    model_hash: str
    directory: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)

    META = "bundle.json"

    def formats(self) -> set[str]:
        return set(self.files)

    def pick(self, accepts: tuple[str, ...]) -> str | None:
        """The format a compiler taking `accepts` (in its order of preference) compiles
        from: the user's own graph before any converted one; None when it has neither."""
        present = [f for f in accepts if f in self.files]
        return next((f for f in present if f not in self.converted), present[0] if present else None)

    def path(self, fmt: str) -> Path:
        return self.directory / self.files[fmt]

    def save(self) -> None:
        meta = {
            "model_hash": self.model_hash,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "files": self.files,
            "problems": self.problems,
            "state": self.state,
            "converted": self.converted,
        }
        (self.directory / self.META).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        meta = json.loads((directory / cls.META).read_text())
        return cls(
            model_hash=meta["model_hash"],
            directory=directory,
            inputs=[TensorSpec.from_dict(d) for d in meta["inputs"]],
            outputs=[TensorSpec.from_dict(d) for d in meta["outputs"]],
            files=meta["files"],
            problems=meta["problems"],
            state=meta.get("state", {}),
            converted=meta.get("converted", {}),
        )


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


@dataclass
class OpTiming:
    """Time attributed to one emitted kernel per inference (all its calls in that inference)."""

    kernel: str
    op_type: str
    onnx_nodes: list[str]
    calls: int  # calls per inference
    mean_us: float
    p50_us: float
    std_us: float
    provider: str | None = None

    @classmethod
    def from_runs(cls, kernel: str, op_type: str, onnx_nodes: list[str], calls: int, per_run_us,
                  provider: str | None = None) -> OpTiming:
        """One kernel's statistics from its time in each instrumented inference (µs)."""
        values = np.asarray(per_run_us, dtype=np.float64)
        return cls(kernel=kernel, op_type=op_type, onnx_nodes=onnx_nodes, calls=calls,
                   mean_us=float(values.mean()), p50_us=float(np.median(values)),
                   std_us=float(values.std()), provider=provider)


@dataclass
class OpProfile:
    """Per-kernel attribution and how it was made, so its gap to the whole can be shown."""

    method: str  # e.g. "ort-profiler": names the instrument, never rescaled
    ops: list[OpTiming]
    runs: int  # instrumented inferences the figures come from
    instrumented_whole_us: float | None  # median whole inference while instrumented
    notes: str = ""

    @property
    def per_op_sum_us(self) -> float:
        return float(sum(op.mean_us for op in self.ops))

    @property
    def per_op_sum_p50_us(self) -> float:
        """Sum of per-kernel medians: compared with the whole's median, robust to rare spikes."""
        return float(sum(op.p50_us for op in self.ops))


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
    # takes a model's Python number arguments (TensorSpec.scalar) as they are given
    takes_scalars: ClassVar[bool] = False
    # builds native code for a non-host target with the target's C++ cross compiler
    cross_cxx: ClassVar[bool] = True

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
    def variant_label(cls, options: dict[str, Any]) -> str:
        changed = [
            f"{k}={options[k]}" for k in sorted(options) if options[k] != cls.options[k].default
        ]
        return f"{cls.name}[{','.join(changed)}]" if changed else cls.name

    def can_compile(self, bundle: ModelBundle, target: Target) -> str | None:
        """None when this compiler can take the bundle for the target, else why not."""
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
