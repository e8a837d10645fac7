"""`dataset build --quiet`: measure the way a training set needs (issue 14).

1. Export every point first (--jobs long-lived workers in parallel).
2. Compile every (point, variant) ahead into the artifact cache (--jobs workers; each
   compile in a forked child, so a compiler crash costs that compile only; a failed compile,
   or one stopped by --compile-cap, is cached as failed and recorded by its measuring run
   without compiling again).
3. Measure one run at a time, in long-lived workers (auditor.measure_worker) pinned to one
   CPU (os.sched_setaffinity), with nothing of ours running beside them: each run stores
   its conditions (load average, affinity, other processes' CPU use while timing,
   ground.quietness). A run measured under load stops the build (it is marked interrupted,
   so the next build measures it again) unless --allow-load, which keeps it, flagged.
4. Run-to-run spread: a seeded share of the points is measured again, each repeat in
   freshly started workers (separate processes); repeats are runs of their own (resume key
   `_repeat`), exported beside the main run's row as `repeat_p50_us` and `spread`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time

from auditor.dataset import _record_point
from auditor.measure_worker import MeasurePool, in_parallel, prepared_from_dict
from auditor.pipeline import AuditSettings, Prepared, audit_variants, resolve_device, resume_key
from store import Store
from auditor.sweeps import Sweep
from compilers.registry import Variant
from ground.errors import AuditorError
from ground.quietness import MIN_WINDOW_S


def repeat_subset(points: list[str], share: float, seed: int) -> list[str]:
    """The seeded points whose spread is measured (at least one when share > 0). A point is in
    or out by a hash of (seed, point), not by its place in the list: a partial build (--sample)
    repeats the same points the whole build would."""
    if share <= 0 or not points:
        return []
    rank = {p: int.from_bytes(hashlib.sha256(f"{seed}:{p}".encode()).digest()[:8], "big") / 2**64
            for p in points}
    chosen = sorted(p for p in points if rank[p] < share)
    return chosen or [min(points, key=rank.__getitem__)]


def _refuse_loaded(store: Store, run_ids: list[str], since: float, spec: str) -> None:
    """Runs of this point measured now under load: marked interrupted, and the build stops."""
    loaded = []
    for rid in run_ids:
        run = store.run_record(rid)
        if (run.started_at or 0) < since:
            continue  # stored by an earlier build
        conditions = run.settings.get("conditions") or {}
        if conditions.get("under_load"):
            loaded.append((rid, run.variant, conditions["load_reason"]))
    for rid, _, why in loaded:
        store.set_status(rid, "interrupted", f"measured under load, not kept: {why}")
    if loaded:
        rid, variant, why = loaded[0]
        raise AuditorError(f"{spec} {variant} measured under load ({why}); the build stopped and will measure "
                           "it again when resumed on a quiet machine (--allow-load keeps such runs, flagged)")


def _unmeasured(store: Store, point: Prepared, variant: Variant, settings: AuditSettings, resolved,
                runs: int) -> bool:
    """Whether any of the point's `runs` measurements of the variant (the main run and its
    repeats) is not stored as done yet: the resume check audit_variants makes, asked early."""
    device, target, harness = resolved
    keys = [resume_key(variant.options, harness, target, dataclasses.replace(settings, repeat=k), point.stream_state)
            for k in range(runs)]
    return any(store.completed_run(point.bundle.model_hash, point.inputs_digest, variant.compiler, key,
                                   device.spec) is None for key in keys)


def build_quiet(sweep: Sweep, store: Store, variants: list[Variant], settings: AuditSettings, jobs: int = 1,
                progress=None, command: str = "auditor dataset build --quiet", resolved=None,
                allow_load: bool = False, repeat_share: float = 0.0, repeats: int = 3,
                repeat_seed: int = 0, compile_only: bool = False) -> dict[str, int]:
    resolved = resolved or resolve_device(settings)
    device, target_name, harness = resolved
    if device.spec != "local" or harness != "python":
        raise AuditorError("--quiet measures on local with the python harness (the native runner pins "
                           "itself with --cpu)")
    settings.resume = True
    settings.artifact_cache = True
    settings.conditions_window_s = MIN_WINDOW_S
    if settings.cpu < 0:
        settings.cpu = (os.cpu_count() or 1) - 1
    counts = {"measured": 0, "failed": 0, "repeated": 0}
    say = (lambda spec, label, phase: progress(spec, label, phase)) if progress else (lambda *a: None)

    # 1. every export, in parallel (--jobs long-lived workers)
    prepared: dict[str, Prepared] = {}
    exports = in_parallel(store.dir, [{"kind": "export", "spec": spec, "results_dir": str(store.dir)}
                                      for spec in sweep.points], jobs,
                          done=lambda task, result: say(task["spec"], "export", "done"))
    for spec, result in zip(sweep.points, exports):
        if "prepared" in result:
            prepared[spec] = prepared_from_dict(result["prepared"])
        else:
            _record_point(store, sweep.name, spec, None, "failed", result.get("failed") or "export failed")
            counts["failed"] += 1
            say(spec, None, "point done")  # nothing left to measure for it

    # 2. every compile the measuring will need, in parallel, into the artifact cache (a
    # (point, variant) whose runs, repeats included, are all stored needs none: resumed or imported)
    subset = repeat_subset(list(prepared), repeat_share, repeat_seed)
    tasks = [{"kind": "compile", "spec": spec, "compiler": v.compiler, "overrides": list(v.overrides),
              "bundle_dir": str(p.bundle.directory), "target": target_name, "results_dir": str(store.dir),
              "cap_s": settings.compile_cap_s,
              "log": str(store.dir / "artifacts" / "logs" / p.bundle.model_hash / f"{v.label}.log")}
             for spec, p in prepared.items() for v in variants
             if _unmeasured(store, p, v, settings, resolved, repeats if spec in subset else 1)]
    in_parallel(store.dir, tasks, jobs, settings.timeout_s,
                done=lambda task, result: say(task["spec"], task["compiler"],
                                              f"compile: {result.get('outcome') or result.get('failed')}"))

    if compile_only:  # the slow, parallel half now; the timed half later, on a quiet machine
        counts["compiled"] = len(tasks)
        return counts

    # 3. measure one run at a time, pinned, nothing else of ours running
    measure = MeasurePool(store.dir, settings.cpu)
    try:
        for spec, point in prepared.items():
            _record_point(store, sweep.name, spec, point.bundle.model_hash, "measuring")
            since = time.time()
            run_ids = audit_variants(point, variants, settings, store, command,
                                     lambda label, phase: say(spec, label, phase), resolved, measure.run)
            if not allow_load:
                _refuse_loaded(store, run_ids, since, spec)
            _record_point(store, sweep.name, spec, point.bundle.model_hash, "measured")
            counts["measured"] += 1
            say(spec, None, "point done")

        # 4. the seeded subset again, each repeat in fresh worker processes
        for k in range(1, repeats if subset else 1):
            measure.restart()
            settings.repeat = k
            for spec in subset:
                since = time.time()
                run_ids = audit_variants(prepared[spec], variants, settings, store, command,
                                         lambda label, phase: say(spec, label, f"repeat {k}: {phase}"),
                                         resolved, measure.run)
                if not allow_load:
                    _refuse_loaded(store, run_ids, since, spec)
                counts["repeated"] += 1
    finally:
        settings.repeat = 0
        measure.close()
    return counts
