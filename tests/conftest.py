import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshd import ssh_spec, sshd_server  # noqa: F401  (fixtures: a private sshd on loopback)

ROOT = Path(__file__).resolve().parent.parent
AUDITOR = [sys.executable, "-m", "auditor"]


def run_cli(*args, cwd=ROOT, timeout=300, check=False):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([*AUDITOR, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"auditor {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def timed_as_asked(run: dict, runs: int) -> bool:
    """compile-all gates its timing by default (auditor.timing): `runs` calls in uncontended
    blocks, the contended blocks' samples kept besides, at most GATE_STRETCH x runs in all
    (a run contended past the wait budget may end with fewer uncontended; never fewer calls)."""
    from auditor.timing import GATE_STRETCH

    u = run.get("uncontended")
    if u is None:  # --no-gate: exactly runs
        return run["n"] == runs
    return u["n"] <= runs <= run["n"] <= GATE_STRETCH * runs and (u["n"] == runs or run["n"] > runs)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def example_models(tmp_path_factory):
    """examples/make_examples.py run into a temporary folder: mlp.pt2, conv1d.pt2."""
    out = tmp_path_factory.mktemp("examples")
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_examples.py"), str(out)], check=True,
                   capture_output=True)
    return out


def process_running(pid) -> bool:
    """pid exists and is not a zombie (a killed child lingers as one until it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_where(matches) -> list[str]:
    """Live processes (not zombies) whose command line satisfies matches(cmdline), as 'pid: cmdline'."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        except OSError:
            continue
        if matches(cmdline) and process_running(pid):
            found.append(f"{pid}: {cmdline[:150]}")
    return found


def write_factory(path: Path, body: str, name: str = "make") -> str:
    """A python factory file for tests; returns the 'file.py:make' spec."""
    path.write_text("import torch\nfrom torch import nn\n\n" + body)
    return f"{path}:{name}"


def audit_in(tmp: Path, spec: str, variants: list[str], target: str = "host", profile_runs: int = 20,
             device: str = "local", harness: str = "auto"):
    """A short in-process audit of `spec` with the given variants: (store, prepared, run ids)."""
    from auditor.pipeline import AuditSettings, ModelRequest, audit_variants, prepare
    from store import Store
    from auditor.timing import TimingSettings
    from compilers import registry

    store = Store(tmp)
    prepared = prepare(ModelRequest(spec), store)
    settings = AuditSettings(results_dir=tmp, timing=TimingSettings(warmup=5, runs=50, min_runs=10),
                             profile_runs=profile_runs, target=target, device=device, harness=harness)
    run_ids = audit_variants(prepared, [registry.parse_variant(v) for v in variants], settings, store, "test")
    return store, prepared, run_ids
