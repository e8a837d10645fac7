"""IREE through the CLI: measured and checked on the host, per-dispatch rows joined to ONNX
nodes, the armv7 artifact's ELF, a qemu-armv7 run skipped with its reason."""

import json
import shutil
import struct
from pathlib import Path

import pytest

from compilers import registry
from compilers.iree import Iree

pytestmark = pytest.mark.skipif(not Iree.available()[0], reason=f"IREE unavailable: {Iree.available()[1]}")

MLP_NODES = {"node_linear", "node_relu", "node_linear_1", "node_relu_1", "node_linear_2"}
VARIANTS = ["iree", "iree:frontend=onnx", "iree:driver=local-task"]


def _compile_all(cli, results, *extra):
    args = ["compile-all", "zoo:mlp", "--runs", 50, "--profile-runs", 10, "--results-dir", results, "--json",
            *extra]
    for v in VARIANTS:
        args += ["-c", v]
    return json.loads(cli(*args, check=True).stdout)["runs"]


@pytest.fixture(scope="module")
def host_runs(tmp_path_factory):
    from tests.conftest import run_cli

    results = tmp_path_factory.mktemp("iree-host")
    return results, _compile_all(run_cli, results)


def test_host_variants_are_measured_and_checked(host_runs):
    _, runs = host_runs
    by_variant = {r["variant"]: r for r in runs}
    assert set(by_variant) == {"iree", "iree[frontend=onnx]", "iree[driver=local-task]"}
    for r in runs:
        assert r["status"] == "ok", (r["variant"], r["reason"])
        assert r["accuracy_passed"] == 1 and r["max_abs_err"] < 1e-4
        assert r["p50_us"] > 0 and r["first_us"] > 0
        assert r["per_op_method"] == "iree-hal-profile"
        assert r["timing_loop"].startswith("python: time.perf_counter_ns")


def test_dispatch_rows_are_joined_to_onnx_nodes(host_runs, cli):
    results, runs = host_runs
    for r in runs:
        detail = json.loads(cli("results", "show", r["run_id"], "--json", "--results-dir", results,
                                check=True).stdout)
        rows = detail["per_op"]
        assert rows and all("dispatch" in row["kernel"] for row in rows)
        assert set().union(*(set(row["onnx_nodes"]) for row in rows)) == MLP_NODES, r["variant"]
        attribution = detail["per_op_attribution"]
        assert "host-execution" in attribution["notes"] and "overhead" in attribution["notes"]
        assert attribution["instrumented_whole_us"] > 0
        notes = detail["artifact_notes"]
        assert any("--iree-llvmcpu-target-cpu=host" in n for n in notes), notes
        frontend = detail["options"]["frontend"]
        assert any(("iree-turbine" if frontend == "torch" else "ONNX importer") in n for n in notes), notes


def test_outputs_outside_tolerance_are_mismatches(tmp_path, cli):
    proc = cli("compile-all", "zoo:mlp", "-c", "iree:frontend=onnx", "--runs", 50, "--profile-runs", 0,
               "--atol", 0, "--rtol", 0, "--results-dir", tmp_path, "--json", check=True)
    (r,) = json.loads(proc.stdout)["runs"]
    assert r["max_abs_err"] > 0  # float32 reassociation: never bit-exact with torch here
    assert r["status"] == "mismatch" and "over tolerance" in r["reason"] and r["accuracy_passed"] == 0


def _assert_arm32_hard_float(path: Path) -> None:
    header = path.read_bytes()[:52]
    assert header[:4] == b"\x7fELF" and header[4] == 1 and header[5] == 1, "32-bit little-endian ELF"
    (machine,) = struct.unpack_from("<H", header, 18)
    assert machine == 40, f"e_machine {machine} is not EM_ARM"
    (flags,) = struct.unpack_from("<I", header, 36)
    assert flags & 0x400, f"e_flags {flags:#x}: not the hard-float ABI"
    assert flags >> 24 == 5, f"e_flags {flags:#x}: not EABI version 5"


def test_armv7_artifact_is_a_hard_float_arm_elf(tmp_path, cli):
    proc = cli("compile-all", "zoo:mlp", "-c", "iree:frontend=onnx", "--target", "armv7-cortex-a8",
               "--results-dir", tmp_path, "--json", check=True)
    (r,) = json.loads(proc.stdout)["runs"]
    assert r["status"] == "compiled", r["reason"]
    detail = json.loads(cli("results", "show", r["run_id"], "--json", "--results-dir", tmp_path,
                            check=True).stdout)
    notes = detail["artifact_notes"]
    assert any("--iree-llvmcpu-target-triple=armv7a-pc-linux-gnueabihf" in n and "cortex-a8" in n
               and "+neon" in n and "float-abi=hard" in n for n in notes), notes
    assert any("no IREE runtime for armv7" in n for n in notes), notes
    run_dir = next(Path(tmp_path, "runs").glob(f"{r['run_id']}*"))
    (elf,) = list((run_dir / "executable-binaries").glob("*.so"))
    _assert_arm32_hard_float(elf)
    assert (run_dir / "model.vmfb").stat().st_size > 0


@pytest.mark.skipif(shutil.which("qemu-arm") is None, reason="qemu-arm missing (apt-get install qemu-user)")
def test_qemu_armv7_is_skipped_with_the_reason(tmp_path, cli):
    proc = cli("compile-all", "zoo:mlp", "-c", "iree:frontend=onnx", "--device", "qemu-armv7",
               "--results-dir", tmp_path, "--json")
    assert proc.returncode == 1, proc.stderr  # no variant measured: exit 1, not a crash (2)
    (r,) = json.loads(proc.stdout)["runs"]
    # skipped (not failed), and the status itself says why: no armv7 IREE runtime exists
    assert r["status"] == "skipped" and r["reason"].startswith("iree is not run on a device: no IREE "
                                                               "runtime for armv7 Linux exists"), r
    detail = json.loads(cli("results", "show", r["run_id"], "--json", "--results-dir", tmp_path,
                            check=True).stdout)
    assert any("no IREE runtime for armv7" in n for n in detail["artifact_notes"])


def test_variants_and_coverage_presets():
    labels = [v.label for v in registry.default_variants(["iree"])]
    assert labels == ["iree", "iree[frontend=onnx]", "iree[driver=local-task]"]
    assert [v.label for v in registry.coverage_variants(["iree"])] == ["iree[frontend=onnx]"]
    ok, version = Iree.available()
    assert ok and "iree-base-compiler 3." in version and "iree-base-runtime" in version


def test_a_sweep_naming_iree_variants_builds_them_into_the_dataset(tmp_path, cli):
    """The dataset builder measures IREE's variants like any other (2 points x 2 variants),
    and the shipped host-v2 spec names both frontends."""
    import sqlite3

    from auditor.sweeps import load_sweep

    root = Path(__file__).resolve().parent.parent
    v2 = load_sweep(root / "datasets" / "sweeps" / "host-v2.json")
    assert v2.compilers[-2:] == ["iree", "iree:frontend=onnx"]
    assert [registry.parse_variant(c).label for c in v2.compilers[-2:]] == ["iree", "iree[frontend=onnx]"]

    spec = tmp_path / "iree2.json"
    spec.write_text(json.dumps({
        "name": "iree2", "compilers": ["iree", "iree:frontend=onnx"],
        "timing": {"runs": 30, "warmup": 3, "max_seconds": 0.5, "profile_runs": 5},
        "families": [{"family": "mlp", "grid": {"width": [8, 16]}, "fixed": {"depth": 1}}]}))
    results = tmp_path / "build"
    cli("dataset", "build", "--spec", spec, "--results-dir", results, check=True, timeout=600)
    db = sqlite3.connect(results / "results.sqlite")
    rows = db.execute("SELECT p.spec, r.variant, r.status, r.p50_us, (SELECT COUNT(*) FROM op_timings o "
                      "WHERE o.run_id = r.run_id) FROM dataset_points p JOIN runs r "
                      "ON r.model_hash = p.model_hash").fetchall()
    db.close()
    specs = sorted({s for s, *_ in rows})
    assert len(specs) == 2 and all("depth=1" in s for s in specs), specs
    assert {"width=8" in s for s in specs} == {True, False} and any("width=16" in s for s in specs), specs
    assert sorted((s, v) for s, v, *_ in rows) == sorted((s, v) for s in specs
                                                          for v in ("iree", "iree[frontend=onnx]")), rows
    # measured, within tolerance, with IREE's per-dispatch rows (what the cost model learns from)
    assert all(status == "ok" and p50 > 0 and ops > 0 for _, _, status, p50, ops in rows), rows
