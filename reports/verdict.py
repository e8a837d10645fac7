"""Which variant to use: one pure function, shared by the terminal, the report pages and serve.

The rule (issue 16): the fastest variant (lowest median) whose outputs match the reference and
whose p99 meets the deadline. Every other variant keeps a reason why it was not chosen; the
trade-offs that matter are named in a sentence (a variant faster on the median but wrong, or
missing the deadline; a matching variant with the lower p99). Emulated timings never get a
deadline verdict. A run's real-time safety verdict (`rt_safety`, when a run carries one) is
quoted, never required.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MEASURED = ("ok", "mismatch")


@dataclass(frozen=True)
class Verdict:
    winner: str | None  # the variant to use; None when no variant qualifies
    line: str  # the verdict in one sentence (or two), for the terminal and the top of a page
    why: dict[str, str] = field(default_factory=dict)  # variant -> why it was or was not chosen
    tradeoffs: list[str] = field(default_factory=list)
    emulated: bool = False  # every measured timing is emulated: no deadline verdict at all


def _us(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f} µs" if v >= 100 else f"{v:.1f} µs"


def rt_phrase(rt) -> str | None:
    """The run's real-time safety verdict as a phrase (a dict with `verdict`, or a string)."""
    if not rt:
        return None
    if isinstance(rt, dict):
        return rt.get("verdict")
    return str(rt)


def _short(text: str | None, width: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def choose(runs: list[dict]) -> Verdict:
    """runs: one dict per variant with variant, status, reason, p50_us, p99_us, budget_us,
    emulated, accuracy_passed, max_abs_err (and optionally rt_safety). Pure: no I/O."""
    why: dict[str, str] = {}
    eligible: list[dict] = []
    measured = [r for r in runs if r.get("status") in MEASURED and r.get("p50_us") is not None]
    all_emulated = bool(measured) and all(r.get("emulated") for r in measured)
    for r in runs:
        v, status = r["variant"], r.get("status")
        if status not in MEASURED or r.get("p50_us") is None:
            why[v] = f"{status}: {_short(r.get('reason'))}" if r.get("reason") else f"{status}"
        elif status == "mismatch" or r.get("accuracy_passed") == 0:
            why[v] = "outputs wrong: " + _short(r.get("reason") or f"max abs error {r.get('max_abs_err')}")
        elif r.get("emulated"):
            why[v] = "emulated timing: no deadline verdict"
        elif r.get("budget_us") is not None and r["p99_us"] is not None and r["p99_us"] > r["budget_us"]:
            why[v] = f"p99 {_us(r['p99_us'])} misses the {_us(r['budget_us'])} deadline"
        else:
            eligible.append(r)
    if all_emulated:
        # rank the matching emulated runs for information only: no deadline verdict
        ok = sorted((r for r in measured if r.get("status") == "ok"), key=lambda r: r["p50_us"])
        fastest = f"; fastest matching under emulation: {ok[0]['variant']} ({_us(ok[0]['p50_us'])} median)" if ok else ""
        return Verdict(None, "Emulated timings: no deadline verdict (they say nothing about the board)" + fastest,
                       why, [], True)
    if not eligible:
        if not runs:
            return Verdict(None, "No variants were run.", why)
        reasons = "; ".join(f"{v} {w}" for v, w in why.items())
        return Verdict(None, f"No variant to use: {reasons}.", why)
    eligible.sort(key=lambda r: (r["p50_us"], r["p99_us"] or 0))
    best = eligible[0]
    bv = best["variant"]
    why[bv] = f"chosen: fastest matching variant within the deadline (p50 {_us(best['p50_us'])}, " \
              f"p99 {_us(best['p99_us'])})"
    for r in eligible[1:]:
        why[r["variant"]] = f"slower: p50 {_us(r['p50_us'])} vs {_us(best['p50_us'])}"
    tradeoffs = []
    for r in sorted(measured, key=lambda r: r["p50_us"]):
        if r["p50_us"] < best["p50_us"] and r["variant"] != bv and not r.get("emulated"):
            if r.get("status") == "mismatch" or r.get("accuracy_passed") == 0:
                tradeoffs.append(f"{r['variant']} is faster on the median ({_us(r['p50_us'])}) but its outputs are wrong")
            else:
                tradeoffs.append(f"{r['variant']} is faster on the median ({_us(r['p50_us'])}) but its p99 "
                                 f"({_us(r['p99_us'])}) misses the deadline")
    lower_tail = [r for r in eligible[1:] if r["p99_us"] is not None and best["p99_us"] is not None
                  and r["p99_us"] < best["p99_us"]]
    if lower_tail:
        r = min(lower_tail, key=lambda r: r["p99_us"])
        tradeoffs.append(f"{r['variant']} has the lower p99 ({_us(r['p99_us'])} vs {_us(best['p99_us'])})")
    budget = best.get("budget_us")
    head = f"Use {bv}: fastest variant whose outputs match" + (
        f" and whose p99 ({_us(best['p99_us'])}) meets the {_us(budget)} deadline" if budget is not None else
        " (no deadline set)")
    rt = rt_phrase(best.get("rt_safety"))
    if rt:
        tradeoffs.append(f"its real-time safety audit: {rt}")
    line = head + ("; " + "; ".join(tradeoffs) if tradeoffs else "") + "."
    return Verdict(bv, line, why, tradeoffs)
