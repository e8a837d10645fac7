"""torch eager on the CPU: the reference runtime, timed like every other compiler."""

from __future__ import annotations

import numpy as np

from compilers.base import TORCH_EXPORT_LOADER, Artifact, Compiler, OptionSpec, Runnable


def torch_args(specs, arrays) -> tuple:
    """The call's arguments: tensors, and a Python number where the model takes one (sr: int)."""
    import torch

    return tuple(a.item() if spec.scalar else torch.from_numpy(np.ascontiguousarray(a))
                 for spec, a in zip(specs, arrays))


class TorchRunnable(Runnable):
    def __init__(self, module, threads: int, specs=()):
        import torch

        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)  # this process only times inference
        self.torch = torch
        self.module = module
        self.specs = list(specs)
        self._args: tuple = ()
        self._out = None

    def set_inputs(self, arrays):
        self._args = torch_args(self.specs, arrays) if self.specs else \
            tuple(self.torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)

    def run(self):
        self._out = self.module(*self._args)

    def outputs(self):
        from torch.utils._pytree import tree_flatten

        leaves, _ = tree_flatten(self._out)
        return [leaf.detach().numpy().copy() for leaf in leaves if hasattr(leaf, "detach")]


def torch_available() -> tuple[bool, str]:
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means unavailable
        return False, f"torch does not import: {e}"
    return True, torch.__version__


def _fx_map(bundle):
    if "onnx" not in bundle.formats():
        return {}
    import onnx

    from ground.fx_nodes import fx_node_map

    return fx_node_map(onnx.load(str(bundle.path("onnx"))))


class TorchEager(Compiler):
    name = "torch-eager"
    description = "PyTorch eager mode (the reference), CPU"
    accepts = ("torch-export", "torchscript")
    options = {"threads": OptionSpec(1, "torch.set_num_threads (the board has one core)")}
    install_hint = "pip install torch==2.13.0"
    per_op_method = "fx-node-timer"
    compile_imports = (TORCH_EXPORT_LOADER,)
    takes_scalars = True

    @classmethod
    def available(cls):
        return torch_available()

    def compile(self, bundle, target, options, workdir):
        import torch

        fmt = bundle.pick(self.accepts)
        kernel_map = {}
        if fmt == "torch-export":
            from compilers.fx_timing import fx_kernel_map

            kernel_map = fx_kernel_map(torch.export.load(str(bundle.path(fmt))).module(), _fx_map(bundle))
        return Artifact(
            compiler=self.name, compiler_version=torch.__version__, target=target,
            options=options, directory=workdir, files={fmt: str(bundle.path(fmt))},
            kernel_map=kernel_map, notes=[f"runs the bundle's {fmt} program unchanged"],
        )

    def load(self, artifact, bundle):
        import torch

        if "torch-export" in artifact.files:
            module = torch.export.load(artifact.files["torch-export"]).module()
        else:
            module = torch.jit.load(artifact.files["torchscript"], map_location="cpu").eval()
        return TorchRunnable(module, artifact.options["threads"], bundle.inputs)

    def profile_ops(self, artifact, bundle, inputs, runs):
        if "torch-export" not in artifact.files:
            return None  # a TorchScript module has no FX graph to time node by node
        import torch

        from compilers.fx_timing import profile_fx

        module = torch.export.load(artifact.files["torch-export"]).module()
        args = torch_args(bundle.inputs, inputs)
        return profile_fx(module, args, runs, artifact.kernel_map)
