"""IREE: MLIR lowering to LLVM CPU code in a .vmfb module, run by IREE's HAL on the CPU.

Two entries (option `frontend`, compilers/iree_import.py): the bundle's torch.export program
through iree-turbine, or the canonical ONNX graph through IREE's ONNX importer. Then
`iree-compile` (PyPI iree-base-compiler) for the `llvm-cpu` backend, with the CPU stated
explicitly: `--iree-llvmcpu-target-cpu=host` on this machine; for armv7-cortex-a8 the triple
armv7a-pc-linux-gnueabihf, cpu cortex-a8, features +neon, hard float. The flags are kept in the
artifact's notes.

Runtime (PyPI iree-base-runtime): the module is loaded on the `local-sync` driver (inline, on
the caller's thread: the board has one core) or `local-task` (IREE's task system with its
worker threads), option `driver`. The timed call is one native `VmContext.invoke` with its
argument and result lists bound once (no Python frame of ours inside a sample; the invoke
resets the result list itself).

Per-dispatch time: IREE's HAL-native profiler (compilers/iree_dispatches.py) through
`iree-benchmark-module --device_profiling_mode=host-execution` and `iree-profile`, run on
the same module, driver and inputs in a child process; each dispatch is joined to the ONNX
nodes named by the locations of its compute ops.

No IREE runtime for 32-bit ARM Linux is published on PyPI or in Debian, so there is no
native runner backend for IREE: the armv7 artifact is built and kept for a board with an
IREE runtime built from source, and a run on a device is skipped.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from compilers.base import TORCH_EXPORT_LOADER, Artifact, Compiler, OptionSpec, Runnable
from ground.children import run_child
from ground.targets import Target

MODULE = "model.vmfb"
MLIR = "model.mlir"
SOURCES = "executable-sources"
BINARIES = "executable-binaries"
KERNELS = "dispatches.json"
PROFILE_METHOD = "iree-hal-profile"
NO_ARM_RUNTIME = ("no IREE runtime for armv7 Linux exists on PyPI (iree-base-runtime ships x86_64 "
                  "and aarch64 wheels only) or in Debian, so the armv7 .vmfb is kept but not run; "
                  "a board needs IREE's runtime built from source")


def compile_flags(target: Target) -> list[str]:
    """iree-compile flags for the llvm-cpu backend and the target's CPU."""
    flags = ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu"]
    if target.is_host:
        return flags + ["--iree-llvmcpu-target-cpu=host"]
    triple = target.triple.replace("-linux-", "-pc-linux-", 1) if "-pc-" not in target.triple else target.triple
    flags.append(f"--iree-llvmcpu-target-triple={triple}")
    if target.cpu:
        flags.append(f"--iree-llvmcpu-target-cpu={target.cpu}")
    if target.features:
        flags.append(f"--iree-llvmcpu-target-cpu-features={','.join(target.features)}")
    if target.float_abi:
        flags.append(f"--iree-llvmcpu-target-float-abi={target.float_abi}")
    return flags


def runtime_tool(name: str) -> Path:
    """A tool of the runtime wheel (iree-benchmark-module, iree-profile)."""
    from iree._runtime import libs

    path = Path(libs.library_path) / name
    if not path.exists():
        raise RuntimeError(f"{name} is not in the iree-base-runtime wheel at {libs.library_path}")
    return path


def _run(cmd: list[str], what: str, timeout: float = 600.0) -> str:
    result = run_child(cmd, timeout_s=timeout)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        detail = next((line for line in lines if "error" in line.lower()), "")
        failure = result.failure(what, timeout)
        raise RuntimeError(f"{failure}" + (f" ({detail.strip()[:300]})" if detail and detail not in failure else ""))
    return result.stdout


class IreeRunnable(Runnable):
    def __init__(self, module_path: Path, driver: str, function: str, n_outputs: int):
        import iree.runtime as rt

        self.rt = rt
        self.device = rt.get_device(driver)
        config = rt.Config(device=self.device)
        self.context = rt.SystemContext(config=config)
        self.context.add_vm_module(rt.VmModule.mmap(config.vm_instance, str(module_path)))
        self.function = self.context.modules.module[function].vm_function
        self._args = rt.VmVariantList(1)
        self._rets = rt.VmVariantList(max(n_outputs, 1))
        self._keep: list = []
        # the timed call: one native invoke with lists bound once (it resets the result list)
        self.run = functools.partial(self.context.vm_context.invoke, self.function, self._args, self._rets)

    def set_inputs(self, arrays):
        rt = self.rt
        # np.require keeps a 0-d array 0-d (np.ascontiguousarray would make it 1-d)
        self._keep = [rt.asdevicearray(self.device, np.require(a, requirements="C")) for a in arrays]
        args = rt.VmVariantList(len(arrays))
        for array in self._keep:
            args.push_ref(array._buffer_view.ref)
        self._args = args
        self.run = functools.partial(self.context.vm_context.invoke, self.function, self._args, self._rets)

    def run(self):  # replaced per instance by the bound native call
        self.context.vm_context.invoke(self.function, self._args, self._rets)

    def outputs(self):
        rt = self.rt
        out = []
        for i in range(len(self._rets)):
            view = self._rets.get_as_object(i, rt.HalBufferView)
            out.append(rt.DeviceArray(self.device, view).to_host().copy())
        return out


class Iree(Compiler):
    name = "iree"
    description = "IREE (MLIR -> llvm-cpu .vmfb), HAL local driver on the CPU"
    accepts = ("torch-export", "onnx")
    targets = ("host", "armv7-cortex-a8")
    options = {
        "frontend": OptionSpec("torch", "import path: torch (torch.export via iree-turbine) or onnx "
                                        "(IREE's ONNX importer); torch falls back to onnx when the "
                                        "model has no torch.export program (noted)", ("torch", "onnx")),
        "driver": OptionSpec("local-sync", "HAL driver: local-sync (inline, one thread) or local-task "
                                           "(IREE's task system, worker threads)", ("local-sync", "local-task")),
    }
    default_variants = ({}, {"frontend": "onnx"}, {"driver": "local-task"})
    no_native_runner = f"is not run on a device: {NO_ARM_RUNTIME}"
    # coverage cases are ONNX only (frontend=torch would fall back to the same import) and the
    # driver does not change what compiles: one variant, ~1 s a case
    coverage_variants = ({"frontend": "onnx"},)
    per_op_method = PROFILE_METHOD
    install_hint = "pip install iree-base-compiler iree-base-runtime iree-turbine"
    compile_imports = (TORCH_EXPORT_LOADER, "iree.turbine.aot", "iree.compiler.extras.onnx_importer")
    cross_cxx = False  # iree-compile links ARM executables itself (LLVM's embedded ELF linker)

    @classmethod
    def available(cls):
        try:
            import iree.compiler  # noqa: F401
            import iree.runtime  # noqa: F401
            from iree.compiler.tools import binaries
        except Exception as e:  # noqa: BLE001 - any import failure means unavailable
            return False, f"iree does not import: {type(e).__name__}: {e}"
        try:
            binaries.find_tool("iree-compile")
        except Exception as e:  # noqa: BLE001
            return False, f"iree-compile not found: {e}"
        from importlib.metadata import PackageNotFoundError, version

        try:
            turbine = f"iree-turbine {version('iree-turbine')}"
        except PackageNotFoundError:
            turbine = "no iree-turbine (frontend=torch unavailable)"
        return True, (f"iree-base-compiler {version('iree-base-compiler')}, "
                      f"iree-base-runtime {version('iree-base-runtime')}, {turbine}")

    # ------------------------------------------------------------------ compile
    def compile(self, bundle, target, options, workdir):
        from iree.compiler.tools import binaries

        from compilers import iree_dispatches, iree_import

        options = self.resolve_options(options)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        onnx_path = bundle.path("onnx") if "onnx" in bundle.formats() else None
        frontend = options["frontend"]
        if frontend == "torch" and "torch-export" not in bundle.formats():
            if onnx_path is None:
                raise ValueError("frontend=torch needs the bundle's torch.export program, which this model lacks")
            why = bundle.problems.get("torch-export", "no torch.export program in the bundle")
            notes.append(f"frontend=torch fell back to the ONNX importer: {why}")
            frontend = "onnx"
        if frontend == "onnx" and onnx_path is None:
            raise ValueError("frontend=onnx needs the bundle's ONNX graph, which this model lacks"
                             + (f" ({bundle.problems['onnx']})" if "onnx" in bundle.problems else ""))
        if frontend == "torch":
            imported = iree_import.import_torch(bundle.path("torch-export"), onnx_path, workdir / MLIR)
        else:
            imported = iree_import.import_onnx(onnx_path, workdir / MLIR)
        notes.extend(imported.notes)

        sources, binaries_dir = workdir / SOURCES, workdir / BINARIES
        for folder in (sources, binaries_dir):
            shutil.rmtree(folder, ignore_errors=True)
        flags = [*compile_flags(target), f"--iree-input-type={imported.input_type}"]
        cmd = [binaries.find_tool("iree-compile"), str(imported.mlir), *flags, "-o", str(workdir / MODULE),
               f"--iree-hal-dump-executable-sources-to={sources}",
               f"--iree-hal-dump-executable-binaries-to={binaries_dir}", "--mlir-print-debuginfo"]
        _run(cmd, "iree-compile")
        notes.append("iree-compile " + " ".join(flags))
        if not target.is_host:
            notes.append(NO_ARM_RUNTIME)

        dispatches = iree_dispatches.dispatch_sources(sources, imported.loc_to_onnx)
        kernel_map = {name: info["onnx"] for name, info in dispatches.items()}
        covered = {n for nodes in kernel_map.values() for n in nodes}
        unmapped = sorted(k for k, v in kernel_map.items() if not v)
        notes.append(f"kernel_map: {len(kernel_map)} dispatches from --iree-hal-dump-executable-sources-to; "
                     "each joined to the ONNX nodes named by its compute ops' locations (linalg / "
                     f"iree_linalg_ext, not linalg.fill); {len(covered)} ONNX nodes covered"
                     + (f"; no ONNX origin: {', '.join(unmapped)}" if unmapped else ""))
        (workdir / KERNELS).write_text(json.dumps({
            "function": imported.function, "frontend": frontend, "driver": options["driver"],
            "flags": flags, "dispatches": dispatches}, indent=1))
        from importlib.metadata import version

        return Artifact(
            compiler=self.name, compiler_version=version("iree-base-compiler"), target=target,
            options=options, directory=workdir,
            files={"module": MODULE, "mlir": MLIR, "kernels": KERNELS, "sources": SOURCES,
                   "binaries": BINARIES},
            kernel_map=kernel_map, notes=notes,
        )

    # ------------------------------------------------------------------ run
    def _meta(self, artifact) -> dict:
        return json.loads(artifact.path("kernels").read_text())

    def load(self, artifact, bundle):
        meta = self._meta(artifact)
        return IreeRunnable(artifact.path("module"), artifact.options["driver"], meta["function"],
                            len(bundle.outputs))

    def native_program(self, artifact):
        return None  # see no_native_runner

    def profile_ops(self, artifact, bundle, inputs, runs):
        """Per-dispatch time from IREE's HAL profiler, in iree-benchmark-module's own loop.

        The same loop runs twice on the artifact's module, driver and inputs: plain, and with
        `--device_profiling_mode=host-execution` (one host-clock event per dispatch); the
        medians of the two give the profiler's overhead. `iree-profile` lists the events;
        the first `warmup` inferences are dropped."""
        from compilers import iree_dispatches

        meta = self._meta(artifact)
        warmup = 10
        with tempfile.TemporaryDirectory(prefix="iree-profile-") as tmp:
            tmp_path = Path(tmp)
            input_flags = []
            for i, array in enumerate(inputs):
                path = tmp_path / f"input{i}.npy"
                np.save(path, np.require(array, requirements="C"))
                input_flags.append(f"--input=@{path}")
            base = [str(runtime_tool("iree-benchmark-module")), f"--module={artifact.path('module')}",
                    f"--device={artifact.options['driver']}", f"--function={meta['function']}", *input_flags,
                    f"--benchmark_repetitions={warmup + runs}", "--benchmark_min_time=1x",
                    "--benchmark_format=json"]
            plain = _per_call_us(_run(base, "iree-benchmark-module"))[warmup:]
            bundle_path = tmp_path / "dispatches.ireeprof"
            profiled = _per_call_us(_run([*base, "--device_profiling_mode=host-execution",
                                          f"--device_profiling_output={bundle_path}"],
                                         "iree-benchmark-module (profiling)"))[warmup:]
            events = _run([str(runtime_tool("iree-profile")), "dispatch", "--format=jsonl", "--dispatch_events",
                           str(bundle_path)], "iree-profile").splitlines()
        submissions = iree_dispatches.parse_events(events)
        inferences = iree_dispatches.per_inference(submissions, warmup + runs)
        if inferences is None:
            return None  # submissions not a whole number per inference: no honest grouping
        per_call = len(submissions) // (warmup + runs)
        notes = ("IREE HAL-native profiling (iree-benchmark-module --device_profiling_mode=host-execution, "
                 "read with iree-profile dispatch): one host-clock event per dispatch from the start to the end "
                 f"of its execution by the local driver, summed per inference ({per_call} queue submission(s) "
                 "each); "
                 f"{warmup} warm-up inferences dropped; measured in iree-benchmark-module, not in the "
                 "timed process; not rescaled")
        return iree_dispatches.profile_from_events(
            inferences[warmup:], meta["dispatches"], float(np.median(profiled)) if profiled else None,
            float(np.median(plain)) if plain else None, notes)


def _per_call_us(report: str) -> list[float]:
    """Google Benchmark JSON -> each repetition's real time (one call each), in µs."""
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
    start = report.find("{")
    data = json.loads(report[start:]) if start >= 0 else {"benchmarks": []}
    return [b["real_time"] * scale[b["time_unit"]] for b in data["benchmarks"]
            if b.get("run_type") == "iteration"]
