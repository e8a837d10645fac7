"""A non-editable install works: the wheel holds every file the code reads from its package
directories at run time, and `auditor` installed from it into a fresh venv measures a model
with the native runner (built from the installed sources) and writes its report page."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("auditor", "compilers", "cost_model", "device_runner", "ground", "reports", "store")
# installed beside the code by `make deps` (npm), not packaged: serve says so when it is absent
NOT_PACKAGED = ("reports/vendor",)


def _package_files() -> set[str]:
    """Every file under the package directories but Python caches and what `make deps`
    installs there, relative to the root."""
    return {rel for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            and not (rel := str(p.relative_to(ROOT))).startswith(NOT_PACKAGED)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for rel in _package_files() | {"pyproject.toml", "README.md"}:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "out"), str(src)], check=True, capture_output=True, cwd=tmp, timeout=120)
    (whl,) = (tmp / "out").glob("auditor-*.whl")
    return whl


def test_the_wheel_holds_every_file_the_code_reads_at_run_time(wheel):
    from compilers import sofie_cpp
    from device_runner import build

    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_package_files() - names)
    assert not missing, f"not in the wheel: {missing}"
    # and by name, what the code opens from its own directory
    read_at_run_time = [sofie_cpp.GLUE, sofie_cpp.OP_CLOCK_DIR / "op_clock.h",
                        *(p for p in build.RUNNER_SOURCE.rglob("*") if p.is_file()),
                        ROOT / "reports/templates/run.html.j2", ROOT / "reports/templates/coverage.html.j2",
                        ROOT / "cost_model/models/local.json"]
    assert len(read_at_run_time) > 20
    assert {str(p.relative_to(ROOT)) for p in read_at_run_time} <= names


def test_auditor_installed_from_the_wheel_runs_outside_the_repository(wheel, tmp_path):
    import torch

    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    # the heavy dependencies from this environment (a plain path: its .pth files, such as an
    # editable install of auditor, are not processed)
    (site / "deps.pth").write_text(str(Path(torch.__file__).parents[1]) + "\n")
    # --ignore-installed: the auditor seen through deps.pth (this checkout's) is never touched
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", "--ignore-installed", str(wheel)], check=True, capture_output=True,
                   timeout=120)
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy2(ROOT / "examples" / "blocks.py", work / "blocks.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import auditor, device_runner; print(auditor.__file__, device_runner.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, check=True)
    assert all(p.startswith(str(site)) for p in where.stdout.split()), where.stdout
    proc = subprocess.run([str(venv / "bin" / "auditor"), "compile-all", "blocks.py:mlp", "-c", "sofie", "--harness",
                           "native", "--runs", "20", "--warmup", "2", "--profile-runs", "5", "-o", "r", "--json"],
                          capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    (run,) = out["runs"]
    assert run["status"] == "ok" and run["n"] == 20 and run["per_op_method"], run
    assert Path(out["reports"][0]).read_text().count("sofie") > 0
