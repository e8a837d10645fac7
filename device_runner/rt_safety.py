"""The real-time safety audit of one native-runner variant, as a typed result with a verdict.

Two runner invocations make it (device_runner.native.run_rt_audit): the audit pass
(`--rt-audit N`: heap, lock, wake-up and thread counts from the runner's hooks, page faults
and context switches from getrusage, per inference, the first apart) and a syscall-traced pass
of the same inferences (`--rt-markers 1` under strace or qemu-arm -strace; the runner brackets
each audited inference with close(-31001) ... close(-31002), which this module uses to cut the
trace). Every count keeps the method that produced it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

MARKER_BEGIN, MARKER_END = -31001, -31002

# Counters of the inference's own thread that break a real-time callback, and how to say so.
VIOLATIONS = (
    ("allocs", "allocates {n} times per inference ({bytes} B)"),
    ("frees", "frees {n} times per inference"),
    ("locks", "takes {n} pthread locks per inference"),
    ("waits", "waits on a condition or semaphore {n} times per inference"),
    ("wakeups", "wakes other threads {n} times per inference"),
    ("threads_created", "creates {n} threads per inference"),
    ("minor_faults", "takes {n} minor page faults per inference"),
    ("major_faults", "takes {n} major page faults per inference"),
    ("voluntary_switches", "blocks (voluntary context switches) {n} times per inference"),
)
# What other threads did during the inference: work handed to a pool.
OTHER_THREADS = ("other_allocs", "other_locks", "other_waits", "other_wakeups", "other_voluntary_switches")
# Counters that come from getrusage: under qemu-user they are the emulator's host thread's.
RUSAGE = ("minor_faults", "major_faults", "voluntary_switches", "involuntary_switches",
          "other_minor_faults", "other_major_faults", "other_voluntary_switches",
          "other_involuntary_switches")
# Frames skipped when naming the function that allocates: the allocator and the standard
# library's containers, which allocate on behalf of their caller.
_ALLOCATOR_FRAME = re.compile(r"^(operator new|operator delete|malloc|calloc|realloc|posix_memalign|"
                              r"aligned_alloc|memalign|valloc|std::|__gnu_cxx::|void std::)")


@dataclass
class CallSite:
    function: str  # the first frame outside the allocator and the standard library
    frames: list[str]  # innermost first: "function (object+offset)"
    count: int  # allocations from this stack over the audited runs
    bytes: int

    @classmethod
    def from_json(cls, site: dict) -> CallSite:
        frames = [f"{f['function'] or '?'} ({f['object'].rsplit('/', 1)[-1]}+{f['offset']})"
                  for f in site["frames"]]
        named = [f["function"] for f in site["frames"] if f["function"]]
        function = next((n for n in named if not _ALLOCATOR_FRAME.match(n)),
                        named[0] if named else (frames[0] if frames else "?"))
        return cls(function, frames, int(site["count"]), int(site["bytes"]))


@dataclass
class SyscallCounts:
    method: str
    first: dict[str, int]  # syscall name -> calls in the first inference (all threads)
    steady: dict[str, int]  # syscall name -> calls over the audited runs, inference thread
    steady_other: dict[str, int]  # the same, other threads (interleaved by the trace's order)
    runs: int
    threads_apart: bool  # False: the tracer cannot tell threads apart; `steady` is the process's
    traced_wall_s: float  # the traced pass's wall time (its cost), against the audit pass's
    audit_wall_s: float

    @property
    def per_inference(self) -> float:
        return sum(self.steady.values()) / self.runs if self.runs else 0.0

    @property
    def first_total(self) -> int:
        return sum(self.first.values())


@dataclass
class RtSafety:
    backend: str
    arch: str
    runs: int
    warmup: int
    first: dict[str, int]  # counter -> the first inference's count
    steady_mean: dict[str, float]  # counter -> mean per inference after warm-up
    steady_max: dict[str, int]
    methods: dict[str, str]  # counter family -> how it was counted
    inert_hook_cost_ns: float
    first_site: CallSite | None  # the first allocation after warm-up
    top_site: CallSite | None  # the stack that allocates most after warm-up
    top_lock_site: CallSite | None  # the stack that takes most pthread locks after warm-up
    first_inference_sites: list[CallSite]
    syscalls: SyscallCounts | None
    syscalls_missing: str | None  # why there is no syscall count
    mlockall: bool
    malloc_keep: bool
    emulated: bool
    notes: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        """What breaks a real-time callback after warm-up, one phrase each."""
        out = []
        for key, text in VIOLATIONS:
            if self.emulated and key in RUSAGE:
                continue
            n = self.steady_mean.get(key, 0)
            if n > 0:
                phrase = text.format(n=f"{n:g}", bytes=f"{self.steady_mean.get('alloc_bytes', 0):g}")
                if key == "allocs" and self.top_site is not None:
                    phrase += f" in {self.top_site.function}"
                if key == "locks" and self.top_lock_site is not None:
                    phrase += f" in {self.top_lock_site.function}"
                out.append(phrase)
        busy = {k: self.steady_mean.get(k, 0) for k in OTHER_THREADS
                if not (self.emulated and k in RUSAGE) and self.steady_mean.get(k, 0) > 0}
        if busy:
            out.append("other threads work during the inference ("
                       + ", ".join(f"{k.removeprefix('other_')} {v:g}" for k, v in busy.items())
                       + " per inference)")
        if self.syscalls is not None and self.syscalls.per_inference > 0:
            names = ", ".join(f"{name} {n / self.syscalls.runs:g}" for name, n
                              in sorted(self.syscalls.steady.items(), key=lambda kv: -kv[1]))
            who = "" if self.syscalls.threads_apart else "the process (threads not told apart) "
            out.append(f"{who}makes {self.syscalls.per_inference:g} system calls per inference ({names})")
        return out

    @property
    def verdict(self) -> str:
        bad = self.violations()
        if bad:
            return "not real-time safe after warm-up: " + "; ".join(bad)
        unknown = []
        if self.syscalls is None:
            unknown.append(f"system calls not counted: {self.syscalls_missing}")
        if self.emulated:
            unknown.append("page faults and context switches not judged: emulated")
        return "real-time safe after warm-up" + (f" ({'; '.join(unknown)})" if unknown else "")

    @property
    def cold(self) -> str:
        """What the first inference does, in one line."""
        keys = ["allocs", "frees", "locks", "threads_created"]
        if not self.emulated:
            keys += ["minor_faults", "major_faults"]
        parts = [f"{self.first[k]} {k.replace('_', ' ')}" for k in keys if self.first.get(k)]
        if self.syscalls is not None and self.syscalls.first_total:
            parts.append(f"{self.syscalls.first_total} system calls")
        return "first inference: " + (", ".join(parts) if parts else "nothing counted")

    def to_dict(self) -> dict:
        """A JSON-ready record (what a store column would keep)."""
        from dataclasses import asdict

        d = asdict(self)
        d["verdict"] = self.verdict
        d["cold"] = self.cold
        return d


def parse_rt_safety(report: dict, emulated: bool) -> RtSafety:
    """The runner's `rt_safety` section (an --rt-audit invocation's JSON) as a typed result."""
    rt = report["rt_safety"]
    runs = int(rt["runs"])
    total, mx = rt["steady"]["total"], rt["steady"]["max"]
    steady = [CallSite.from_json(s) for s in rt["sites"]["steady"]["sites"]]
    locks = [CallSite.from_json(s) for s in rt["lock_sites"]["steady"]["sites"]]
    notes = []
    for part in ("first", "steady"):
        dropped = rt["sites"][part]["dropped"]
        if dropped:
            notes.append(f"{dropped} allocations of the {part} window had more distinct stacks than the "
                         f"table holds; they are counted, their stacks not kept")
    if emulated:
        notes.append("under qemu-arm the getrusage counters (faults, context switches) are the "
                     "emulator's host thread's, not the guest's: shown, not judged")
    return RtSafety(
        backend=report["runner"]["backend"], arch=report["runner"]["arch"], runs=runs,
        warmup=int(rt["warmup"]), first={k: int(v) for k, v in rt["first"].items()},
        steady_mean={k: v / runs for k, v in total.items()}, steady_max={k: int(v) for k, v in mx.items()},
        methods=dict(rt["methods"]), inert_hook_cost_ns=float(rt["inert_hook_cost_ns"]),
        first_site=steady[0] if steady else None,
        top_site=max(steady, key=lambda s: s.count) if steady else None,
        top_lock_site=max(locks, key=lambda s: s.count) if locks else None,
        first_inference_sites=[CallSite.from_json(s) for s in rt["sites"]["first"]["sites"]],
        syscalls=None, syscalls_missing="no traced pass was run",
        mlockall=bool(report.get("scheduling", {}).get("mlockall")),
        malloc_keep=bool(report.get("scheduling", {}).get("malloc_keep")), emulated=emulated, notes=notes)


# A syscall's start: "<tid> name(" (strace pads short ids with spaces) at a line start, after white space or after another call's
# closing parenthesis. Searched through the
# whole text, not line by line: qemu-arm -strace logs a call's start and its result apart, and
# the threads' lines can interleave. "<... name resumed>" halves do not match (counted once).
_CALL = re.compile(r"(?:^|(?<=[\s)]))(\d+)[ \t]+([a-z_][a-z0-9_]*)\(((?:-?\d+)?)", re.M)


def parse_syscall_trace(text: str, runs: int) -> tuple[dict[str, int], list[Counter], list[Counter]]:
    """Cut an strace -f (or qemu-arm -strace) log at the runner's markers: the first
    inference's syscalls (all threads), then per audited steady run those of the marking
    thread and of the others."""
    segments: list[tuple[Counter, Counter]] = []
    current: tuple[Counter, Counter] | None = None
    marker_tid = None
    for m in _CALL.finditer(text):
        tid, name, first_arg = m[1], m[2], m[3]
        if name == "close" and first_arg == str(MARKER_BEGIN):
            current, marker_tid = (Counter(), Counter()), tid
            continue
        if name == "close" and first_arg == str(MARKER_END):
            if current is not None:
                segments.append(current)
            current = None
            continue
        if current is not None:
            current[0 if tid == marker_tid else 1][name] += 1
    if len(segments) != runs + 1:
        raise ValueError(f"the syscall trace holds {len(segments)} marked inferences, "
                         f"{runs + 1} were audited")
    first = segments[0][0] + segments[0][1]
    return dict(first), [s[0] for s in segments[1:]], [s[1] for s in segments[1:]]


def syscall_counts(text: str, runs: int, method: str, threads_apart: bool, traced_wall_s: float,
                   audit_wall_s: float) -> SyscallCounts:
    first, mine, others = parse_syscall_trace(text, runs)
    return SyscallCounts(method=method, first=first, steady=dict(sum(mine, Counter())),
                         steady_other=dict(sum(others, Counter())), runs=runs, threads_apart=threads_apart,
                         traced_wall_s=traced_wall_s, audit_wall_s=audit_wall_s)
