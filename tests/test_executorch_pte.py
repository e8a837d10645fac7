"""ExecuTorch adapter: lowering, outputs, kernel map, ETDump per-op rows, through the real pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("executorch")

from compilers import registry  # noqa: E402
from compilers.base import Artifact
from compilers.executorch_pte import NO_HANDLE, ExecuTorch, _align  # noqa: E402
from ground.targets import TARGETS  # noqa: E402

from tests.conftest import audit_in  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILE_RUNS = 20


def _audit(tmp: Path, spec: str, variants: list[str]):
    return audit_in(tmp, spec, variants, profile_runs=PROFILE_RUNS)


def _onnx_nodes(bundle) -> dict[str, str]:
    return {n.name: n.op_type for n in onnx.load(str(bundle.path("onnx"))).graph.node}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("executorch_mlp")
    store, prepared, run_ids = _audit(tmp, str(ROOT / "examples/blocks.py:mlp"),
                                      ["executorch", "executorch:backend=portable"])
    yield store, prepared, dict(zip(("xnnpack", "portable"), run_ids))
    store.close()


@pytest.fixture(scope="module")
def conv1d(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("executorch_conv1d")
    store, prepared, run_ids = _audit(tmp, str(ROOT / "examples/blocks.py:conv1d"), ["executorch"])
    yield store, prepared, run_ids[0]
    store.close()


def test_available_and_variants():
    ok, detail = ExecuTorch.available()
    assert ok, detail
    assert detail.startswith("1.")
    assert ExecuTorch.default_variants == ({}, {"backend": "portable"})
    assert ExecuTorch.resolve_options({}) == {"backend": "xnnpack", "threads": 1}
    with pytest.raises(ValueError):
        registry.parse_variant("executorch:backend=vulkan")


@pytest.mark.parametrize("backend", ["xnnpack", "portable"])
def test_mlp_runs_match_reference_and_record_options(mlp, backend):
    store, prepared, run_ids = mlp
    row = store.run(run_ids[backend])
    assert row["status"] == "ok", row["reason"]
    assert row["accuracy_passed"] == 1
    assert all(r["max_abs_err"] < 1e-5 for r in store.rows("accuracy", run_ids[backend]))
    assert row["p50_us"] > 0
    assert json.loads(row["options"]) == {"backend": backend, "threads": 1}
    assert row["compiler_version"] == ExecuTorch.available()[1]
    memory = json.loads(row["runtime_memory"])
    assert memory["pte_bytes"] > 0 and memory["planned_arena_bytes"] > 0
    workdir = Path(row["artifact_dir"])
    assert (workdir / "model.pte").stat().st_size == memory["pte_bytes"]
    assert (workdir / "model.etrecord").stat().st_size > 0


def test_mlp_xnnpack_kernel_map_names_real_onnx_nodes(mlp):
    store, prepared, run_ids = mlp
    nodes = _onnx_nodes(prepared.bundle)
    kernel_map = json.loads(store.run(run_ids["xnnpack"])["kernel_map"])
    # one delegate call; XNNPACK folds the ReLU into the first GEMM's output clamp
    assert kernel_map == {
        "Fully Connected (NC, F32) GEMM #1": ["node_linear", "node_relu"],
        "Fully Connected (NC, F32) GEMM #2": ["node_linear_1"],
        "TanH (NC) #1": ["node_tanh"],
        "Fully Connected (NC, F32) GEMM #3": ["node_linear_2"],
        "XnnpackBackend call #1": ["node_linear", "node_relu", "node_linear_1", "node_tanh",
                                   "node_linear_2"],
    }
    for kernel, covered in kernel_map.items():
        assert covered and set(covered) <= set(nodes), kernel
    assert [nodes[n] for n in kernel_map["Fully Connected (NC, F32) GEMM #1"]] == ["Gemm", "Relu"]


def test_mlp_portable_kernel_map_names_real_onnx_nodes(mlp):
    store, prepared, run_ids = mlp
    nodes = _onnx_nodes(prepared.bundle)
    kernel_map = json.loads(store.run(run_ids["portable"])["kernel_map"])
    # every linear becomes a weight transpose and an addmm, both from that Gemm
    assert kernel_map == {
        "permute_copy.out #1": ["node_linear"], "addmm.out #1": ["node_linear"],
        "relu.out #1": ["node_relu"],
        "permute_copy.out #2": ["node_linear_1"], "addmm.out #2": ["node_linear_1"],
        "tanh.out #1": ["node_tanh"],
        "permute_copy.out #3": ["node_linear_2"], "addmm.out #3": ["node_linear_2"],
    }
    assert {n for covered in kernel_map.values() for n in covered} == set(nodes)


@pytest.mark.parametrize("backend", ["xnnpack", "portable"])
def test_mlp_etdump_rows(mlp, backend):
    store, prepared, run_ids = mlp
    run_id = run_ids[backend]
    kernel_map = json.loads(store.run(run_id)["kernel_map"])
    attribution = store.attribution(run_id)
    assert attribution["method"] == "executorch-etdump"
    assert attribution["runs"] == PROFILE_RUNS
    assert attribution["per_op_sum_us"] > 0 and attribution["instrumented_whole_us"] > 0
    assert attribution["uninstrumented_whole_us"] == store.run(run_id)["p50_us"]
    assert attribution["sum_to_whole"] == pytest.approx(
        sum(o["p50_us"] for o in store.rows("op_timings", run_id)) / store.run(run_id)["p50_us"])
    assert "not rescaled" in attribution["notes"]
    ops = store.rows("op_timings", run_id)
    assert sorted(o["kernel"] for o in ops) == sorted(kernel_map)  # every kernel, once
    for o in ops:
        assert json.loads(o["onnx_nodes"]) == kernel_map[o["kernel"]]
        assert o["calls"] == 1 and o["mean_us"] >= 0 and o["p50_us"] >= 0  # whole µs (xnnpack) can read 0; > 0 below
    assert attribution["per_op_sum_us"] == pytest.approx(sum(o["mean_us"] for o in ops))
    if backend == "xnnpack":
        # XNNPACK times its operators in whole µs: what they lose stays in the delegate call's row
        assert "whole microseconds" in attribution["notes"]
        delegate = next(o for o in ops if o["kernel"] == "XnnpackBackend call #1")
        assert delegate["mean_us"] > 0 and delegate["provider"] == "XnnpackBackend"
        inner = [o for o in ops if o is not delegate]
        assert all(float(o["p50_us"] * 2).is_integer() for o in inner)  # medians of whole µs
        assert ops[-1]["kernel"] == "XnnpackBackend call #1"  # its operators come first
    else:
        assert [o["kernel"] for o in ops] == [  # execution order
            "permute_copy.out #1", "addmm.out #1", "relu.out #1", "permute_copy.out #2",
            "addmm.out #2", "tanh.out #1", "permute_copy.out #3", "addmm.out #3"]
        assert all(o["mean_us"] > 0 for o in ops)  # ns clock: every kernel call is seen
        assert {o["provider"] for o in ops} == {"executorch kernels"}


def test_conv1d_xnnpack(conv1d):
    store, prepared, run_id = conv1d
    row = store.run(run_id)
    assert row["status"] == "ok", row["reason"]
    assert all(r["max_abs_err"] < 1e-5 for r in store.rows("accuracy", run_id))
    nodes = _onnx_nodes(prepared.bundle)
    kernel_map = json.loads(row["kernel_map"])
    convs = {k: v for k, v in kernel_map.items() if k.startswith(("Convolution", "Fully Connected"))}
    # conv+relu fused twice; the 1x1 output conv runs as a GEMM
    assert sorted(convs.values()) == [["node_conv1d", "node_relu"], ["node_conv1d_1", "node_relu_1"],
                                      ["node_conv1d_2"]]
    # the layout reshapes/transposes XNNPACK inserts around each conv have no ONNX origin
    inserted = [k for k in kernel_map if k.startswith(("Static Reshape", "Transpose"))]
    assert inserted and all(kernel_map[k] == [] for k in inserted)
    assert kernel_map["XnnpackBackend call #1"] == list(nodes)
    ops = store.rows("op_timings", run_id)
    assert {o["kernel"] for o in ops} == set(kernel_map)
    delegate = next(o for o in ops if o["kernel"] == "XnnpackBackend call #1")
    assert delegate["mean_us"] > 0


def test_repeated_runs_keep_reading_their_inputs(mlp):
    """The planner reuses an input's memory once it is dead: every run must set the inputs again."""
    import torch

    store, prepared, run_ids = mlp
    row = store.run(run_ids["portable"])
    workdir = Path(row["artifact_dir"])
    artifact = Artifact(compiler="executorch", compiler_version=row["compiler_version"],
                        target=TARGETS["host"], options=json.loads(row["options"]), directory=workdir,
                        files={"pte": "model.pte", "etrecord": "model.etrecord", "kernels": "kernels.json"})
    runnable = ExecuTorch().load(artifact, prepared.bundle)
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    module = torch.export.load(str(prepared.bundle.path("torch-export"))).module()
    expected = module(torch.from_numpy(x)).detach().numpy()
    runnable.set_inputs([x])
    for _ in range(3):
        runnable.run()
        np.testing.assert_allclose(runnable.outputs()[0], expected, rtol=1e-5, atol=1e-6)
    runnable.close()


def test_align_fused_and_merged_nodes():
    ops = ["Static Reshape (NC) #1", "Transpose (ND, X32) #1", "Convolution (NHWC, F32) IGEMM #1",
           "Transpose (ND, X32) #2", "Static Reshape (NC) #2", "Fully Connected (NC, F32) GEMM #1",
           "TanH (NC) #1"]
    xnodes = [("XNNStaticReshape", NO_HANDLE), ("XNNStaticTranspose", NO_HANDLE),
              ("XNNDepthwiseConv2d", 1), ("XNNClamp", 2), ("XNNStaticTranspose", NO_HANDLE),
              ("XNNStaticReshape", NO_HANDLE), ("XNNStaticReshape", NO_HANDLE),
              ("XNNConv2d", 3), ("XNNTanh", 4)]
    groups, matched = _align(ops, xnodes)
    assert all(matched)
    # the clamp folds into the convolution before it; two reshapes run as one operator;
    # a 1x1 convolution runs as a fully connected GEMM
    assert groups == [[0], [1], [2, 3], [4], [5, 6], [7], [8]]
    groups, matched = _align(["Softmax (NC, F32) #1"], [("XNNTanh", 1)])
    assert matched == [False]
