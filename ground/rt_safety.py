"""The real-time safety audit's typed result and its verdict (what one variant does in an
inference after warm-up: heap, locks, waits, wake-ups, threads, faults, context switches,
system calls; the first inference apart). Measured by device_runner (the native runner's audit
pass, or the hooks preloaded into a Python worker); kept by the store as JSON and read back
here with RtSafety.from_dict. Every count keeps the method that produced it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

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
        # the first frame past the allocator's; a stripped object's frame is named by its file
        # (a later named frame would be a caller far up, e.g. the Python interpreter)
        outside = next((k for k, f in enumerate(site["frames"])
                        if not (f["function"] and _ALLOCATOR_FRAME.match(f["function"]))), None)
        if outside is None:
            named = [f["function"] for f in site["frames"] if f["function"]]
            function = named[0] if named else "?"
        else:
            f = site["frames"][outside]
            function = f["function"] or f"{f['object'].rsplit('/', 1)[-1]}+{f['offset']} (no symbol)"
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
    def short(self) -> str:
        """The verdict in a table cell: "safe", or "no:" and what breaks it, per inference."""
        bad = []
        for key, _ in VIOLATIONS:
            n = self.steady_mean.get(key, 0)
            if n > 0 and not (self.emulated and key in RUSAGE):
                bad.append(f"{key.replace('_', ' ')} {n:g}")
        if any(self.steady_mean.get(k, 0) > 0 for k in OTHER_THREADS
               if not (self.emulated and k in RUSAGE)):
            bad.append("other threads")
        if self.syscalls is not None and self.syscalls.per_inference > 0:
            bad.append(f"syscalls {self.syscalls.per_inference:g}")
        if bad:
            return "no: " + ", ".join(bad)
        return "safe" if self.syscalls is not None else "safe (no syscall count)"

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
        """A JSON-ready record (what the store keeps); verdict and cold are included for readers
        of the raw JSON and ignored by from_dict."""
        d = asdict(self)
        d["verdict"] = self.verdict
        d["cold"] = self.cold
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RtSafety:
        names = {f.name for f in fields(cls)}
        kept = {k: v for k, v in d.items() if k in names}
        for key in ("first_site", "top_site", "top_lock_site"):
            if kept.get(key) is not None:
                kept[key] = CallSite(**kept[key])
        kept["first_inference_sites"] = [CallSite(**c) for c in kept.get("first_inference_sites", [])]
        if kept.get("syscalls") is not None:
            kept["syscalls"] = SyscallCounts(**kept["syscalls"])
        return cls(**kept)
