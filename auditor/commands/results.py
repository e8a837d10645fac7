"""`auditor results list|show|export`: read the store without measuring anything."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer

from auditor.commands.options import JSON, RESULTS_DIR
from store import Store
from auditor.summary import SUMMARY_KEYS, run_detail, run_summary, table
from ground.errors import AuditorError

app = typer.Typer(no_args_is_help=True, help="Read stored results.")



def _open(results_dir: Path) -> Store:
    if not (results_dir / Store.FILE).exists():
        raise AuditorError(f"no results store in {results_dir} (run `auditor compile-all` first)")
    return Store(results_dir)


def matches(summary: dict, model: str | None, compiler: str | None, status: str | None,
            device: str | None) -> bool:
    """The `results list` filters: model is a substring of the model's name or a prefix of its
    hash; compiler matches the compiler or the variant; status and device match exactly."""
    if model and model not in summary["model"] and not (summary["model_hash"] or "").startswith(model):
        return False
    if compiler and compiler not in (summary["compiler"], summary["variant"]):
        return False
    if status and summary["status"] != status:
        return False
    return not (device and summary["device"] != device)


@app.command("list")
def list_runs(results_dir: Path = RESULTS_DIR, limit: int = typer.Option(50, help="newest N runs"),
              model: str = typer.Option(None, "--model", help="runs of models whose name contains this "
                                        "(or whose hash starts with it)"),
              compiler: str = typer.Option(None, "--compiler", help="runs of this compiler or variant"),
              status: str = typer.Option(None, "--status", help="runs with this status (ok, mismatch, failed, ...)"),
              device: str = typer.Option(None, "--device", help="runs on this device"),
              wide: bool = typer.Option(False, "--wide", help="every column and whole reasons"),
              as_json: bool = JSON) -> None:
    """The newest runs, one line each, with the model each belongs to."""
    store = _open(results_dir)
    summaries = []
    for run in store.run_records():
        s = run_summary(store, run)
        if matches(s, model, compiler, status, device):
            summaries.append(s)
            if len(summaries) >= limit:
                break
    print(json.dumps(summaries, indent=2, default=str) if as_json else table(summaries, wide=wide, model=True))


@app.command("show")
def show(run_id: str = typer.Argument(..., help="run id (a unique prefix is enough)"),
         results_dir: Path = RESULTS_DIR, as_json: bool = JSON) -> None:
    """One run in full: settings, statistics, accuracy, per-op table (--json adds raw samples)."""
    store = _open(results_dir)
    detail = run_detail(store, run_id)
    if as_json:
        print(json.dumps(detail, indent=2, default=str))
        return
    print(f"model {detail['model']} ({detail['model_hash']})")
    print(table([detail], wide=True))
    timing = detail["timing"] or {}
    u = detail["uncontended"]
    gated = f" ({u['n']} in uncontended blocks)" if u else ""
    print(f"\noptions {json.dumps(detail['options'])}; target {detail['target'].get('name')}; "
          f"host {detail['host'].get('cpu_model')}; {len(detail['samples_ns'])} samples stored{gated}; "
          f"timed with runs={timing.get('runs')} warmup={timing.get('warmup')} "
          f"max_seconds={timing.get('max_seconds')}{' gated' if timing.get('gate') else ''}")
    if detail["rt_verdict"]:
        print(f"real-time safety: {detail['rt_verdict']}")
        rt = detail["rt_safety"] or {}
        if rt.get("cold"):
            print(f"  {rt['cold']}")
    if detail["state"]:
        how = detail["model_state"].get("how")
        print(f"model state: {detail['state']}{': ' + how if how and not detail['stream_state'] else ''}; "
              "outputs checked over a sequence of calls from a fresh load")
    if detail["per_op"]:
        a = detail["per_op_attribution"]
        print(f"\nper-op ({a['method']}, {a['runs']} runs): sum of medians {a['per_op_sum_p50_us']:.1f} µs = "
              f"{a['sum_to_whole']:.2f} x uninstrumented median {a['uninstrumented_whole_us']:.1f} µs; "
              f"sum of means {a['per_op_sum_us']:.1f} µs; "
              f"instrumented whole {a['instrumented_whole_us'] or 0:.1f} µs")
        from tabulate import tabulate
        print(tabulate([[o["kernel"], o["op_type"], ", ".join(o["onnx_nodes"]) or "(inserted)", o["calls"],
                         f"{o['mean_us']:.2f}", f"{100 * (o['share'] or 0):.1f}%"] for o in detail["per_op"]],
                       headers=["kernel", "op", "ONNX nodes", "calls", "mean µs", "share"]))


@app.command("export")
def export(results_dir: Path = RESULTS_DIR,
           as_json: bool = typer.Option(False, "--json", help="JSON with every run in full"),
           as_csv: bool = typer.Option(False, "--csv", help="CSV, one summary row per run"),
           output: Path = typer.Option(None, "--output", help="write to this file instead of stdout")) -> None:
    """Every run, as JSON (full detail) or CSV (summaries)."""
    if as_json == as_csv:
        raise AuditorError("choose one of --json or --csv")
    store = _open(results_dir)
    if as_json:
        text = json.dumps([run_detail(store, run.run_id) for run in store.run_records()], indent=2, default=str)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[*SUMMARY_KEYS, "model", "target", "options", "max_abs_err",
                                                 "snr_db", "timing_loop", "timing", "per_op_method",
                                                 "per_op_sum_to_whole", "state", "rt_safe", "rt_verdict",
                                                 "rt_short", "predicted_p50_us", "predicted_p99_us",
                                                 "uncontended_p50_us", "uncontended_p99_us", "uncontended_share"])
        writer.writeheader()
        for run in store.run_records():
            s = run_summary(store, run)
            s.pop("model_state"), s.pop("stream_state")  # in the CSV as the one `state` phrase
            s.pop("rt_safety")  # in the CSV as rt_safe, rt_verdict, rt_short; whole in the JSON
            predicted = s.pop("predicted") or {}  # the cost model's forecast, labelled as predicted
            s["predicted_p50_us"], s["predicted_p99_us"] = predicted.get("p50_us"), predicted.get("p99_us")
            quiet = s.pop("uncontended") or {}  # a gated run's uncontended blocks alone (auditor.timing)
            s.update({f"uncontended_{k}": quiet.get(k) for k in ("p50_us", "p99_us", "share")})
            writer.writerow({**s, "options": json.dumps(s["options"], sort_keys=True),
                             "timing": json.dumps(s["timing"], sort_keys=True)})
        text = buf.getvalue()
    if output:
        output.write_text(text)
    else:
        print(text, end="" if text.endswith("\n") else "\n")
