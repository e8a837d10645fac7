"""Apache TVM (Relax): LLVM code generation, run by the Relax VirtualMachine on the CPU.

The bundle's torch.export program is imported with `from_exported_program` (it converts
LSTM/GRU, which TVM's ONNX frontend rejects); the ONNX frontend is the fallback when a
model has no torch-export file. With `fuse` on, the passes of `relax.get_pipeline("zero")`
(LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR) run before
`tvm.compile`, so elementwise tails fuse into their producers (`fused_matmul_add_relu`);
TVM's default CPU pipeline alone does not fuse. With `tune_trials` > 0 MetaSchedule tunes
the kernels (compilers/tvm_tuning.py): its JSON database is cached under the cache root per
model hash, target, trial budget and TVM version, reused by later audits, and resumed where a
killed tuning stopped.

Host: LLVM for this machine's CPU, one core (`num-cores` 1, the board has one).
armv7-cortex-a8: the same module cross-compiled with `arm-linux-gnueabihf-g++` (Debian
g++-arm-linux-gnueabihf) into a 32-bit ARM hard-float shared object, kept for the board.

Per-op timing uses the VM's instrument hook: a Python callback before and after every VM
call instruction, timestamps taken inside it (see `profile_ops`).

Native runner (`native_program`): device_runner's TVM backend loads model.so through TVM's
C++ runtime and instruments the same hook with a native callback. One generic runner per
target, cached: on the host it links the wheel's libtvm_runtime.so/libtvm_ffi.so; for
armv7 it builds TVM's runtime from the sources the wheels ship (a few minutes, once).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from compilers.base import TORCH_EXPORT_LOADER, Artifact, Compiler, OptionSpec, Runnable
from compilers.tvm_target import is_prim_func, tvm_target_dict
from ground.op_timing import OpProfile, OpTiming
from ground.targets import Target
from ground.tensors import ModelBundle

LIBRARY = "model.so"
KERNELS = "kernels.json"


def runner_build_inputs(target: Target) -> tuple[dict[str, str], tuple[Path, ...]]:
    """CMake definitions of the TVM runner (device_runner/runner/backends/tvm.cmake) and the
    wheel source trees it compiles from (part of the runner cache key). Host: the wheel's
    shared runtime; any other target: the runtime built from the wheels' sources."""
    import importlib.metadata
    import importlib.util

    def package_dir(name: str) -> Path:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"the {name} package is not installed (pip install apache-tvm)")
        return Path(spec.origin).parent

    tvm_dir, ffi_dir = package_dir("tvm"), package_dir("tvm_ffi")
    defines = {
        "TVM_WHEEL_DIR": str(tvm_dir), "TVM_FFI_DIR": str(ffi_dir),
        "TVM_WHEEL_VERSION": importlib.metadata.version("apache-tvm"),
        "TVM_FFI_WHEEL_VERSION": importlib.metadata.version("apache-tvm-ffi"),
        "TVM_RUNTIME": "wheel" if target.is_host else "source",
    }
    sources = (tvm_dir / "src" / "runtime", tvm_dir / "include", ffi_dir / "src", ffi_dir / "include")
    return defines, sources


class TvmRunnable(Runnable):
    timing_loop = ("tvm time_evaluator(number=1, repeat=n): each call of the bound main timed alone in "
                   "C++ (after one untimed call per batch)")

    def __init__(self, library_path: Path, bundle: ModelBundle):
        import tvm
        from tvm import relax

        self.tvm = tvm
        self.bundle = bundle
        self.lib = tvm.runtime.load_module(str(library_path))
        self.vm = relax.VirtualMachine(self.lib, tvm.cpu())
        self._fn = None
        self._result = None
        self._args: list = []

    def set_inputs(self, arrays):
        device = self.tvm.cpu()
        self._args = [self.tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in arrays]
        # A saved closure binds the inputs once: calling it runs "main" without converting
        # arguments in Python on every call.
        self.vm.save_function("main", "main_bound", *self._args)
        self._fn = self.vm.module["main_bound"]
        self._evaluators: dict[int, Any] = {}

    def run(self):
        self._result = self._fn()

    def timed_runs(self, n):
        evaluator = self._evaluators.get(n)
        if evaluator is None:
            evaluator = self._evaluators[n] = self.vm.module.time_evaluator(
                "main_bound", self.tvm.cpu(), number=1, repeat=n, min_repeat_ms=0)
        seconds = np.asarray(evaluator().results, dtype=np.float64)
        return np.rint(seconds * 1e9).astype(np.int64)

    def outputs(self):
        return [t.numpy().copy() for t in _flatten(self._result)]


def _flatten(value) -> list:
    if hasattr(value, "numpy"):
        return [value]
    out = []
    for item in value:
        out.extend(_flatten(item))
    return out


class TvmRelax(Compiler):
    name = "tvm"
    description = "Apache TVM Relax (LLVM codegen), relax VirtualMachine on the CPU"
    accepts = ("torch-export", "onnx")
    targets = ("host", "armv7-cortex-a8")
    options = {
        "opt_level": OptionSpec(3, "tvm.transform.PassContext opt_level"),
        "fuse": OptionSpec(True, "run relax.get_pipeline('zero') (LegalizeOps..FuseOps, FuseTIR) "
                                 "before building so kernels fuse"),
        "tune_trials": OptionSpec(0, "MetaSchedule trial budget (0 = untuned); the tuning database "
                                     "is cached per model, target and budget and reused"),
    }
    default_variants = ({},)
    per_op_method = "tvm-vm-instrument"
    install_hint = "pip install apache-tvm (and apt-get install g++-arm-linux-gnueabihf for armv7)"
    compile_imports = (TORCH_EXPORT_LOADER, "tvm.relax.frontend.torch", "tvm.relax.frontend.onnx")

    @classmethod
    def available(cls):
        try:
            import tvm
            from tvm import relax  # noqa: F401
        except Exception as e:  # noqa: BLE001 - any import failure means unavailable
            return False, f"tvm does not import: {type(e).__name__}: {e}"
        return True, str(tvm.__version__)

    def can_compile(self, bundle, target, options=None):
        why = super().can_compile(bundle, target, options)
        if why is None and options:
            from compilers.tvm_tuning import tuning_refusal

            trials = self.resolve_options(options)["tune_trials"]
            if isinstance(trials, int):  # a bad value is compile's one-line error
                return tuning_refusal(trials, target, self.device)
        return why

    # ------------------------------------------------------------------ compile
    def compile(self, bundle, target, options, workdir):
        import tvm
        from tvm import relax

        from compilers import tvm_relax_kernels as kernels
        from compilers import tvm_tuning as tuning

        options = self.resolve_options(options)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)  # callers outside the pipeline pass a new path
        notes: list[str] = []
        if options["tune_trials"] < 0:
            raise ValueError(f"tune_trials must be >= 0, got {options['tune_trials']}")
        refusal = tuning.tuning_refusal(options["tune_trials"], target, self.device)
        if refusal:
            raise ValueError(refusal)
        tvm_target = tvm.target.Target(tvm_target_dict(target))

        if bundle.pick(self.accepts) == "torch-export":
            onnx_path = bundle.path("onnx") if "onnx" in bundle.formats() else None
            imported = kernels.import_torch_export(bundle.path("torch-export"), onnx_path)
            notes.append("imported from the bundle's torch.export program (from_exported_program, "
                         "default core-ATen decomposition)")
        else:
            imported = kernels.import_onnx(bundle.path("onnx"), bundle.inputs)
            notes.append("imported from the bundle's ONNX graph" + (
                " (the torch-export program is a conversion of it)" if "torch-export" in bundle.formats()
                else " (no torch-export file)"))

        with tvm.transform.PassContext(opt_level=options["opt_level"]), tvm_target:
            legalized = tvm.transform.Sequential([
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
            ])(imported.mod) if options["fuse"] else relax.transform.LegalizeOps()(imported.mod)
            if options["fuse"]:
                grouped = relax.transform.FuseOps()(legalized)
                member = kernels.membership(legalized, grouped)
                mod = relax.transform.FuseTIR()(grouped)
                notes.append("fused with the passes of relax.get_pipeline('zero')")
            else:
                member = kernels.membership(legalized, legalized)
                mod = legalized
                notes.append("unfused: TVM's default build pipeline only (one kernel per legalised op)")
            if options["tune_trials"] > 0:
                mod = tuning.tune(mod, bundle.model_hash, target, tvm_target, options, notes, self.device)
            executable = tvm.compile(mod, target=tvm_target)

        library = workdir / LIBRARY
        if target.is_host:
            executable.export_library(str(library))
        else:
            from tvm.support import cc

            fcompile = cc.cross_compiler(target.cxx, options=list(target.cxx_flags))
            executable.export_library(str(library), fcompile=fcompile)
            notes.append(f"cross-compiled with {target.cxx} {' '.join(target.cxx_flags)}")

        kernel_map, detail = self._kernel_map(bundle, imported, member, mod)
        notes.extend(detail)
        (workdir / KERNELS).write_text(json.dumps({
            "tvm_target": tvm_target_dict(target),
            "bindings": [{"name": n, "op": op} for n, op in member.bindings],
            "calls": [{"kernel": c.kernel, "members": c.members} for c in member.calls],
            "kernel_map": kernel_map,
            "op_types": _op_types(member),
        }, indent=1))
        (workdir / "relax_module.py").write_text(mod.script(show_meta=False))
        notes.append(f"TVM target {json.dumps(tvm_target_dict(target), sort_keys=True)}")
        return Artifact(
            compiler=self.name, compiler_version=str(tvm.__version__), target=target,
            options=options, directory=workdir,
            files={"library": LIBRARY, "kernels": KERNELS, "relax": "relax_module.py"},
            kernel_map=kernel_map, notes=notes,
        )

    def _kernel_map(self, bundle, imported, member, mod) -> tuple[dict[str, list[str]], list[str]]:
        """Emitted kernel -> canonical ONNX nodes, through each kernel's member bindings."""
        import onnx

        from compilers import tvm_relax_kernels as kernels

        notes = list(imported.notes)
        onnx_nodes: list[str] = []
        to_onnx: dict[str, list[str]] = {}
        if "onnx" in bundle.formats():
            model = onnx.load(str(bundle.path("onnx")), load_external_data=False)
            onnx_nodes = [n.name for n in model.graph.node]
            if imported.frontend == "torch-export":
                to_onnx = imported.fx_onnx
            else:
                to_onnx = {name: [name] for name in onnx_nodes}
        order = {name: i for i, name in enumerate(onnx_nodes)}
        origins = kernels.binding_origins(member, imported)

        def onnx_of(origin: str | None) -> list[str]:
            if origin is None:
                return []
            if imported.frontend == "torch-export":
                root = imported.fx_roots.get(origin)
                return to_onnx.get(root, []) if root else []
            return to_onnx.get(origin, [])

        kernel_map: dict[str, list[str]] = {}
        for call in member.calls:
            nodes = set(kernel_map.get(call.kernel, []))
            for i in call.members:
                nodes.update(onnx_of(origins[i]))
            kernel_map[call.kernel] = sorted(nodes, key=lambda n: order.get(n, len(order)))
        emitted = {gv.name_hint for gv, f in mod.functions.items() if is_prim_func(f)}
        missing = sorted(emitted - set(kernel_map))
        for name in missing:  # a kernel no call in main reaches directly (e.g. called by another)
            kernel_map[name] = []
        how = ("FX node of each binding (name hints set at import) -> bundle pt2 node via "
               "from_node -> canonical ONNX nodes" if imported.frontend == "torch-export"
               else "ONNX node of each binding (name hints set at import)")
        notes.append(f"kernel_map: kernel members read from main after FuseOps (after LegalizeOps when unfused); {how}; fused outputs "
                     f"joined by dataflow (exact); {member.order_matched} joined by op and order only, "
                     f"{member.unmatched} unmatched")
        unmapped = sorted(k for k, v in kernel_map.items() if not v)
        if unmapped:
            notes.append(f"kernels with no ONNX origin: {', '.join(unmapped)}")
        return kernel_map, notes

    # ------------------------------------------------------------------ native runner
    def native_program(self, artifact):
        """The generic TVM runner for the artifact's target (built once per machine into the
        runner cache) and the artifact's model.so; instrumentation is switched at run time."""
        from device_runner.build import cached_runner
        from device_runner.native import NativeProgram

        defines, sources = runner_build_inputs(artifact.target)
        runner = cached_runner("tvm", artifact.target, defines, "auditor-runner-tvm",
                               extra_sources=sources)
        return NativeProgram(runner=runner, model=artifact.path("library"), extra_files=[],
                             instrumented_runner=None, kernel_map=dict(artifact.kernel_map))

    # ------------------------------------------------------------------ run
    def load(self, artifact, bundle):
        return TvmRunnable(artifact.path("library"), bundle)

    def profile_ops(self, artifact, bundle, inputs, runs):
        """Time each kernel call with the relax VM's instrument hook.

        The hook is a Python function the VM calls before and after every call instruction;
        a kernel's time is the interval between its two timestamps, so it includes part of
        the hook's own return and entry path (the floor is measured on an empty builtin and
        stated in the notes). VM builtins (allocation, shape checks, reshape views) are not
        kernels: their instrumented time is reported in the notes, not as rows."""
        import tvm

        op_types = json.loads(artifact.path("kernels").read_text()).get("op_types", {})
        runnable = TvmRunnable(artifact.path("library"), bundle)
        runnable.set_inputs(inputs)
        clock = time.perf_counter_ns
        starts: dict[str, int] = {}
        current: dict[str, list[int]] = {}
        order: list[str] = []

        def instrument(func, name, before_run, ret, *args):
            now = clock()
            if before_run:
                starts[name] = now
            else:
                current.setdefault(name, []).append(now - starts.pop(name, now))
            return 0

        warmup = 10
        plain: list[int] = []
        for i in range(warmup + runs):  # the uninstrumented whole, for the overhead figure
            t0 = clock()
            runnable.run()
            if i >= warmup:
                plain.append(clock() - t0)
        runnable.vm.set_instrument(tvm.runtime.convert(instrument))
        per_run: list[dict[str, list[int]]] = []
        whole: list[int] = []
        for _ in range(warmup + runs):
            current.clear()
            t0 = clock()
            runnable.run()
            whole.append(clock() - t0)
            per_run.append({k: list(v) for k, v in current.items()})
            for k in current:
                if k not in order:
                    order.append(k)
        runnable.close()
        per_run, whole = per_run[warmup:], whole[warmup:]

        def totals(name: str) -> np.ndarray:
            return np.array([sum(r.get(name, [])) for r in per_run], dtype=np.float64) / 1e3

        ops = []
        builtin_calls, builtin_us = 0, 0.0
        for name in order:
            values = totals(name)
            calls = len(per_run[0].get(name, [])) if per_run else 0
            if name not in artifact.kernel_map:
                builtin_calls += calls
                builtin_us += float(np.median(values))
                continue
            ops.append(OpTiming.from_runs(name, op_types.get(name, name), artifact.kernel_map[name],
                                          calls, values, provider="tvm-llvm"))
        floor = ""
        empty = [v for r in per_run for v in r.get("vm.builtin.null_value", [])]
        if empty:
            floor = (f"; an empty call (vm.builtin.null_value) reads {np.median(empty) / 1e3:.2f} µs: "
                     "the hook's share of every interval")
        instrumented = float(np.median(whole)) / 1e3 if whole else None
        uninstrumented = float(np.median(plain)) / 1e3 if plain else None
        overhead = (f"; hook overhead: whole inference {uninstrumented:.1f} µs uninstrumented -> "
                    f"{instrumented:.1f} µs instrumented ({instrumented / uninstrumented:.1f}x), "
                    "medians of the same number of runs in this process"
                    if instrumented and uninstrumented else "")
        return OpProfile(
            method="tvm-vm-instrument", ops=ops, runs=len(per_run),
            instrumented_whole_us=instrumented,
            notes=("relax VM set_instrument: a Python callback before and after every VM call "
                   "instruction, perf_counter_ns taken inside it; a kernel's time is the interval "
                   "between its two callbacks, summed over its calls in one inference; not rescaled"
                   + floor + overhead + f"; {builtin_calls} VM builtin calls per inference "
                   f"(allocation, shape checks, reshape views; no rows) read {builtin_us:.1f} µs "
                   "instrumented (median)"),
        )


def _op_types(member) -> dict[str, str]:
    """Kernel -> the legalised ops it runs, e.g. 'matmul+add+relu' (numeric suffixes dropped)."""
    out: dict[str, str] = {}
    for call in member.calls:
        ops: list[str] = []
        for i in call.members:
            op = member.bindings[i][1].rstrip("0123456789").removeprefix("tir_")
            if op not in ops:
                ops.append(op)
        out.setdefault(call.kernel, "+".join(ops) or call.kernel)
    return out

