"""Operator coverage: every compiler over the ONNX test models that ship with PyPI `onnx`.

Suites: `node` (the 1,884 per-operator cases, generated on demand), `pytorch-operator`,
`pytorch-converted`, `simple`, and the CNNs of `light` (inputs: onnx's own dummy data, as
its backend runner makes them). Each case is written once to `<results>/coverage/cases/`
as model.onnx + inputs.npz + expected.npz. A compiler runs over its cases in a worker
process (`auditor.coverage_worker`) that records each case before starting it, so a
crash or hang is pinned to its case, recorded, and the worker restarts after it.

Verdicts per case: matched (outputs within tolerance), mismatch, failed (compile or run
raised; reason kept), crashed/timeout (the worker died on it), harness-limit (inputs this
harness cannot feed, e.g. float8/int4/strings/sequences: not a verdict on the operator).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ground.children import run_child, worker_env
from ground.errors import first_line
from store import Store

SUITES = ("node", "pytorch-operator", "pytorch-converted", "simple", "light")

FEEDABLE = {"float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
            "uint32", "uint64", "bool"}


@dataclass
class Case:
    suite: str
    name: str
    directory: Path
    op_types: list[str]


def _write_case(directory: Path, model, inputs: list, outputs: list, rtol: float, atol: float) -> None:
    """Write one case; arrays that numpy cannot hold (sequences, optionals) make it a harness limit."""
    import onnx

    from cost_model.graph import ensure_unique_node_names

    directory.mkdir(parents=True, exist_ok=True)
    ensure_unique_node_names(model)
    onnx.save(model, str(directory / "model.onnx"))
    limit = ""
    try:
        arrays_in = [np.asarray(a) for a in inputs]
        arrays_out = [np.asarray(a) for a in outputs]
        bad = [a.dtype.name for a in arrays_in + arrays_out if a.dtype.name not in FEEDABLE]
        if bad:
            limit = f"tensor type {bad[0]} cannot be fed through this harness"
        else:
            np.savez(directory / "inputs.npz", *arrays_in)
            np.savez(directory / "expected.npz", *arrays_out)
    except (ValueError, TypeError) as e:
        limit = f"non-tensor inputs/outputs (sequence/optional/map): {first_line(e)}"
    meta = {"rtol": rtol, "atol": atol, "harness_limit": limit,
            "op_types": sorted({n.op_type for n in model.graph.node}),
            "inputs": [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}],
            "outputs": [o.name for o in model.graph.output]}
    (directory / "case.json").write_text(json.dumps(meta))


def _read_pb_dataset(data_dir: Path) -> tuple[list, list]:
    from onnx import TensorProto, numpy_helper

    def load(pattern):
        arrays = []
        for path in sorted(data_dir.glob(pattern), key=lambda p: int(p.stem.split("_")[1])):
            t = TensorProto()
            t.ParseFromString(path.read_bytes())
            arrays.append(numpy_helper.to_array(t))
        return arrays

    return load("input_*.pb"), load("output_*.pb")


def materialize(cases_dir: Path, suites: tuple[str, ...]) -> list[Case]:
    """Write every case of the suites once (reused afterwards); return them all."""
    import warnings

    import onnx
    from onnx.backend.test.loader import load_model_tests

    marker = cases_dir / "suites.json"
    done = set(json.loads(marker.read_text())) if marker.exists() else set()
    for suite in suites:
        if suite in done:
            continue
        if suite == "node":
            from onnx.backend.test.case.node import collect_testcases

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tests = collect_testcases()
            for t in tests:
                inputs, outputs = t.data_sets[0] if t.data_sets else ([], [])
                _write_case(cases_dir / suite / t.name, t.model, list(inputs), list(outputs), t.rtol, t.atol)
        elif suite == "light":
            from onnx.backend.test.runner import Runner

            light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
            for path in sorted(light.glob("light_*.onnx")):
                model = onnx.load(str(path))
                inits = {i.name for i in model.graph.initializer}
                inputs = [Runner.generate_dummy_data(vi, seed=0, name=path.stem, random=False)
                          for vi in model.graph.input if vi.name not in inits]
                outputs = _light_outputs(path)
                _write_case(cases_dir / suite / path.stem.removeprefix("light_"), model, inputs, outputs, 1e-3, 1e-5)
        else:
            for t in load_model_tests(kind=suite):
                model = onnx.load(str(Path(t.model_dir) / "model.onnx"))
                inputs, outputs = _read_pb_dataset(Path(t.model_dir) / "test_data_set_0")
                _write_case(cases_dir / suite / t.name, model, inputs, outputs, t.rtol, t.atol)
        done.add(suite)
        marker.write_text(json.dumps(sorted(done)))
    cases = []
    for suite in suites:
        for d in sorted((cases_dir / suite).iterdir()):
            meta = json.loads((d / "case.json").read_text())
            cases.append(Case(suite, d.name, d, meta["op_types"]))
    return cases


def _light_outputs(model_path: Path) -> list:
    """light/ ships expected outputs beside each model as <stem>_output_<i>.pb."""
    from onnx import TensorProto, numpy_helper

    outputs = []
    for path in sorted(model_path.parent.glob(f"{model_path.stem}_output_*.pb")):
        t = TensorProto()
        t.ParseFromString(path.read_bytes())
        outputs.append(numpy_helper.to_array(t))
    return outputs


# Control flow that published models bring (If in streaming VAD/pitch models, Loop/Scan in
# unrolled recurrences): a sample always holds one case of each that its suites have.
CONTROL_FLOW = ("If", "Loop", "Scan")


def sample(cases: list[Case], count: int, seed: int = 0) -> list[Case]:
    """A seeded subset that keeps every suite represented (for CI; the full run is documented)
    and, within its suite's share, one case of each CONTROL_FLOW operator (the one with the
    fewest other operators)."""
    if not count or count >= len(cases):
        return cases
    rng = random.Random(seed)
    by_suite: dict[str, list[Case]] = {}
    for c in cases:
        by_suite.setdefault(c.suite, []).append(c)
    share = max(1, count // len(by_suite))
    picked = []
    for suite_cases in by_suite.values():
        forced = []
        for op in CONTROL_FLOW:
            having = sorted((c for c in suite_cases if op in c.op_types), key=lambda c: (len(c.op_types), c.name))
            if having and having[0] not in forced:
                forced.append(having[0])
        forced = forced[:share]
        rest = [c for c in suite_cases if c not in forced]
        picked += forced + rng.sample(rest, min(share - len(forced), len(rest)))
    return picked


def run_compiler(store: Store, variant, cases: list[Case], case_timeout: float, progress=None) -> None:
    """All cases for one compiler variant, restarting the worker past any case it dies on."""
    done = store.coverage_cases_done(variant.label)
    todo = [c for c in cases if f"{c.suite}/{c.name}" not in done]
    while todo:
        job = {"results_dir": str(store.dir), "compiler": variant.compiler, "overrides": dict(variant.overrides),
               "variant": variant.label, "cases": [[c.suite, c.name, str(c.directory)] for c in todo]}
        job_path = store.dir / "coverage" / f"job-{os.getpid()}.json"
        job_path.write_text(json.dumps(job))

        def stalled() -> bool:
            """The case the worker is on ran past case_timeout (progress reported on the way)."""
            running = store.coverage_running_case(variant.label)
            if progress:
                progress(variant.label, len(store.coverage_cases_done(variant.label)))
            return running is not None and time.time() - running.updated_at > case_timeout

        with open(os.devnull, "w") as devnull:
            ended = run_child([sys.executable, "-m", "auditor.coverage_worker", str(job_path)], stdout=devnull,
                              env=worker_env(), cwd=store.dir, watch=stalled)
        if ended.timed_out:
            store.finish_running_coverage(variant.label, "timeout", f"no result within {case_timeout:.0f} s")
        elif ended.returncode:
            store.finish_running_coverage(variant.label, "crashed", ended.failure("worker"))
        done = store.coverage_cases_done(variant.label)
        remaining = [c for c in todo if f"{c.suite}/{c.name}" not in done]
        if len(remaining) == len(todo):  # no progress at all: do not loop forever
            for c in remaining:
                record(store, variant, c.suite, c.name, c.op_types, "crashed", "worker made no progress", 0.0, "")
            break
        todo = remaining


def record(store: Store, variant, suite: str, name: str, op_types: list[str], status: str, reason: str,
           seconds: float, version: str) -> None:
    store.record_coverage(compiler=variant.compiler, variant=variant.label, suite=suite, case_name=name,
                          op_types=op_types, status=status, reason=reason, seconds=seconds, compiler_version=version)


def matrix(store: Store, cases: list[Case]) -> dict:
    """{'totals': {variant: {status: n}}, 'ops': {op_type: {variant: {status: n}}}} over the given cases."""
    wanted = {(c.suite, c.name) for c in cases}
    totals: dict[str, dict[str, int]] = {}
    ops: dict[str, dict[str, dict[str, int]]] = {}
    for case in store.coverage_cases():
        if (case.suite, case.case_name) not in wanted:
            continue
        totals.setdefault(case.variant, {}).setdefault(case.status, 0)
        totals[case.variant][case.status] += 1
        for op in case.op_types if case.suite == "node" else [f"[{case.suite}]"]:
            cell = ops.setdefault(op, {}).setdefault(case.variant, {})
            cell[case.status] = cell.get(case.status, 0) + 1
    return {"totals": totals, "ops": ops}


def first_failures(store: Store, variant_label: str, limit: int = 200) -> list[tuple[str, str, str, str]]:
    return store.coverage_failures(variant_label, limit)


def markdown(m: dict, variants: list[str], skipped: dict[str, str]) -> str:
    def cell(counts: dict[str, int]) -> str:
        if not counts:
            return ""
        total = sum(counts.values())
        return f"{counts.get('matched', 0)}/{total}"

    lines = ["# Operator coverage", "", "Cell: cases matched / cases run. Totals:", "",
             "| variant | " + " | ".join(["matched", "mismatch", "failed", "crashed", "timeout", "harness-limit"]) + " |",
             "|---" * 7 + "|"]
    for v in variants:
        t = m["totals"].get(v, {})
        lines.append(f"| {v} | " + " | ".join(str(t.get(s, 0)) for s in
                                               ("matched", "mismatch", "failed", "crashed", "timeout", "harness-limit")) + " |")
    for v, why in skipped.items():
        lines.append(f"| {v} | skipped: {why} |" + " |" * 5)
    lines += ["", "| operator | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for op in sorted(m["ops"]):
        lines.append(f"| {op} | " + " | ".join(cell(m["ops"][op].get(v, {})) for v in variants) + " |")
    return "\n".join(lines) + "\n"
