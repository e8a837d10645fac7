"""Grouping: which ONNX nodes a compiler runs as one kernel (nn-Meter's "kernel detector").

A cost model predicts on the units a compiler actually runs: ORT runs Gemm+Relu as one
FusedGemm, TVM fuses matmul+add+tanh, SOFIE folds an activation into the Gemm before it.
Every measured run stores its kernel map (kernel -> canonical ONNX nodes it covers), so
the fusion rules are learned from those, per compiler variant, with no compiler running:

- `measured_units` turns one run's kernel map into the units it ran: kernels that share a
  node are one unit (ExecuTorch's portable kernels split one Gemm into permute + addmm),
  a container kernel that only spans others (a delegate call) is not a unit of its own,
  and a node no kernel covers stays a unit alone.
- `learn` counts, for every op-type chain that was ever fused, how often it was fused
  where it occurred; a chain is a rule when it was fused in most of its occurrences.
- `group` applies the rules to a new graph, longest chain first, along producer ->
  consumer edges whose intermediate tensors have no other consumer (fusing them away
  must not lose a value another node reads).
- `learn` also counts how many kernels the variant dispatches per ONNX node of each op
  type (a kernel spanning n nodes counts 1/n to each): LiteRT runs a Gemm as
  FULLY_CONNECTED + ADD, eager PyTorch a Split as split + one getitem per output, and on
  small blocks each dispatch costs about as much as the arithmetic.

Rules are plain data (JSON), never pickled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Node = dict[str, Any]  # a node-table row: name, op_type, inputs, outputs (cost_model.graph.node_table)


def measured_units(kernel_map: dict[str, list[str]], nodes: list[Node]) -> list[list[str]]:
    """The units one run executed, as lists of node names in graph order."""
    order = {n["name"]: i for i, n in enumerate(nodes)}
    spans = [set(v) & set(order) for v in kernel_map.values()]
    # a container spans the union of two or more other kernels: it is not a unit itself.
    # Identical spans are counted, not compared (a LiteRT run on host-v2 has up to 3,599
    # kernels, many covering the same node), and only spans sharing a node are candidates.
    counts = Counter(frozenset(s) for s in spans if s)
    by_node: dict[str, list[frozenset]] = {}
    for span in counts:
        for name in span:
            by_node.setdefault(name, []).append(span)

    def inside(span: frozenset) -> int:
        near = {o for name in span for o in by_node[name]}
        return sum(counts[o] for o in near if o < span)
    kernels = [span for span in counts if len(span) < 2 or inside(span) < 2]
    parent = {name: name for name in order}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for span in kernels:
        first, *rest = sorted(span, key=order.get)
        for other in rest:
            parent[find(other)] = find(first)
    units: dict[str, list[str]] = {}
    for name in sorted(order, key=order.get):
        units.setdefault(find(name), []).append(name)
    return list(units.values())


def _consumers(nodes: list[Node]) -> dict[str, list[str]]:
    """Tensor name -> names of the nodes reading it."""
    readers: dict[str, list[str]] = {}
    for n in nodes:
        for t in n["inputs"]:
            readers.setdefault(t, []).append(n["name"])
    return readers


def _graph_outputs(nodes: list[Node]) -> set[str]:
    """Tensors produced here that no node reads: the graph's outputs (a fused chain must end there)."""
    read = {t for n in nodes for t in n["inputs"]}
    return {t for n in nodes for t in n["outputs"] if t not in read}


def _chains(nodes: list[Node], pattern: tuple[str, ...], taken: set[str] | None = None) -> list[list[str]]:
    """Every node chain whose op types spell `pattern`, each link a producer whose outputs
    are read by the next node only."""
    by_name = {n["name"]: n for n in nodes}
    readers = _consumers(nodes)
    ends = _graph_outputs(nodes)
    found = []
    for start in nodes:
        if start["op_type"] != pattern[0] or (taken and start["name"] in taken):
            continue
        chain = [start["name"]]
        node = start
        for op in pattern[1:]:
            outs = [t for t in node["outputs"] if t]
            nxt = {r for t in outs for r in readers.get(t, [])}
            if len(nxt) != 1 or any(t in ends for t in outs):
                break
            candidate = by_name[nxt.pop()]
            if candidate["op_type"] != op or (taken and candidate["name"] in taken):
                break
            chain.append(candidate["name"])
            node = candidate
        if len(chain) == len(pattern):
            found.append(chain)
    return found


@dataclass
class FusionRules:
    """Learned fusion chains of one compiler variant: op-type chain -> [times fused, times seen]."""

    variant: str
    counts: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    min_share: float = 0.5  # a chain is a rule when fused in at least this share of occurrences
    kernels_per_node: dict[str, float] = field(default_factory=dict)  # op type -> kernels dispatched

    def kernels(self, op_type: str) -> float:
        """Expected kernels for one node; an op type never seen counts as the median one
        (0 when nothing was counted: a model file from before the counts has no such term)."""
        if op_type in self.kernels_per_node:
            return self.kernels_per_node[op_type]
        known = sorted(self.kernels_per_node.values())
        return known[len(known) // 2] if known else 0.0

    def node_kernels(self, n: Node) -> float:
        """Expected kernels for one node-table row: per time step for a recurrent node."""
        return self.kernels(n["op_type"]) * node_weight(n)

    @property
    def rules(self) -> list[tuple[str, ...]]:
        """Chains that are rules, longest first (longer fusions win over their parts)."""
        kept = [p for p, (fused, seen) in self.counts.items() if seen and fused / seen >= self.min_share]
        return sorted(kept, key=lambda p: (-len(p), p))

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "min_share": self.min_share,
                "counts": [[list(p), fused, seen] for p, (fused, seen) in sorted(self.counts.items())],
                "kernels_per_node": {k: round(v, 4) for k, v in sorted(self.kernels_per_node.items())}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusionRules:
        return cls(d["variant"], {tuple(p): [int(f), int(s)] for p, f, s in d["counts"]}, float(d["min_share"]),
                   {k: float(v) for k, v in (d.get("kernels_per_node") or {}).items()})


def learn(variant: str, examples: Iterable[tuple[list[Node], dict[str, list[str]]]]) -> FusionRules:
    """Rules from measured runs: (node table, kernel map) per run of this variant."""
    raw = list(examples)
    # each run's units once (they were recomputed per pattern: fit on host-v2 took over 20 min)
    examples = [(nodes, {tuple(u) for u in measured_units(kernel_map, nodes)}) for nodes, kernel_map in raw]
    rules = FusionRules(variant, kernels_per_node=_kernels_per_node(raw))
    for nodes, units in examples:
        order = {n["name"]: n["op_type"] for n in nodes}
        for unit in units:
            if len(unit) > 1:
                rules.counts.setdefault(tuple(order[n] for n in unit), [0, 0])
    for pattern in list(rules.counts):
        fused = seen = 0
        for nodes, units in examples:
            for chain in _chains(nodes, pattern):
                seen += 1
                fused += tuple(chain) in units
        rules.counts[pattern] = [fused, max(seen, fused)]
    return rules


def recurrent_steps(op_type: str, input_shapes: list, attrs: dict[str, Any]) -> float:
    """Time steps of an ONNX LSTM/GRU/RNN node (layout 0: X is [seq, batch, input]) times
    its directions; 0 for any other node."""
    if op_type not in ("LSTM", "GRU", "RNN") or not input_shapes or not input_shapes[0]:
        return 0.0
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    return float(input_shapes[0][0] * directions)


def node_weight(n: Node) -> float:
    """What a node's kernel count scales with: its time steps for a recurrent node (LiteRT
    and ExecuTorch unroll them, one set of kernels a step), else 1."""
    return max(recurrent_steps(n["op_type"], n.get("input_shapes") or [], n.get("attrs") or {}), 1.0)


def _kernels_per_node(examples: list[tuple[list[Node], dict[str, list[str]]]]) -> dict[str, float]:
    """Op type -> kernels the runs dispatched per node of that type, per time step for a
    recurrent one (kernels mapped to no node, e.g. a guard, are per-inference overhead, not
    counted here)."""
    share: Counter = Counter()
    seen: Counter = Counter()
    for nodes, kernel_map in examples:
        op = {n["name"]: n["op_type"] for n in nodes}
        for n in nodes:
            seen[n["op_type"]] += node_weight(n)
        for span in kernel_map.values():
            span = [n for n in span if n in op]
            for name in span:
                share[op[name]] += 1.0 / len(span)
    return {t: share[t] / seen[t] for t in seen}


def group(nodes: list[Node], rules: FusionRules) -> list[list[str]]:
    """The units this variant would run the graph as: learned chains, longest first; every
    other node alone. Units come back in graph order of their first node."""
    taken: set[str] = set()
    units: list[list[str]] = []
    for pattern in rules.rules:
        for chain in _chains(nodes, pattern, taken):
            if not taken & set(chain):
                units.append(chain)
                taken.update(chain)
    units += [[n["name"]] for n in nodes if n["name"] not in taken]
    order = {n["name"]: i for i, n in enumerate(nodes)}
    return sorted(units, key=lambda u: order[u[0]])
