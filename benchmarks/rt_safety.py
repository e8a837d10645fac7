"""The real-time safety audit of native-runner variants: per model, compiler and device, the
steady-state counts per inference (inference thread), the first inference's, the verdict and
the call site that allocates most; each with no mitigation, --mlockall 1 and --malloc-keep 1.

    .venv/bin/python benchmarks/rt_safety.py [--models zoo:mlp,zoo:conv1d] [--compilers 'sofie;tvm']
                                             [--devices local,qemu-armv7] [--runs 200] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.pipeline import ModelRequest, prepare  # noqa: E402
from store import Store  # noqa: E402
from compilers import registry  # noqa: E402
from ground.targets import TARGETS  # noqa: E402
from device_runner.devices import parse_device  # noqa: E402
from device_runner.native import RtAuditSettings, run_rt_audit  # noqa: E402

MITIGATIONS = {"none": {}, "mlockall": {"mlockall": True}, "malloc-keep": {"malloc_keep": True}}
SHOWN = ("allocs", "alloc_bytes", "frees", "locks", "wakeups", "threads_created", "minor_faults",
         "major_faults", "voluntary_switches", "involuntary_switches", "other_voluntary_switches")


def audit(spec: str, variant_spec: str, device_spec: str, runs: int, tmp: Path) -> list[dict]:
    variant = registry.parse_variant(variant_spec)
    compiler_name = variant_spec
    cls = registry.get(variant.compiler)
    ok, why = cls.available()
    if not ok:
        return [{"model": spec, "compiler": compiler_name, "device": device_spec, "error": why}]
    device = parse_device(device_spec)
    try:
        target = TARGETS[device.target_name]
        prepared = prepare(ModelRequest(spec), Store(tmp / "results"))
        bundle = prepared.bundle
        compiler = cls()
        workdir = tmp / f"{compiler_name.replace(':', '-')}-{target.name}-{bundle.model_hash}"
        workdir.mkdir(parents=True, exist_ok=True)
        artifact = compiler.compile(bundle, target, variant.options, workdir)
        program = compiler.native_program(artifact)
        x = [np.random.default_rng(0).standard_normal(s.shape).astype(s.dtype) for s in bundle.inputs]
        rows = []
        for mitigation in MITIGATIONS:
            result, failure, commands = run_rt_audit(device, program, x,
                                                     RtAuditSettings(runs=runs, **MITIGATIONS[mitigation]))
            row = {"model": spec, "compiler": compiler_name, "device": device_spec, "mitigation": mitigation,
                   "commands": commands}
            if result is None:
                row["error"] = failure
            else:
                row.update(result.to_dict())
            rows.append(row)
        return rows
    finally:
        device.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="zoo:mlp,zoo:conv1d")
    ap.add_argument("--compilers", default="sofie,tvm",
                    help="variants, ';'-separated when one has options: 'sofie;sofie:blas=reference;tvm'")
    ap.add_argument("--devices", default="local")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="auditor-rt-bench-") as tmp:
        for device in args.devices.split(","):
            for spec in args.models.split(","):
                for name in args.compilers.split(";" if ";" in args.compilers else ","):
                    rows += audit(spec, name, device, args.runs, Path(tmp))
    for r in rows:
        head = f"{r['model']} {r['compiler']} on {r['device']}, mitigation: {r['mitigation']}"
        if "error" in r:
            print(f"{head}: {r['error']}")
            continue
        steady = ", ".join(f"{k} {r['steady_mean'][k]:g}/{r['steady_max'][k]}" for k in SHOWN)
        first = ", ".join(f"{k} {r['first'][k]}" for k in SHOWN)
        sc = r["syscalls"]
        sys_line = (f"syscalls steady {sum(sc['steady'].values()) / sc['runs']:g}/inference {sc['steady']}, "
                    f"first {sc['first']} (traced {sc['traced_wall_s']:.2f} s vs audit {sc['audit_wall_s']:.2f} s)"
                    if sc else f"syscalls: {r['syscalls_missing']}")
        top = r["top_site"]
        print(f"{head}\n  verdict: {r['verdict']}\n  {r['cold']}\n  steady mean/max: {steady}\n"
              f"  first: {first}\n  {sys_line}\n  inert hook cost {r['inert_hook_cost_ns']:.2f} ns"
              + (f"\n  top site: {top['function']} x{top['count']} ({top['bytes']} B) <- "
                 + " <- ".join(top["frames"][:5]) if top else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
