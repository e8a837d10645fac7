"""perf capture, stack folding, per-function/thread/kernel time, the flamegraph SVG, the store.

The recording tests run small C programs under the real perf on this machine (local device,
and once through the loopback sshd); the parser tests read a checked-in perf script sample
(tests/data/perf_script_sample.txt, made with perf here) and a hand-written one with the
shapes perf prints on other machines (C++ names, inlined frames, unnamed frames).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from device_runner import profile as P
from device_runner.device import DeviceError
from device_runner.local import LocalDevice
from device_runner.qemu import QemuArmv7Device
from reports.flamegraph import flamegraph_svg

DATA = Path(__file__).parent / "data"
SVG_NS = "{http://www.w3.org/2000/svg}"
needs_perf = pytest.mark.skipif(shutil.which("perf") is None or shutil.which("gcc") is None,
                                reason="needs perf (linux-perf) and gcc")

HOT_C = r"""
#include <stdlib.h>
volatile double sink;
__attribute__((noinline)) double hot_small(long n) { double s = 0; for (long i = 0; i < n; i++) s += i * .5; return s; }
__attribute__((noinline)) double hot_big(long n) { double s = 0; for (long i = 0; i < n; i++) s += i * .25; return s; }
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    sink = hot_small(n);
    sink = hot_big(3 * n);  /* three times the work */
    if (argc > 2) { volatile int *p = 0; *p = 1; }  /* any second argument: crash */
    return 0;
}
"""

THREADS_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
volatile double sink;
static long N;
__attribute__((noinline)) double spin_a(long n) { double s = 0; for (long i = 0; i < n; i++) s += i * 0.5; return s; }
__attribute__((noinline)) double spin_b(long n) { double s = 0; for (long i = 0; i < n; i++) s += i * 0.25; return s; }
static void *worker_a(void *p) { pthread_setname_np(pthread_self(), "worker_a"); sink = spin_a(N); return p; }
static void *worker_b(void *p) { pthread_setname_np(pthread_self(), "worker_b"); sink = spin_b(2 * N); return p; }
int main(int argc, char **argv) {
    N = atol(argv[1]);
    pthread_t a, b;
    pthread_create(&a, 0, worker_a, 0); pthread_create(&b, 0, worker_b, 0);
    pthread_join(a, 0); pthread_join(b, 0);
    return 0;
}
"""

# What perf script prints elsewhere: perf's default header fields ([cpu] time: period
# event:mods:), a C++ runtime, an inlined frame, frames perf could not name.
HAND_WRITTEN = """\
runner 812/815 [000] 123.456001: 250000 cycles:ppp: 
\t    4f2a float ns::at<float>(float const*, int) (inlined)
\t    4f2a fused_matmul_add_relu_compute_ (/tmp/w/model.so)
\t    9c10 tvm::runtime::ThreadPool::Launch(int (*)(int, void*), void*) (/tmp/w/libtvm_runtime.so)
\t    7f00 std::function<void (int)>::operator()(int) const (/tmp/w/runner)
\t    1234 [unknown] (/tmp/w/runner)
\t    7777 [unknown] ([unknown])

runner 812/815 [000] 123.457001: 250000 cycles:ppp: 
\t    2b10 expf (/usr/lib/arm-linux-gnueabihf/libm.so.6)
\t    5000 fused_matmul_add_relu1 (/tmp/w/model.so)
\t    9c10 tvm::runtime::ThreadPool::Launch(int (*)(int, void*), void*) (/tmp/w/libtvm_runtime.so)

runner 812/812 [000] 123.458001: 250000 cycles:ppp: 
\t c0101234 __copy_to_user_std ([kernel.kallsyms])
\t    3300 read (/usr/lib/arm-linux-gnueabihf/libc.so.6)
\t    1500 main (/tmp/w/runner)

runner 812/812 [000] 123.459001: 250000 cycles:ppp: 
\t    8800 cblas_sgemm (/usr/lib/arm-linux-gnueabihf/libopenblas.so.0)
\t    1500 main (/tmp/w/runner)

runner 812/812 [000] 123.460001: 250000 cycles:ppp: 
\t    9999 [unknown] ([unknown])
"""


def _cc(src: str, out: Path, *flags: str) -> Path:
    out.with_suffix(".c").write_text(src)
    subprocess.run(["gcc", "-O1", "-fno-omit-frame-pointer", "-g", str(out.with_suffix(".c")), "-o", str(out),
                    *flags], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    d = tmp_path_factory.mktemp("profiled")
    return {"hot": _cc(HOT_C, d / "hot"), "threads": _cc(THREADS_C, d / "threads", "-pthread")}


@pytest.fixture
def local():
    device = LocalDevice()
    yield device
    device.close()


# -- parsing and folding --------------------------------------------------------------------

def test_fold_checked_in_sample():
    folded = P.fold((DATA / "perf_script_sample.txt").read_text())
    kernel = ";".join(f + "_[k]" for f in (
        "entry_SYSCALL_64_after_hwframe do_syscall_64 __do_sys_clone3 kernel_clone copy_process "
        "perf_event_init_task inherit_task_group.isra.0 inherit_event.isra.0 perf_event_alloc "
        "kmem_cache_alloc_node_noprof").split())
    assert folded == {
        f"threads-4020;[unknown];clone3;{kernel}": 1,  # the repeated [unknown] frame kept once
        "worker_a-4022;start_thread;spin_a": 2,
        "worker_b-4023;start_thread;spin_b": 3,
    }
    assert P.fold((DATA / "perf_script_sample.txt").read_text(), threads="comm")["worker_b;start_thread;spin_b"] == 3
    assert "start_thread;spin_b" in P.fold((DATA / "perf_script_sample.txt").read_text(), threads="none")
    assert P.parse_folded(P.folded_text(folded)) == folded


def test_parse_sample_fields():
    samples = P.parse_script((DATA / "perf_script_sample.txt").read_text())
    assert len(samples) == 6
    s = samples[1]
    assert (s.comm, s.pid, s.tid, s.period, s.event) == ("worker_a", 4020, 4022, 1001001, "cpu-clock")
    assert s.frames[0] == P.Frame("11a0", "spin_a", "/tmp/proftry/threads")


def test_hand_written_shapes_cpp_inlined_unnamed():
    samples = P.parse_script(HAND_WRITTEN)
    assert [s.event for s in samples] == ["cycles"] * 5 and samples[0].period == 250000
    assert [f.label for f in samples[0].frames] == [
        "float ns::at<float>(float const*, int)_[i]", "fused_matmul_add_relu_compute_",
        "tvm::runtime::ThreadPool::Launch(int (*)(int, void*), void*)",
        "std::function<void (int)>::operator()(int) const", "runner+0x1234", "[unknown]"]
    assert samples[0].frames[0].dso == "/tmp/w/model.so"  # an inlined frame lives in its container's binary
    assert samples[0].frames[3].dso == "/tmp/w/runner"
    folded = P.fold(samples)
    assert folded["runner-812;main;read;__copy_to_user_std_[k]"] == 1
    assert folded["runner-812;[unknown]"] == 1


def test_kernel_matcher_whole_words_longest_wins():
    match = P.KernelMatcher(["fused_matmul_add_relu", "fused_matmul_add_relu1", "add"])
    assert match("fused_matmul_add_relu") == "fused_matmul_add_relu"
    assert match("fused_matmul_add_relu_compute_") == "fused_matmul_add_relu"
    assert match("tvmgen_default_fused_matmul_add_relu") == "fused_matmul_add_relu"
    assert match("fused_matmul_add_relu1_compute_") == "fused_matmul_add_relu1"
    assert match("fused_matmul_add_relu_1") is None  # another kernel, not in the list
    assert match("fused_matmul_add_relu_1_compute_") is None
    assert match("add") == "add" and match("std::add(int)") == "add" and match("add_compute_") == "add"
    assert match("fused_matmul_add_bias") is None  # "add" only starts a name
    assert match("madd") is None and match("addf") is None and match(None) is None
    assert P.KernelMatcher(["fused_conv"])("fused_conv2d_add") is None


def test_kernels_functions_threads_on_hand_written():
    kmap = {"fused_matmul_add_relu": ["/fc1/MatMul", "/fc1/Add", "/relu/Relu"],
            "fused_matmul_add_relu1": ["/fc2/MatMul"], "fused_softmax": ["/Softmax"]}
    rows = {r["name"]: r for r in P.kernels(HAND_WRITTEN, kmap, ms_per_sample=0.25)}
    # the innermost matching frame wins: the inlined helper and expf count as their kernel
    assert rows["fused_matmul_add_relu"]["samples"] == 1
    assert rows["fused_matmul_add_relu"]["onnx_nodes"] == kmap["fused_matmul_add_relu"]
    assert rows["fused_matmul_add_relu1"]["samples"] == 1 and rows["fused_matmul_add_relu1"]["ms"] == 0.25
    assert rows["fused_softmax"]["samples"] == 0  # listed, never sampled
    assert rows["kernel (OS)"]["samples"] == 1 and rows["BLAS"]["samples"] == 1 and rows["unknown"]["samples"] == 1
    assert rows["runtime"]["samples"] == 0 and rows["libc/libm"]["samples"] == 0
    assert sum(r["samples"] for r in rows.values()) == 5
    assert abs(sum(r["share"] for r in rows.values()) - 1) < 1e-9

    fns = {f["function"]: f for f in P.functions(HAND_WRITTEN, 0.25, kmap)}
    assert fns["main"]["self_samples"] == 0 and fns["main"]["total_samples"] == 2
    assert fns["expf"]["self_samples"] == 1 and fns["expf"]["kernel"] is None
    assert fns["fused_matmul_add_relu_compute_"]["kernel"] == "fused_matmul_add_relu"
    assert fns["fused_matmul_add_relu_compute_"]["onnx_nodes"] == kmap["fused_matmul_add_relu"]
    launch = fns["tvm::runtime::ThreadPool::Launch(int (*)(int, void*), void*)"]
    assert (launch["self_samples"], launch["total_samples"], launch["total_share"]) == (0, 2, 0.4)

    threads = P.threads(HAND_WRITTEN, 0.25)
    assert [(t["thread"], t["samples"], t["ms"]) for t in threads] == [("runner-812", 3, 0.75), ("runner-815", 2, 0.5)]


def test_bucket_rules():
    assert P.bucket(P.Frame("1", "sinf", "/lib/arm-linux-gnueabihf/libm.so.6")) == "libc/libm"
    assert P.bucket(P.Frame("1", "memcpy", "/usr/lib/x86_64-linux-gnu/libc.so.6")) == "libc/libm"
    assert P.bucket(P.Frame("1", None, "/usr/lib/libstdc++.so.6")) == "libc/libm"
    assert P.bucket(P.Frame("1", "sgemm_kernel", "/usr/lib/libopenblasp-r0.3.21.so")) == "BLAS"
    assert P.bucket(P.Frame("1", "cblas_sgemm", "/tmp/runner")) == "BLAS"  # statically linked
    assert P.bucket(P.Frame("1", "clock_gettime", "[vdso]")) == "kernel (OS)"
    assert P.bucket(P.Frame("1", None, "/tmp/w/libonnxruntime.so.1")) == "runtime"
    assert P.bucket(P.Frame("1", None, "[unknown]")) == "unknown"


# -- the device side ------------------------------------------------------------------------

def test_qemu_device_is_refused_with_the_reason():
    with pytest.raises(DeviceError, match=r"perf cannot profile qemu-armv7: .*emulator"):
        P.choose_event(QemuArmv7Device())
    with pytest.raises(DeviceError, match=r"perf cannot profile qemu-armv7"):
        P.record(QemuArmv7Device(), ["./runner"], frequency=999)


class _Board(LocalDevice):
    """This machine posing as an ssh board whose shell finds its tools only in `path`."""

    def __init__(self, path: Path):
        super().__init__(spec="ssh://root@bela.local:22")
        self.path = path

    def run(self, argv, timeout_s, cwd=None):
        return super().run(["env", f"PATH={self.path}", *argv], timeout_s, cwd)


def test_board_without_perf_says_how_to_install(tmp_path):
    (tmp_path / "sh").symlink_to(shutil.which("sh"))
    with pytest.raises(DeviceError) as e:
        P.record(_Board(tmp_path), ["true"])
    assert str(e.value) == ("perf not found on ssh://root@bela.local:22; install linux-perf there "
                            "(apt-get install linux-perf)")


def test_board_with_debians_perf_wrapper_but_no_perf_for_its_kernel(tmp_path):
    (tmp_path / "sh").symlink_to(shutil.which("sh"))
    (tmp_path / "head").symlink_to(shutil.which("head"))
    (tmp_path / "perf").write_text("#!/bin/sh\necho 'E: linux-perf-5.10 is not installed.' >&2\nexit 1\n")
    (tmp_path / "perf").chmod(0o755)
    with pytest.raises(DeviceError, match=r"perf on ssh://root@bela.local:22 does not run "
                                          r"\(E: linux-perf-5.10 is not installed.\); install the linux-perf"):
        P.choose_event(_Board(tmp_path))


def _event_rule_holds(event: str, why: str) -> None:
    """The reason stored with a profile names the event chosen and why."""
    if event == "cycles":
        assert why.startswith("hardware cycles: `perf stat -e cycles` counts on ") and "samples of a busy loop" in why
    else:
        assert event == "cpu-clock" and "cpu-clock is the kernel's software timer" in why
        assert "not supported" in why or "gave no samples" in why


@pytest.fixture
def fake_probe(monkeypatch, local):
    """perf on `local` faked: (counts cycles?, cycles samples, cpu-clock samples) -> choose_event."""
    monkeypatch.setattr(P, "_require_perf", lambda device: P._Perf("perf version 6.1.0", True))

    def choose(counts: bool, cycles: int, clock: int):
        monkeypatch.setattr(P.perf_probe, "stat_counts", lambda run, event, perf="perf": counts and event == "cycles")
        monkeypatch.setattr(P.perf_probe, "sampled", lambda run, event, data, perf="perf", flags=():
                            ({"cycles": cycles, "cpu-clock": clock}[event], f"[ perf record: {event} ]"))
        return P.choose_event(local)

    return choose


def test_choose_event_hardware_cycles_where_they_sample(fake_probe):
    event, why = fake_probe(True, 250, 300)
    assert event == "cycles" and "gave 250 samples" in why
    _event_rule_holds(event, why)


def test_choose_event_cpu_clock_where_cycles_count_but_never_interrupt(fake_probe):
    event, why = fake_probe(True, 0, 300)  # a PMU with no interrupt wired, as on some ARM SoCs
    assert event == "cpu-clock" and "counts on local but sampling cycles gave no samples" in why
    _event_rule_holds(event, why)


def test_choose_event_cpu_clock_where_no_counters_are_exposed(fake_probe):
    event, why = fake_probe(False, 250, 300)  # a VM: cycles "not supported", never sampled
    assert event == "cpu-clock" and "says not supported on local" in why
    _event_rule_holds(event, why)


def test_choose_event_refuses_when_nothing_samples(fake_probe):
    with pytest.raises(DeviceError, match=r"perf cannot sample on local: .*cpu-clock sampling failed too "
                                          r"\(\[ perf record: cpu-clock \]\); check /proc/sys/kernel/perf_event_paranoid"):
        fake_probe(False, 0, 0)


@needs_perf
def test_choose_event_on_this_machine_follows_the_rule(local):
    event, why = P.choose_event(local)
    _event_rule_holds(event, why)


@needs_perf
def test_record_two_hot_functions(local, programs):
    capture = P.record(local, [str(programs["hot"]), "60000000"], frequency=999, timeout_s=60)
    assert capture.failure is None and capture.returncode == 0
    _event_rule_holds(capture.event, capture.why)
    assert capture.perf_version.startswith("perf version")
    assert capture.samples == capture.recorded_samples and capture.samples > 50
    assert capture.lost_events == 0
    assert 0.9 < capture.ms_per_sample < 1.1 and "estimate from sampling" in capture.time_method

    folded = P.fold(capture.script)
    small = sum(n for s, n in folded.items() if s.endswith(";hot_small"))
    big = sum(n for s, n in folded.items() if s.endswith(";hot_big"))
    assert small > 10 and big > 1.8 * small  # three times the work: roughly three times the samples
    assert all(s.startswith("hot-") for s in folded)

    profile = P.analyse(capture, {"hot_big": ["/fc2/Gemm"], "hot_small": ["/fc1/Gemm"], "hot_never": []})
    kernels = {k["name"]: k for k in profile.kernels}
    assert kernels["hot_big"]["samples"] >= big and kernels["hot_big"]["onnx_nodes"] == ["/fc2/Gemm"]
    assert kernels["hot_big"]["share"] > kernels["hot_small"]["share"] > 0.1
    assert kernels["hot_never"]["samples"] == 0
    assert abs(kernels["hot_big"]["ms"] - kernels["hot_big"]["samples"] * capture.ms_per_sample) < 1e-9
    fns = {f["function"]: f for f in profile.functions}
    assert fns["hot_big"]["self_share"] > fns["hot_small"]["self_share"] and fns["hot_big"]["kernel"] == "hot_big"
    assert fns["hot_big"]["dso"] == str(programs["hot"])
    assert any("estimate from sampling" in n for n in profile.notes)
    assert any("2 of 3 kernels were sampled" in n for n in profile.notes)
    assert profile.kernel_functions() == ["hot_big", "hot_small"]
    json.dumps(profile.to_dict())  # storable


@needs_perf
def test_record_per_thread(local, programs):
    capture = P.record(local, [str(programs["threads"]), "60000000"], event="cpu-clock", timeout_s=60)
    assert capture.failure is None
    threads = {t["comm"]: t for t in P.threads(capture.script, capture.ms_per_sample)}
    assert threads["worker_a"]["top_function"] == "spin_a" and threads["worker_b"]["top_function"] == "spin_b"
    assert threads["worker_b"]["samples"] > 1.4 * threads["worker_a"]["samples"] > 10  # twice the work
    folded = P.fold(capture.script)
    assert any(s.startswith("worker_a-") and s.endswith(";spin_a") for s in folded)
    assert any(s.startswith("worker_b-") and s.endswith(";spin_b") for s in folded)


@needs_perf
def test_a_crash_is_a_failure_not_an_exception(local, programs):
    capture = P.record(local, [str(programs["hot"]), "20000000", "crash"], event="cpu-clock", timeout_s=60)
    assert capture.failure is not None and capture.failure.startswith("killed by SIGSEGV")
    assert capture.samples > 0  # what ran before the crash is kept
    assert any(s.endswith(";hot_big") for s in P.fold(capture.script))


@needs_perf
def test_timeout_stops_the_command_and_keeps_the_profile(local):
    capture = P.record(local, ["sh", "-c", "while :; do :; done"], event="cpu-clock", timeout_s=1)
    assert capture.failure.startswith("timed out after 1 s") and capture.samples > 100


@needs_perf
def test_record_over_ssh(ssh_spec, programs):
    from device_runner.ssh_device import SshDevice

    device = SshDevice.from_spec(ssh_spec)
    try:
        capture = P.record(device, [str(programs["hot"]), "30000000"], timeout_s=60)
    finally:
        device.close()
    assert capture.device == ssh_spec and capture.failure is None
    _event_rule_holds(capture.event, capture.why)
    assert any(s.endswith(";hot_big") for s in P.fold(capture.script))


# -- flamegraph -----------------------------------------------------------------------------

FOLDED = {"runner-1;main;tvm::runtime::Run<float>(int&);fused_dense_compute_": 30,
          "runner-1;main;tvm::runtime::Run<float>(int&);expf": 5,
          "runner-1;main;read;vfs_read_[k]": 2, "worker-2;start_thread;spin": 13}


def _frames(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("data-name"): g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "f"}


def test_flamegraph_svg_is_xml_with_names_and_script():
    svg = flamegraph_svg(FOLDED, "TVM <mlp> & co", "cpu-clock, 999 Hz", highlight=["fused_dense_compute_"])
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    frames = _frames(svg)
    assert {"all", "main", "tvm::runtime::Run<float>(int&)", "fused_dense_compute_", "spin", "vfs_read_[k]"} <= set(frames)
    assert frames["all"].get("data-n") == "50"
    assert frames["fused_dense_compute_"].find(f"{SVG_NS}title").text == "fused_dense_compute_: 30 samples (60.00%)"
    script = root.find(f"{SVG_NS}script").text
    assert "zoom" in script and "getElementById('" + root.get("id") + "')" in script
    assert "TVM &lt;mlp&gt; &amp; co" in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert svg == flamegraph_svg(dict(reversed(list(FOLDED.items()))), "TVM <mlp> & co", "cpu-clock, 999 Hz",
                                 highlight=["fused_dense_compute_"])  # deterministic, order-free
    # siblings side by side, callee on top of caller, widths proportional to samples
    rect = {n: frames[n].find(f"{SVG_NS}rect") for n in ("main", "read", "tvm::runtime::Run<float>(int&)")}
    assert float(rect["read"].get("y")) < float(rect["main"].get("y"))
    assert float(rect["read"].get("x")) < float(rect["tvm::runtime::Run<float>(int&)"].get("x"))
    empty = flamegraph_svg({}, "nothing", "")
    assert "no samples" in empty and ET.fromstring(empty) is not None


def test_flamegraph_tiny_frames_left_out_and_counted():
    svg = flamegraph_svg({"a;big": 100_000, "a;tiny": 1}, "t", "")
    assert "tiny" not in _frames(svg) and "1 frames under" in svg


MOCK_DOM = r"""
// Just enough DOM for the flamegraph's script: parse the generated SVG, run the script,
// click a frame, search, reset; print where the frames ended up.
const src = require('fs').readFileSync(process.argv[2], 'utf8');
const unesc = s => s.replace(/&lt;/g,'<').replace(/&gt;/g,'>').replace(/&quot;/g,'"').replace(/&#x27;/g,"'").replace(/&amp;/g,'&');
function El(tag, attrs, parent) { Object.assign(this, {tag, attrs, parent, children: [], style: {}, textContent: ''});
  const a = this.attrs, cls = () => (a['class'] || '').split(' ').filter(Boolean);
  this.classList = {add: c => { a['class'] = [...new Set([...cls(), c])].join(' '); },
                    remove: c => { a['class'] = cls().filter(x => x !== c).join(' '); },
                    contains: c => cls().includes(c)}; }
El.prototype.getAttribute = function (k) { return this.attrs[k]; };
El.prototype.setAttribute = function (k, v) { this.attrs[k] = String(v); };
El.prototype.matches = function (sel) { const [t, c] = sel.split('.'); return (!t || t === this.tag) && (!c || this.classList.contains(c)); };
El.prototype.all = function () { return this.children.flatMap(c => [c, ...c.all()]); };
El.prototype.querySelectorAll = function (sel) { return this.all().filter(e => e.matches(sel)); };
El.prototype.querySelector = function (sel) { return this.querySelectorAll(sel)[0] || null; };
El.prototype.closest = function (sel) { for (let e = this; e; e = e.parent) if (e.matches(sel)) return e; return null; };
const body = src.replace(/<script[\s\S]*<\/script>/, '').replace(/<style>[\s\S]*?<\/style>/, '');
let root = null, cur = null, m; const re = /<(\/?)([a-z]+)([^>]*?)(\/?)>|([^<]+)/g;
while ((m = re.exec(body))) {
  if (m[5]) { if (cur && m[5].trim()) cur.textContent += unesc(m[5]); continue; }
  if (m[1]) { cur = cur.parent; continue; }
  const attrs = {}; m[3].replace(/([\w:-]+)="([^"]*)"/g, (_, k, v) => { attrs[k] = unesc(v); });
  const el = new El(m[2], attrs, cur); if (cur) cur.children.push(el); else root = el;
  if (!m[4]) cur = el;
}
const on = {}; root.addEventListener = (type, f) => { on[type] = f; };
global.document = {getElementById: id => (root.attrs.id === id ? root : null)};
let answer = null; global.window = {prompt: () => answer};
eval(src.match(/<!\[CDATA\[([\s\S]*)\]\]>/)[1]);
const frames = root.querySelectorAll('g.f'), named = n => frames.find(g => g.attrs['data-name'] === n);
const state = () => Object.fromEntries(frames.map(g => [g.attrs['data-name'], {shown: g.style.display !== 'none',
  x: +g.querySelector('rect').attrs.x, w: +g.querySelector('rect').attrs.width, text: g.querySelector('text').textContent,
  cls: g.attrs['class']}]));
const out = {};
on.click({target: named(process.argv[3]).querySelector('rect')}); out.zoomed = state();
on.mouseover({target: named(process.argv[3]).querySelector('rect')}); out.status = root.querySelector('.status').textContent;
answer = process.argv[4]; on.click({target: root.querySelector('.search').querySelector('text')});
out.found = root.querySelector('.found').textContent;
out.hits = frames.filter(g => g.classList.contains('hit')).map(g => g.attrs['data-name']);
on.click({target: root.querySelector('.reset').querySelector('text')}); out.reset = state();
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the SVG's script")
def test_flamegraph_script_zooms_searches_and_resets(tmp_path):
    svg_path = tmp_path / "fg.svg"
    svg_path.write_text(flamegraph_svg(FOLDED, "t", ""), encoding="utf-8")
    (tmp_path / "dom.js").write_text(MOCK_DOM)
    run = "tvm::runtime::Run<float>(int&)"
    done = subprocess.run(["node", str(tmp_path / "dom.js"), str(svg_path), run, "^(spin|expf)$"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    zoomed, reset = out["zoomed"], out["reset"]
    assert zoomed[run]["x"] == 10 and zoomed[run]["w"] == 1179  # the clicked frame fills the width
    assert zoomed["main"]["shown"] and "anc" in zoomed["main"]["cls"]  # ancestors stay, dimmed
    assert not zoomed["spin"]["shown"] and not zoomed["read"]["shown"]  # outside the zoomed frame
    assert abs(zoomed["fused_dense_compute_"]["w"] - 1180 * 30 / 35 + 1) < 0.05
    assert out["status"] == f"{run}: 35 samples (70.00%)"
    assert sorted(out["hits"]) == ["expf", "spin"] and out["found"] == "matched 36.0% of samples"
    assert all(f["shown"] for f in reset.values()) and reset[run]["w"] < 1000 and "anc" not in reset["main"]["cls"]


# -- store ----------------------------------------------------------------------------------

def test_store_profile_round_trip(tmp_path):
    from store import Store

    capture = P.Capture(device="local", command=["./runner", "--runs", "100"], event="cpu-clock",
                        requested_event="cpu-clock", why="test", frequency=999, call_graph="fp",
                        perf_version="perf version 6.1", script=HAND_WRITTEN)
    samples = P.parse_script(HAND_WRITTEN)
    capture.samples = len(samples)
    capture.ms_per_sample, capture.time_method = 1.0, "estimate from sampling: test"
    profile = P.analyse(capture, {"fused_matmul_add_relu": ["/fc1/MatMul"]})
    store = Store(tmp_path)
    run_id = store.new_run(audit_id="a", model_hash="m" * 8, inputs_digest="d", compiler="tvm", variant="tvm",
                           options={}, options_key="k", target={}, device="local", emulated=False, host={},
                           settings={})
    profile_id = store.add_profile(profile.to_dict(), run_id=run_id, model_hash="m" * 8, compiler="tvm",
                                   device="local", svg_path="reports/profile.svg")
    back = store.profile(profile_id[:6])
    assert back["profile_id"] == profile_id and back["run_id"] == run_id and back["svg_path"] == "reports/profile.svg"
    assert back["folded"] == profile.folded and back["samples"] == 5 and back["event"] == "cpu-clock"
    assert back["capture"]["command"] == ["./runner", "--runs", "100"] and back["notes"] == profile.notes
    assert [f["function"] for f in back["functions"]] == [f["function"] for f in profile.functions]
    assert back["functions"][0]["self_ms"] == profile.functions[0]["self_ms"]
    assert [k["samples"] for k in back["kernels"]] == [k["samples"] for k in profile.kernels]
    assert back["kernels"][0]["onnx_nodes"] == ["/fc1/MatMul"]
    assert [(t["thread"], t["samples"]) for t in back["threads"]] == \
        [(t["thread"], t["samples"]) for t in profile.threads]
    assert store.profiles_of("m" * 8, "tvm", "local")[0][0] == profile_id  # found from its run's model
    store.close()
