"""Every bad input ends in one clear line on stderr and exit code 2, never a traceback."""

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.conftest import write_factory


def _relu_onnx(path, op="Relu", domain=""):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g", [x], [y])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return path


def _assert_one_line(proc, pattern):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("auditor: error: ")
    import re
    assert re.search(pattern, lines[0]), lines[0]


def _cases(tmp):
    good = _relu_onnx(tmp / "good.onnx")
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    torch.save(torch.nn.Linear(4, 2), tmp / "pickled.pt")
    (tmp / "model.h5").write_bytes(b"x")
    blocker = tmp / "blocker"
    blocker.write_text("a file where a directory should be")
    factory = write_factory(tmp / "f.py", "def make():\n    return nn.Linear(4, 2)\n")
    (tmp / "garbage.tflite").write_bytes(b"not a flatbuffer" * 4)
    return {
        "missing file": ([tmp / "nope.pt2"], r"nope\.pt2: no such file"),
        "unknown extension": ([tmp / "model.h5"], r"unknown model format '\.h5'"),
        "truncated onnx": ([truncated], r"not a valid ONNX model"),
        "corrupt onnx": ([garbage], r"not a valid ONNX model"),
        "pickle without trust": ([tmp / "pickled.pt"], r"pickled Python object.*--trust-pickle"),
        "unknown standard op": ([_relu_onnx(tmp / "unk.onnx", op="NoSuchOp")], r"not a valid ONNX model.*NoSuchOp"),
        "custom-domain op": ([_relu_onnx(tmp / "custom.onnx", op="Foo", domain="com.example")],
                             r"reference evaluator cannot run it.*Foo"),
        "wrong input shape": ([good, "--input-shape", "x:1,5"], r"is 1,5 but the model takes 1,4"),
        "shape the model rejects": ([factory, "--input-shape", "1,3"], r"the model rejects inputs of shape \[1, 3\]"),
        "no shape for factory": ([factory], r"does not declare its input shapes"),
        "results dir not writable": ([good, "--results-dir", blocker / "res"], r"is not writable"),
        "bad compiler spec": ([good, "-c", "onnxruntime:graph_opt=max"], r"not one of: disable, basic"),
        "unknown compiler": ([good, "-c", "tensorrt"], r"unknown compiler 'tensorrt'"),
        "unknown target": ([good, "--target", "riscv"], r"unknown target 'riscv'"),
        "labels without inputs": ([good, "--labels", tmp / "l.npy"], r"--labels needs --inputs"),
        "unknown device": ([good, "--device", "board"], r"unknown device 'board'"),
        "malformed ssh device": ([good, "--device", "ssh://nouser"], r"bad device 'ssh://nouser'"),
        "python harness off local": ([good, "--device", "qemu-armv7", "--harness", "python"],
                                     r"the python harness runs only on local"),
        "unknown harness": ([good, "--harness", "jit"], r"unknown harness 'jit'"),
        "corrupt tflite": ([tmp / "garbage.tflite"], r"garbage\.tflite: not a readable TFLite model"),
        "input shape without a name": ([good, "--input-shape", "=1,4"], r"the input name before '=' is empty"),
    }


CASE_NAMES = [
    "missing file", "unknown extension", "truncated onnx", "corrupt onnx", "pickle without trust",
    "unknown standard op", "custom-domain op", "wrong input shape", "shape the model rejects",
    "no shape for factory", "results dir not writable", "bad compiler spec", "unknown compiler",
    "unknown target", "labels without inputs", "unknown device", "malformed ssh device",
    "python harness off local", "unknown harness", "corrupt tflite", "input shape without a name",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_one_line_exit_2(tmp_path, cli, case):
    cases = _cases(tmp_path)
    assert set(cases) == set(CASE_NAMES)
    args, pattern = cases[case]
    proc = cli("compile-all", *args, "--results-dir", tmp_path / "results", "--runs", "20") \
        if "--results-dir" not in map(str, args) else cli("compile-all", *args, "--runs", "20")
    _assert_one_line(proc, pattern)


def test_results_without_store(tmp_path, cli):
    _assert_one_line(cli("results", "list", "--results-dir", tmp_path / "empty"), r"no results store")


def test_usage_error_is_exit_2(cli):
    proc = cli("compile-all")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Missing argument" in proc.stderr


def test_dataset_build_bad_device_is_one_line(tmp_path, cli):
    proc = cli("dataset", "build", "--spec", "datasets/sweeps/host-v1.json", "-o", tmp_path, "--device", "board")
    _assert_one_line(proc, r"unknown device 'board'")
