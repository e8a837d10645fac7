"""What TVM compiles for and what it emits, shared by the Relax adapter and its tuning."""

from __future__ import annotations

from typing import Any

from ground.targets import Target


def tvm_target_dict(target: Target) -> dict[str, Any]:
    """The TVM target (a dict: TVM 0.27 rejects CLI-style target strings)."""
    if target.is_host:
        from tvm.target import codegen

        return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": 1}
    spec: dict[str, Any] = {"kind": "llvm", "mtriple": target.triple, "num-cores": 1}
    if target.cpu:
        spec["mcpu"] = target.cpu
    if target.features:
        spec["mattr"] = list(target.features)
    if target.float_abi:
        spec["mfloat-abi"] = target.float_abi  # without it the link fails (VFP register args)
    return spec


def is_prim_func(func) -> bool:
    try:
        from tvm import tirx as tir
    except ImportError:  # older TVM
        from tvm import tir
    return isinstance(func, tir.PrimFunc)
