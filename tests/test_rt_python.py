"""The real-time audit of Python-hosted runtimes (device_runner.rt_shim): the runner's hooks
preloaded into a child Python process, each inference bracketed from Python around the native
call. Known answers from a small C library called through ctypes: a call that does nothing
counts 0 although Python allocates (and takes the GIL) around it; an allocating, a locking and
a syscalling call count exactly, with their call site; the typed result survives the store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from store import Store
from device_runner.rt_shim import audit_in_child, host_ranges
from ground.children import worker_env

RUNS = 30
HAS_STRACE = shutil.which("strace") is not None
RUNTIME = ("allocs", "alloc_bytes", "frees", "locks", "waits", "wakeups", "threads_created",
           "other_allocs", "other_locks", "other_waits", "other_wakeups")

PROBE_C = r"""
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
int probe_noop(int x) { return x + 1; }
void probe_alloc(int n, int bytes) { for (int i = 0; i < n; ++i) { void *volatile p = malloc(bytes); free(p); } }
void probe_lock(int n) { for (int i = 0; i < n; ++i) { pthread_mutex_lock(&m); pthread_mutex_unlock(&m); } }
void probe_syscall(int n) { for (int i = 0; i < n; ++i) getppid(); }
"""

# The child: loads the probe library, names the host's code, audits one behaviour.
CHILD = r"""
import ctypes, sys
from pathlib import Path
from device_runner.rt_shim import Shim, preloaded_library, write_report
library, behaviour, report, markers, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
lib = ctypes.CDLL(library)
shim = Shim(preloaded_library())
shim.mark_host()
calls = {
    # Python allocates (a 100 kB bytearray and a list: malloc from the interpreter) around a
    # native call that allocates nothing
    "noop": lambda: (bytearray(100_000), [0] * 10_000, lib.probe_noop(3)),
    "alloc": lambda: lib.probe_alloc(3, 64),
    "lock": lambda: lib.probe_lock(2),
    "syscall": lambda: lib.probe_syscall(5),
}
section = shim.audit(calls[behaviour], runs, 5, markers)
write_report(Path(report), "probe/python", section, shim.apply(False, False), shim.host)
"""


@pytest.fixture(scope="module")
def probe_lib(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rt-python")
    (d / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-funwind-tables", "-o", str(d / "libprobe.so"),
                    str(d / "probe.c"), "-lpthread"], check=True)
    (d / "child.py").write_text(CHILD)
    return d / "libprobe.so"


def audit(probe_lib: Path, tmp_path: Path, behaviour: str, trace: bool = False):
    child = probe_lib.parent / "child.py"

    def argv(report: Path, markers: bool) -> list[str]:
        return [sys.executable, str(child), str(probe_lib), behaviour, str(report), "1" if markers else "0",
                str(RUNS)]

    result, failure, commands = audit_in_child(argv, "probe/python", tmp_path, RUNS, trace, 120,
                                               env=worker_env())
    assert failure is None, failure
    assert commands[0].startswith("LD_PRELOAD=") and "libauditor_rt.so" in commands[0]
    return result


def test_a_call_that_does_not_allocate_counts_zero_while_python_allocates_around_it(probe_lib, tmp_path):
    r = audit(probe_lib, tmp_path, "noop")
    assert all(r.steady_max[k] == 0 for k in RUNTIME), {k: r.steady_max[k] for k in RUNTIME}
    assert all(r.first[k] == 0 for k in RUNTIME)
    # Python's own allocations inside the bracket were seen, and kept apart: the bytearray's
    # 100,000 bytes (and the list's) come from the interpreter, every inference
    assert r.steady_mean["host_allocs"] >= 2 and r.steady_mean["host_alloc_bytes"] >= 100_000
    assert r.steady_mean["host_locks"] > 0  # ctypes drops and retakes the GIL around the call
    assert r.first_site is None and r.top_lock_site is None
    assert r.verdict.startswith("real-time safe after warm-up")
    assert "preloaded library (LD_PRELOAD)" in r.methods["heap"] and "host_*" in r.methods["host"]


def test_an_allocating_call_is_counted_with_its_call_site(probe_lib, tmp_path):
    r = audit(probe_lib, tmp_path, "alloc")
    assert r.steady_mean["allocs"] == 3 and r.steady_max["allocs"] == 3 and r.first["allocs"] == 3
    assert r.steady_mean["alloc_bytes"] == 192 and r.steady_mean["frees"] == 3
    assert r.steady_mean["locks"] == 0
    assert r.top_site.function == "probe_alloc" and r.top_site.count == 3 * RUNS
    assert r.verdict.startswith("not real-time safe after warm-up: allocates 3 times per inference "
                                "(192 B) in probe_alloc")
    assert r.short.startswith("no: allocs 3, frees 3")


def test_a_locking_call_is_counted_with_its_lock_site(probe_lib, tmp_path):
    r = audit(probe_lib, tmp_path, "lock")
    assert r.steady_mean["locks"] == 2 and r.steady_max["locks"] == 2 and r.first["locks"] == 2
    assert r.steady_mean["allocs"] == 0
    assert r.top_lock_site.function == "probe_lock" and r.top_lock_site.count == 2 * RUNS
    assert "takes 2 pthread locks per inference in probe_lock" in r.verdict


@pytest.mark.skipif(not HAS_STRACE, reason="needs strace")
def test_a_syscalling_call_is_counted_from_the_trace(probe_lib, tmp_path):
    r = audit(probe_lib, tmp_path, "syscall", trace=True)
    assert r.syscalls.steady == {"getppid": 5 * RUNS} and r.syscalls.first == {"getppid": 5}
    assert all(r.steady_mean[k] == 0 for k in RUNTIME)
    assert r.verdict == "not real-time safe after warm-up: makes 5 system calls per inference (getppid 5)"


def test_the_typed_result_round_trips_through_the_store(probe_lib, tmp_path):
    r = audit(probe_lib, tmp_path, "alloc")
    store = Store(tmp_path / "results")
    run_id = store.new_run(audit_id="a", model_hash="m", inputs_digest="d", compiler="probe", variant="probe",
                           options={}, options_key="k", target={"name": "host"}, device="local",
                           emulated=False, host={}, settings={})
    assert store.rt_safety(run_id) == (None, None)
    store.set_rt_safety(run_id, r)
    back, failure = store.rt_safety(run_id)
    assert failure is None and back == r and back.verdict == r.verdict
    assert back.top_site.function == "probe_alloc"
    store.set_rt_safety(run_id, None, "rt audit: the audit child died with SIGSEGV")
    assert store.rt_safety(run_id) == (None, "rt audit: the audit child died with SIGSEGV")
    store.close()


def test_host_ranges_are_the_executable_mappings_of_the_named_objects():
    maps = ("00400000-00401000 r--p 00000000 08:01 1 /usr/bin/python3.11\n"
            "00401000-00500000 r-xp 00001000 08:01 1 /usr/bin/python3.11\n"
            "7f0000000000-7f0000001000 r-xp 00000000 08:01 2 /usr/lib/python3.11/lib-dynload/_ctypes.so\n"
            "7f0000002000-7f0000003000 r-xp 00000000 08:01 3 /opt/ort/libonnxruntime.so\n"
            "7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0 [stack]\n")
    got = host_ranges(maps, ["/usr/bin/python3.11", "/usr/lib/python3.11/"])
    assert [(hex(lo), hex(hi)) for lo, hi, _ in got] == [("0x401000", "0x500000"),
                                                         ("0x7f0000000000", "0x7f0000001000")]
