"""The cost model: features from stored node tables, fit / evaluate / predict, the model
file's refusals, and that predict never runs the model (nor imports torch for ONNX)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.cli import main
from cost_model.features import graph_features
from cost_model.graph import node_table
from cost_model.intervals import Calibration
from cost_model.table import model_from_table
from tests.conftest import ROOT

SLICE = ROOT / "tests" / "data" / "costmodel-slice.parquet"  # host-v1: 3 families x 8 graphs x 2 variants
CONSOLE_SCRIPT = Path(sys.executable).parent / "auditor"


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def small_graph(extra_op: str | None = None) -> onnx.ModelProto:
    """x -> Gemm -> Relu -> Conv-free tail; extra_op adds a node of a domain no runtime has."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(16, np.float32), "b")
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm", transB=1),
             helper.make_node("Relu", ["g"], ["r"], name="relu")]
    opsets = [helper.make_opsetid("", 20)]
    out = "r"
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["r"], ["y"], name="custom", domain="com.example"))
        opsets.append(helper.make_opsetid("com.example", 1))
        out = "y"
    graph = helper.make_graph(nodes, "g", [_vi("x", [1, 8])], [_vi(out, [1, 16])],
                              initializer=[w, b])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=opsets))


def test_features_of_a_stored_node_table_equal_the_original_graphs():
    model = small_graph()
    rows = [{**r, "inputs": json.dumps(r["inputs"]), "outputs": json.dumps(r["outputs"]),
             "input_shapes": json.dumps(r["input_shapes"]), "output_shapes": json.dumps(r["output_shapes"]),
             "attrs": json.dumps(r["attrs"])} for r in node_table(model)]
    rebuilt = model_from_table(rows, ["x"])
    a, b = graph_features(model).nodes, graph_features(rebuilt).nodes
    assert [(n.op_type, n.macs, n.bytes_in, n.bytes_out, n.weight_bytes, n.depth) for n in a] == \
           [(n.op_type, n.macs, n.bytes_in, n.bytes_out, n.weight_bytes, n.depth) for n in b]
    assert a[0].macs == 8 * 16 + 16 and a[0].weight_bytes == (16 * 8 + 16) * 4


def test_a_reducing_units_macs_are_also_counted_in_its_reduction_length_bin():
    from cost_model.regression import aggregate, units_of

    model = small_graph()  # Gemm x [1, 8] . w[16, 8]^T: each output sums K = 8 products
    units = units_of(graph_features(model), node_table(model), None)
    gemm = next(u for u in units if u.kind == "matmul")
    assert gemm.reduction == 8
    agg = aggregate(units)
    assert agg["macs:matmul:k0"] == agg["macs:matmul"] == 8 * 16 + 16  # K 8 <= 16: bin 0
    assert not any(k.startswith("macs:elementwise:k") for k in agg)  # Relu reduces nothing


def test_a_compiler_version_other_than_the_trained_one_is_flagged(monkeypatch):
    from importlib import metadata

    from cost_model import modelfile

    shipped = modelfile.load(ROOT / "cost_model" / "models" / "local.json")
    real = metadata.version
    monkeypatch.setattr(modelfile.metadata, "version",
                        lambda dist: "9.9.9" if dist == "ai-edge-litert" else real(dist))
    flags = shipped.version_flags()
    assert set(flags) == {"litert", "litert[xnnpack=False]"}
    assert flags["litert"].endswith("installed ai-edge-litert 9.9.9")


def test_conformal_interval_and_deadline_probability():
    cal = Calibration.of(np.log(np.linspace(0.8, 1.2, 99)))  # measured/predicted spread evenly ±20%
    lo, hi = cal.interval(100.0)
    assert lo == pytest.approx(80.0 + 0.4 * 4, rel=0.02) and hi == pytest.approx(120.0 - 0.4 * 4, rel=0.02)
    assert cal.probability_within(100.0, 100.0) == pytest.approx(0.5, abs=0.02)
    assert cal.probability_within(100.0, 130.0) == 1.0 and cal.probability_within(100.0, 70.0) == 0.0


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "slice.json"
    assert main(["fit", "--dataset", str(SLICE), "--output", str(out)]) == 0
    return out


def test_fit_writes_a_json_model_that_records_its_provenance(fitted):
    d = json.loads(fitted.read_text())
    assert d["format"] == "auditor-cost-model" and d["device"] == "local"
    assert d["cpu"] == "Intel(R) Xeon(R) Processor" and d["sources"] == ["costmodel-slice.parquet"]
    assert set(d["variants"]) == {"onnxruntime", "torchscript"}
    ort = d["variants"]["onnxruntime"]
    assert ort["compiler_version"] == "1.32.0" and ort["graphs"] == 24
    assert len(ort["p50_calibration"]) == 24  # one out-of-family residual per graph
    assert ["Gemm", "Relu"] in [c[0] for c in ort["rules"]["counts"]]  # ORT's FusedGemm, learned


def test_fit_with_a_prior_adapts_it_and_says_so(fitted, tmp_path):
    out = tmp_path / "adapted.json"
    assert main(["fit", "--dataset", str(SLICE), "--prior", str(fitted), "--output", str(out), "-c", "onnxruntime"]) == 0
    d = json.loads(out.read_text())
    assert d["prior"] == "slice.json" and d["notes"][0].startswith("adapted from slice.json (local, Intel")
    assert set(d["variants"]) == {"onnxruntime"} and len(d["variants"]["onnxruntime"]["p50_calibration"]) == 24
    prior_terms = set(json.loads(fitted.read_text())["variants"]["onnxruntime"]["p50"]["terms"])
    assert prior_terms <= set(d["variants"]["onnxruntime"]["p50"]["terms"])  # keeps what the prior knew


def test_evaluate_reports_leave_one_family_out_figures(tmp_path, capsys):
    assert main(["evaluate", "--dataset", str(SLICE), "--export", str(tmp_path / "ev"), "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "ev.json").read_text())
    ort = report["variants"]["onnxruntime"]
    assert ort["all"]["graphs"] == 24 and set(ort["families"]) == {"mlp", "conv1d", "sensor_autoencoder"}
    held = report["held"]["onnxruntime"]
    errors = np.array([abs(h["p50"] / h["measured_p50"] - 1) for h in held])
    assert ort["all"]["p50"]["within_10"] == pytest.approx(float(np.mean(errors <= 0.1)))
    assert report["ranking"]["graphs"] == 24 and 0 <= report["ranking"]["best_hit"] <= 1
    csv_lines = (tmp_path / "ev.csv").read_text().splitlines()
    assert csv_lines[0].startswith("variant,family,graphs,p50_within_10") and len(csv_lines) == 1 + 2 * 4
    assert "onnxruntime" in capsys.readouterr().out


def test_kernel_level_graphs_train_every_held_out_family_and_are_never_scored(tmp_path):
    """The zoo's single-operator family is training data for every fold, not a family to hold
    out: relabel the slice's mlp graphs as ops and the report scores only the other two
    families, predicted exactly as when mlp trained their folds, and not as without them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(SLICE)
    column = table.schema.get_field_index("family")
    families = table.column("family").to_pylist()
    relabelled, dropped = tmp_path / "relabelled.parquet", tmp_path / "dropped.parquet"
    pq.write_table(table.set_column(column, "family", pa.array(["ops" if f == "mlp" else f for f in families])),
                   relabelled)
    pq.write_table(table.filter(pa.array([f != "mlp" for f in families])), dropped)
    held = {}
    for name, path in (("slice", SLICE), ("relabelled", relabelled), ("dropped", dropped)):
        assert main(["evaluate", "--dataset", str(path), "--export", str(tmp_path / name), "-o", str(tmp_path)]) == 0
        report = json.loads((tmp_path / f"{name}.json").read_text())
        held[name] = {h["model_hash"]: h["p50"] for h in report["held"]["onnxruntime"]}
        if name == "relabelled":
            ort = report["variants"]["onnxruntime"]
            assert set(ort["families"]) == {"conv1d", "sensor_autoencoder"} and ort["all"]["graphs"] == 16
            assert report["ranking"]["graphs"] == 16
    assert held["relabelled"] == {h: p for h, p in held["slice"].items() if h in held["relabelled"]}
    assert held["relabelled"].keys() == held["dropped"].keys() and held["relabelled"] != held["dropped"]


def test_adaptation_folds_never_hold_out_the_single_operator_graphs():
    """An adapted model's residuals come from held-out block families (or slices of the
    blocks); single-operator graphs measured beside them train every fold."""
    from types import SimpleNamespace

    from cost_model.fit import _folds

    def prep_of(families):
        graphs = {f"{f}{i}": SimpleNamespace(family=f) for f, n in families.items() for i in range(n)}
        return SimpleNamespace(graphs=graphs), list(graphs)

    prep, hashes = prep_of({"mlp": 3, "conv1d": 2, "linear": 2, "ops": 4})
    assert sorted(map(sorted, _folds(prep, hashes))) == [["conv1d0", "conv1d1"], ["linear0", "linear1"],
                                                         ["mlp0", "mlp1", "mlp2"]]
    prep, hashes = prep_of({"mlp": 6, "ops": 4})  # too few families: slices, of the blocks only
    folds = _folds(prep, hashes)
    assert sorted(h for f in folds for h in f) == [f"mlp{i}" for i in range(6)] and len(folds) == 5
    prep, hashes = prep_of({"ops": 5})  # nothing else measured: the operators are all there is
    assert sorted(h for f in _folds(prep, hashes) for h in f) == sorted(hashes)


def test_a_held_out_family_never_trains_on_a_kernel_graph_of_its_own_nodes():
    """Kernel-level graphs train every fold, except one whose heaviest node is one of the
    held-out graphs' nodes (same op, shapes and attributes): the layer graph of a held-out
    linear layer's own shape would be that graph under another name."""
    from types import SimpleNamespace as NS

    from cost_model.training import training_set

    def node(op, shape, macs, index=0, **attrs):
        return NS(op_type=op, input_shapes=[shape, [shape[-1], 64]], attrs=attrs, macs=macs, index=index)

    graphs = {"lin": ("linear", [node("Gemm", [1, 32], 2048.0, transB=1)]),
              "mlp": ("mlp", [node("Gemm", [1, 16], 1024.0, transB=1), node("Relu", [1, 64], 64.0, 1)]),
              "same": ("layer", [node("Gemm", [1, 32], 2048.0, transB=1)]),  # lin's own Gemm
              "other_attr": ("layer", [node("Gemm", [1, 32], 2048.0, transB=0)]),
              "relu": ("ops", [node("Relu", [1, 64], 64.0)])}  # an mlp node, not its heaviest
    prep = NS(graphs={h: NS(family=f) for h, (f, _) in graphs.items()},
              features={h: NS(nodes=n) for h, (_, n) in graphs.items()})
    everything = list(graphs)
    assert training_set(prep, everything, ["lin"]) == ["mlp", "other_attr", "relu"]
    assert training_set(prep, everything, ["mlp"]) == ["lin", "same", "other_attr"]  # its Relu alone is out too


def test_predict_never_runs_the_model_and_flags_an_unknown_op(tmp_path, fitted, monkeypatch, capsys):
    import onnxruntime
    from onnx.reference import ReferenceEvaluator

    def refuse(*args, **kwargs):
        raise AssertionError("predict reached a runtime")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    monkeypatch.setattr(ReferenceEvaluator, "run", refuse)
    path = tmp_path / "custom.onnx"
    onnx.save(small_graph(extra_op="Foo"), str(path))
    assert main(["predict", str(path), "--cost-model", str(fitted), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] == "predicted, not measured" and len(out["variants"]) == 2
    for v in out["variants"]:
        assert v["low_confidence"] and any("Foo" in f for f in v["flags"])
        assert v["p50_us"] > 0 and v["p50_interval90_us"][0] <= v["p50_us"] <= v["p50_interval90_us"][1]
        assert 0 <= v["deadline_probability"] <= 1 and v["memory_bytes"] > 0


def test_predict_with_the_shipped_model_from_the_console_script_without_torch(tmp_path):
    """A user's folder, default options: the shipped model answers, and torch never loads."""
    onnx.save(small_graph(), str(tmp_path / "block.onnx"))
    proc = subprocess.run([str(CONSOLE_SCRIPT), "predict", "block.onnx", "--deadline-us", "100"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shipped = json.loads((ROOT / "cost_model" / "models" / "local.json").read_text())
    assert shipped["sources"] == ["host-v2.parquet", "host-v2-ops.parquet", "host-v2-layers.parquet"] and shipped["cpu"] == "AMD EPYC"
    # TorchScript records no kernel map: its dispatch counts are eager PyTorch's (same aten ops)
    ts, eager = (shipped["variants"][v]["rules"] for v in ("torchscript", "torch-eager"))
    assert ts["kernels_per_node"] == eager["kernels_per_node"] and ts["kernels_per_node"]["Gemm"] > 0.5
    assert f"PREDICTED (not measured) for device local ({shipped['cpu']})" in proc.stdout
    assert "onnxruntime" in proc.stdout and "torchscript" in proc.stdout and "P(p99<=100µs)" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith(("Use ", "Risky"))
    # the venv has the versions the shipped model was trained on: nothing is flagged for it
    # (LiteRT's compound version string once flagged it "low" for every graph)
    assert "trained on" not in proc.stdout, proc.stdout
    assert not [line for line in proc.stdout.splitlines() if line.rstrip().endswith(" low")], proc.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from auditor.cli import main; rc = main(['predict', 'block.onnx', "
         "'--json']); print(rc, 'torch' in sys.modules, 'onnxruntime' in sys.modules)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert probe.stdout.split()[-3:] == ["0", "False", "False"], probe.stderr


def _bad(tmp_path: Path, *args) -> str:
    proc = subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    return proc.stderr


def test_bad_model_files_and_devices_get_one_line_and_exit_2(tmp_path, fitted):
    onnx.save(small_graph(), str(tmp_path / "block.onnx"))
    (tmp_path / "pickled.json").write_bytes(pickle.dumps({"format": "auditor-cost-model"}))
    (tmp_path / "corrupt.json").write_text('{"format": "auditor-cost-model", "format_version": 1, "feature_ver')
    old = json.loads(fitted.read_text())
    old["feature_version"] = 0
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert "never loads pickles" in _bad(tmp_path, "predict", "block.onnx", "--cost-model", "pickled.json")
    assert "not JSON" in _bad(tmp_path, "predict", "block.onnx", "--cost-model", "corrupt.json")
    assert "features version 0" in _bad(tmp_path, "predict", "block.onnx", "--cost-model", "old.json")
    assert "no such cost-model file" in _bad(tmp_path, "predict", "block.onnx", "--cost-model", "absent.json")
    assert "auditor fit --device ssh://pi@board" in _bad(tmp_path, "predict", "block.onnx", "--device", "ssh://pi@board")
    assert "no such file" in _bad(tmp_path, "predict", "absent.onnx")
    assert "never loads pickles" in _bad(tmp_path, "fit", "--dataset", str(SLICE), "--prior", "pickled.json",
                                         "--output", "x.json")
    assert "not a readable dataset file" in _bad(tmp_path, "fit", "--dataset", "corrupt.json")
    assert "nothing to fit from" in _bad(tmp_path, "fit")


TINY_SWEEP = {"name": "tiny", "compilers": ["onnxruntime"],
              "timing": {"runs": 10, "warmup": 2, "max_seconds": 0.1, "profile_runs": 0},
              "families": [{"family": "mlp", "grid": {"depth": [1, 2], "width": [8]}},
                           {"family": "conv1d", "grid": {"layers": [1, 2]}}]}


def test_fit_from_the_store_of_a_tiny_build_and_predict_with_it(tmp_path):
    """No --dataset: fit reads every dataset in the results store; predict --results-dir
    then answers with that fitted model, not the shipped one."""
    from cost_model.records import fingerprint, read_rows
    from store import Store

    (tmp_path / "tiny.json").write_text(json.dumps(TINY_SWEEP))
    onnx.save(small_graph(), str(tmp_path / "block.onnx"))

    def run(*args):
        proc = subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        return proc.stdout

    built = run("dataset", "build", "--spec", "tiny.json", "-c", "onnxruntime", "-c", "torch-eager",
                "--results-dir", ".")
    assert "4 points measured, 0 failed to build" in built
    assert "4 graphs, variants onnxruntime, torch-eager" in run("fit", "-o", ".")
    path = tmp_path / "cost-models" / "local.json"
    d = json.loads(path.read_text())
    assert d["sources"] == [f"store:{tmp_path}/tiny"]
    assert {v: f["graphs"] for v, f in d["variants"].items()} == {"onnxruntime": 4, "torch-eager": 4}
    store = Store(tmp_path)
    try:
        from auditor.dataset import dataset_rows

        rows = dataset_rows(store, "tiny")
    finally:
        store.close()
    assert d["fingerprint"] == fingerprint(read_rows(rows)[1])  # exactly the store's 8 runs
    assert d["known_failures"]["sources"] == [f"coverage:store:{tmp_path}", f"datasets:store:{tmp_path}/tiny"]

    out = json.loads(run("predict", "block.onnx", "--results-dir", ".", "--json"))
    assert out["cost_model"] == str(path) and out["trained_on"] == d["sources"] and out["cpu"] == d["cpu"]
    assert [v["variant"] for v in out["variants"]] == ["onnxruntime", "torch-eager"]
    assert all(v["p50_us"] > 0 for v in out["variants"])


def test_a_repeated_point_is_labelled_with_its_median_and_its_farthest_repeat():
    """A point measured again in fresh processes: the label is the median of the p50s (the
    tail moves with it) and its spread covers the farthest repeat, so evaluate's 'within the
    point's own spread' honours process-to-process noise, not only the in-run interval."""
    from cost_model.records import read_rows

    graph = [{**r, "inputs": json.dumps(r["inputs"]), "outputs": json.dumps(r["outputs"]),
              "input_shapes": json.dumps(r["input_shapes"]), "output_shapes": json.dumps(r["output_shapes"]),
              "attrs": json.dumps(r["attrs"])} for r in node_table(small_graph())]
    row = {"family": "mlp", "spec": "{}", "model_hash": "h", "compiler": "onnxruntime",
           "variant": "onnxruntime", "status": "ok", "p50_us": 3.0, "p99_us": 6.0,
           "samples_ns": [3000] * 200, "graph": graph, "model": json.dumps({"inputs": [{"name": "x"}]})}
    single = read_rows([row])[1][0]
    assert (single.p50_us, single.p99_us, single.p50_spread) == (3.0, 6.0, 0.0)
    repeated = read_rows([{**row, "repeat_p50_us": [3.0, 2.0, 2.2]}])[1][0]
    assert repeated.p50_us == pytest.approx(2.2) and repeated.p99_us == pytest.approx(6.0 * 2.2 / 3.0)
    assert repeated.p50_spread == pytest.approx(0.8 / 2.2)

    # a gated run (auditor.timing): its uncontended samples label it, and their repeats
    samples = [3000] * 100 + [2000] * 100
    conditions = json.dumps({"quiet": {"quiet_ranges": [[100, 200]]}})
    gated = {**row, "samples_ns": samples, "conditions": conditions, "quiet_n": 100, "quiet_p50_us": 2.0,
             "quiet_p99_us": 2.5, "repeat_p50_us": [3.0, 2.0, 2.2], "repeat_quiet_p50_us": [2.0, 2.1, 1.9]}
    quiet = read_rows([gated])[1][0]
    assert quiet.p50_us == pytest.approx(2.0) and quiet.p99_us == pytest.approx(2.5)
    assert quiet.repeats == (2.0, 2.1, 1.9) and quiet.p50_spread == pytest.approx(0.05)
    # contended nearly throughout (fewer than QUIET_MIN uncontended samples): all samples label it
    contended = read_rows([{**gated, "quiet_n": 3}])[1][0]
    assert contended.p50_us == pytest.approx(2.2) and contended.repeats == (3.0, 2.0, 2.2)


def test_the_noise_ceiling_counts_single_process_p50s_near_their_points_median():
    from cost_model.evaluation import Held, metrics

    held = [Held("a", "mlp", "v", 1.0, 2.0, 1.0, 2.0, 0.0, 0.0, repeats=(1.0, 1.05, 1.5)),
            Held("b", "mlp", "v", 1.0, 2.0, 1.0, 2.0, 0.0, 0.0, repeats=(2.0, 2.0, 2.3)),
            Held("c", "mlp", "v", 1.0, 2.0, 1.0, 2.0, 0.0, 0.0)]  # not repeated: not counted
    p50 = metrics(held, held)["p50"]
    # distances from each point's median: a 5%, 0%, 43%; b 0%, 0%, 15%
    assert p50["repeated"] == 2
    assert p50["ceiling_10"] == pytest.approx(4 / 6) and p50["ceiling_20"] == pytest.approx(5 / 6)


def test_compiler_specs_name_the_stored_variants_as_compile_all_parses_them():
    """fit/evaluate/predict -c: `litert:xnnpack=false` is the variant stored as
    litert[xnnpack=False] (the typed value), not an unknown one."""
    from auditor.commands.options import variant_label

    assert variant_label("litert:xnnpack=false") == "litert[xnnpack=False]"
    assert variant_label("onnxruntime:graph_opt=disable") == "onnxruntime[graph_opt=disable]"
    assert variant_label("executorch:backend=portable") == "executorch[backend=portable]"
    assert variant_label("tvm") == "tvm"
    assert variant_label("elsewhere:knob=1") == "elsewhere[knob=1]"  # not a compiler here: as written
