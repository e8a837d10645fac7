"""Builds the native runner with CMake, for the host or (cross) for a device target.

One function builds every runner: `build_runner(backend, target, defines, build_dir)`.
Generic runners (one per backend and target, e.g. TVM's, which loads any module .so) go
to a cache keyed by the runner's sources and definitions, so they are built once per
machine; runners that compile a model in (SOFIE) are built into the artifact's directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
from pathlib import Path

from ground.children import run_child
from ground.targets import Target

RUNNER_SOURCE = Path(__file__).resolve().parent / "runner"
TOOLCHAINS = {"armv7-cortex-a8": RUNNER_SOURCE / "toolchains" / "armv7-cortex-a8.cmake"}


class RunnerBuildError(RuntimeError):
    pass


def cache_root() -> Path:
    """Where generic runners and runtimes built from source are kept between runs."""
    base = os.environ.get("AUDITOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "auditor")
    return Path(base)


def sources_digest(*roots: Path) -> str:
    """A digest of every file under the given roots (the runner's and a backend's sources)."""
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RunnerBuildError("cmake not found (apt-get install cmake)")
    return cmake


def configure_args(backend: str, target: Target, defines: dict[str, str], static: bool) -> list[str]:
    args = [f"-DAUDITOR_BACKEND={backend}", "-DCMAKE_BUILD_TYPE=Release",
            f"-DAUDITOR_STATIC={'ON' if static else 'OFF'}"]
    if not target.is_host:
        toolchain = TOOLCHAINS.get(target.name)
        if toolchain is None:
            raise RunnerBuildError(f"no CMake toolchain for target {target.name}")
        if shutil.which(target.cxx) is None:
            raise RunnerBuildError(f"{target.cxx} not found (apt-get install {target.cxx_package})")
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain}")
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    args += [f"-D{k}={v}" for k, v in sorted(defines.items())]
    return args


def build_runner(backend: str, target: Target, defines: dict[str, str], build_dir: Path,
                 log: Path, static: bool = False, jobs: int | None = None) -> Path:
    """Configure and build device_runner/runner for `backend`; returns the build directory
    (executables are in it under their CMake target names). Raises RunnerBuildError with
    the failing command's last line; the whole output goes to `log`."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    commands = [
        [_cmake(), "-S", str(RUNNER_SOURCE), "-B", str(build_dir),
         *configure_args(backend, target, defines, static)],
        [_cmake(), "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 1)],
    ]
    with open(log, "a") as out:
        for cmd in commands:
            out.write("$ " + shlex.join(cmd) + "\n")
            out.flush()
            done = run_child(cmd, stdout=out, merge_stderr=True)
            if done.returncode != 0:
                tail = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
                why = next((ln for ln in reversed(tail) if "error" in ln.lower()), tail[-1] if tail else "")
                raise RunnerBuildError(f"building the {backend} runner for {target.name} failed: "
                                       f"{why.strip()} (log: {log})")
    (build_dir / "auditor-build.json").write_text(json.dumps(
        {"backend": backend, "target": target.name, "defines": defines, "static": static,
         "commands": [shlex.join(c) for c in commands]}, indent=2))
    return build_dir


def cached_runner(backend: str, target: Target, defines: dict[str, str], executable: str,
                  extra_sources: tuple[Path, ...] = (), static: bool = False) -> Path:
    """A generic runner built once per (backend, target, sources, definitions) on this
    machine; returns the executable's path. A build interrupted midway is redone."""
    key = hashlib.sha256(json.dumps(
        [backend, target.to_dict(), defines, static,
         sources_digest(RUNNER_SOURCE, *extra_sources)], sort_keys=True).encode()).hexdigest()[:16]
    import fcntl

    build_dir = cache_root() / "runners" / f"{backend}-{target.name}-{key}"
    exe = build_dir / executable
    done = build_dir / "auditor-build.json"
    if exe.exists() and done.exists():
        return exe
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    # Two audits (or test workers) may want the same runner at once: one builds, the other
    # waits and reuses it, instead of deleting the build in progress.
    with open(build_dir.parent / f"{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists() and done.exists():
            return exe
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_runner(backend, target, defines, build_dir, build_dir.parent / f"{build_dir.name}.log",
                     static=static)
    if not exe.exists():
        raise RunnerBuildError(f"the {backend} runner build made no {executable} in {build_dir}")
    return exe


RTSAN_MIN_CLANG = 20  # LLVM's RealtimeSanitizer (-fsanitize=realtime) first shipped in clang 20


def _clang_major(exe: str) -> int | None:
    import re

    done = run_child([exe, "--version"], timeout_s=20)
    m = re.search(r"clang version (\d+)", done.stdout) if done.returncode == 0 else None
    return int(m[1]) if m else None


def _apt_candidate(package: str) -> str | None:
    if shutil.which("apt-cache") is None:
        return None
    done = run_child(["apt-cache", "policy", package], timeout_s=20)
    for line in done.stdout.splitlines():
        if line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            return None if value in ("", "(none)") else value
    return None


def rtsan_probe() -> dict:
    """Whether LLVM's RealtimeSanitizer can build the native runner here, as the audit's second
    opinion: a clang >= 20 on PATH that compiles and links `-fsanitize=realtime`. When none
    does, what the package registries offer (apt's newest clang-NN candidates)."""
    import tempfile

    tried = []
    for name in [f"clang++-{v}" for v in range(30, RTSAN_MIN_CLANG - 1, -1)] + ["clang++"]:
        exe = shutil.which(name)
        if exe is None:
            continue
        major = _clang_major(exe)
        tried.append(f"{name} {major}")
        if major is None or major < RTSAN_MIN_CLANG:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "t.cpp"
            src.write_text("#include <cstdlib>\nint f() [[clang::nonblocking]] { return 1; }\n"
                           "int main() { return f() - 1; }\n")
            done = run_child([exe, "-fsanitize=realtime", str(src), "-o", str(Path(tmp) / "t")], timeout_s=120)
        if done.returncode == 0:
            return {"available": True, "compiler": exe, "version": major,
                    "how": f"CXX={exe} CXXFLAGS=-fsanitize=realtime (mark the inference [[clang::nonblocking]])",
                    "offered": []}
        tried[-1] += f" (-fsanitize=realtime failed: {done.last_line[:120]})"
    offered = [f"{p} {c}" for p in (f"clang-{v}" for v in range(22, 16, -1))
               if (c := _apt_candidate(p)) is not None][:3]
    newest = max((int(o.split()[0].split("-")[1]) for o in offered), default=None)
    why = (f"no clang >= {RTSAN_MIN_CLANG} here ({', '.join(tried) or 'no clang on PATH'})"
           + (f"; apt offers up to clang-{newest}" if newest else "; apt offers no clang")
           + ("" if newest and newest >= RTSAN_MIN_CLANG else
              f": RealtimeSanitizer needs clang >= {RTSAN_MIN_CLANG} (apt.llvm.org has it for Debian 12)"))
    return {"available": False, "compiler": None, "version": None, "how": why, "offered": offered}
