"""`auditor profile` compiles in a child: a compiler that segfaults is one line, not a dead CLI."""

import os
import signal

import onnx
from onnx import TensorProto, helper

from auditor.cli import main
from compilers import registry


def _relu_onnx(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_compiler_segfault_is_one_line_and_the_command_lives(tmp_path, monkeypatch, capsys):
    import device_runner.profile

    def segfault(self, bundle, target, options, workdir):
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(registry.get("onnxruntime"), "compile", segfault)
    monkeypatch.setattr(device_runner.profile, "choose_event", lambda device: ("cpu-clock", "stub"))
    code = main(["profile", str(_relu_onnx(tmp_path / "relu.onnx")), "-c", "onnxruntime",
                 "--results-dir", str(tmp_path / "res")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("auditor: error: onnxruntime crashed while compiling"), err
