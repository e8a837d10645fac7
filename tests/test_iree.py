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
