"""SOFIE (ROOT/TMVA's ONNX -> C++ generator, PyPI `sofie`), built with g++ against a BLAS.

compile() has SOFIE generate two headers from the canonical ONNX graph: the plain one and
one with `Options.kProfile`. SOFIE's own timers (two steady_clock reads, a std::map lookup by
name and a push_back per operator) cost more than a small block's operators, so
`light_profile_header` rewrites them into one read of device_runner's op clock per operator
boundary (rdtsc on x86-64) added into a fixed array. Each header is wrapped by
compilers/sofie_glue.cpp (a small C ABI: create / infer / destroy, plus the operator names
and the per-operator times since the last take) and built into a shared
library for the host (loaded with ctypes) and into the native runner (device_runner/,
backend `sofie`): static ARMv7 executables kept for the board at compile time, host
executables on first use (`native_program`).

SOFIE names each generated operator after the ONNX node it was parsed from; when it fuses
a pair (Gemm + Relu), the fused operator carries the name of the last node and the other
node's output tensor disappears from its model. `kernel_nodes` rebuilds the node list of
every kernel from that, and `tests/test_sofie_cpp.py` checks it.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from compilers.base import Artifact, Compiler, OptionSpec, Runnable
from ground.children import Child, run_child
from ground.op_timing import OpProfile, OpTiming
from ground.quiet import captured_output
from ground.targets import Target
from ground.tensors import ModelBundle

HERE = Path(__file__).resolve().parent
GLUE = HERE / "sofie_glue.cpp"
PROFILE_METHOD = "sofie-light-timers"
LIGHT_TIMERS = ("SOFIE's kProfile operator boundaries with one op-clock read each: an operator's time "
                "runs from the previous read to the end of its generated code")
OP_CLOCK_DIR = HERE.parent / "device_runner" / "runner" / "src"  # op_clock.h, shared with the runner

HOST_LIB = Path("/usr/lib/x86_64-linux-gnu")
ARM_LIB = Path("/usr/lib/arm-linux-gnueabihf")
ARM_EXTRA_FLAGS = ["-Wno-psabi"]  # silences GCC's ABI-change notes for NEON vector arguments

# blas choice -> how to link it. `expect` is a piece of the path the host library's sgemm_
# must be bound to at load time (checked, so an alternatives switch or an interposed BLAS
# cannot silently change what is measured). Debian packages: libopenblas-dev, libblis-dev,
# libblas-dev (and the same with :armhf for the board).
BLAS: dict[str, dict[str, Any]] = {
    "openblas": {
        "define": "SOFIE_GLUE_OPENBLAS",
        "host": ["-lopenblas"], "expect": "openblas",
        "arm": ["-l:libopenblas.a", "-lpthread"], "arm_file": ARM_LIB / "libopenblas.a",
        "package": "libopenblas-dev",
    },
    "blis": {
        "define": "SOFIE_GLUE_BLIS",
        "host": ["-lblis"], "expect": "blis",
        "arm": ["-l:libblis.a", "-fopenmp", "-lpthread"], "arm_file": ARM_LIB / "libblis.a",
        "package": "libblis-dev",
    },
    "reference": {  # netlib reference BLAS, by path: libblas.so.3 is an alternatives slot
        "define": None,
        "host": [str(HOST_LIB / "blas" / "libblas.so.3"), f"-Wl,-rpath,{HOST_LIB / 'blas'}"],
        "expect": "/blas/libblas.so",
        "arm": [str(ARM_LIB / "blas" / "libblas.a")],
        "arm_file": ARM_LIB / "blas" / "libblas.a",
        "package": "libblas-dev",
    },
}

C_TYPES = {
    "float": "float32", "double": "float64", "int64_t": "int64", "int32_t": "int32",
    "int16_t": "int16", "int8_t": "int8", "uint8_t": "uint8", "uint16_t": "uint16",
    "uint32_t": "uint32", "uint64_t": "uint64", "bool": "bool",
}



# ---------------------------------------------------------------------------------------
# generation helpers


def unsupported_ops(onnx_path: Path, workdir: Path) -> dict[str, list[str]]:
    """Op type -> node names of every operator SOFIE's ONNX parser lacks ({} = all known)."""
    import onnx
    import sofie

    log = workdir / "sofie_check.log"
    with captured_output(log):
        ok = sofie.onnx.check_model(str(onnx_path))
    if ok:
        return {}
    text = log.read_text(errors="replace")
    missing: list[str] = []
    after = text.split("List of missing operators", 1)[-1].splitlines()[1:]
    for line in after:
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s+\d+\s*$", line)
        if m:
            missing.append(m.group(1))
    model = onnx.load(str(onnx_path), load_external_data=False)
    found: dict[str, list[str]] = {t: [] for t in missing}
    for node in model.graph.node:
        if node.op_type in found:
            found[node.op_type].append(node.name)
    return found or {"?": [f"see {log.name}"]}


def _generate(onnx_path: Path, header: Path, profile: bool):
    import sofie

    model = sofie.onnx.parse(str(onnx_path))
    if profile:
        model.generate(sofie.Options.kProfile)
    else:
        model.generate()
    model.output_generated(str(header))
    return model


def infer_params(header_text: str) -> list[tuple[str, str, bool]]:
    """(C type, parameter name, is_input) of doInfer after the session, in call order."""
    m = re.search(r"void\s+doInfer\s*\(\s*Session\s+const\s*&\s*\w+\s*,([^)]*)\)", header_text)
    if not m:
        raise RuntimeError("SOFIE header has no doInfer(Session const&, ...) to call")
    params = []
    for raw in m.group(1).split(","):
        raw = " ".join(raw.split())
        pm = re.match(r"^(.*?)\s*(\w+)$", raw)
        if not pm or "*" not in pm.group(1):
            raise RuntimeError(f"SOFIE doInfer parameter {raw!r} is not a tensor pointer "
                               "(dynamic shapes are not supported by this adapter)")
        ctype = pm.group(1).strip()
        is_input = "const" in ctype.split("*")[0].split()
        params.append((ctype, pm.group(2), is_input))
    return params


def _base_type(ctype: str) -> str:
    words = [w for w in ctype.replace("*", " ").split() if w not in ("const", "std::")]
    name = words[-1] if words else ctype
    return name.removeprefix("std::")


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "", name)


def _match_order(bundle_names: list[str], sofie_names: list[str], what: str) -> list[int]:
    """For each SOFIE position, the bundle index of the same tensor."""
    if len(bundle_names) != len(sofie_names):
        raise RuntimeError(f"SOFIE has {len(sofie_names)} {what}s {sofie_names}, the bundle "
                           f"{len(bundle_names)} {bundle_names}")
    order = []
    for name in sofie_names:
        hits = [i for i, b in enumerate(bundle_names) if b == name]
        if not hits:
            hits = [i for i, b in enumerate(bundle_names) if _sanitize(b) == _sanitize(name)]
        if len(hits) != 1:
            raise RuntimeError(f"SOFIE {what} {name!r} matches no single bundle {what} of {bundle_names}")
        order.append(hits[0])
    return order


_KPROFILE_START = re.compile(r"^[ \t]*tp_start = std::chrono::steady_clock::now\(\);[ \t]*$", re.M)
_KPROFILE_STOP = re.compile(
    r'fProfilingResults\["([^"]+)"\]\.push_back\(\s*std::chrono::duration_cast<std::chrono::duration<'
    r'double,\s*std::micro>>\(\s*std::chrono::steady_clock::now\(\)\s*-\s*(tp_start|tp_overall_start)'
    r'\)\.count\(\)\);')
_KPROFILE_OVERALL_START = re.compile(r"^[ \t]*tp_overall_start = std::chrono::steady_clock::now\(\);[ \t]*$", re.M)
_ONLY_COMMENTS = re.compile(r"^(\s*(//[^\n]*)?)*\s*$")
_OP_STOP = re.compile(r'AUDITOR_OP_STOP\((\d+), "([^"]+)"\);')


def light_profile_header(text: str) -> str:
    """SOFIE's kProfile header with its timers replaced by the glue's light ones.

    Every operator's `tp_start = now()` ... `fProfilingResults[name].push_back(now() - tp_start)`
    becomes `AUDITOR_OP_START();` ... `AUDITOR_OP_STOP(k, "name");`, and a START right after
    the previous STOP with only comments between is dropped: that STOP's clock read starts
    the next operator too, so each boundary costs one read. SOFIE's Overall_Time timer goes.
    A header not in this form is an error, never a silently uninstrumented build.
    """
    starts = list(_KPROFILE_START.finditer(text))
    timers = list(_KPROFILE_STOP.finditer(text))
    stops = [m for m in timers if m.group(2) == "tp_start"]
    overall = [m for m in timers if m.group(2) == "tp_overall_start"]
    in_text_order = [kind for _, kind in sorted([(m.start(), "start") for m in starts]
                                                + [(m.start(), "stop") for m in stops])]
    if not stops or in_text_order != ["start", "stop"] * len(stops) or len(overall) != 1:
        raise RuntimeError(f"SOFIE's kProfile header is not in the form this adapter instruments "
                           f"({len(starts)} timer starts, {len(stops)} operator stops, "
                           f"{len(overall)} overall timers)")
    names = [m.group(1) for m in stops]
    if len(set(names)) != len(names):
        raise RuntimeError(f"SOFIE's kProfile header times an operator name twice: {names}")
    edits = [(overall[0].start(), overall[0].end(), "")]
    edits += [(m.start(), m.end(), "") for m in _KPROFILE_OVERALL_START.finditer(text)]
    previous_stop = None
    for k, (start, stop) in enumerate(zip(starts, stops)):
        chained = previous_stop is not None and _ONLY_COMMENTS.match(text[previous_stop:start.start()])
        edits.append((start.start(), start.end(), "" if chained else "   AUDITOR_OP_START();"))
        edits.append((stop.start(), stop.end(), f'AUDITOR_OP_STOP({k}, "{stop.group(1)}");'))
        previous_stop = stop.end()
    for begin, end, new in sorted(edits, reverse=True):
        text = text[:begin] + new + text[end:]
    return text


def profile_labels(header_text: str) -> list[str]:
    """Operator names of a light-profile header, in execution order (index = timer slot)."""
    found = [(int(k), name) for k, name in _OP_STOP.findall(header_text)]
    if [k for k, _ in found] != list(range(len(found))):
        raise RuntimeError("the profiled SOFIE header's operator timers are not numbered 0..n-1")
    return [name for _, name in found]


def kernel_nodes(labels: list[str], onnx_model, folded) -> tuple[dict[str, list[str]], list[str]]:
    """SOFIE operator name -> canonical ONNX node names it covers, and the kernel-less nodes.

    `labels` are SOFIE's operator names (ONNX node names); `folded(node)` says whether a node
    left no code because its outputs became constants of SOFIE's model. Any other node
    without a kernel was fused: into its only consumer when that is a kernel (SOFIE's
    Gemm+Relu is named after the Relu), else into its input's producer when that kernel
    feeds only it.
    """
    nodes = list(onnx_model.graph.node)
    order = {n.name: i for i, n in enumerate(nodes)}
    producer = {t: n for n in nodes for t in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    graph_outputs = {o.name for o in onnx_model.graph.output}
    kernels = set(labels)
    owner: dict[str, str] = {}
    kernel_less: list[str] = []

    def resolve(node, seen=()) -> str | None:
        if node.name in kernels:
            return node.name
        if node.name in owner:
            return owner[node.name]
        if node.name in seen:
            return None
        users = [u for t in node.output for u in consumers.get(t, [])]
        if len(users) == 1 and not set(node.output) & graph_outputs:
            k = resolve(users[0], seen + (node.name,))
            if k is not None:
                return k
        srcs = [producer[t] for t in node.input if t in producer]
        if len(srcs) == 1:
            src = srcs[0]
            src_users = [u for t in src.output for u in consumers.get(t, [])]
            if len(src_users) == 1 and src.name in kernels:
                return src.name
        return None

    for node in nodes:
        if node.name in kernels:
            continue
        if folded(node):
            kernel_less.append(node.name)
            continue
        k = resolve(node)
        if k is None:
            kernel_less.append(node.name)
        else:
            owner[node.name] = k
    mapping: dict[str, list[str]] = {}
    for label in labels:
        covered = [label] if label in order else []
        covered += [n for n, k in owner.items() if k == label]
        mapping[label] = sorted(set(covered), key=order.get)
    return mapping, kernel_less


# ---------------------------------------------------------------------------------------
# building


def _fill_glue(header: Path, namespace: str, params, in_specs, out_specs, op_names=()) -> str:
    """in_specs/out_specs: the bundle's TensorSpecs in doInfer order; op_names: the profiled
    header's operators in timer-slot order."""
    in_bytes = [int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in in_specs]
    out_bytes = [int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in out_specs]

    def dtypes(specs) -> str:
        return ", ".join(f'"{s.dtype}"' for s in specs) or '""'

    def shapes(specs) -> str:
        return ", ".join("{" + ", ".join(f"{int(d)}LL" for d in s.shape) + "}" for s in specs)

    args, n_in, n_out = [], 0, 0
    for ctype, _name, is_input in params:
        if is_input:
            args.append(f"static_cast<{ctype}>(in[{n_in}])")
            n_in += 1
        else:
            args.append(f"static_cast<{ctype}>(out[{n_out}])")
            n_out += 1
    text = GLUE.read_text()
    for key, value in {
        "@HEADER@": header.name, "@NAMESPACE@": namespace, "@CALL_ARGS@": ", ".join(args),
        "@NUM_INPUTS@": str(n_in), "@NUM_OUTPUTS@": str(n_out),
        "@INPUT_BYTES@": ", ".join(str(b) for b in in_bytes) or "0",
        "@OUTPUT_BYTES@": ", ".join(str(b) for b in out_bytes) or "0",
        "@INPUT_DTYPES@": dtypes(in_specs), "@OUTPUT_DTYPES@": dtypes(out_specs),
        "@INPUT_SHAPES@": shapes(in_specs), "@OUTPUT_SHAPES@": shapes(out_specs),
        "@OP_COUNT@": str(len(op_names)), "@OP_NAMES@": ", ".join(json.dumps(n) for n in op_names) or '""',
    }.items():
        text = text.replace(key, value)
    return text


def _run_builds(commands: list[tuple[str, list[str]]], cwd: Path, log: Path) -> None:
    """Run the compiler commands in parallel; raise with the first error line of a failure."""
    children = [(what, Child(cmd, cwd=cwd, merge_stderr=True)) for what, cmd in commands]
    failures = []
    with open(log, "a") as f:
        for what, child in children:
            done = child.wait()
            out = done.stdout
            f.write(f"$ {shlex.join(done.argv)}\n{out}\n")
            if done.returncode != 0:
                lines = [ln for ln in out.splitlines()
                         if re.search(r"error|cannot find|undefined reference", ln)
                         and not ln.startswith("collect2")] or out.splitlines() or ["?"]
                failures.append(f"{what}: {lines[0].strip()}")
    if failures:
        raise RuntimeError(f"building the SOFIE code failed: {failures[0]}")


NATIVE_DIR = "native"


def _build_native(workdir: Path, target: Target, options: dict[str, Any],
                  files: dict[str, str]) -> dict[str, str]:
    """The native runner and its instrumented twin, with the glue (and so the model) compiled
    in; static for a device target (a board's glibc need not match Debian 12's)."""
    import sofie

    from device_runner.build import build_runner

    blas = BLAS[options["blas"]]
    defines = [d for d in [blas["define"]] if d]
    if options["zero_pool"]:
        defines.append("SOFIE_GLUE_ZERO_POOL")
    opt = shlex.split(options["opt_flags"])
    if target.is_host:
        libs = list(blas["host"])
        flags = [*opt, *(["-march=" + options["march"]] if options["march"] else [])]
    else:
        libs = [f"-L{ARM_LIB}", *blas["arm"]]
        flags = opt
    build = workdir / NATIVE_DIR
    build_runner("sofie", target, {
        "SOFIE_GLUE": str(workdir / files["glue"]),
        "SOFIE_GLUE_PROFILE": str(workdir / files["glue_profile"]),
        "SOFIE_DEFINES": ";".join(defines),
        "SOFIE_LIBS": ";".join(libs),
        "SOFIE_CXX_FLAGS": ";".join(flags),
        "SOFIE_VERSION": getattr(sofie, "__version__", "?"),
    }, build, workdir / "native_build.log", static=not target.is_host)
    return {"runner": f"{NATIVE_DIR}/auditor-runner-sofie",
            "runner_profile": f"{NATIVE_DIR}/auditor-runner-sofie-prof"}


def _native_march(cxx: str = "g++") -> str:
    try:
        out = run_child([cxx, "-march=native", "-Q", "--help=target"], timeout_s=30).stdout
        m = re.search(r"^\s*-march=\s*(\S+)", out, re.M)
        return m.group(1) if m else "?"
    except Exception:  # noqa: BLE001 - only recorded
        return "?"


def _tool_version(cxx: str) -> str:
    try:
        return run_child([cxx, "--version"], timeout_s=30).stdout.splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


# ---------------------------------------------------------------------------------------
# running


class SofieLibrary:
    """A loaded host build: the C ABI of compilers/sofie_glue.cpp through ctypes."""

    def __init__(self, path: Path, weights: Path, threads: int, profiled: bool):
        self.lib = lib = ctypes.CDLL(str(path))
        lib.sofie_last_error.restype = ctypes.c_char_p
        lib.sofie_blas_library.restype = ctypes.c_char_p
        lib.sofie_set_threads.argtypes = [ctypes.c_int]
        lib.sofie_create.restype = ctypes.c_void_p
        lib.sofie_create.argtypes = [ctypes.c_char_p]
        lib.sofie_destroy.argtypes = [ctypes.c_void_p]
        lib.sofie_infer.restype = None
        lib.sofie_infer.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.sofie_error.restype = ctypes.c_char_p
        lib.sofie_error.argtypes = [ctypes.c_void_p]
        lib.sofie_time_runs.restype = None
        lib.sofie_time_runs.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                        ctypes.c_void_p]
        lib.sofie_intermediate_bytes.restype = ctypes.c_size_t
        lib.sofie_intermediate_bytes.argtypes = [ctypes.c_void_p]
        if profiled:
            lib.sofie_prof_name.restype = ctypes.c_char_p
            lib.sofie_prof_name.argtypes = [ctypes.c_int]
            lib.sofie_prof_clock.restype = ctypes.c_char_p
            lib.sofie_prof_read_cost_ns.restype = ctypes.c_double
            lib.sofie_prof_take.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_int)]
            self.op_names = [lib.sofie_prof_name(i).decode() for i in range(lib.sofie_prof_count())]
            self.op_clock = (f"{lib.sofie_prof_clock().decode()}; one read costs "
                             f"{lib.sofie_prof_read_cost_ns():.1f} ns here")
            self._ns = (ctypes.c_double * max(1, len(self.op_names)))()
            self._calls = (ctypes.c_int * max(1, len(self.op_names)))()
        lib.sofie_set_threads(threads)
        handle = lib.sofie_create(str(weights).encode())
        if not handle:
            raise RuntimeError(f"SOFIE Session failed to load weights: "
                               f"{lib.sofie_last_error().decode(errors='replace')}")
        self.handle = ctypes.c_void_p(handle)

    def blas_library(self) -> str:
        return self.lib.sofie_blas_library().decode(errors="replace")

    def error(self) -> str:
        return self.lib.sofie_error(self.handle).decode(errors="replace")

    def take_op_times(self) -> tuple[list[float], list[int]]:
        """Per operator (op_names order): nanoseconds and calls since the last take; zeroes them."""
        self.lib.sofie_prof_take(self._ns, self._calls)
        n = len(self.op_names)
        return list(self._ns[:n]), list(self._calls[:n])

    def close(self) -> None:
        if self.handle:
            self.lib.sofie_destroy(self.handle)
            self.handle = None


class SofieRunnable(Runnable):
    timing_loop = "sofie glue: steady_clock around each doInfer call, in C (sofie_time_runs)"

    def __init__(self, library: SofieLibrary, bundle: ModelBundle, io: dict):
        self.library = library
        self.bundle = bundle
        self._in_order = io["input_order"]  # SOFIE position -> bundle input index
        self._out_order = io["output_order"]
        # Output buffers allocated once; SOFIE writes its flat vectors straight into them.
        self._out = [np.empty(s.shape, dtype=s.dtype) for s in bundle.outputs]
        self._out_ptrs = (ctypes.c_void_p * len(self._out_order))(
            *[self._out[i].ctypes.data for i in self._out_order])
        self._in_ptrs = (ctypes.c_void_p * len(self._in_order))()
        self._inputs: list[np.ndarray] = []
        self._infer = library.lib.sofie_infer
        self._handle = library.handle

    def set_inputs(self, arrays):
        self._inputs = [np.ascontiguousarray(a, dtype=s.dtype)
                        for a, s in zip(arrays, self.bundle.inputs)]
        for pos, index in enumerate(self._in_order):
            self._in_ptrs[pos] = self._inputs[index].ctypes.data

    def run(self):
        self._infer(self._handle, self._in_ptrs, self._out_ptrs)

    def timed_runs(self, n):
        ns = np.empty(n, dtype=np.int64)
        self.library.lib.sofie_time_runs(self._handle, self._in_ptrs, self._out_ptrs, n, ns.ctypes.data)
        return ns

    def outputs(self):
        err = self.library.error()
        if err:
            raise RuntimeError(f"SOFIE doInfer threw: {err}")
        return [buf.copy() for buf in self._out]

    def memory_info(self):
        info = {"intermediate_pool_bytes": int(
            self.library.lib.sofie_intermediate_bytes(self.library.handle))}
        return info

    def close(self):
        self.library.close()


# ---------------------------------------------------------------------------------------


class Sofie(Compiler):
    name = "sofie"
    description = "SOFIE (ROOT/TMVA) ONNX -> C++ code, g++ with a BLAS"
    accepts = ("onnx",)
    targets = ("host", "armv7-cortex-a8")
    options = {
        "blas": OptionSpec("openblas", "BLAS the generated code's sgemm_/sgemv_ link to "
                           "(reference = Debian's netlib libblas)", tuple(BLAS)),
        "opt_flags": OptionSpec("-O3", "g++ optimisation flags (shell-split)"),
        "march": OptionSpec("native", "host -march ('native' = this CPU, resolved name "
                            "recorded); armv7-cortex-a8 builds always use -mcpu=cortex-a8 "
                            "-mfpu=neon -mfloat-abi=hard"),
        "threads": OptionSpec(1, "BLAS threads (openblas, blis; the board has one core)"),
        "zero_pool": OptionSpec(False, "zero SOFIE's intermediate memory pool before every "
                                "inference (timed): works around generated code that reads pool "
                                "bytes it never writes, e.g. SOFIE 0.1.0's dilated Conv"),
    }
    default_variants = ({}, {"blas": "blis"}, {"blas": "reference"})
    per_op_method = PROFILE_METHOD
    install_hint = ("pip install sofie; apt-get install g++ libopenblas-dev libblis-dev "
                    "libblas-dev (board: g++-arm-linux-gnueabihf and the same packages :armhf)")

    @classmethod
    def available(cls):
        try:
            import sofie
        except Exception as e:  # noqa: BLE001
            return False, f"sofie does not import: {e}"
        if shutil.which("g++") is None:
            return False, "g++ not found"
        return True, getattr(sofie, "__version__", "?")

    def compile(self, bundle, target, options, workdir):
        import onnx
        import sofie

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        onnx_path = bundle.path("onnx")
        blas = BLAS[options["blas"]]
        missing = unsupported_ops(onnx_path, workdir)
        if missing:
            what = "; ".join(f"{op} (nodes {', '.join(names)})" for op, names in missing.items())
            raise RuntimeError(f"SOFIE does not support ONNX operator {what}")

        header, header_prof = workdir / "sofie_model.hxx", workdir / "sofie_model_prof.hxx"
        with captured_output(workdir / "sofie_generate.log"):
            model = _generate(onnx_path, header, profile=False)
            _generate(onnx_path, header_prof, profile=True)
        weights = header.with_suffix(".dat")
        weights_prof = header_prof.with_suffix(".dat")
        if weights_prof.exists():
            if weights_prof.read_bytes() != weights.read_bytes():
                raise RuntimeError("SOFIE wrote different weights for the profiled build")
            weights_prof.unlink()
        text, text_prof = header.read_text(), light_profile_header(header_prof.read_text())
        header_prof.write_text(text_prof)
        params = infer_params(text)
        if infer_params(text_prof) != params:
            raise RuntimeError("SOFIE's plain and profiled doInfer signatures differ")
        namespace = f"SOFIE_{model.get_name()}"
        if f"namespace {namespace}" not in text:
            raise RuntimeError(f"SOFIE header has no namespace {namespace}")

        # SOFIE's tensor order and types against the bundle's.
        in_names, out_names = list(model.get_input_tensor_names()), list(model.get_output_tensor_names())
        input_order = _match_order([s.name for s in bundle.inputs], in_names, "input")
        output_order = _match_order([s.name for s in bundle.outputs], out_names, "output")
        in_params = [p for p in params if p[2]]
        out_params = [p for p in params if not p[2]]
        if len(in_params) != len(in_names) or len(out_params) != len(out_names):
            raise RuntimeError(f"SOFIE doInfer takes {len(in_params)} inputs/{len(out_params)} "
                               f"outputs, its model lists {len(in_names)}/{len(out_names)}")
        for (ctype, pname, _), index, specs, what in (
            [(p, i, bundle.inputs, "input") for p, i in zip(in_params, input_order)]
            + [(p, i, bundle.outputs, "output") for p, i in zip(out_params, output_order)]
        ):
            spec = specs[index]
            dtype = C_TYPES.get(_base_type(ctype))
            if dtype != spec.dtype:
                raise RuntimeError(f"SOFIE {what} {pname} is {ctype}, the bundle's {spec.name} "
                                   f"is {spec.dtype}")
        for name, index in zip(out_names, output_order):
            spec = bundle.outputs[index]
            shape = [int(d) for d in model.get_tensor_shape(name)]
            if int(np.prod(shape)) != int(np.prod(spec.shape)):
                raise RuntimeError(f"SOFIE output {name} has shape {shape}, the bundle's "
                                   f"{spec.name} {list(spec.shape)}")
        in_specs = [bundle.inputs[i] for i in input_order]
        out_specs = [bundle.outputs[i] for i in output_order]

        # Kernels: the profiled build's operators, mapped back to canonical ONNX nodes.
        graph = onnx.load(str(onnx_path), load_external_data=False)
        labels = profile_labels(text_prof)

        def folded(node) -> bool:
            outs = [_sanitize(t) for t in node.output if t]
            try:
                return bool(outs) and all(model.is_initialized_tensor(t) for t in outs)
            except Exception:  # noqa: BLE001 - an unknown tensor is not a constant
                return False

        kernel_map, kernel_less = kernel_nodes(labels, graph, folded)

        glue, glue_prof = workdir / "sofie_glue_model.cpp", workdir / "sofie_glue_model_prof.cpp"
        glue.write_text(_fill_glue(header, namespace, params, in_specs, out_specs))
        glue_prof.write_text(_fill_glue(header_prof, namespace, params, in_specs, out_specs, labels))

        opt = shlex.split(options["opt_flags"])
        defines = [f"-D{blas['define']}"] if blas["define"] else []
        if options["zero_pool"]:
            defines.append("-DSOFIE_GLUE_ZERO_POOL")
        files = {"header": header.name, "header_profile": header_prof.name,
                 "weights": weights.name, "glue": glue.name, "glue_profile": glue_prof.name}
        notes = [f"BLAS {options['blas']} ({blas['package']})"]
        if target.is_host:
            cxx = target.cxx
            march = options["march"]
            arch = ["-march=" + march] if march else []
            if march == "native":
                notes.append(f"-march=native resolved to {_native_march(cxx)}")
            base = [cxx, "-std=c++17", *opt, *arch, "-fPIC", "-shared", "-fvisibility=hidden",
                    "-fvisibility-inlines-hidden", f"-I{OP_CLOCK_DIR}", *defines]
            lib, lib_prof = "libsofie_model.so", "libsofie_model_prof.so"
            commands = [
                ("library", [*base, "-o", lib, glue.name, *blas["host"], "-ldl"]),
                ("profiled library", [*base, "-DSOFIE_GLUE_PROFILE", "-o", lib_prof,
                                      glue_prof.name, *blas["host"], "-ldl"]),
            ]
            files.update(library=lib, library_profile=lib_prof)
        else:
            cxx = target.cxx
            if not Path(blas["arm_file"]).exists():
                raise RuntimeError(f"no armhf {options['blas']} at {blas['arm_file']} "
                                   f"(apt-get install {blas['package']}:armhf)")
            commands = []
            if options["blas"] == "openblas":
                notes.append("Debian's armhf OpenBLAS is built for ARMV6: no NEON kernels")
        if commands:
            _run_builds(commands, workdir, workdir / "build.log")
        if not target.is_host:
            files.update(_build_native(workdir, target, options, files))
            notes.append("static ARMv7 native runners (device_runner, backend sofie): "
                         f"{files['runner']} and the instrumented {files['runner_profile']}")

        io = {
            "input_order": input_order, "output_order": output_order,
            "sofie_inputs": in_names, "sofie_outputs": out_names,
            "params": [list(p) for p in params], "namespace": namespace,
            "kernel_less_nodes": kernel_less,
            "commands": {what: shlex.join(cmd) for what, cmd in commands},
            "cxx": _tool_version(cxx),
        }
        (workdir / "sofie_io.json").write_text(json.dumps(io, indent=2))
        files["io"] = "sofie_io.json"
        if kernel_less:
            notes.append(f"nodes without a SOFIE operator (constants at generation): {kernel_less}")
        if commands:
            notes.append(f"built with: {shlex.join(commands[0][1])}")
        return Artifact(
            compiler=self.name, compiler_version=sofie.__version__, target=target,
            options=dict(options), directory=workdir, files=files, kernel_map=kernel_map,
            notes=notes,
        )

    def native_program(self, artifact: Artifact):
        """The runner with this model compiled in (and its light-timer build): built at compile
        time for a device target, on first use (into the artifact directory) for the host."""
        from device_runner.native import NativeProgram

        files = dict(artifact.files)
        if "runner" not in files:
            files.update(_build_native(artifact.directory, artifact.target, artifact.options, files))
        io = json.loads(artifact.path("io").read_text())
        return NativeProgram(
            runner=artifact.directory / files["runner"], model=artifact.path("weights"),
            instrumented_runner=artifact.directory / files["runner_profile"],
            kernel_map=artifact.kernel_map, input_order=io["input_order"],
            output_order=io["output_order"])

    def _library(self, artifact: Artifact, profiled: bool) -> SofieLibrary:
        role = "library_profile" if profiled else "library"
        library = SofieLibrary(artifact.path(role), artifact.path("weights"),
                               artifact.options["threads"], profiled)
        bound = library.blas_library()
        expect = BLAS[artifact.options["blas"]]["expect"]
        if expect not in bound:
            library.close()
            raise RuntimeError(f"sgemm_ of the {artifact.options['blas']} build is bound to "
                               f"{bound or '?'}, not a {expect} library")
        return library

    def load(self, artifact, bundle):
        if "library" not in artifact.files:
            raise RuntimeError(f"the {artifact.target.name} build is not loadable on this host")
        io = json.loads(artifact.path("io").read_text())
        return SofieRunnable(self._library(artifact, profiled=False), bundle, io)

    def profile_ops(self, artifact, bundle, inputs, runs):
        import onnx

        warmup = 10
        io = json.loads(artifact.path("io").read_text())
        runnable = SofieRunnable(self._library(artifact, profiled=True), bundle, io)
        try:
            runnable.set_inputs(inputs)
            for _ in range(warmup):
                runnable.run()
            library = runnable.library
            library.take_op_times()
            whole = np.empty(runs, dtype=np.float64)
            per_run = np.empty((runs, len(library.op_names)), dtype=np.float64)
            calls = [0] * len(library.op_names)
            for i in range(runs):  # whole timed in C, as the plain build's runs are
                whole[i] = runnable.timed_runs(1)[0]
                per_run[i], calls = library.take_op_times()
            err = library.error()
            if err:
                raise RuntimeError(f"SOFIE doInfer threw: {err}")
            names, op_clock = library.op_names, library.op_clock
        finally:
            runnable.close()

        graph = onnx.load(str(bundle.path("onnx")), load_external_data=False)
        op_type = {n.name: n.op_type for n in graph.graph.node}
        ops = []
        for k, label in enumerate(names):
            if not calls[k]:
                continue
            nodes = artifact.kernel_map.get(label, [])
            ops.append(OpTiming.from_runs(label, "+".join(op_type[n] for n in nodes) or "?", nodes, calls[k],
                                          per_run[:, k] / 1e3, provider=f"sofie/{artifact.options['blas']}"))
        notes = (f"{LIGHT_TIMERS} ({op_clock}); {runs} runs after {warmup} warm-up runs, not rescaled; "
                 "instrumented whole timed in C around doInfer like the plain build's runs")
        return OpProfile(
            method=PROFILE_METHOD, ops=ops, runs=runs,
            instrumented_whole_us=float(np.median(whole)) / 1e3, notes=notes,
        )
