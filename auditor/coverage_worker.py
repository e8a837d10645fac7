"""One compiler variant over a list of coverage cases, in its own process.

Each case is marked `running` in the store before it starts, so if this process dies the
orchestrator knows which case killed it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from auditor import accuracy
from auditor.coverage import record
from store import Store
from compilers import registry
from ground.errors import first_line
from ground.quiet import captured_output
from ground.targets import TARGETS
from ground.tensors import ModelBundle, TensorSpec


def _bundle(case_dir: Path, inputs: list[np.ndarray], outputs: list[np.ndarray], meta: dict) -> ModelBundle:
    return ModelBundle(
        model_hash=f"coverage-{case_dir.parent.name}-{case_dir.name}", directory=case_dir,
        inputs=[TensorSpec(n, a.shape, a.dtype.name) for n, a in zip(meta["inputs"], inputs)],
        outputs=[TensorSpec(n, a.shape, a.dtype.name) for n, a in zip(meta["outputs"], outputs)],
        files={"onnx": "model.onnx"},
    )


def run_case(compiler, variant, case_dir: Path, workdir: Path) -> tuple[str, str]:
    meta = json.loads((case_dir / "case.json").read_text())
    if meta["harness_limit"]:
        return "harness-limit", meta["harness_limit"]
    with np.load(case_dir / "inputs.npz") as z:
        inputs = [z[f"arr_{i}"] for i in range(len(z.files))]
    with np.load(case_dir / "expected.npz") as z:
        expected = [z[f"arr_{i}"] for i in range(len(z.files))]
    if len(inputs) != len(meta["inputs"]):
        return "harness-limit", f"{len(meta['inputs'])} graph inputs but {len(inputs)} arrays (optional inputs)"
    bundle = _bundle(case_dir, inputs, expected, meta)
    stage = "compile"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with captured_output(workdir / "log.txt"):
            artifact = compiler.compile(bundle, TARGETS["host"], variant.options, workdir)
            stage = "run"
            runnable = compiler.load(artifact, bundle)
            runnable.set_inputs(inputs)
            runnable.run()
            got = runnable.outputs()
            runnable.close()
    except Exception as e:  # noqa: BLE001 - the compiler's failure is this case's verdict
        return "failed", f"{stage}: {type(e).__name__}: {first_line(e, 200)}"
    if len(got) != len(expected):
        return "mismatch", f"{len(got)} outputs, expected {len(expected)}"
    tol = accuracy.Tolerance(atol=max(meta["atol"], 1e-4), rtol=max(meta["rtol"], 1e-3))
    for i, (e, g) in enumerate(zip(expected, got)):
        result = accuracy.compare(e, np.asarray(g), tol)
        if not result["passed"]:
            return "mismatch", f"output {i}: {result['reason']}"
    return "matched", ""


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    store = Store(Path(job["results_dir"]))
    variant = registry.Variant(job["compiler"], tuple(sorted(job["overrides"].items())))
    cls = registry.get(job["compiler"])
    compiler = cls()
    version = cls.version()
    scratch = Path(job["results_dir"]) / "coverage" / "work" / variant.label.replace("/", "_")
    for suite, name, directory in job["cases"]:
        meta = json.loads((Path(directory) / "case.json").read_text())
        record(store, variant, suite, name, meta["op_types"], "running", "", 0.0, version)
        t0 = time.perf_counter()
        status, reason = run_case(compiler, variant, Path(directory), scratch / suite / name)
        record(store, variant, suite, name, meta["op_types"], status, reason, time.perf_counter() - t0, version)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
