"""perf on a device: capture, folded stacks, time per function, per thread, per compiler kernel.

`record()` runs a command under `perf record -g` on a device (local or ssh; never
qemu-armv7, where perf would sample the emulator, not the board), then `perf script` there,
where the binaries and their symbols are, and brings the text back. `fold()` turns that
text into folded stacks ("thread;root;...;leaf" -> samples, the format FlameGraph tools
read); `analyse()` adds the same samples up per function (self and inclusive), per thread
and per compiler kernel.

Every time here is an estimate from sampling: samples x the sampling period, CPU time
summed over threads (two busy threads give twice the wall time), good to about
+-sqrt(samples) samples. A kernel shorter than one period (~1 ms at 999 Hz) is only seen
when it runs often.

Frame names follow FlameGraph's conventions: OS kernel frames end in `_[k]`, inlined frames
(perf script --inline) in `_[i]`; a frame perf could not name is `libfoo.so+0x1a2b` (its
offset in the binary) or `[unknown]` when even the binary is unknown.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable

from device_runner import perf as perf_probe
from device_runner.device import Completed, Device, DeviceError
from ground.children import signal_name

FIELDS = "comm,pid,tid,period,event,ip,sym,dso"
STATS_MARK = "@@auditor-perf-report-stats@@"
SOFTWARE_CLOCKS = ("cpu-clock", "task-clock")  # sample period is nanoseconds of CPU time
INSTALL_HINT = "install linux-perf there (apt-get install linux-perf)"

# Where a sample outside every compiler kernel goes, by its innermost frame.
BUCKETS = ("runtime", "libc/libm", "BLAS", "kernel (OS)", "unknown")
_LIBC = re.compile(r"^(libc|libm|libmvec|ld-linux[\w.-]*|ld|libpthread|libdl|librt|libstdc\+\+|libgcc_s)([.-].*)?$")
_BLAS = re.compile(r"^lib(openblas\w*|blas\w*|cblas|lapack\w*|blis\w*|mkl\w*|atlas|armpl\w*|flexiblas)([.-].*)?$")
_BLAS_SYMBOLS = re.compile(r"^(cblas_|openblas|blas_|[sdcz]gemm_|[sdcz]gemv_)")
_USER_PSEUDO_DSOS = {"[vdso]", "[vsyscall]", "[unknown]", "[heap]", "[stack]", "[anon]", "[uprobes]"}
_PERF_LINES = re.compile(r"^(\[ perf record:|Warning:|WARNING:|Processed \d+ events|Check IO/CPU|"
                         r"Lowering default frequency|info: Using a maximum frequency)")


# -- parsing perf script -------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """One callchain entry of a sample."""

    ip: str
    sym: str | None  # None when perf could not resolve it ("[unknown]")
    dso: str | None  # None when unknown
    inlined: bool = False

    @property
    def in_os(self) -> bool:
        """OS kernel code: [kernel.kallsyms], a module ([nf_tables]) or the vdso."""
        if not self.dso or not self.dso.startswith("["):
            return False
        return self.dso == "[vdso]" or self.dso not in _USER_PSEUDO_DSOS

    @property
    def label(self) -> str:
        """The frame's name in folded stacks, the flamegraph and the function table."""
        if self.sym is not None:
            name = re.sub(r"\+0x[0-9a-fA-F]+$", "", self.sym)  # a symoff field, if present
        elif self.dso and self.dso != "[unknown]":
            name = f"{posixpath.basename(self.dso)}+0x{self.ip}"
        else:
            name = "[unknown]"
        name = name.replace(";", ":")  # ';' separates frames in folded stacks
        if self.in_os and self.dso != "[vdso]":
            return name + "_[k]"
        return name + "_[i]" if self.inlined else name


@dataclass
class Sample:
    comm: str
    pid: int | None
    tid: int
    period: int | None
    event: str
    frames: list[Frame]  # innermost (leaf) first, as perf script prints them

    def thread(self, by: str = "tid") -> str | None:
        if by == "none":
            return None
        comm = self.comm.replace(";", ":")
        return comm if by == "comm" else f"{comm}-{self.tid}"


_HEADER_PID_TID = re.compile(r"^(?P<comm>.*?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+(?P<rest>.*)$")
_HEADER_TID = re.compile(r"^(?P<comm>.*?)\s+(?P<tid>\d+)\s+(?P<rest>.*)$")
_STACK_LINE = re.compile(r"^\s+([0-9a-fA-F]+)\s+(.*?)\s*$")
_MODIFIERS = re.compile(r"^[ukhGHpPSDIWe]+$")


def _header(line: str) -> Sample | None:
    m = _HEADER_PID_TID.match(line) or _HEADER_TID.match(line)
    if not m:
        return None
    tokens = m.group("rest").split()
    event, period = "", None
    if tokens:
        parts = [p for p in tokens[-1].split(":") if p]  # "cpu-clock:" or "cycles:ppp:"
        if len(parts) > 1 and _MODIFIERS.match(parts[-1]):
            parts = parts[:-1]
        event = ":".join(parts)
        if len(tokens) > 1 and tokens[-2].isdigit():
            period = int(tokens[-2])
    pid = int(m.group("pid")) if "pid" in m.groupdict() and m.group("pid") else None
    return Sample(comm=m.group("comm").strip(), pid=pid, tid=int(m.group("tid")), period=period,
                  event=event, frames=[])


def _frame(ip: str, rest: str) -> Frame:
    if rest.endswith("(inlined)"):
        return Frame(ip, rest[: -len("(inlined)")].strip() or None, None, inlined=True)
    sym, dso = rest, None
    cut = rest.rfind(" (")
    if rest.endswith(")") and cut >= 0:
        sym, dso = rest[:cut].strip(), rest[cut + 2:-1].strip()
    elif rest.startswith("(") and rest.endswith(")"):  # no symbol field: "(dso)" alone
        sym, dso = "", rest[1:-1]
    if sym in ("", "[unknown]"):
        sym = None
    return Frame(ip, sym, dso or None)


def parse_script(text: str) -> list[Sample]:
    """perf script output (fields comm,pid,tid,period,event,ip,sym,dso, or perf's default
    fields) -> samples. Inlined frames take the binary of the frame that contains them; a
    run of one unnamed frame repeated (an unwinder loop) is kept once."""
    samples: list[Sample] = []
    current: Sample | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None
            continue
        if line.startswith("#"):
            continue
        if line[0] in " \t":
            m = _STACK_LINE.match(line)
            if current is not None and m:
                frame = _frame(m.group(1), m.group(2))
                if frame.sym is None and current.frames and current.frames[-1] == frame:
                    continue  # frame-pointer unwinding looping on one unnamed frame: keep one
                current.frames.append(frame)
            continue
        current = _header(line)
        if current is not None:
            samples.append(current)
    for s in samples:
        dso = None
        for i in range(len(s.frames) - 1, -1, -1):  # root to leaf: an inlined frame sits above its container
            f = s.frames[i]
            if f.inlined and f.dso is None:
                s.frames[i] = Frame(f.ip, f.sym, dso, inlined=True)
            else:
                dso = f.dso
    return samples


def _samples(script: str | list[Sample]) -> list[Sample]:
    return parse_script(script) if isinstance(script, str) else script


def fold(script: str | list[Sample], threads: str = "tid") -> dict[str, int]:
    """Folded stacks, "thread;root;...;leaf" -> samples, sorted by stack. threads: "tid"
    (one root per thread, "comm-tid"), "comm" (threads of one name together) or "none"."""
    counts: Counter[str] = Counter()
    for s in _samples(script):
        labels = [f.label for f in reversed(s.frames)] or ["[unknown]"]
        thread = s.thread(threads)
        counts[";".join([thread, *labels] if thread else labels)] += 1
    return dict(sorted(counts.items()))


def folded_text(folded: dict[str, int]) -> str:
    """The folded stacks as text, one "stack count" per line (what flamegraph.pl reads)."""
    return "".join(f"{stack} {n}\n" for stack, n in sorted(folded.items()))


def parse_folded(text: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if stack and n.isdigit():
            out[stack] += int(n)
    return dict(sorted(out.items()))


# -- aggregation ---------------------------------------------------------------------------

class KernelMatcher:
    """Which compiler kernel a symbol belongs to. A kernel's name must start the symbol (or
    a C++ name part of it, or follow TVM's `tvmgen_<module>_` prefix) and end at a word end
    or an `_suffix`: `fused_matmul_add_relu` matches `fused_matmul_add_relu`,
    `fused_matmul_add_relu_compute_` (TVM's parallel body) and
    `tvmgen_default_fused_matmul_add_relu`, not `fused_matmul_add_relu1` or
    `fused_matmul_add_relu_1` (other kernels), and `add` is not found inside
    `fused_matmul_add_relu`. The longest matching name wins."""

    def __init__(self, names: Iterable[str]):
        self.names = sorted(set(names), key=lambda n: (-len(n), n))
        self._patterns = [(n, re.compile(rf"(?:^|(?<=[^A-Za-z0-9_]))(?:tvmgen_[A-Za-z0-9]+_)?{re.escape(n)}"
                                         rf"(?![A-Za-z0-9])(?!_\d+(?![A-Za-z]))"))
                          for n in self.names if n]
        self._cache: dict[str, str | None] = {}

    def __call__(self, symbol: str | None) -> str | None:
        if not symbol:
            return None
        if symbol not in self._cache:
            self._cache[symbol] = next((n for n, p in self._patterns if p.search(symbol)), None)
        return self._cache[symbol]


def _kernel_map(kernel_map: dict[str, list[str]] | Iterable[str] | None) -> dict[str, list[str]]:
    if kernel_map is None:
        return {}
    if isinstance(kernel_map, dict):
        return {k: list(v or []) for k, v in kernel_map.items()}
    return {k: [] for k in kernel_map}


def bucket(frame: Frame | None) -> str:
    """Where a sample outside every compiler kernel goes, by its innermost frame: the OS
    kernel (the vdso too: clock_gettime), the C/C++ system libraries, BLAS, code perf could
    not place at all, and everything else (the runner, the compiler's runtime library, the
    model library's glue) as runtime."""
    if frame is None:
        return "unknown"
    if frame.in_os:
        return "kernel (OS)"
    if not frame.dso or frame.dso == "[unknown]":
        return "unknown"
    base = posixpath.basename(frame.dso)
    if _LIBC.match(base):
        return "libc/libm"
    if _BLAS.match(base) or (frame.sym and _BLAS_SYMBOLS.match(frame.sym)):
        return "BLAS"
    return "runtime"


def _share(n: int, total: int) -> float:
    return n / total if total else 0.0


def _ms(n: int, ms_per_sample: float | None) -> float | None:
    return None if ms_per_sample is None else n * ms_per_sample


def functions(script: str | list[Sample], ms_per_sample: float | None = None,
              kernel_map: dict[str, list[str]] | Iterable[str] | None = None) -> list[dict]:
    """Per function (frame label + binary): self samples (the innermost frame) and total
    samples (anywhere on the stack, once per sample), their shares of all samples, ms, and
    the compiler kernel the function's symbol belongs to (with its ONNX nodes)."""
    samples = _samples(script)
    kmap = _kernel_map(kernel_map)
    match = KernelMatcher(kmap)
    self_n: Counter[tuple[str, str]] = Counter()
    total_n: Counter[tuple[str, str]] = Counter()
    symbol: dict[tuple[str, str], str | None] = {}
    for s in samples:
        seen = set()
        for i, f in enumerate(s.frames):
            key = (f.label, f.dso or "[unknown]")
            symbol[key] = f.sym
            if i == 0:
                self_n[key] += 1
            if key not in seen:
                seen.add(key)
                total_n[key] += 1
    rows = []
    for key in sorted(total_n, key=lambda k: (-self_n[k], -total_n[k], k)):
        kernel = match(symbol[key])
        rows.append({"function": key[0], "dso": key[1], "self_samples": self_n[key],
                     "total_samples": total_n[key], "self_share": _share(self_n[key], len(samples)),
                     "total_share": _share(total_n[key], len(samples)),
                     "self_ms": _ms(self_n[key], ms_per_sample), "total_ms": _ms(total_n[key], ms_per_sample),
                     "kernel": kernel, "onnx_nodes": kmap.get(kernel, []) if kernel else []})
    return rows


def threads(script: str | list[Sample], ms_per_sample: float | None = None) -> list[dict]:
    """Per thread (comm and tid): samples, share of all samples, ms and its top function."""
    samples = _samples(script)
    per: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    for s in samples:
        per[(s.comm, s.tid)][s.frames[0].label if s.frames else "[unknown]"] += 1
    rows = []
    for (comm, tid), leaves in per.items():
        n = sum(leaves.values())
        top, top_n = min(leaves.items(), key=lambda kv: (-kv[1], kv[0]))
        rows.append({"thread": f"{comm}-{tid}", "comm": comm, "tid": tid, "samples": n,
                     "share": _share(n, len(samples)), "ms": _ms(n, ms_per_sample),
                     "top_function": top, "top_function_share": _share(top_n, n)})
    return sorted(rows, key=lambda r: (-r["samples"], r["comm"], r["tid"]))


def kernels(script: str | list[Sample], kernel_map: dict[str, list[str]] | Iterable[str] | None,
            ms_per_sample: float | None = None) -> list[dict]:
    """Per compiler kernel: each sample goes to the innermost frame whose symbol matches a
    kernel name (so a kernel's calls into libm count as the kernel's), every other sample
    to a bucket (BUCKETS) by its innermost frame. Kernels no sample reached are listed with
    0; buckets always all appear. Rows: name, kind ("kernel" | "bucket"), samples, share,
    ms, the symbols seen for it, onnx_nodes."""
    samples = _samples(script)
    kmap = _kernel_map(kernel_map)
    match = KernelMatcher(kmap)
    counts: Counter[tuple[str, str]] = Counter()
    symbols: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        hit = None
        for f in s.frames:
            hit = match(f.sym)
            if hit:
                symbols[hit].add(f.label)
                counts[("kernel", hit)] += 1
                break
        if not hit:
            counts[("bucket", bucket(s.frames[0] if s.frames else None))] += 1
    rows = [{"name": k, "kind": "kernel", "samples": counts[("kernel", k)],
             "share": _share(counts[("kernel", k)], len(samples)), "ms": _ms(counts[("kernel", k)], ms_per_sample),
             "symbols": sorted(symbols[k]), "onnx_nodes": kmap[k]}
            for k in sorted(kmap, key=lambda k: (-counts[("kernel", k)], k))]
    rows += [{"name": b, "kind": "bucket", "samples": counts[("bucket", b)],
              "share": _share(counts[("bucket", b)], len(samples)), "ms": _ms(counts[("bucket", b)], ms_per_sample),
              "symbols": [], "onnx_nodes": []} for b in BUCKETS]
    return rows


# -- capture -------------------------------------------------------------------------------

@dataclass
class Capture:
    """What one `perf record` of a command on a device gave. `failure` says why the profiled
    command (or perf script afterwards) failed; the samples taken until then are kept."""

    device: str
    command: list[str]
    event: str  # the event perf sampled (read back from the samples)
    requested_event: str
    why: str  # why this event
    frequency: int
    call_graph: str
    perf_version: str
    samples: int = 0
    recorded_samples: int | None = None  # what perf record said it wrote
    lost_events: int | None = None  # LOST + LOST_SAMPLES records (perf report --stats); None: unknown
    ms_per_sample: float = 0.0
    time_method: str = ""
    wall_s: float = 0.0
    returncode: int | None = None
    failure: str | None = None
    notes: list[str] = field(default_factory=list)
    script: str = field(default="", repr=False)  # perf script text
    stdout: str = field(default="", repr=False)  # the command's stdout (perf record passes it through)
    stderr: str = field(default="", repr=False)  # the command's stderr with perf record's own lines

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("script", "stdout", "stderr"):
            d.pop(key)
        return d


@dataclass
class _Perf:
    version: str  # "perf version 6.1.187"
    can_stop: bool  # the device's `timeout` can send SIGINT (GNU coreutils, recent busybox)


# One round trip (each costs ~0.25 s over ssh): is perf there, does it run, can `timeout` stop it.
_PERF_CHECK = ("command -v perf >/dev/null 2>&1 || { echo missing; exit 127; }; out=$(perf --version 2>&1); "
               "rc=$?; echo \"$out\" | head -n 3; timeout -s INT -k 1 5 true 2>/dev/null && echo can-stop; exit $rc")


def _require_perf(device: Device) -> _Perf:
    """perf on the device, or a DeviceError saying what to do."""
    if device.emulated:
        raise DeviceError(
            f"perf cannot profile {device.spec}: the board is emulated, so perf would sample the "
            "qemu-arm emulator on this host, not the ARM code; profile on local or an ssh:// board")
    done = device.run(["sh", "-c", _PERF_CHECK], timeout_s=60)
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
    if done.returncode == 0:
        return _Perf(version=lines[0] if lines else "perf (version unknown)", can_stop="can-stop" in lines)
    if lines[:1] == ["missing"]:
        raise DeviceError(f"perf not found on {device.spec}; {INSTALL_HINT}")
    why = next((ln for ln in lines + done.stderr.splitlines() if ln.strip() and ln != "can-stop"), "no output")
    raise DeviceError(f"perf on {device.spec} does not run ({why}); install the linux-perf matching "
                      "its kernel there (apt-get install linux-perf)")  # Debian's wrapper, no perf for this kernel


def _runner(device: Device):
    def run(argv: list[str]) -> tuple[int | None, str]:
        done = device.run(argv, timeout_s=60)
        return done.returncode, done.stderr

    return run


def choose_event(device: Device) -> tuple[str, str]:
    """(event, why): hardware `cycles` where `perf stat -e cycles` counts on the device and
    sampling on it gives samples, else the `cpu-clock` software timer. DeviceError when perf
    is missing, the device is emulated, or no event can be sampled."""
    perf = _require_perf(device)
    data = posixpath.join(device.workdir(), f"probe-{uuid.uuid4().hex[:8]}.data")
    try:
        return _choose_event(device, perf, data)
    finally:
        device.run(["rm", "-f", data, data + ".old"], timeout_s=60)


def _choose_event(device: Device, perf: _Perf, data: str) -> tuple[str, str]:
    """choose_event() with perf already checked; its probe writes `data` (the caller removes it)."""
    run = _runner(device)
    flags = perf_probe.record_flags(perf.version)
    if perf_probe.stat_counts(run, "cycles"):
        n, last = perf_probe.sampled(run, "cycles", data, flags=flags)
        if n:
            return "cycles", (f"hardware cycles: `perf stat -e cycles` counts on {device.spec} and "
                              f"sampling them gave {n} samples of a busy loop")
        cycles = f"`perf stat -e cycles` counts on {device.spec} but sampling cycles gave no samples ({last})"
    else:
        cycles = (f"`perf stat -e cycles` says not supported on {device.spec} "
                  "(no hardware counters exposed, as on most VMs)")
    n, last = perf_probe.sampled(run, "cpu-clock", data, flags=flags)
    if not n:
        raise DeviceError(f"perf cannot sample on {device.spec}: {cycles}; cpu-clock sampling "
                          f"failed too ({last}); check /proc/sys/kernel/perf_event_paranoid there")
    return "cpu-clock", (f"{cycles}; cpu-clock is the kernel's software timer: one sample per "
                         "1/F s of CPU time, no hardware counter needed")


def _program_failure(done: Completed, timeout_s: float, wrapped: bool) -> str | None:
    """Why the profiled command failed, from perf record's exit (perf exits with the
    command's status and re-raises the signal that killed it), perf's own lines left out."""
    if done.timed_out or (wrapped and done.returncode == 124):
        return f"timed out after {timeout_s:g} s (perf stopped it; the profile covers what ran until then)"
    rc = done.returncode
    if rc == 0:
        return None
    stderr = "\n".join(ln for ln in (done.stderr or "").splitlines() if not _PERF_LINES.match(ln))
    own = Completed(done.argv, rc, done.stdout, stderr, done.wall_s)
    if rc is not None and 128 < rc < 128 + 65 and rc != 139:  # a shell's 128+N (139 is said already)
        tail = [ln for ln in (stderr or done.stdout).strip().splitlines() if ln.strip()]
        return f"killed by {signal_name(128 - rc)}; {tail[-1] if tail else 'no output'}"
    return own.failure()


def _sample_period(samples: list[Sample], event: str, frequency: int) -> tuple[float, str]:
    periods = [s.period for s in samples]
    if event in SOFTWARE_CLOCKS and samples and all(p is not None for p in periods):
        ms = sum(periods) / len(periods) / 1e6  # type: ignore[arg-type]
        return ms, (f"estimate from sampling: {event} samples x their mean period ({ms:.4f} ms of "
                    "CPU time each, perf's own period field)")
    ms = 1000.0 / frequency
    return ms, (f"estimate from sampling: {event} samples x 1/F (F = {frequency} Hz, {ms:.4f} ms each); "
                "perf adjusts the period to keep about F samples per second of CPU time")


def record(device: Device, argv: list[str], cwd: str | None = None, frequency: int = 999,
           timeout_s: float = 600.0, *, event: str | None = None, call_graph: str = "fp",
           inline: bool = False) -> Capture:
    """Run argv on the device under `perf record -e EVENT -F frequency -g`, then `perf script`
    there; the text comes back in Capture.script. event None: choose_event(). call_graph
    "fp" (frame pointers, perf -g: build with -fno-omit-frame-pointer) or "dwarf" (no frame
    pointers needed, much bigger perf.data). inline: ask perf script for inlined frames
    (addr2line per address: slow on a board). Raises DeviceError only when perf cannot be
    used there; the command's failure (crash, exit status, timeout) is Capture.failure."""
    if call_graph not in ("fp", "dwarf", "lbr"):
        raise ValueError(f"call_graph must be fp, dwarf or lbr, not {call_graph!r}")
    if not argv:
        raise ValueError("record() needs a command")
    perf = _require_perf(device)
    requested, why = event, f"{event} requested"
    base = posixpath.join(device.workdir(), f"perf-{uuid.uuid4().hex[:8]}")
    data, probe = base + ".data", base + "-probe.data"
    leftovers = [data, data + ".old", probe, probe + ".old"]
    try:
        if event is None:
            event, why = _choose_event(device, perf, probe)
        capture = Capture(device=device.spec, command=list(argv), event=event, requested_event=requested or event,
                          why=why, frequency=int(frequency), call_graph=call_graph, perf_version=perf.version)
        cmd = ["perf", "record", *perf_probe.record_flags(perf.version), "-e", event, "-F", str(int(frequency)),
               *(["-g"] if call_graph == "fp" else ["--call-graph", call_graph]), "-o", data, "--", *argv]
        if perf.can_stop:  # SIGINT at the deadline: perf stops the command and still writes perf.data
            cmd = ["timeout", "-s", "INT", "-k", "30", f"{timeout_s:g}", *cmd]
        done = device.run(cmd, timeout_s=timeout_s + 60, cwd=cwd)
        capture.wall_s, capture.returncode = done.wall_s, done.returncode
        capture.stdout, capture.stderr = done.stdout, done.stderr
        wrote = re.search(r"Captured and wrote .*\((\d+) samples\)", done.stderr or "")
        if not wrote:
            last = next(iter(ln for ln in reversed((done.stderr or "").splitlines()) if ln.strip()), "no output")
            if re.search(r"perf_event_paranoid|Permission denied|No permission|not supported|Access to performance",
                         done.stderr or ""):
                raise DeviceError(f"perf record on {device.spec} could not open {event}: {last}")
            stopped = done.timed_out or (perf.can_stop and done.returncode == 124)
            capture.failure = (f"timed out after {timeout_s:g} s and " if stopped else "") + \
                f"perf record wrote no profile: {last}"
            return capture
        capture.recorded_samples = int(wrote.group(1))
        capture.failure = _program_failure(done, timeout_s, perf.can_stop)
        # perf script's text on stdout; perf report's counts of lost samples after a marker on stderr
        q = shlex.quote
        script = device.run(["sh", "-c", f"perf script -i {q(data)} -F {FIELDS}{' --inline' if inline else ''}; "
                             f"rc=$?; echo {STATS_MARK} >&2; perf report -i {q(data)} --stats >&2 2>/dev/null; "
                             f"rm -f {' '.join(q(p) for p in leftovers)}; exit $rc"],
                            timeout_s=max(300.0, timeout_s), cwd=cwd)
        leftovers = []
        if script.returncode != 0 or script.timed_out:
            errors = Completed(script.argv, script.returncode, script.stdout,
                               script.stderr.split(STATS_MARK)[0], script.wall_s, script.timed_out)
            capture.failure = (capture.failure + "; " if capture.failure else "") + \
                f"perf script failed: {errors.failure()}"
            return capture
        capture.script = script.stdout
        stats = script.stderr.split(STATS_MARK, 1)[-1]
        if "events:" in stats:
            capture.lost_events = sum(int(n) for n in re.findall(r"LOST(?:_SAMPLES)? events:\s+(\d+)", stats))
    finally:
        if leftovers:
            device.run(["rm", "-f", *leftovers], timeout_s=60)
    samples = parse_script(capture.script)
    capture.samples = len(samples)
    seen = Counter(s.event for s in samples if s.event)
    if seen:
        actual = seen.most_common(1)[0][0]
        if actual != event and not actual.startswith(event + ":"):
            capture.notes.append(f"perf sampled {actual}, not the {event} asked for (perf falls back "
                                 "to cpu-clock where the hardware event cannot sample)")
            capture.event = actual
    capture.ms_per_sample, capture.time_method = _sample_period(samples, capture.event, capture.frequency)
    capture.notes += _stack_notes(samples)
    if capture.lost_events:
        capture.notes.append(f"perf lost {capture.lost_events} records of samples (CPU or I/O overload): "
                             "shares are still fair, totals are low; try a lower -F")
    return capture


def _stack_notes(samples: list[Sample]) -> list[str]:
    notes = []
    if not samples:
        return ["no samples: the command ran for less than one sampling period, or perf could not sample it"]
    unresolved = sum(1 for s in samples if any(f.sym is None and not f.in_os for f in s.frames))
    if unresolved / len(samples) > 0.2:
        notes.append(f"{unresolved / len(samples):.0%} of samples have frames perf could not name "
                     "(stripped binaries or JIT code): they show as binary+0xoffset or [unknown]")
    depths = sorted(sum(1 for f in s.frames if not f.in_os) for s in samples)
    if depths[len(depths) // 2] <= 1:
        notes.append("most user stacks are one frame deep: frame-pointer unwinding stops at code built "
                     "without -fno-omit-frame-pointer; try call_graph='dwarf'")
    return notes


# -- everything from one capture -----------------------------------------------------------

@dataclass
class Profile:
    """One capture added up: folded stacks, and rows per function, thread and kernel (each
    with samples, share of all samples and ms), plus notes on how far to trust them."""

    capture: Capture
    folded: dict[str, int]
    functions: list[dict]
    threads: list[dict]
    kernels: list[dict]
    notes: list[str]

    @property
    def total_ms(self) -> float:
        return self.capture.samples * self.capture.ms_per_sample

    def kernel_functions(self) -> list[str]:
        """Frame labels that belong to a compiler kernel (to highlight in the flamegraph)."""
        return sorted({f["function"] for f in self.functions if f["kernel"]})

    def to_dict(self) -> dict:
        """What Store.add_profile takes."""
        c = self.capture
        return {"capture": c.to_dict(), "event": c.event, "frequency": c.frequency, "samples": c.samples,
                "ms_per_sample": c.ms_per_sample, "folded": self.folded, "functions": self.functions,
                "threads": self.threads, "kernels": self.kernels, "notes": self.notes}


def analyse(capture: Capture, kernel_map: dict[str, list[str]] | Iterable[str] | None = None,
            thread_roots: str = "tid") -> Profile:
    """Folded stacks, per-function, per-thread and per-kernel time of one capture.
    kernel_map: an Artifact's kernel_map (kernel -> ONNX nodes) or just kernel names."""
    samples = parse_script(capture.script)
    ms = capture.ms_per_sample or None
    kmap = _kernel_map(kernel_map)
    per_kernel = kernels(samples, kmap, ms)
    notes = [capture.time_method + f"; {len(samples)} samples in all (a count of n samples is good to "
             f"about +-sqrt(n): +-{math.sqrt(len(samples)):.0f} on the total)",
             "times are CPU time summed over threads, not wall time"]
    notes += capture.notes
    if kmap:
        seen = [r for r in per_kernel if r["kind"] == "kernel" and r["samples"]]
        if not seen:
            notes.append(f"none of the {len(kmap)} kernel names appears in a sampled symbol: this compiler "
                         "inlines its operators into one function (SOFIE: everything is in doInfer) or its "
                         "kernels are not separate symbols, so time maps to functions only, not to kernels")
        elif len(seen) < len(kmap):
            notes.append(f"{len(seen)} of {len(kmap)} kernels were sampled; the rest ran too briefly to be "
                         f"seen at {capture.frequency} Hz or are inlined into another function")
    else:
        notes.append("no kernel names given: per-kernel time has only the buckets")
    return Profile(capture=capture, folded=fold(samples, thread_roots), functions=functions(samples, ms, kmap),
                   threads=threads(samples, ms), kernels=per_kernel, notes=notes)
