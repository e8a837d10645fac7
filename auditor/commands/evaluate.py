"""`auditor evaluate`: leave-one-family-out accuracy of the cost model, per compiler variant."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import typer

from auditor.commands.fit import _rows
from auditor.commands.options import COMPILERS, JSON, RESULTS_DIR, absolute, variant_label
from ground.errors import AuditorError
from reports.evaluation import EXPORT, table_rows

TARGETS = "targets (issue 15): p50 within ±10% for >=90% (ORT, TVM) / >=80% (others); p99 within ±20% " \
          "for >=80%; predicted best = measured best >=90%, median regret <=5%; 90% intervals cover 85-95%"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def evaluate(
    datasets: list[Path] = typer.Option([], "--dataset", help="dataset file (Parquet), repeatable; "
                                        "default: every dataset in the results store; single-operator and "
                                        "single-layer graphs (zoo ops, layer) train every fold, never scored"),
    compilers: list[str] = COMPILERS,
    families: bool = typer.Option(False, "--families", help="print every family's row too"),
    export: Path = typer.Option(None, "--export", callback=absolute,
                                help="write PREFIX.json and PREFIX.csv (default: RESULTS_DIR/cost-model-eval)"),
    as_json: bool = JSON,
    results_dir: Path = RESULTS_DIR,
) -> None:
    """Leave one zoo family out at a time: fit on the rest, predict it, compare with the measurement."""
    from tabulate import tabulate

    from cost_model import evaluation
    from cost_model.records import read_rows
    from cost_model.training import prepare

    rows, sources = _rows([absolute(p) for p in datasets], results_dir)
    graphs, measured = read_rows(rows)
    prep = prepare(graphs, measured)
    wanted = [variant_label(c) for c in compilers] or None
    if wanted and (missing := [w for w in wanted if w not in prep.by_variant]):
        raise AuditorError(f"no runs of {missing[0]} in the data (variants: {', '.join(prep.variants)})")
    if len({g.family for g in graphs.values()}) < 2:
        raise AuditorError("leave-one-family-out needs graphs of at least two families")
    report = evaluation.evaluate(prep, wanted)
    report["sources"] = sources
    prefix = export or results_dir / Path(EXPORT).stem  # where the reports look for it
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.json").write_text(json.dumps(report, indent=1))
    flat = table_rows(report)
    with open(f"{prefix}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in flat for k in r)))  # rows differ
        writer.writeheader()
        writer.writerows(flat)
    if as_json:
        print(json.dumps({k: v for k, v in report.items() if k != "held"}, indent=1))
        return
    shown = [r for r in flat if families or r["family"] == "all"]
    print(tabulate([[r["variant"], r["family"], r["graphs"], _pct(r.get("p50_within_10")),
                     _pct(r.get("p50_within_20")), _pct(r.get("p50_within_10_or_spread")),
                     _pct(r.get("p50_ceiling_10")),
                     _pct(r.get("p50_mape")), _pct(r.get("p50_interval90_coverage")),
                     _pct(r.get("p99_within_20")), _pct(r.get("p99_within_20_or_spread")), _pct(r.get("p99_mape")),
                     _pct(r.get("p99_interval90_coverage"))] for r in shown],
                   headers=["variant", "family", "graphs", "p50 ±10%", "p50 ±20%", "±10%|spread", "noise ±10%", "p50 MAPE",
                            "p50 cover90", "p99 ±20%", "±20%|spread", "p99 MAPE", "p99 cover90"]))
    rk = report["ranking"]
    if rk.get("graphs"):
        print(f"\nranking over {rk['graphs']} graphs ({', '.join(rk['variants'])}): predicted best = measured "
              f"best {_pct(rk['best_hit'])}, median regret {100 * rk['median_regret']:.1f}%, "
              f"90th percentile regret {100 * rk['p90_regret']:.1f}%")
    print("\nnoise ±10%: share of single-process p50s within ±10% of their point's median over fresh "
          "processes (the repeated points): the most any model can score against labels measured once")
    print(f"\n{TARGETS}")
    print(f"(predicted = leave-one-family-out predictions, measured = the dataset's runs; "
          f"written {prefix}.json and {prefix}.csv)")
