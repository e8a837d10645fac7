"""Compiled artifacts kept on disk, so a re-measure, a repeat or a resumed build never
compiles the same thing twice, and a build can compile everything first (in parallel) and
measure afterwards.

Key: model hash + compiler + resolved options + target + compiler version (the version
string `available()` reports). An entry is `<results>/artifacts/<key>/` holding what the
compiler wrote plus `artifact.json` (the Artifact's metadata), written last: a directory
without it is an unfinished compile (killed or crashed) and is compiled again. A lock file
per key keeps two processes from compiling the same entry at once.

A failed compile is cached too (`failed.json`: the reason, when, and the cap it ran out of
when it was cut short): the same compiler version fails the same graph the same way, and
a build would otherwise pay it again in its measuring phase and in every resume (a
capped LiteRT/ExecuTorch compile costs the whole cap each time). A compile stopped by
a cap (CompileTimedOut) is tried again only under a longer cap or none. Removing the
entry's directory (or <results>/artifacts) retries it.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from compilers.base import Artifact, options_key
from ground.errors import first_line
from ground.targets import TARGETS

META = "artifact.json"
FAILED = "failed.json"


class CompileTimedOut(RuntimeError):
    """A compile ran past its cap (seconds) and was killed."""

    def __init__(self, cap_s: float):
        super().__init__(f"compile exceeded the {cap_s:g} s cap and was stopped")
        self.cap_s = cap_s


class CachedFailure(RuntimeError):
    """This compile failed before, with the same key (model, compiler, options, target and
    compiler version); the message is the stored reason."""


def cache_key(model_hash: str, compiler: str, options: dict, target: str, version: str) -> str:
    return options_key({"model": model_hash, "compiler": compiler, "options": options, "target": target,
                        "version": version})


def root(results_dir: Path) -> Path:
    return Path(results_dir) / "artifacts"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _save(artifact: Artifact, directory: Path, compile_s: float) -> None:
    meta = {"compile_s": compile_s, "compiler": artifact.compiler, "compiler_version": artifact.compiler_version,
            "target": artifact.target.name, "options": artifact.options, "files": artifact.files,
            "kernel_map": artifact.kernel_map, "notes": artifact.notes}
    tmp = directory / (META + ".tmp")
    tmp.write_text(json.dumps(meta, default=str))
    tmp.replace(directory / META)


def _load(directory: Path) -> tuple[Artifact, float] | None:
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None
    if any(not (directory / name).exists() for name in meta["files"].values()):
        return None
    return Artifact(compiler=meta["compiler"], compiler_version=meta["compiler_version"],
                    target=TARGETS[meta["target"]], options=meta["options"], directory=directory,
                    files=meta["files"], kernel_map=meta["kernel_map"], notes=meta["notes"]), meta["compile_s"]


def _failure(directory: Path, cap_s: float | None) -> str | None:
    """The cached failure's reason, unless it was a cap shorter than this compile's."""
    try:
        meta = json.loads((directory / FAILED).read_text())
    except (OSError, ValueError):
        return None
    capped = meta.get("cap_s")
    if capped is not None and (cap_s is None or cap_s > capped):
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta["at"]))
    return f"{meta['reason']} (cached: this compile failed the same way at {when}, after {meta['seconds']:.1f} s)"


def _save_failure(directory: Path, error: Exception, seconds: float) -> None:
    reason = first_line(error) if isinstance(error, CompileTimedOut) else f"{type(error).__name__}: {first_line(error)}"
    meta = {"reason": reason, "at": time.time(), "seconds": seconds, "cap_s": getattr(error, "cap_s", None)}
    tmp = directory / (FAILED + ".tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(directory / FAILED)


def get_or_compile(results_dir: Path, key: str, compile_into,
                   cap_s: float | None = None) -> tuple[Artifact, float, bool]:
    """(artifact, seconds its compile took, True) from the cache, else compile_into(directory)
    -> Artifact, timed and cached: (it, seconds, False). A failure is cached and raised;
    a cached one raises CachedFailure. cap_s: the cap compile_into enforces (raising
    CompileTimedOut), which decides whether a capped failure counts for this compile."""
    directory = root(results_dir) / key
    found = _load(directory)
    if found is not None:
        return (*found, True)
    with _locked(root(results_dir) / f"{key}.lock"):
        found = _load(directory)  # another process may have finished it while we waited
        if found is not None:
            return (*found, True)
        failed = _failure(directory, cap_s)
        if failed is not None:
            raise CachedFailure(failed)
        if directory.exists():  # an unfinished compile, or a failure this compile retries
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            artifact = compile_into(directory)
        except Exception as e:
            _save_failure(directory, e, time.perf_counter() - t0)
            raise
        seconds = time.perf_counter() - t0
        if Path(artifact.directory).resolve() == directory.resolve():
            _save(artifact, directory, seconds)
        return artifact, seconds, False
