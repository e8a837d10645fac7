"""Which ONNX op types each compiler variant is known to fail or mismatch on.

Two sources, tallied per (variant label, op type) as [ok, failed, mismatch] counts:
- "coverage": the store's operator-coverage verdicts (per variant, op types and status).
  Only the `node` suite counts (its cases test one operator each; model suites would blame every op of a
  whole network). `harness-limit` is the harness's limit, not the compiler's: ignored.
- "datasets": dataset rows (the rows `auditor fit` reads, failed and mismatched ones
  included, though those are never trained on), one count per (variant, graph).

A failed graph is evidence against every op type it contains, so an op is only called
known-bad where at least MIN_SHARE of its cases or graphs in one source went wrong: half of
the graphs (a passenger op such as Add, in every graph, stays below it when one family
fails for another reason), a quarter of the coverage cases (each tests the op itself, so
LSTM failing 3 of its 7 cases is already worth saying).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

SOURCES = ("coverage", "datasets")
# a verdict or run status -> index into [ok, failed, mismatch]; anything else is not the
# compiler's outcome (harness-limit, interrupted, compile-only, still running) and is ignored
OUTCOME = {"ok": 0, "matched": 0, "failed": 1, "crashed": 1, "timeout": 1, "mismatch": 2}
MIN_SHARE = {"coverage": 0.25, "datasets": 0.5}


@dataclass
class KnownFailures:
    # variant -> op type -> source -> [ok, failed, mismatch]
    counts: dict[str, dict[str, dict[str, list[int]]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def _add(self, variant: str, op: str, source: str, outcome: int, n: int = 1) -> None:
        cell = self.counts.setdefault(variant, {}).setdefault(op, {}).setdefault(source, [0, 0, 0])
        cell[outcome] += n

    def to_dict(self) -> dict[str, Any]:
        return {"sources": self.sources, "variants": self.counts}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> KnownFailures:
        if not d:
            return cls()
        counts = {v: {op: {s: [int(x) for x in c] for s, c in by_src.items()} for op, by_src in ops.items()}
                  for v, ops in d["variants"].items()}
        return cls(counts, [str(s) for s in d.get("sources", [])])

    def with_coverage(self, local: KnownFailures) -> KnownFailures:
        """This tally with `local`'s coverage in place of its own for every variant `local`
        has coverage of: the local store's verdicts are of the compilers installed here, and
        replacing (not adding) never counts a store twice when the model was fitted from it."""
        counts = {v: {op: {s: c for s, c in by_src.items() if not (s == "coverage" and v in local.counts)}
                      for op, by_src in ops.items()} for v, ops in self.counts.items()}
        for v, ops in local.counts.items():
            for op, by_src in ops.items():
                if "coverage" in by_src:
                    counts.setdefault(v, {}).setdefault(op, {})["coverage"] = list(by_src["coverage"])
        return KnownFailures(counts, sorted(set(self.sources) | set(local.sources)))

    def bad_ops(self, variant: str, op_types: Iterable[str]) -> dict[str, str]:
        """op type -> why it is known-bad for the variant, for the given op types."""
        out = {}
        ops = self.counts.get(variant, {})
        for op in sorted(set(op_types)):
            by_src = ops.get(op, {})
            if not any(_bad(c, MIN_SHARE[s]) for s, c in by_src.items()):
                continue
            parts = [f"{s}: {_describe(by_src[s], 'cases' if s == 'coverage' else 'graphs')}"
                     for s in SOURCES if s in by_src]
            out[op] = f"known to fail on {op} ({'; '.join(parts)})"
        return out


def _bad(c: list[int], share: float) -> bool:
    total = sum(c)
    return total > 0 and (c[1] + c[2]) / total >= share


def _describe(c: list[int], unit: str) -> str:
    """'7 of 7 cases failed', '2 of 5 graphs mismatched', '3 failed and 1 mismatched of 9 cases'."""
    ok, failed, mismatch = c
    total = ok + failed + mismatch
    if failed and mismatch:
        return f"{failed} failed and {mismatch} mismatched of {total} {unit}"
    if mismatch:
        return f"{mismatch} of {total} {unit} mismatched"
    return f"{failed} of {total} {unit} failed"


def from_coverage(counts: Iterable[tuple[str, list[str], str, int]], source: str = "coverage") -> KnownFailures:
    """From (variant, op types, status, cases) of the `node` suite's verdicts
    (store.Store.coverage_verdict_counts)."""
    kf = KnownFailures(sources=[source])
    for variant, op_types, status, n in counts:
        outcome = OUTCOME.get(status)
        if outcome is None:
            continue
        for op in set(op_types):
            kf._add(variant, op, "coverage", outcome, n)
    return kf


def from_rows(rows: Iterable[dict[str, Any]], source: str = "datasets") -> KnownFailures:
    """From dataset rows (variant, model_hash, status, graph = node table rows). A graph
    run more than once by a variant counts once, with its best outcome (one good run
    shows the compiler can run it; a timeout on a busy machine does not prove otherwise)."""
    best: dict[tuple[str, str], tuple[int, frozenset[str]]] = {}
    for r in rows:
        outcome = OUTCOME.get(r.get("status") or "")
        if outcome is None or not r.get("graph") or not r.get("model_hash"):
            continue
        key = (r["variant"], r["model_hash"])
        rank = (0, 2, 1)[outcome]  # ok beats mismatch beats failed
        if key not in best or rank < (0, 2, 1)[best[key][0]]:
            best[key] = (outcome, frozenset(n["op_type"] for n in r["graph"]))
    kf = KnownFailures(sources=[source])
    for (variant, _), (outcome, ops) in best.items():
        for op in ops:
            kf._add(variant, op, "datasets", outcome)
    return kf


def combine(*tallies: KnownFailures) -> KnownFailures:
    """Counts added up (tallies of different sources)."""
    kf = KnownFailures()
    for t in tallies:
        for v, ops in t.counts.items():
            for op, by_src in ops.items():
                for s, c in by_src.items():
                    for outcome, n in enumerate(c):
                        kf._add(v, op, s, outcome, n)
        kf.sources += [s for s in t.sources if s not in kf.sources]
    return kf
