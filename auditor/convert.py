"""Converted graphs for models published in one format: ONNX -> torch, tflite -> ONNX.

A model shipped as ONNX only reaches the torch-side compilers (torch eager, TorchScript,
ExecuTorch, LiteRT) through onnx2torch; a .tflite reaches the ONNX-side ones through
tflite2onnx. Every converted graph is checked against the model's own reference outputs
before anything is compiled from it, and carries a label saying what made it and how far
its outputs are from the reference: a number measured on it is a number for the
converted graph, never for the original. Any failure raises ConversionError with the
reason, which the bundle records as the format's problem.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
import types
from pathlib import Path

import numpy as np

from ground.errors import first_line
from ground.quiet import captured_output

# A converted graph must reproduce the reference within this (the audit's default tolerance).
ATOL = 1e-4
RTOL = 1e-3
# Integer tensors up to this size (shapes, axes, pads, slice bounds) are folded into the
# exported program as constants: the audit's input shapes are static.
_SHAPE_CONSTANT_NUMEL = 64


# converter distribution -> what it gives (auditor doctor lists them)
CONVERTERS = {
    "onnx2torch": "ONNX-only models -> torch eager, TorchScript, ExecuTorch, LiteRT (install with --no-deps)",
    "tflite2onnx": ".tflite models -> ONNX Runtime, TVM, SOFIE (and onnx2torch after it)",
}


class ConversionError(Exception):
    """A converter failed or its graph does not reproduce the reference."""


def max_error(actual: list[np.ndarray], reference: list[np.ndarray], what: str) -> float:
    """Largest absolute difference over all outputs; ConversionError beyond the tolerance."""
    if len(actual) != len(reference):
        raise ConversionError(f"{what} gives {len(actual)} outputs, the reference {len(reference)}")
    worst = 0.0
    for i, (a, r) in enumerate(zip(actual, reference)):
        a, r = np.asarray(a), np.asarray(r)
        if a.size != r.size:
            raise ConversionError(f"{what} output {i} has shape {list(a.shape)}, the reference {list(r.shape)}")
        a, r = a.reshape(r.shape).astype(np.float64), r.astype(np.float64)
        err = float(np.max(np.abs(a - r))) if r.size else 0.0
        if not np.isfinite(err):
            raise ConversionError(f"{what} output {i} is not finite where the reference is")
        bound = ATOL + RTOL * (float(np.max(np.abs(r))) if r.size else 0.0)
        if err > bound:
            raise ConversionError(f"{what} output {i} differs from the reference by {err:.3g} "
                                  f"(tolerance {bound:.3g})")
        worst = max(worst, err)
    return worst


@contextlib.contextmanager
def _without_torchvision():
    """onnx2torch imports torchvision for its NMS and RoiAlign converters only. PyPI's
    torchvision is built against CUDA torch and does not load with torch+cpu: stand in
    for it while onnx2torch imports, so those two ops fail to convert (with this reason)
    and every other op converts. Nothing else sees the stand-in."""
    try:
        import torchvision  # noqa: F401

        yield
        return
    except Exception:  # noqa: BLE001 - missing, or present but not loadable with this torch
        pass

    def missing(*args, **kwargs):
        raise NotImplementedError("needs torchvision, which does not load with this torch build")

    vision, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = missing
    vision.ops = ops
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.ops")}
    sys.modules.update({"torchvision": vision, "torchvision.ops": ops})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _why(e: BaseException) -> str:
    """`Type: message`; a bare assertion names the library line that failed instead."""
    if str(e).strip():
        return f"{type(e).__name__}: {first_line(e)}"
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).parent.name}/{Path(tb[-1].filename).name}:{tb[-1].lineno} " \
            f"({tb[-1].line})" if tb else ""
    return f"{type(e).__name__}{where}"


def _onnx2torch():
    try:
        with _without_torchvision():
            import onnx2torch
    except ImportError as e:
        raise ConversionError(f"onnx2torch is not installed (pip install --no-deps onnx2torch): {first_line(e)}")
    return onnx2torch


def _flat(out) -> list[np.ndarray]:
    from torch.utils._pytree import tree_flatten

    leaves, _ = tree_flatten(out)
    return [leaf.detach().cpu().numpy() for leaf in leaves if hasattr(leaf, "detach")]


def _static_program(module, tensors):
    """torch.export of an onnx2torch module. onnx2torch keeps shapes, axes and pads as
    int64 buffers that its modules read at run time (`if torch.any(shape == 0)`), which
    torch.export sees as data-dependent. Trace it once with real values instead (make_fx),
    the small integer buffers re-created inside the trace so they propagate as constants,
    then export that aten graph: the program is specialised to the audit's static shapes."""
    import torch
    import torch.fx.experimental.proxy_tensor as proxy_tensor
    from torch.fx.experimental.proxy_tensor import make_fx

    small_ints = [(m, n, b) for m in module.modules() for n, b in m._buffers.items()
                  if b is not None and not b.is_floating_point() and b.numel() <= _SHAPE_CONSTANT_NUMEL]

    def run(*args):
        for m, n, b in small_ints:
            m._buffers[n] = torch.tensor(b.tolist(), dtype=b.dtype)
        try:
            return module(*args)
        finally:
            for m, n, b in small_ints:
                m._buffers[n] = b

    limit = proxy_tensor.CONSTANT_NUMEL_LIMIT
    proxy_tensor.CONSTANT_NUMEL_LIMIT = _SHAPE_CONSTANT_NUMEL
    try:
        with torch.no_grad():
            graph = make_fx(run, tracing_mode="real")(*tensors)
    finally:
        proxy_tensor.CONSTANT_NUMEL_LIMIT = limit
    return torch.export.export(graph, tuple(tensors))


def onnx_to_torch(onnx_model, example: list[np.ndarray], reference: list[np.ndarray], log: Path):
    """(torch.export program, its max abs error vs the reference, the exact graph rewrites
    made first as "N x what") for an ONNX graph with static input shapes; the converted
    module and the exported program are both checked."""
    import torch

    from auditor import onnx_rewrite

    onnx2torch = _onnx2torch()
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in example]
    try:
        rewritten, made = onnx_rewrite.for_onnx2torch(onnx_model)
    except Exception as e:  # noqa: BLE001 - a graph the rewrites did not expect
        raise ConversionError(f"rewriting the graph for onnx2torch failed: {_why(e)}")
    rewrites = [f"{n} x {what}" for what, n in made.items()]
    with captured_output(log):
        try:
            module = onnx2torch.convert(rewritten).eval()
        except Exception as e:  # noqa: BLE001 - any converter failure is the recorded reason
            raise ConversionError(f"onnx2torch cannot convert it: {_why(e)}")
        try:
            with torch.no_grad():
                converted = _flat(module(*tensors))
        except Exception as e:  # noqa: BLE001
            raise ConversionError(f"the onnx2torch module fails to run: {_why(e)}")
        err = max_error(converted, reference, "the onnx2torch module")
        try:
            program = _static_program(module, tensors)
        except Exception as e:  # noqa: BLE001
            raise ConversionError(f"torch.export of the onnx2torch module failed: {_why(e)}")
        with torch.no_grad():
            exported = _flat(program.module()(*tensors))
    return program, max(err, max_error(exported, reference, "the exported onnx2torch program")), rewrites


def tflite_to_onnx(tflite_path: Path, onnx_path: Path, log: Path):
    """The tflite graph as an onnx.ModelProto (tflite2onnx); checked by the caller."""
    import onnx

    try:
        import tflite2onnx
    except ImportError as e:
        raise ConversionError(f"tflite2onnx is not installed: {first_line(e)}")
    with captured_output(log):
        try:
            tflite2onnx.convert(str(tflite_path), str(onnx_path))
            return onnx.load(str(onnx_path))
        except Exception as e:  # noqa: BLE001 - AssertionError and NotImplementedError included
            raise ConversionError(f"tflite2onnx cannot convert it: {_why(e)}")
