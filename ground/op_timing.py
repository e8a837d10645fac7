"""Per-op timing types: time attributed to emitted kernels, and how it was attributed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OpTiming:
    """Time attributed to one emitted kernel per inference (all its calls in that inference)."""

    kernel: str
    op_type: str
    onnx_nodes: list[str]
    calls: int  # calls per inference
    mean_us: float
    p50_us: float
    std_us: float
    provider: str | None = None

    @classmethod
    def from_runs(cls, kernel: str, op_type: str, onnx_nodes: list[str], calls: int, per_run_us,
                  provider: str | None = None) -> OpTiming:
        """One kernel's statistics from its time in each instrumented inference (µs)."""
        values = np.asarray(per_run_us, dtype=np.float64)
        return cls(kernel=kernel, op_type=op_type, onnx_nodes=onnx_nodes, calls=calls,
                   mean_us=float(values.mean()), p50_us=float(np.median(values)),
                   std_us=float(values.std()), provider=provider)


@dataclass
class OpProfile:
    """Per-kernel attribution and how it was made, so its gap to the whole can be shown."""

    method: str  # e.g. "ort-profiler": names the instrument, never rescaled
    ops: list[OpTiming]
    runs: int  # instrumented inferences the figures come from
    instrumented_whole_us: float | None  # median whole inference while instrumented
    notes: str = ""

    @property
    def per_op_sum_us(self) -> float:
        return float(sum(op.mean_us for op in self.ops))

    @property
    def per_op_sum_p50_us(self) -> float:
        """Sum of per-kernel medians: compared with the whole's median, robust to rare spikes."""
        return float(sum(op.p50_us for op in self.ops))
