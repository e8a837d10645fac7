"""Compiled artifacts kept on disk, so a re-measure, a repeat or a resumed build never
compiles the same thing twice, and a build can compile everything first (in parallel) and
measure afterwards.

Key: model hash + compiler + resolved options + target + compiler version (the version
string `available()` reports). An entry is `<results>/artifacts/<key>/` holding what the
compiler wrote plus `artifact.json` (the Artifact's metadata), written last: a directory
without it is an unfinished compile (killed or crashed) and is compiled again. A lock file
per key keeps two processes from compiling the same entry at once. Failed compiles are
not cached (the measuring run records the failure itself).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from compilers.base import Artifact, options_key
from ground.targets import TARGETS

META = "artifact.json"


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


def get_or_compile(results_dir: Path, key: str, compile_into) -> tuple[Artifact, float, bool]:
    """(artifact, seconds its compile took, True) from the cache, else compile_into(directory)
    -> Artifact, timed and cached: (it, seconds, False)."""
    directory = root(results_dir) / key
    found = _load(directory)
    if found is not None:
        return (*found, True)
    with _locked(root(results_dir) / f"{key}.lock"):
        found = _load(directory)  # another process may have finished it while we waited
        if found is not None:
            return (*found, True)
        if directory.exists():  # an unfinished compile
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        t0 = time.perf_counter()
        artifact = compile_into(directory)
        seconds = time.perf_counter() - t0
        if Path(artifact.directory).resolve() == directory.resolve():
            _save(artifact, directory, seconds)
        return artifact, seconds, False
