"""libtorch's TorchScript interpreter: the model traced, frozen and optimised for inference.

This is what a C++ program linking libtorch would run (torch.jit.load + forward), here
driven from Python; with `--harness native` the native runner's libtorch backend runs it. The user's own TorchScript archive is used as is when that is what
they gave; otherwise the torch.export program is traced.
"""

from __future__ import annotations

import numpy as np

from compilers.base import TORCH_EXPORT_LOADER, Artifact, Compiler, OptionSpec
from compilers.torch_eager import TorchRunnable, torch_available, torch_args


class TorchScriptJit(Compiler):
    name = "torchscript"
    description = "libtorch TorchScript interpreter (traced, frozen, optimize_for_inference), CPU"
    accepts = ("torchscript", "torch-export")
    options = {
        "threads": OptionSpec(1, "torch.set_num_threads (the board has one core)"),
        "optimize": OptionSpec(True, "torch.jit.freeze + optimize_for_inference"),
    }
    install_hint = "pip install torch==2.13.0"
    takes_scalars = True
    compile_imports = (TORCH_EXPORT_LOADER,)

    @classmethod
    def available(cls):
        return torch_available()

    def compile(self, bundle, target, options, workdir):
        import torch

        torch.set_grad_enabled(False)
        if "torchscript" in bundle.formats():
            scripted = torch.jit.load(str(bundle.path("torchscript")), map_location="cpu").eval()
            origin = "the user's TorchScript archive"
        else:
            module = torch.export.load(str(bundle.path("torch-export"))).module()
            args = torch_args(bundle.inputs, [np.zeros(s.shape, dtype=s.dtype) for s in bundle.inputs])
            scripted = torch.jit.trace(module, args, check_trace=False)
            origin = "torch.jit.trace of the torch.export program"
        if options["optimize"]:
            scripted = torch.jit.optimize_for_inference(torch.jit.freeze(scripted.eval()))
        path = workdir / "model.torchscript.pt"
        scripted.save(str(path))
        return Artifact(
            compiler=self.name, compiler_version=torch.__version__, target=target, options=options,
            directory=workdir, files={"torchscript": path.name}, notes=[origin],
        )

    def native_program(self, artifact):
        """The generic libtorch runner (host only), linked against the installed torch wheel,
        built once per machine; it runs the saved TorchScript archive."""
        if not artifact.target.is_host:
            return None
        import torch

        from device_runner.build import cached_runner
        from device_runner.native import NativeProgram

        from pathlib import Path

        defines = {"TORCH_DIR": str(Path(torch.__file__).parent),
                   "TORCH_CXX11_ABI": str(int(torch._C._GLIBCXX_USE_CXX11_ABI)),
                   "TORCH_WHEEL_VERSION": torch.__version__}
        runner = cached_runner("libtorch", artifact.target, defines, "auditor-runner-libtorch")
        return NativeProgram(runner=runner, model=artifact.path("torchscript"), instrumentable=False)

    def load(self, artifact, bundle):
        import torch

        module = torch.jit.load(str(artifact.path("torchscript")), map_location="cpu")
        return TorchRunnable(module, artifact.options["threads"], bundle.inputs)
