"""The real-time safety audit over the block zoo: every compiler variant on every zoo default
instance, Python-hosted (the hooks preloaded into the runtime's Python child, auditor.rt_audit)
and, where the compiler has one, on the native runner; per variant the steady-state counts per
inference, the first inference's, the verdict and the call site that allocates most; then the
mitigations (--mlockall, --malloc-keep) on every leg whose plain verdict has page faults or
system calls (what they can remove), and which violation each removed. Prints a table.

    .venv/bin/python benchmarks/rt_safety.py [--models zoo:mlp,zoo:conv1d] [--compilers 'sofie;tvm']
                                             [--harness python,native] [--devices local,qemu-armv7]
                                             [--runs 100] [--json OUT] [--table-from OUT]
(defaults: every zoo family's default instance, every compiler's default variants, both harnesses,
local.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.inputs import InputSet  # noqa: E402
from auditor.job import WorkerJob  # noqa: E402
from auditor.pipeline import ModelRequest, prepare  # noqa: E402
from auditor.rt_audit import audit_python  # noqa: E402
from auditor.zoo import FAMILIES  # noqa: E402
from cost_model.training import KERNEL_FAMILIES  # noqa: E402
from store import Store  # noqa: E402
from compilers import registry  # noqa: E402
from device_runner.devices import parse_device  # noqa: E402
from device_runner.native import RtAuditSettings, run_rt_audit  # noqa: E402
from ground.quiet import captured_output  # noqa: E402
from ground.targets import TARGETS  # noqa: E402

MITIGATIONS = {"none": {}, "mlockall": {"mlockall": True}, "malloc-keep": {"malloc_keep": True}}
SHOWN = ("allocs", "alloc_bytes", "frees", "locks", "waits", "wakeups", "threads_created", "minor_faults",
         "major_faults", "voluntary_switches", "other_allocs", "other_wakeups", "host_allocs")


def _violations(r: dict) -> set[str]:
    """The violation kinds of a result row (what a mitigation may remove)."""
    out = {k for k in ("allocs", "frees", "locks", "waits", "wakeups", "threads_created", "minor_faults",
                       "major_faults", "voluntary_switches") if r["steady_mean"].get(k, 0) > 0}
    if r.get("syscalls"):
        out |= {f"syscall {name}" for name in r["syscalls"]["steady"]}
    return out


def _needs_mitigation(r: dict) -> bool:
    return any(v in ("minor_faults", "major_faults") or v.startswith("syscall") for v in _violations(r))


def audit_variant(prepared, variant, harness: str, device_spec: str, runs: int, tmp: Path) -> list[dict]:
    cls = registry.get(variant.compiler)
    head = {"model": prepared.model_source.split(":")[1] if prepared.model_source.startswith("zoo:")
            else prepared.model_source, "variant": variant.label, "harness": harness, "device": device_spec}
    ok, why = cls.available()
    if not ok:
        return [{**head, "mitigation": "none", "error": f"not installed: {why}"}]
    device = parse_device(device_spec)
    target = TARGETS[device.target_name]
    bundle = prepared.bundle
    if harness == "python" and not target.is_host:
        return []
    compiler = cls()
    why_not = compiler.can_compile(bundle, target)
    if why_not:
        return [{**head, "mitigation": "none", "error": f"skipped: {why_not}"}]
    workdir = tmp / f"{variant.label.replace(':', '-').replace('=', '-')}-{target.name}-{bundle.model_hash}"
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "bench.log"
    t0 = time.perf_counter()
    try:
        with captured_output(log):
            artifact = compiler.compile(bundle, target, variant.options, workdir)
    except Exception as e:  # noqa: BLE001 - a compiler failure is a row
        return [{**head, "mitigation": "none", "error": f"compile: {type(e).__name__}: {str(e).splitlines()[0][:150]}"}]
    compile_s = time.perf_counter() - t0
    program = None
    if harness == "native":
        with captured_output(log):
            program = compiler.native_program(artifact)
        if program is None:
            return []  # no native runner for this compiler: its Python row says it all
    inputs = InputSet.load(prepared.data_dir / "inputs.npz", bundle.inputs, prepared.inputs_source)
    job = WorkerJob(run_id="bench", results_dir=tmp / "results", workdir=workdir, bundle_dir=bundle.directory,
                    data_dir=prepared.data_dir, inputs_source=prepared.inputs_source, compiler=variant.compiler,
                    options=variant.options, target=target.name, device=device_spec, harness=harness)
    job.save()
    rows = []
    try:
        for mitigation, extra in MITIGATIONS.items():
            if mitigation != "none" and not (rows and "error" not in rows[0] and _needs_mitigation(rows[0])):
                break
            settings = RtAuditSettings(runs=runs, warmup=20, timeout_s=900, **extra)
            t0 = time.perf_counter()
            if program is not None:
                result, failure, commands = run_rt_audit(device, program, inputs.timing_inputs, settings)
            else:
                result, failure, commands = audit_python(job, artifact, settings, log)
            row = {**head, "mitigation": mitigation, "compile_s": compile_s,
                   "audit_wall_s": time.perf_counter() - t0, "commands": commands}
            if result is None:
                row["error"] = failure
            else:
                row.update(result.to_dict())
                row["short"] = result.short
            rows.append(row)
    finally:
        device.close()
    return rows


def removed(rows: list[dict]) -> dict[str, str]:
    """Per mitigation leg: which of the plain leg's violations it removed (and which it added)."""
    plain = next((r for r in rows if r["mitigation"] == "none" and "error" not in r), None)
    out = {}
    for r in rows:
        if plain is None or r is plain or "error" in r:
            continue
        gone, new = _violations(plain) - _violations(r), _violations(r) - _violations(plain)
        out[r["mitigation"]] = ("removed " + ", ".join(sorted(gone)) if gone else "removed nothing") + (
            "; added " + ", ".join(sorted(new)) if new else "")
    return out


def _cell(r: dict) -> str:
    if "error" in r:
        return r["error"][:90]
    return r["short"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(f"zoo:{name}" for name in FAMILIES
                                                 if name not in KERNEL_FAMILIES))  # blocks only
    ap.add_argument("--compilers", default=None,
                    help="variants, ';'-separated when one has options: 'sofie;sofie:blas=reference;tvm' "
                         "(default: every compiler's default variants)")
    ap.add_argument("--harness", default="python,native")
    ap.add_argument("--devices", default="local")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--json", type=Path, help="write the rows here (after every variant)")
    ap.add_argument("--table-from", type=Path, nargs="+",
                    help="only print the table of the rows --json runs wrote (several: merged, first kept)")
    args = ap.parse_args()
    if args.table_from:
        seen, merged = set(), []
        for path in args.table_from:
            for r in json.loads(path.read_text()):
                key = (r["model"], r["variant"], r["harness"], r["device"], r["mitigation"])
                if key not in seen:
                    seen.add(key)
                    merged.append(r)
        print_table(merged)
        return 0
    variants = (registry.default_variants() if args.compilers is None else
                [registry.parse_variant(v) for v in args.compilers.split(";" if ";" in args.compilers else ",")])
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="auditor-rt-bench-") as tmp:
        store = Store(Path(tmp) / "results")
        for spec in args.models.split(","):
            try:
                prepared = prepare(ModelRequest(spec), store)
            except Exception as e:  # noqa: BLE001 - a model that does not export is a row
                rows.append({"model": spec, "variant": "*", "harness": "*", "device": "*", "mitigation": "none",
                             "error": f"prepare: {type(e).__name__}: {str(e).splitlines()[0][:150]}"})
                continue
            for device in args.devices.split(","):
                for harness in args.harness.split(","):
                    for variant in variants:
                        try:
                            got = audit_variant(prepared, variant, harness, device, args.runs, Path(tmp))
                        except Exception as e:  # noqa: BLE001 - one variant's failure is a row
                            got = [{"model": spec.split(":")[1], "variant": variant.label, "harness": harness,
                                    "device": device, "mitigation": "none",
                                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:150]}"}]
                        for r in got:
                            r.setdefault("removed", removed(got).get(r["mitigation"]))
                        rows += got
                        for r in got:
                            print(f"{r['model']:<18} {r['variant']:<28} {r['harness']:<6} {r['mitigation']:<11} "
                                  f"{_cell(r)}", file=sys.stderr, flush=True)
                        if args.json:
                            args.json.write_text(json.dumps(rows, indent=1, default=str))
        store.close()
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    from tabulate import tabulate

    table = []
    for r in rows:
        if "error" in r:
            table.append([r["model"], r["variant"], r["harness"], r["mitigation"], r["error"][:80],
                          "", "", "", "", "", "", ""])
            continue
        m, first = r["steady_mean"], r["first"]
        sc = r.get("syscalls")
        table.append([
            r["model"], r["variant"], r["harness"], r["mitigation"], r["short"],
            f"{m.get('allocs', 0):g}/{first.get('allocs', 0)}", f"{m.get('locks', 0):g}/{first.get('locks', 0)}",
            f"{m.get('wakeups', 0) + m.get('other_wakeups', 0):g}", f"{m.get('minor_faults', 0):g}/{first.get('minor_faults', 0)}",
            f"{sum(sc['steady'].values()) / sc['runs']:g}/{sum(sc['first'].values())}" if sc else "—",
            f"{m.get('host_allocs', 0):g}",
            (r.get("top_site") or {}).get("function", "")[:40] + ("" if r["mitigation"] == "none" else
                                                                   f" [{r.get('removed') or ''}]"),
        ])
    print(tabulate(table, headers=["model", "variant", "harness", "mitigation", "verdict",
                                   "allocs/inf (first)", "locks/inf (first)", "wakeups/inf",
                                   "minor faults/inf (first)", "syscalls/inf (first)", "Python allocs/inf",
                                   "allocates most in [mitigation: removed]"], tablefmt="github"))


if __name__ == "__main__":
    sys.exit(main())
