"""The real-time audit for runtimes hosted in Python (ONNX Runtime, LiteRT, ExecuTorch, torch,
IREE): the native runner's counting hooks built as a preloadable library (runner/src/rt_shim.cpp,
backend `rt_shim`), preloaded (LD_PRELOAD) into a child Python process that loads the artifact
and brackets only the runtime's call with the library's begin/end.

Python's own work around the call is not the runtime's: every hooked call whose caller (the
hooked entry point's return address) is in the Python interpreter, its extension modules
(lib-dynload: ctypes, ...) or numpy is counted apart (host_*), and its stack is not kept.

`audit_in_child` runs such a child twice, as run_rt_audit runs the runner: the audit pass, then
(strace on PATH) the same inferences with markers under `strace -f`, and returns the typed
RtSafety (device_runner.rt_safety).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import shlex
import shutil
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

from device_runner.build import cached_runner
from device_runner.rt_safety import RtSafety, parse_rt_safety, syscall_counts
from ground.children import run_child
from ground.targets import TARGETS

LIBRARY = "libauditor_rt.so"
PHASE_FIRST, PHASE_WARMUP, PHASE_STEADY = 0, 1, 2
HOST_NOTE = ("calls whose caller is the Python interpreter, its extension modules (lib-dynload: "
             "ctypes, ...) or numpy are the host's: counted apart as host_*, never as the runtime's; "
             "each inference is bracketed from Python right around the runtime's call (Python's "
             "garbage collector off during the audit)")


class ShimError(RuntimeError):
    pass


def shim_library() -> Path:
    """The preloadable hooks for this machine, built once (cached like a generic runner)."""
    return cached_runner("rt_shim", TARGETS["host"], {}, LIBRARY)


def preloaded_library() -> Path:
    """In a child started with preload_env: the hooks' library it was started with."""
    for item in os.environ.get("LD_PRELOAD", "").split():
        if Path(item).name == LIBRARY:
            return Path(item)
    raise ShimError(f"{LIBRARY} is not in LD_PRELOAD: start the process with preload_env")


def preload_env(library: Path, env: dict[str, str]) -> dict[str, str]:
    """env with the library first in LD_PRELOAD."""
    env = dict(env)
    env["LD_PRELOAD"] = " ".join(p for p in (str(library), env.get("LD_PRELOAD", "")) if p)
    return env


def _host_objects() -> list[str]:
    """Path prefixes of the objects whose calls are Python's own."""
    # the interpreter and its C modules (lib-dynload), never site-packages (the runtimes)
    import _ctypes  # a lib-dynload module: its folder holds the interpreter's C modules

    prefixes = [os.path.realpath(sys.executable), os.path.dirname(os.path.realpath(_ctypes.__file__)) + os.sep]
    libdir, ldlib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib:
        prefixes.append(os.path.realpath(os.path.join(libdir, ldlib)))
    try:
        import numpy

        package = os.path.dirname(os.path.realpath(numpy.__file__))
        prefixes.append(package + os.sep)
        libs = os.path.join(os.path.dirname(package), "numpy.libs") + os.sep
        prefixes.append(libs)  # numpy's own BLAS: a runtime that calls it through numpy is numpy
    except ImportError:
        pass
    return [p for p in prefixes if p]


def host_ranges(maps_text: str, prefixes: list[str]) -> list[tuple[int, int, str]]:
    """Executable mappings of /proc/self/maps whose file starts with one of prefixes."""
    out = []
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1]:
            continue
        path = parts[5].strip()
        if any(path == p or path.startswith(p) for p in prefixes):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, path))
    return out


class Shim:
    """The preloaded library in this process (a child started with preload_env)."""

    def __init__(self, library: Path) -> None:
        self.lib = ctypes.CDLL(str(library))
        lib = self.lib
        lib.auditor_rt_interposed.restype = ctypes.c_int
        if not lib.auditor_rt_interposed():
            raise ShimError(f"{library.name} is loaded but not preloaded: start the process with "
                            "LD_PRELOAD (device_runner.rt_shim.preload_env)")
        lib.auditor_rt_add_host_range.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
        lib.auditor_rt_prepare.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.auditor_rt_begin.argtypes = [ctypes.c_int]
        lib.auditor_rt_begin.restype = None
        lib.auditor_rt_end.argtypes = [ctypes.c_int]
        lib.auditor_rt_write.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.auditor_rt_apply.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.host: list[tuple[int, int, str]] = []

    def mark_host(self) -> None:
        """Name the Python interpreter's, its modules' and numpy's code as the host's (call
        after importing what the runtime needs, before the audit: later mappings are not seen)."""
        self.host = host_ranges(Path("/proc/self/maps").read_text(), _host_objects())
        for lo, hi, _ in self.host:
            if not self.lib.auditor_rt_add_host_range(lo, hi):
                raise ShimError("more host mappings than the hooks' table holds")

    def apply(self, mlockall: bool, malloc_keep: bool) -> dict:
        """The runner's mitigations here; the runner's `scheduling` section."""
        notes = ctypes.create_string_buffer(1024)
        bits = self.lib.auditor_rt_apply(int(mlockall), int(malloc_keep), notes, len(notes))
        return {"mlockall": bool(bits & 1), "malloc_keep": bool(bits & 2),
                "notes": [n for n in notes.value.decode().split("; ") if n]}

    def audit(self, call: Callable[[], object], runs: int, warmup: int, markers: bool) -> dict:
        """The first call, `warmup` calls, then `runs` audited calls, each bracketed alone;
        returns the runner's `rt_safety` section for them."""
        import tempfile

        lib = self.lib
        if lib.auditor_rt_prepare(runs, warmup, int(markers)) != 0:
            raise ShimError(f"bad audit settings: runs {runs}, warmup {warmup}")
        begin, end = lib.auditor_rt_begin, lib.auditor_rt_end
        phases = [PHASE_FIRST] + [PHASE_WARMUP] * warmup + [PHASE_STEADY] * runs
        collecting = gc.isenabled()
        gc.disable()
        try:
            for phase in phases:
                begin(phase)
                try:
                    call()
                finally:
                    end(phase)
        finally:
            if collecting:
                gc.enable()
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            if lib.auditor_rt_write(f.name.encode(), HOST_NOTE.encode()) != 0:
                raise ShimError(f"the hooks could not write {f.name}")
            return json.loads(Path(f.name).read_text())["rt_safety"]


def write_report(path: Path, backend: str, rt_section: dict, scheduling: dict,
                 host: list[tuple[int, int, str]]) -> None:
    """What a child writes: the runner's report shape (runner, scheduling, rt_safety)."""
    objects = sorted({p for _, _, p in host})
    Path(path).write_text(json.dumps({
        "runner": {"backend": backend, "arch": platform.machine()},
        "scheduling": scheduling, "rt_safety": rt_section, "host_objects": objects}))


def audit_in_child(argv_for: Callable[[Path, bool], list[str]], backend: str, workdir: Path,
                   runs: int, trace_syscalls: bool, timeout_s: float, env: dict[str, str] | None = None,
                   log: Path | None = None) -> tuple[RtSafety | None, str | None, list[str]]:
    """Run the audit child `argv_for(report_path, markers)` preloaded, then (strace on PATH,
    trace_syscalls) again with markers under strace -f. Returns the result or why there is
    none, and the commands run."""
    library = shim_library()
    env = preload_env(library, env if env is not None else dict(os.environ))
    workdir = Path(workdir)
    commands: list[str] = []

    def child(argv: list[str]):
        commands.append(f"LD_PRELOAD={library} " + shlex.join(argv))
        if log is None:
            return run_child(argv, env=env, timeout_s=timeout_s, cwd=str(workdir))
        with open(log, "a") as out:
            return run_child(argv, env=env, timeout_s=timeout_s, cwd=str(workdir), stderr=out)

    report_path = workdir / "rt_python.json"
    report_path.unlink(missing_ok=True)
    done = child(argv_for(report_path, False))
    failure = done.failure("the audit child")
    if failure is None and not report_path.exists():
        failure = "the audit child wrote no report"
    if failure is not None:
        return None, f"rt audit: {failure}", commands
    report = json.loads(report_path.read_text())
    result = parse_rt_safety(report, emulated=False)
    if not trace_syscalls:
        result.syscalls_missing = "the traced pass was not asked for"
        return result, None, commands
    if shutil.which("strace") is None:
        result.syscalls_missing = "strace is not installed (apt-get install strace)"
        return result, None, commands
    trace = workdir / "rt_python.trace"
    traced_report = workdir / "rt_python_traced.json"
    tdone = child(["strace", "-f", "-qq", "-o", str(trace), *argv_for(traced_report, True)])
    tfailure = tdone.failure("the traced audit child")
    if tfailure is not None:
        result.syscalls_missing = f"the traced pass failed: {tfailure}"
        return result, None, commands
    try:
        result.syscalls = syscall_counts(trace.read_text(errors="replace"), runs,
                                         "strace -f (ptrace: every system call of every thread, exact; "
                                         "the Python worker's too, between the markers)",
                                         True, tdone.wall_s, done.wall_s)
        result.syscalls_missing = None
    except ValueError as e:
        result.syscalls_missing = f"the syscall trace could not be cut: {e}"
    return result, None, commands
