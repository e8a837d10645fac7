"""Known failures: per compiler variant and ONNX op type, how often coverage cases and
dataset graphs went wrong; `fit` keeps the tally in the model file and `predict` flags a
variant known to fail on an op of the new graph and recommends another one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cost_model import known_failures
from cost_model.modelfile import load
from cost_model.records import read_parquet
from store import Store
from tests.test_cost_model import SLICE, small_graph

CONSOLE_SCRIPT = Path(sys.executable).parent / "auditor"


def lstm_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    hidden, size, steps = 16, 8, 4
    w = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, size)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R")
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["y", "yh"], name="lstm", hidden_size=hidden),
             helper.make_node("Relu", ["yh"], ["out"], name="relu")]
    graph = helper.make_graph(nodes, "lstm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 1, size])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, hidden])],
                              initializer=[w, r])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))


def _case(variant, op_types, status, n=1):
    return (variant, op_types, status, n)


def test_tally_counts_outcomes_and_blames_only_ops_that_mostly_go_wrong():
    cases = [_case("ort", ["LSTM"], "failed", 2), _case("ort", ["LSTM"], "mismatch"),
             _case("ort", ["LSTM"], "matched"),
             _case("ort", ["LSTM"], "harness-limit", 5)]  # the harness's limit, not the compiler's
    # 4 graphs: the LSTM one timed out, then ran (counts ok); the Conv one failed; interrupted is no outcome
    graph = lambda *ops: [{"op_type": op} for op in ops]  # noqa: E731
    rows = [{"variant": "ort", "model_hash": "a", "status": "timeout", "graph": graph("LSTM", "Add")},
            {"variant": "ort", "model_hash": "a", "status": "ok", "graph": graph("LSTM", "Add")},
            {"variant": "ort", "model_hash": "b", "status": "failed", "graph": graph("Conv", "Add")},
            {"variant": "ort", "model_hash": "c", "status": "ok", "graph": graph("Gemm", "Add")},
            {"variant": "ort", "model_hash": "d", "status": "ok", "graph": graph("Gemm", "Add")},
            {"variant": "ort", "model_hash": "e", "status": "interrupted", "graph": graph("Gemm", "Add")}]
    kf = known_failures.combine(known_failures.from_coverage(cases), known_failures.from_rows(rows))
    assert kf.counts["ort"]["LSTM"] == {"coverage": [1, 2, 1], "datasets": [1, 0, 0]}
    assert kf.counts["ort"]["Add"] == {"datasets": [3, 1, 0]} and kf.counts["ort"]["Conv"] == {"datasets": [0, 1, 0]}
    bad = kf.bad_ops("ort", ["LSTM", "Add", "Conv", "Gemm", "Relu"])
    assert bad == {"LSTM": "known to fail on LSTM (coverage: 2 failed and 1 mismatched of 4 cases; "
                           "datasets: 0 of 1 graphs failed)",
                   "Conv": "known to fail on Conv (datasets: 1 of 1 graphs failed)"}  # Add: 1 of 4, a passenger
    assert kf.bad_ops("tvm", ["LSTM"]) == {}
    # the local store's coverage replaces the file's for the variants it covers (never counted twice)
    local = known_failures.from_coverage([_case("ort", ["LSTM"], "matched", 3)])
    merged = known_failures.KnownFailures.from_dict(json.loads(json.dumps(kf.to_dict()))).with_coverage(local)
    assert merged.counts["ort"]["LSTM"] == {"coverage": [3, 0, 0], "datasets": [1, 0, 0]}
    assert merged.bad_ops("ort", ["LSTM"]) == {}


def _record(results: Path, variant: str, op: str, statuses: list[str], suite: str = "node") -> None:
    store = Store(results)
    try:
        for i, status in enumerate(statuses):
            store.record_coverage(compiler=variant.split("[")[0], variant=variant, suite=suite,
                                  case_name=f"test_{op.lower()}_{i}", op_types=[op], status=status,
                                  reason="" if status == "matched" else "compile: NotImplemented",
                                  seconds=0.1, compiler_version="")
    finally:
        store.close()


def test_fit_keeps_the_tally_and_files_without_it_still_load(tmp_path):
    _record(tmp_path, "onnxruntime", "LSTM", ["failed"] * 3)
    _record(tmp_path, "tvm", "LSTM", ["failed"])  # not a fitted variant: not kept
    _record(tmp_path, "onnxruntime", "Gemm", ["failed"], suite="simple")  # a whole-model suite: not per op
    _record(tmp_path, "onnxruntime", "Relu", ["harness-limit", "matched"])  # the harness's limit: no outcome
    out = tmp_path / "m.json"
    proc = subprocess.run([str(CONSOLE_SCRIPT), "fit", "--dataset", str(SLICE), "--output", str(out),
                           "-o", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(out.read_text())
    kf = d["known_failures"]
    assert kf["variants"]["onnxruntime"]["LSTM"] == {"coverage": [0, 3, 0]} and "tvm" not in kf["variants"]
    assert kf["sources"] == [f"coverage:store:{tmp_path}", "datasets:costmodel-slice.parquet"]
    with_gemm = {r["model_hash"] for r in read_parquet([str(SLICE)])
                 if r["variant"] == "onnxruntime" and any(n["op_type"] == "Gemm" for n in r["graph"])}
    assert kf["variants"]["onnxruntime"]["Gemm"] == {"datasets": [len(with_gemm), 0, 0]} and with_gemm  # all ok
    assert kf["variants"]["onnxruntime"]["Relu"]["coverage"] == [1, 0, 0]
    why = load(out).known_failures.bad_ops("onnxruntime", ["LSTM"])["LSTM"]
    assert why.endswith("(coverage: 3 of 3 cases failed)")
    del d["known_failures"]  # a file written before the field
    out.write_text(json.dumps(d))
    assert load(out).known_failures.counts == {}


def _predict(cwd: Path, graph: str) -> dict:
    proc = subprocess.run([str(CONSOLE_SCRIPT), "predict", graph, "--json"], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_predict_flags_a_variant_coverage_saw_fail_and_recommends_another(tmp_path):
    onnx.save(lstm_graph(), str(tmp_path / "lstm.onnx"))
    onnx.save(small_graph(), str(tmp_path / "block.onnx"))
    before = _predict(tmp_path, "lstm.onnx")  # no store yet: the shipped model alone
    assert all(v["known_to_fail_on"] == [] for v in before["variants"])
    pick = re.match(r"(?:Use |Risky: even )(\S+?)[:,]", before["recommendation"]).group(1)
    _record(tmp_path / "auditor-results", pick, "LSTM", ["failed"] * 7)

    after = _predict(tmp_path, "lstm.onnx")
    flagged = {v["variant"]: v for v in after["variants"] if v["known_to_fail_on"]}
    assert list(flagged) == [pick] and flagged[pick]["low_confidence"]
    # the shipped model's own dataset tally of LSTM graphs follows the coverage count
    assert any(f.startswith("known to fail on LSTM (coverage: 7 of 7 cases failed") for f in flagged[pick]["flags"])
    assert not after["recommendation"].startswith((f"Use {pick}:", f"Risky: even {pick},"))
    assert after["recommendation"].endswith(f"; not {pick} (known to fail on LSTM).")
    text = subprocess.run([str(CONSOLE_SCRIPT), "predict", "lstm.onnx"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120).stdout
    assert f"  {pick}: known to fail on LSTM (coverage: 7 of 7 cases failed" in text

    plain = _predict(tmp_path, "block.onnx")  # no LSTM in this graph: nothing to warn of
    assert all(v["known_to_fail_on"] == [] and not any("known to fail" in f for f in v["flags"])
               for v in plain["variants"])
    assert f"not {pick}" not in plain["recommendation"]
