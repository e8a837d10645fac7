"""`auditor fit`: a cost model from measured datasets (Parquet files and/or the store)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from auditor.commands.options import COMPILERS, RESULTS_DIR, absolute, variant_label
from ground.errors import AuditorError


def _rows(datasets: list[Path], results_dir: Path) -> tuple[list[dict], list[str]]:
    from cost_model.records import read_parquet

    if datasets:
        return read_parquet([str(p) for p in datasets]), [p.name for p in datasets]
    from auditor import dataset as ds
    from store import Store

    if not (results_dir / Store.FILE).exists():
        raise AuditorError(f"nothing to fit from: no --dataset FILE and no store in {results_dir}")
    store = Store(results_dir)
    try:
        names = ds.info(store)["datasets"]
        rows = [r for name in names for r in ds.dataset_rows(store, name)]
    finally:
        store.close()
    if not rows:
        raise AuditorError(f"nothing to fit from: the store in {results_dir} holds no dataset runs")
    return rows, [f"store:{results_dir}/{n}" for n in names]


def coverage_tally(results_dir: Path, lenient: bool = False):
    """The store's operator-coverage verdicts as a known-failures tally (empty without a
    store). lenient (predict): opened read-only, and a store this auditor cannot read adds
    nothing instead of stopping the command."""
    from cost_model.known_failures import KnownFailures, from_coverage
    from store import Store

    if not (results_dir / Store.FILE).exists():
        return KnownFailures()
    try:
        store = Store.read_only(results_dir) if lenient else Store(results_dir)
    except AuditorError:
        if lenient:
            return KnownFailures()
        raise
    try:
        return from_coverage(store.coverage_verdict_counts(), f"coverage:store:{results_dir}")
    finally:
        store.close()


def fit(
    datasets: list[Path] = typer.Option([], "--dataset", help="dataset file (Parquet), repeatable; "
                                        "default: every dataset in the results store"),
    device: str = typer.Option(None, "--device", help="fit for this device's runs only; a device the "
                               "shipped model does not describe is adapted from it (the prior)"),
    prior: Path = typer.Option(None, "--prior", callback=absolute, help="adapt this cost-model file "
                               "instead of fitting from scratch"),
    compilers: list[str] = COMPILERS,
    output: Path = typer.Option(None, "--output", callback=absolute,
                                help="model file (default: RESULTS_DIR/cost-models/DEVICE.json)"),
    results_dir: Path = RESULTS_DIR,
) -> None:
    """Fit the cost model that `auditor predict` uses (no model is run: only stored measurements)."""
    from cost_model import fit as fitting
    from cost_model import known_failures, locate, modelfile
    from cost_model.records import read_rows
    from cost_model.training import prepare

    datasets = [absolute(p) for p in datasets]
    rows, sources = _rows(datasets, results_dir)
    if device:
        rows = [r for r in rows if (r.get("device") or "local") == device]
    if compilers:
        wanted = {variant_label(c) for c in compilers}
        rows = [r for r in rows if r["variant"] in wanted or r["compiler"] in wanted]
    graphs, measured = read_rows(rows)
    # failed and mismatched rows are not training data, but they are what `predict` warns of
    failures = known_failures.combine(coverage_tally(results_dir),
                                      known_failures.from_rows(rows, "datasets:" + ",".join(sources)))
    if not measured:
        raise AuditorError("no usable runs to fit on (status ok, not emulated" +
                           (f", device {device}" if device else "") + ")")
    device = device or measured[0].device
    prep = prepare(graphs, measured)
    prior_path = prior
    if prior_path is None and locate.shipped_path(device) != locate.shipped_path("local") \
            and not locate.shipped_path(device).exists():
        prior_path = locate.shipped_path("local")
    if prior_path is not None:
        base = modelfile.load(prior_path)
        model = fitting.adapt(prep, measured, base, prior_path.name, sources)
        how = f"adapted from {prior_path.name} ({base.cpu})"
    else:
        model = fitting.fit_cost_model(prep, measured, sources)
        how = "fitted from scratch"
    if not model.variants:
        raise AuditorError("no variant of these runs is in the prior model: nothing to adapt")
    failures.counts = {v: ops for v, ops in failures.counts.items() if v in model.variants}
    model.known_failures = failures
    path = output or locate.fitted_path(results_dir, device)
    modelfile.save(model, path)
    print(f"cost model for device {device} ({model.cpu}), {how}: {len(graphs)} graphs, "
          f"variants {', '.join(sorted(model.variants))}")
    print(f"written to {path}", file=sys.stdout)
