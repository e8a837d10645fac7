"""The real-time safety audit of one compiled variant, for both harnesses.

Native runner: device_runner.native.run_rt_audit on the job's device. Python-hosted runtimes:
a child `python -m auditor.rt_audit SPEC.json REPORT.json MARKERS` started with the counting
hooks preloaded (device_runner.rt_shim), which loads the artifact like the worker does and
brackets only the runnable's run() (the runtime's binding call) with the hooks' window; the
Python interpreter's and numpy's own calls are counted apart. Either way the result is a
device_runner.rt_safety.RtSafety.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from compilers.base import Artifact
from device_runner.native import RtAuditSettings
from device_runner.rt_safety import RtSafety
from ground.targets import TARGETS

SPEC = "rt_audit_spec.json"


def artifact_to_dict(artifact: Artifact) -> dict:
    d = asdict(artifact)
    d["target"] = artifact.target.name
    d["directory"] = str(artifact.directory)
    return d


def artifact_from_dict(d: dict) -> Artifact:
    return Artifact(**{**d, "target": TARGETS[d["target"]], "directory": Path(d["directory"])})


def audit_python(job, artifact: Artifact, settings: RtAuditSettings, log: Path
                 ) -> tuple[RtSafety | None, str | None, list[str]]:
    """Audit a Python-hosted variant in a preloaded child (twice with the syscall pass)."""
    from device_runner.rt_shim import audit_in_child
    from ground.children import worker_env

    spec = job.workdir / SPEC
    spec.write_text(json.dumps({"job": str(job.workdir / job.FILE), "artifact": artifact_to_dict(artifact),
                                "runs": settings.runs, "warmup": settings.warmup,
                                "mlockall": settings.mlockall, "malloc_keep": settings.malloc_keep}))

    def argv(report: Path, markers: bool) -> list[str]:
        return [sys.executable, "-m", "auditor.rt_audit", str(spec), str(report), "1" if markers else "0"]

    return audit_in_child(argv, f"{job.compiler}/python", job.workdir, settings.runs,
                          settings.trace_syscalls, settings.timeout_s, env=worker_env(), log=log)


def audit_native(job, program, timing_inputs, settings: RtAuditSettings
                 ) -> tuple[RtSafety | None, str | None, list[str]]:
    from device_runner.devices import parse_device
    from device_runner.native import run_rt_audit

    device = parse_device(job.device)
    try:
        return run_rt_audit(device, program, timing_inputs, settings)
    finally:
        device.close()


def child_main(spec_path: Path, report: Path, markers: bool) -> int:
    """In the preloaded child: load the artifact, bind the timing inputs, audit run()."""
    from auditor.inputs import InputSet
    from auditor.job import WorkerJob
    from compilers import registry
    from device_runner.rt_shim import Shim, preloaded_library, write_report
    from ground.quiet import captured_output
    from ground.tensors import ModelBundle

    import os

    from ground.children import die_with_parent

    # under strace the parent is strace, which run_child's death signal kills but whose tracee
    # would live on (strace 6.1 has no --kill-on-exit): die with whichever parent started us
    die_with_parent(os.getppid())
    spec = json.loads(Path(spec_path).read_text())
    job = WorkerJob.load(Path(spec["job"]))
    cls = registry.get(job.compiler)
    bundle = ModelBundle.load(job.bundle_dir)
    inputs = InputSet.load(job.data_dir / "inputs.npz", bundle.inputs, job.inputs_source)
    artifact = artifact_from_dict(spec["artifact"])
    with captured_output(job.workdir / "rt_audit.log"):
        runnable = cls().load(artifact, bundle)
    runnable.set_inputs(inputs.timing_inputs)
    shim = Shim(preloaded_library())
    shim.mark_host()
    scheduling = shim.apply(spec["mlockall"], spec["malloc_keep"])
    section = shim.audit(runnable.run, spec["runs"], spec["warmup"], markers)
    runnable.close()
    write_report(report, f"{job.compiler}/python", section, scheduling, shim.host)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"))
