"""Run rows from the store as plain dicts (for JSON/CSV) and as terminal tables."""

from __future__ import annotations

import math

from tabulate import tabulate

from store import RunRecord, Store
from reports.run_page import describe_state

SUMMARY_KEYS = (
    "run_id", "audit_id", "model_hash", "variant", "compiler", "compiler_version", "device",
    "emulated", "status", "converted", "reason", "n", "mean_us", "p50_us", "p95_us", "p99_us", "max_us",
    "min_us", "std_us", "jitter_us", "cov", "first_us", "budget_us", "over_budget_share",
    "headroom_p99_us", "headroom_max_us", "verdict", "rss_avg_bytes", "rss_peak_bytes",
    "ru_maxrss_bytes", "accuracy_passed", "task_accuracy", "compile_s", "started_at", "finished_at",
)


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run_summary(store: Store, run: RunRecord) -> dict:
    summary = {k: getattr(run, k) for k in SUMMARY_KEYS}
    summary["options"] = run.options
    summary["target"] = run.target.get("name")
    accuracy = store.accuracy_rows(run.run_id)
    errors = [a["max_abs_err"] for a in accuracy if a["max_abs_err"] is not None]
    snrs = [a["snr_db"] for a in accuracy if a["snr_db"] is not None]
    summary["max_abs_err"] = max(errors) if errors else None
    summary["snr_db"] = _finite(min(snrs)) if snrs else None
    summary["timing_loop"] = run.settings.get("timing_loop")
    summary["model_state"] = store.model_state(run.model_hash)
    summary["stream_state"] = run.settings.get("stream_state") or []
    summary["state"] = describe_state(summary["model_state"], summary["stream_state"])
    summary["timing"] = run.settings.get("timing")  # the counts it was timed with
    attribution = store.attribution_of(run.run_id)
    summary["per_op_method"] = attribution["method"] if attribution else None
    summary["per_op_sum_to_whole"] = attribution["sum_to_whole"] if attribution else None
    rt, rt_failure = store.rt_safety(run.run_id)
    summary["rt_safe"] = None if rt is None else not rt.violations()
    summary["rt_verdict"] = rt.verdict if rt is not None else (f"no audit: {rt_failure}" if rt_failure else None)
    summary["rt_short"] = rt.short if rt is not None else ("audit failed" if rt_failure else None)
    return summary


def run_detail(store: Store, run_id: str) -> dict:
    run = store.run_record(run_id)
    detail = run_summary(store, run)
    detail["host"] = run.host
    detail["settings"] = run.settings
    detail["target"] = run.target
    detail["runtime_memory"] = run.runtime_memory
    detail["load_s"] = run.load_s
    detail["artifact_notes"] = run.artifact_notes
    detail["samples_ns"] = store.samples_ns(run.run_id)
    detail["memory_samples"] = [list(m) for m in store.memory_samples(run.run_id)]
    detail["accuracy"] = [{**r, "snr_db": _finite(r["snr_db"])} for r in store.accuracy_rows(run.run_id)]
    attribution = store.attribution(run.run_id)
    detail["per_op_attribution"] = dict(attribution) if attribution else None
    rt, rt_failure = store.rt_safety(run.run_id)
    detail["rt_safety"] = rt.to_dict() if rt is not None else ({"failure": rt_failure} if rt_failure else None)
    detail["per_op"] = [op.to_dict() for op in store.op_timings(run.run_id)]
    return detail


def _num(value, fmt="{:.1f}"):
    return "—" if value is None else fmt.format(value)


def table(summaries: list[dict]) -> str:
    headers = ["variant", "status", "p50 µs", "p99 µs", "max µs", "jitter µs", "CoV",
               "deadline", "max|err|", "SNR dB", "RSS MiB", "per-op sum/whole", "RT safe", "run"]
    rows = []
    for s in summaries:
        deadline = (f"{s['verdict']} ({100 * s['over_budget_share']:.1f}% over)" if s["over_budget_share"] is not None
                    else s["verdict"]) if s["verdict"] else "—"
        per_op = (f"{s['per_op_sum_to_whole']:.2f} ({s['per_op_method']})"
                  if s["per_op_sum_to_whole"] is not None else "—")
        status = s["status"] + (" [emulated]" if s["emulated"] else "") + (
            " [converted]" if s["converted"] else "") + (
            " [stateful]" if s.get("model_state", {}).get("kind") == "internal" else "") + (
            " [streamed]" if s.get("stream_state") else "")
        if s["status"] not in ("ok",) and s["reason"]:
            status += f": {s['reason'][:70]}"
        rows.append([
            s["variant"], status, _num(s["p50_us"]), _num(s["p99_us"]), _num(s["max_us"]),
            _num(s["jitter_us"]), _num(s["cov"], "{:.3f}"), deadline,
            _num(s["max_abs_err"], "{:.2g}"), _num(s["snr_db"]),
            _num(s["rss_peak_bytes"] and s["rss_peak_bytes"] / 2**20), per_op, s.get("rt_short") or "—",
            s["run_id"],
        ])
    return tabulate(rows, headers=headers, tablefmt="simple")
