"""Fusion rules learned from stored kernel maps, applied to graphs they were not learned on."""

import json
from pathlib import Path

import pytest

from cost_model.grouping import FusionRules, group, learn, measured_units

ROOT = Path(__file__).resolve().parent.parent


def _n(name, op, ins, outs):
    return {"name": name, "op_type": op, "inputs": ins, "outputs": outs}


MLP = [_n("g1", "Gemm", ["x", "w1"], ["a"]), _n("r1", "Relu", ["a"], ["b"]),
       _n("g2", "Gemm", ["b", "w2"], ["c"]), _n("t2", "Tanh", ["c"], ["d"]),
       _n("g3", "Gemm", ["d", "w3"], ["y"])]


def test_measured_units_merge_shared_nodes_and_drop_containers():
    # ExecuTorch: a delegate call spans every kernel; portable kernels split one Gemm in two
    kmap = {"XnnpackBackend call #1": ["g1", "r1", "g2", "t2", "g3"], "FC #1": ["g1", "r1"],
            "FC #2": ["g2"], "tanh #1": ["t2"], "permute #3": ["g3"], "addmm #3": ["g3"]}
    assert measured_units(kmap, MLP) == [["g1", "r1"], ["g2"], ["t2"], ["g3"]]
    assert measured_units({}, MLP) == [["g1"], ["r1"], ["g2"], ["t2"], ["g3"]]  # nothing covered: alone


def test_rules_apply_to_new_graphs_and_respect_other_consumers():
    fused = {"fused g1": ["g1", "r1"], "fused g2": ["g2", "t2"], "g3": ["g3"]}
    rules = learn("ort", [(MLP, fused)])
    assert rules.rules == [("Gemm", "Relu"), ("Gemm", "Tanh")]
    new = [_n("a", "Gemm", ["x", "w"], ["h"]), _n("b", "Relu", ["h"], ["r"]),
           _n("c", "Gemm", ["r", "v"], ["k"]), _n("d", "Relu", ["k"], ["y1"]), _n("e", "Add", ["k", "r"], ["y2"])]
    # c's output is also read by e: fusing c+d would lose it
    assert group(new, rules) == [["a", "b"], ["c"], ["d"], ["e"]]
    again = FusionRules.from_dict(json.loads(json.dumps(rules.to_dict())))
    assert again.rules == rules.rules and group(new, again) == group(new, rules)


def test_kernels_dispatched_per_node_are_learned_by_op_type():
    # LiteRT-like: each Gemm runs as FULLY_CONNECTED + ADD, the first fused with its Relu;
    # a guard kernel covering no node is overhead, not a node's kernel
    kmap = {"guard": [], "fc1": ["g1", "r1"], "add1": ["g1"], "tanh": ["t2"], "fc2": ["g2"], "add2": ["g2"],
            "fc3": ["g3"], "add3": ["g3"]}
    rules = learn("litert", [(MLP, kmap)])
    # Gemm: (1/2 + 1 + 1 + 1 + 1 + 1) / 3 nodes; Relu: 1/2; Tanh: 1
    assert rules.kernels_per_node == pytest.approx({"Gemm": 5.5 / 3, "Relu": 0.5, "Tanh": 1.0})
    assert rules.kernels("Softmax") == pytest.approx(1.0)  # never seen: the median op type's
    again = FusionRules.from_dict(json.loads(json.dumps(rules.to_dict())))
    assert again.kernels_per_node == pytest.approx(rules.kernels_per_node, abs=1e-4)  # stored rounded
    old = FusionRules.from_dict({"variant": "old", "min_share": 0.5, "counts": []})  # a file from before
    assert old.kernels_per_node == {} and old.kernels("Gemm") == 0.0  # no dispatch term, as then


def test_a_recurrent_nodes_kernels_are_counted_per_time_step():
    # LiteRT unrolls a GRU: one set of kernels a step; X is [seq, batch, input]
    def gru(name, seq):
        return {**_n(name, "GRU", ["x", "w"], [name + "y"]), "input_shapes": [[seq, 1, 4], [1, 12, 4]],
                "attrs": {"hidden_size": 4}}
    nodes = [gru("a", 10), gru("b", 30)]
    kmap = {f"op{i}": ["a"] for i in range(20)} | {f"op{i}": ["b"] for i in range(20, 80)}
    assert learn("litert", [(nodes, kmap)]).kernels_per_node == pytest.approx({"GRU": 2.0})  # 80 / 40 steps


def test_a_chain_seen_mostly_unfused_is_no_rule():
    unfused = {n["name"]: [n["name"]] for n in MLP}
    fused_once = {"f": ["g1", "r1"], "g2": ["g2"], "t2": ["t2"], "g3": ["g3"]}
    rules = learn("x", [(MLP, fused_once), (MLP, unfused), (MLP, unfused)])
    assert rules.counts[("Gemm", "Relu")] == [1, 3] and rules.rules == []


def test_leave_one_family_out_on_the_shipped_dataset():
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(ROOT / "datasets" / "host-v1.parquet",
                          columns=["family", "graph", "variant", "kernel_map", "status"]).to_pylist()

    def nodes(row):
        return [_n(n["name"], n["op_type"], json.loads(n["inputs"]), json.loads(n["outputs"])) for n in row["graph"]]

    for variant, floor in (("onnxruntime", 0.80), ("onnxruntime[graph_opt=disable]", 1.0)):
        rows = [(r["family"], nodes(r), json.loads(r["kernel_map"])) for r in table
                if r["variant"] == variant and r["status"] == "ok"]
        exact = 0
        for family in {f for f, _, _ in rows}:
            rules = learn(variant, [(n, k) for f, n, k in rows if f != family])
            exact += sum(sorted(group(n, rules)) == sorted(measured_units(k, n)) for f, n, k in rows if f == family)
        # ORT fuses by op pairs it never saw in a held-out family (Conv+Clip, Add+LayerNorm)
        assert exact / len(rows) >= floor, (variant, exact, len(rows))
