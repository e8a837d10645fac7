"""The native runner's real-time audit (--rt-audit): known answers from the probe backend (an
inference that allocates, locks, makes system calls or starts threads exactly as its model file
says), on the host (interposed hooks) and as a static ARMv7 binary under qemu-arm (link-time
wrapped hooks); the runner's own work outside the window is not counted; a SOFIE MLP on the
reference BLAS passes with zeros; the mitigations remove what they claim."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ground.targets import TARGETS
from device_runner.build import build_runner
from device_runner.local import LocalDevice
from device_runner.native import NativeProgram, RtAuditSettings, run_rt_audit
from device_runner.rt_safety import parse_syscall_trace

RUNS = 30
HAS_STRACE = shutil.which("strace") is not None
HAS_ARM = shutil.which("qemu-arm") is not None and shutil.which("arm-linux-gnueabihf-g++") is not None
X = [np.ones((1, 4), np.float32)]


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("probe-host")
    build_runner("probe", TARGETS["host"], {}, build, build / "build.log")
    return build / "auditor-runner-probe"


@pytest.fixture(scope="module")
def probe_arm(tmp_path_factory) -> Path:
    if not HAS_ARM:
        pytest.skip("needs qemu-user and g++-arm-linux-gnueabihf")
    build = tmp_path_factory.mktemp("probe-arm")
    build_runner("probe", TARGETS["armv7-cortex-a8"], {}, build, build / "build.log", static=True)
    return build / "auditor-runner-probe"


def audit(runner: Path, tmp_path: Path, behaviour: str, device=None, **settings):
    model = tmp_path / "probe.txt"
    model.write_text(behaviour)
    device = device or LocalDevice()
    try:
        result, failure, _ = run_rt_audit(device, NativeProgram(runner=runner, model=model), X,
                                          RtAuditSettings(runs=RUNS, warmup=5, **settings))
    finally:
        device.close()
    assert failure is None, failure
    return result


HOOKED = ("allocs", "alloc_bytes", "frees", "locks", "waits", "wakeups", "threads_created",
          "other_allocs", "other_locks", "other_waits", "other_wakeups", "other_threads_created")


def test_allocating_inference_is_flagged_with_counts_and_call_site(probe, tmp_path):
    r = audit(probe, tmp_path, "alloc 3 64\n")
    assert r.steady_mean["allocs"] == 3 and r.steady_max["allocs"] == 3
    assert r.steady_mean["alloc_bytes"] == 192 and r.steady_mean["frees"] == 3
    assert r.steady_mean["locks"] == 0 and r.first["allocs"] == 3
    assert "probe_allocate" in r.first_site.function and r.first_site.count == 3 * RUNS
    assert r.top_site is r.first_site or r.top_site.function == r.first_site.function
    assert "ProbeBackend::run" in r.first_site.frames[1]
    assert r.verdict.startswith("not real-time safe after warm-up: allocates 3 times per inference (192 B) in ")
    assert "probe_allocate" in r.verdict
    assert "interposition" in r.methods["heap"]
    if HAS_STRACE:
        assert r.syscalls.per_inference == 0


def test_locking_inference_is_flagged_with_its_lock_site(probe, tmp_path):
    r = audit(probe, tmp_path, "lock 2\n")
    assert r.steady_mean["locks"] == 2 and r.steady_max["locks"] == 2 and r.first["locks"] == 2
    assert r.steady_mean["allocs"] == 0
    assert "probe_lock" in r.top_lock_site.function and r.top_lock_site.count == 2 * RUNS
    assert "takes 2 pthread locks per inference in" in r.verdict and "probe_lock" in r.verdict


@pytest.mark.skipif(not HAS_STRACE, reason="needs strace")
def test_syscalling_inference_is_flagged_from_the_trace(probe, tmp_path):
    r = audit(probe, tmp_path, "syscall 5\n")
    assert r.syscalls.steady == {"getppid": 5 * RUNS} and r.syscalls.first == {"getppid": 5}
    assert r.syscalls.steady_other == {}
    assert "strace -f" in r.syscalls.method and r.syscalls.threads_apart
    assert all(r.steady_mean[k] == 0 for k in HOOKED)
    assert r.verdict == ("not real-time safe after warm-up: makes 5 system calls per inference "
                         "(getppid 5)")


def test_thread_per_inference_is_flagged(probe, tmp_path):
    r = audit(probe, tmp_path, "thread 1\n", trace_syscalls=False)
    assert r.steady_mean["threads_created"] == 1 and r.first["threads_created"] == 1
    assert "creates 1 threads per inference" in r.verdict


def test_cold_path_is_reported_apart_and_the_runners_own_work_is_not_counted(probe, tmp_path):
    """Allocations in the first inference only: the steady state is clean. The runner itself
    allocates while reading the inputs and writing the JSON (outside the window): none of it
    appears, so the clean steady state and the exact first counts are the model's alone."""
    r = audit(probe, tmp_path, "first-alloc 4 32\n")
    assert r.first["allocs"] == 4 and r.first["alloc_bytes"] == 128 and r.first["frees"] == 4
    assert r.first["locks"] == 0 and r.first["threads_created"] == 0
    assert "probe_allocate" in r.first_inference_sites[0].function
    assert all(r.steady_mean[k] == 0 and r.steady_max[k] == 0 for k in HOOKED)
    assert r.first_site is None and r.top_site is None
    assert r.steady_max["minor_faults"] == 0 and r.steady_max["major_faults"] == 0
    assert r.cold.startswith("first inference: 4 allocs, 4 frees")
    if HAS_STRACE:
        assert r.syscalls.first == {} and r.syscalls.per_inference == 0
        assert r.verdict == "real-time safe after warm-up"


def _memlock_allows(nbytes: int) -> bool:
    """Whether this process may lock nbytes: under mlockall(MCL_FUTURE) an allocation past
    RLIMIT_MEMLOCK fails (a normal user's default is 8 MiB; root is not limited)."""
    import os
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return os.geteuid() == 0 or soft == resource.RLIM_INFINITY or soft >= nbytes


@pytest.mark.skipif(not HAS_STRACE, reason="needs strace")
def test_malloc_keep_removes_the_page_faults_of_a_large_allocation(probe, tmp_path):
    """64 MiB per inference is above glibc's largest mmap threshold: every inference maps,
    faults in and unmaps it. --mlockall does not change that; --malloc-keep does (after the
    first inference the block stays in the heap)."""
    plain = audit(probe, tmp_path, "touch 67108864\n")
    assert plain.steady_max["minor_faults"] >= 16384
    assert plain.syscalls.steady.get("mmap") == RUNS and plain.syscalls.steady.get("munmap") == RUNS
    if _memlock_allows(2 * 67108864):
        locked = audit(probe, tmp_path, "touch 67108864\n", mlockall=True)
        assert locked.mlockall and locked.steady_max["minor_faults"] >= 16384
    kept = audit(probe, tmp_path, "touch 67108864\n", malloc_keep=True)
    assert kept.malloc_keep and kept.first["minor_faults"] >= 16384
    assert kept.steady_max["minor_faults"] == 0 and kept.syscalls.per_inference == 0
    assert kept.steady_mean["allocs"] == 1  # still an allocation: the verdict keeps it
    assert kept.verdict.startswith("not real-time safe after warm-up: allocates 1 times")


@pytest.mark.skipif(shutil.which("setpriv") is None or __import__("os").geteuid() != 0,
                    reason="needs root and setpriv to run the probe as an unprivileged user")
def test_mlockall_under_a_low_memlock_limit_is_one_note_not_a_crash(probe, tmp_path):
    """As a normal user (RLIMIT_MEMLOCK 8 MiB) mlockall(MCL_FUTURE) would make the 64 MiB
    allocation fail inside the model (the probe segfaulted): the runner now refuses to lock,
    says why in one note with the limit, and the audit runs unlocked."""
    import os
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="auditor-memlock-"))
    try:
        os.chmod(work, 0o777)
        shutil.copy2(probe, work / "runner")
        (work / "m.txt").write_text("touch 67108864\n")
        np.save(work / "timing_0.npy", X[0])
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "prlimit",
                               "--memlock=8388608:8388608", str(work / "runner"), "--model", str(work / "m.txt"),
                               "--inputs-dir", str(work), "--json", str(work / "r.json"), "--rt-audit", "3",
                               "--warmup", "1", "--mlockall", "1"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        scheduling = json.loads((work / "r.json").read_text())["scheduling"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert scheduling["mlockall"] is False
    assert scheduling["notes"] == [
        "mlockall not applied: RLIMIT_MEMLOCK is 8192 KiB and this process is not root, so with MCL_FUTURE "
        "every allocation past it would fail; raise it (ulimit -l unlimited, or memlock in "
        "/etc/security/limits.conf) or run as root"]


def test_static_armv7_runner_counts_through_wrapped_entry_points(probe_arm, tmp_path):
    from device_runner.qemu import QemuArmv7Device

    r = audit(probe_arm, tmp_path, "alloc 3 64\nlock 2\nsyscall 4\n", device=QemuArmv7Device())
    assert r.arch == "armv7l" and r.emulated
    assert "--wrap" in r.methods["heap"]
    assert r.steady_mean["allocs"] == 3 and r.steady_mean["alloc_bytes"] == 192
    assert r.steady_mean["locks"] == 2 and r.first["allocs"] == 3
    assert "probe_allocate" in r.top_site.function and "probe_lock" in r.top_lock_site.function
    assert r.syscalls.steady == {"getppid": 4 * RUNS} and "qemu-arm -strace" in r.syscalls.method
    assert not r.syscalls.threads_apart
    assert "page faults" not in r.verdict  # the emulator's rusage is not judged
    assert any("emulator" in n for n in r.notes)


def test_bad_audit_arguments_get_one_line_and_exit_2(probe, tmp_path):
    (tmp_path / "m.txt").write_text("")
    np.save(tmp_path / "timing_0.npy", X[0])
    base = [probe, "--model", tmp_path / "m.txt", "--inputs-dir", tmp_path, "--json", tmp_path / "r.json"]
    for extra, expect in ((["--rt-markers", "1"], "--rt-markers needs --rt-audit N"),
                          (["--mlockall", "2"], "--mlockall wants 0 or 1, got '2'"),
                          (["--rt-audit", "-1"], "counts must be positive")):
        done = subprocess.run([*base, *extra], capture_output=True, text=True)
        assert done.returncode == 2, extra
        assert done.stderr.splitlines()[0] == f"auditor-runner: {expect}"


def _audit_probe(probe, path: Path, behaviour: str):
    path.write_text(behaviour)
    device = LocalDevice()
    try:
        return run_rt_audit(device, NativeProgram(runner=probe, model=path), X, RtAuditSettings(runs=3, warmup=1))
    finally:
        device.close()


def test_a_model_that_does_not_load_is_a_failure_with_its_reason(probe, tmp_path):
    result, failure, commands = _audit_probe(probe, tmp_path / "bad.txt", "explode 1\n")
    assert result is None and len(commands) == 1
    assert failure == "rt audit: exit 3: auditor-runner: probe: unknown behaviour 'explode'"
    # an inference that throws inside the window: exit 4, the JSON still says why
    result, failure, _ = _audit_probe(probe, tmp_path / "fail.txt", "fail\n")
    assert result is None and failure == "rt audit: exit 4: auditor-runner: probe: the inference failed as asked"


def test_syscall_trace_is_cut_at_the_markers_and_checked():
    trace = "\n".join([
        "7 openat(AT_FDCWD, \"x\", O_RDONLY) = 3",  # before the window: not counted
        "7 close(-31001 <unfinished ...>", "8 futex(0x1, FUTEX_WAKE, 1) = 0", "7 <... close resumed>) = -1",
        "7 mmap(NULL, 4096) = 0x1", "7 close(-31002) = -1 EBADF",
        "7 close(-31001) = -1 EBADF", "7 getppid() = 1", "8 futex(0x1) = 0", "7 close(-31002) = -1 EBADF",
        "7 write(1, \"{}\", 2) = 2",
        "9258  close(-31001)  = -1 EBADF", "9258  getpid() = 9258", "9258  close(-31002)  = -1 EBADF"])
    first, mine, others = parse_syscall_trace(trace, runs=2)
    assert first == {"futex": 1, "mmap": 1}
    assert mine == [{"getppid": 1}, {"getpid": 1}] and others == [{"futex": 1}, {}]
    with pytest.raises(ValueError, match="holds 3 marked inferences, 4 were audited"):
        parse_syscall_trace(trace, runs=3)
    # qemu-arm -strace logs a call's start and result apart; threads' lines interleave
    qemu = ("9 close(-31001) = -1 errno=9\n9 clock_gettime64(1,0x40)9 close(-31002) = 0\n = -1 errno=9\n"
            "9 close(-31001) = -1 errno=9\n9 close(-31002) = -1 errno=9\n")
    first, mine, _ = parse_syscall_trace(qemu, runs=1)
    assert first == {"clock_gettime64": 1} and mine == [{}]


def test_sofie_mlp_on_the_reference_blas_is_clean_and_openblas_locks(tmp_path):
    """SOFIE's generated code allocates nothing per inference (its pool is made in the Session
    constructor); the BLAS decides the rest: OpenBLAS takes its buffer lock in every sgemm
    (blas_memory_alloc), Debian's netlib reference BLAS takes none."""
    pytest.importorskip("sofie")
    from auditor.pipeline import ModelRequest, prepare
    from store import Store
    from compilers.sofie_cpp import Sofie

    prepared = prepare(ModelRequest("zoo:mlp:width=32,depth=2"), Store(tmp_path / "r"))
    results = {}
    for blas in ("reference", "openblas"):
        compiler = Sofie()
        artifact = compiler.compile(prepared.bundle, TARGETS["host"], Sofie.resolve_options({"blas": blas}),
                                    tmp_path / blas)
        x = [np.ones(s.shape, s.dtype) for s in prepared.bundle.inputs]
        device = LocalDevice()
        try:
            result, failure, _ = run_rt_audit(device, compiler.native_program(artifact), x,
                                              RtAuditSettings(runs=RUNS, warmup=5))
        finally:
            device.close()
        assert failure is None, failure
        results[blas] = result
    clean = results["reference"]
    assert all(clean.steady_max[k] == 0 for k in HOOKED)
    assert clean.steady_max["minor_faults"] == 0 and clean.steady_max["major_faults"] == 0
    assert clean.steady_max["voluntary_switches"] == 0
    assert clean.first["allocs"] == 0 and clean.first["locks"] == 0
    if HAS_STRACE:
        assert clean.syscalls.per_inference == 0
        assert clean.verdict == "real-time safe after warm-up"
    openblas = results["openblas"]
    assert openblas.steady_mean["allocs"] == 0 and openblas.steady_mean["locks"] > 0
    assert openblas.top_lock_site.function == "blas_memory_alloc"
    assert "pthread locks per inference in blas_memory_alloc" in openblas.verdict
    report = json.dumps(openblas.to_dict())
    assert "verdict" in report and "interposition" in report


@pytest.mark.skipif(not HAS_STRACE, reason="needs strace on the (loopback) board")
def test_audit_over_ssh_traces_with_the_boards_strace(probe, tmp_path, ssh_spec):
    from device_runner.devices import parse_device

    r = audit(probe, tmp_path, "alloc 2 16\nsyscall 3\n", device=parse_device(ssh_spec))
    assert not r.emulated and r.steady_mean["allocs"] == 2
    assert r.syscalls.steady == {"getppid": 3 * RUNS} and r.syscalls.threads_apart
