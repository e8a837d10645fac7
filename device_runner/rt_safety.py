"""The real-time safety audit of one native-runner variant, as a typed result with a verdict.

Two runner invocations make it (device_runner.native.run_rt_audit): the audit pass
(`--rt-audit N`: heap, lock, wake-up and thread counts from the runner's hooks, page faults
and context switches from getrusage, per inference, the first apart) and a syscall-traced pass
of the same inferences (`--rt-markers 1` under strace or qemu-arm -strace; the runner brackets
each audited inference with close(-31001) ... close(-31002), which this module uses to cut the
trace). Every count keeps the method that produced it. The types live in ground.rt_safety.
"""

from __future__ import annotations

import re
from collections import Counter

from ground.rt_safety import (MARKER_BEGIN, MARKER_END, CallSite, RtSafety,  # noqa: F401 - re-exported
                              SyscallCounts)


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
    notes.extend(report.get("scheduling", {}).get("notes", []))  # a mitigation refused, and why
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
