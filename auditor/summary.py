"""Run rows from the store as plain dicts (for JSON/CSV) and as terminal tables."""

from __future__ import annotations

import math
from pathlib import Path

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


def model_label(source: str | None, model_hash: str | None = None) -> str:
    """A model as people name it: its file name (with a factory's :name) or its zoo spec."""
    if not source:
        return model_hash or "—"
    if source.startswith("zoo:"):
        return source
    return Path(source).name


def run_summary(store: Store, run: RunRecord) -> dict:
    summary = {k: getattr(run, k) for k in SUMMARY_KEYS}
    model = store.model_record(run.model_hash)
    summary["model"] = model_label(model.source if model else None, run.model_hash)
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
    summary["rt_safety"] = rt.to_dict() if rt is not None else None  # quoted by the verdict
    summary["predicted"] = store.prediction(run.run_id)  # the cost model's forecast, when one was made
    summary["uncontended"] = uncontended(run.settings)
    return summary


def uncontended(settings: dict) -> dict | None:
    """A gated run's statistics over its uncontended blocks alone (auditor.timing), or None."""
    quiet = (settings.get("conditions") or {}).get("quiet")
    if not quiet:
        return None
    return {k: quiet.get(k) for k in ("n", "share", "p50_us", "p99_us", "max_us", "probe_floor_us")}


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


def _status(s: dict) -> str:
    return s["status"] + (" [emulated]" if s["emulated"] else "") + (
        " [converted]" if s["converted"] else "") + (
        " [stateful]" if s.get("model_state", {}).get("kind") == "internal" else "") + (
        " [streamed]" if s.get("stream_state") else "")


def _deadline(s: dict) -> str:
    if not s["verdict"]:
        return "—"
    if s["emulated"]:
        return "not judged (emulated)"  # never a deadline verdict on emulated timings
    if s["over_budget_share"] is not None:
        return f"{s['verdict']} ({100 * s['over_budget_share']:.1f}% over)"
    return s["verdict"]


def _compact_deadline(s: dict) -> str:
    if not s["verdict"]:
        return "—"
    if s["emulated"]:
        return "emulated"  # never a deadline verdict on emulated timings
    if s["over_budget_share"] is not None and s["verdict"] != "meets":
        return f"{s['verdict']} {100 * s['over_budget_share']:.1f}%"
    return s["verdict"]


def _grid(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Columns two spaces apart, numbers right-aligned, no padding beyond the widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def table(summaries: list[dict], wide: bool = False, width: int = 100, model: bool = False) -> str:
    """The runs as a terminal table. By default it fits `width` columns: long reasons (and
    model names) are shortened with an ellipsis (`results show RUN` has them in full);
    wide=True shows every column and the whole reason. model=True adds each run's model."""
    if wide:
        return _wide_table(summaries, model)
    headers = ["variant", "status", "p50 µs", "p99 µs", "max µs", "deadline", "max|err|", "MiB", "RT", "run"]
    rows, reasons = [], []
    for s in summaries:
        rows.append([s["variant"], _status(s), _num(s["p50_us"]), _num(s["p99_us"]), _num(s["max_us"]),
                     _compact_deadline(s), _num(s["max_abs_err"], "{:.2g}"),
                     _num(s["rss_peak_bytes"] and s["rss_peak_bytes"] / 2**20, "{:.0f}"),
                     {True: "safe", False: "no"}.get(s.get("rt_safe"), "—"), s["run_id"]])
        reasons.append(s["reason"] if s["status"] != "ok" and s["reason"] else "")
    if model:
        headers.insert(0, "model")
        for row, s in zip(rows, summaries):
            row.insert(0, s.get("model") or "")
    col = headers.index("status")
    right = {i for i, h in enumerate(headers) if "µs" in h or h in ("max|err|", "MiB")}
    room = width - max(len(line) for line in _grid(headers, rows, right))
    if room < 0 and model:  # the model's name gives way first
        longest = max(len(r[0]) for r in rows)
        for row in rows:
            row[0] = _cut(row[0], max(longest + room, 8))
        room = width - max(len(line) for line in _grid(headers, rows, right))
    status_w = max((len(r[col]) for r in rows), default=0)
    if room > 0 and any(reasons):
        for row, reason in zip(rows, reasons):
            if reason:
                row[col] = _cut(f"{row[col]}: {reason}", status_w + room)
    return "\n".join(_grid(headers, rows, right))


def _uncontended(u: dict | None) -> str:
    if not u:
        return "—"
    if not u["n"]:
        return "none (contended)"
    return f"{u['p50_us']:.1f} / {u['p99_us']:.1f} ({100 * u['share']:.0f}%)"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _wide_table(summaries: list[dict], model: bool = False) -> str:
    headers = ["variant", "status", "p50 µs", "p99 µs", "max µs", "jitter µs", "CoV",
               "uncontended p50/p99 µs (share)", "deadline", "max|err|", "SNR dB", "RSS MiB", "per-op sum/whole", "RT safe", "run"]
    if model:
        headers.insert(0, "model")
    rows = []
    for s in summaries:
        deadline = _deadline(s)
        per_op = (f"{s['per_op_sum_to_whole']:.2f} ({s['per_op_method']})"
                  if s["per_op_sum_to_whole"] is not None else "—")
        status = _status(s)
        if s["status"] not in ("ok",) and s["reason"]:
            status += f": {s['reason']}"
        rows.append(([s.get("model") or ""] if model else []) + [
            s["variant"], status, _num(s["p50_us"]), _num(s["p99_us"]), _num(s["max_us"]),
            _num(s["jitter_us"]), _num(s["cov"], "{:.3f}"), _uncontended(s.get("uncontended")), deadline,
            _num(s["max_abs_err"], "{:.2g}"), _num(s["snr_db"]),
            _num(s["rss_peak_bytes"] and s["rss_peak_bytes"] / 2**20), per_op, s.get("rt_short") or "—",
            s["run_id"],
        ])
    # the cells are formatted here: tabulate must not re-read "5.0" as a number and print "5"
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
