"""State a model carries from one call to the next.

Two forms: kept inside the module (a streaming TorchScript model updates its own attributes,
so two identical calls give different outputs), detected here on a fresh load; or explicit
state tensors (state in, state out) that the caller feeds back, named by the user with
`--stream-state OUT:IN`. Either way one call is not comparable on its own: outputs are
checked as a sequence of calls from a fresh load, call k against the reference's call k.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from auditor.export import reference_outputs
from auditor.inputs import InputSet
from auditor.loaders import LoadedModel
from ground.errors import AuditorError
from ground.tensors import ModelBundle

SEQUENCE_CALLS = 8  # calls compared from a fresh load when a model carries state

Step = Callable[[list[np.ndarray]], list[np.ndarray]]


def detect(model: LoadedModel, inputs: InputSet) -> dict:
    """{"kind": "internal" | "none", "how": ...}. Calls the (freshly loaded, never yet
    called) module twice with the same inputs: different outputs mean it keeps state."""
    if not model.is_torch:
        return {"kind": "none", "how": "an ONNX graph keeps nothing between calls"}
    first = reference_outputs(model, inputs.timing_inputs, inputs.specs)
    second = reference_outputs(model, inputs.timing_inputs, inputs.specs)
    same = len(first) == len(second) and all(
        a.shape == b.shape and np.array_equal(a, b, equal_nan=True) for a, b in zip(first, second))
    if same:
        return {"kind": "none", "how": "two identical calls on a fresh load gave identical outputs"}
    diffs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
             for a, b in zip(first, second) if a.shape == b.shape]
    reset = "reset_states" if callable(getattr(model.module, "reset_states", None)) else None
    return {"kind": "internal", "reset": reset,
            "how": f"two identical calls on a fresh load differ (max |diff| {max(diffs, default=float('nan')):.3g})"}


def parse_stream_pairs(specs: list[str], bundle: ModelBundle) -> list[tuple[int, int]]:
    """['stateN:state'] -> [(output index, input index)], checked against the bundle."""
    outputs = [o.name for o in bundle.outputs]
    inputs = [i.name for i in bundle.inputs]
    pairs = []
    for spec in specs:
        out, sep, inp = spec.rpartition(":")
        if not sep or not out or not inp:
            raise AuditorError(f"--stream-state {spec!r}: expected OUTPUT:INPUT (e.g. stateN:state)")
        if out not in outputs:
            raise AuditorError(f"--stream-state {spec!r}: the model has no output {out!r} "
                               f"(outputs: {', '.join(outputs)})")
        if inp not in inputs:
            raise AuditorError(f"--stream-state {spec!r}: the model has no input {inp!r} "
                               f"(inputs: {', '.join(inputs)})")
        o, i = bundle.outputs[outputs.index(out)], bundle.inputs[inputs.index(inp)]
        if (tuple(o.shape), o.dtype) != (tuple(i.shape), i.dtype):
            raise AuditorError(f"--stream-state {spec!r}: output {out} is {o.dtype}{list(o.shape)} "
                               f"but input {inp} takes {i.dtype}{list(i.shape)}")
        pairs.append((outputs.index(out), inputs.index(inp)))
    return pairs


def run_sequence(step: Step, examples: list[list[np.ndarray]], calls: int,
                 pairs: list[tuple[int, int]]) -> list[list[np.ndarray]]:
    """Outputs of `calls` consecutive calls: call k takes example k (cycling), with each
    streamed state input replaced by the previous call's state output."""
    outs: list[list[np.ndarray]] = []
    for k in range(calls):
        arrays = list(examples[k % len(examples)])
        for o, i in pairs if outs else ():
            arrays[i] = outs[-1][o]
        outs.append([np.array(a, copy=True) for a in step(arrays)])
    return outs


def sequence_calls(examples: int) -> int:
    return max(SEQUENCE_CALLS, examples)


def write_sequence_reference(model: LoadedModel, inputs: InputSet, data_dir: Path,
                             pairs: list[tuple[int, int]]) -> Path:
    """The reference's outputs over a sequence of calls from a fresh load, in data_dir."""
    calls = sequence_calls(len(inputs.examples))
    key = hashlib.sha256(repr((pairs, calls)).encode()).hexdigest()[:12]
    path = data_dir / f"sequence-{key}.npz"
    if path.exists():
        return path
    fresh = model.fresh() if model.is_torch else model  # an ONNX graph has no state to reset
    outs = run_sequence(lambda arrays: reference_outputs(fresh, arrays, inputs.specs), inputs.examples, calls, pairs)
    tmp = data_dir / f"sequence-{key}.tmp.npz"
    np.savez(tmp, **{f"s{k}_{j}": a for k, call in enumerate(outs) for j, a in enumerate(call)})
    tmp.rename(path)
    return path


def read_sequence(path: Path, outputs: int) -> list[list[np.ndarray]]:
    with np.load(path) as z:
        calls = 1 + max(int(k[1:].split("_")[0]) for k in z.files)
        return [[z[f"s{k}_{j}"] for j in range(outputs)] for k in range(calls)]
