"""`auditor predict`: per compiler variant, how fast and how safe a model would be on a
device, from the cost model alone. Nothing is compiled or run.

Kept light on purpose: for an .onnx input neither torch nor any runtime is imported (the
whole command must start and answer in well under a second).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ground.errors import AuditorError, first_line

DEFAULT_RESULTS = Path("auditor-results")


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else Path(path).expanduser().absolute()


def _onnx_graph(spec: str, input_shapes: list[str], arg_specs: list[str]):
    """A user's ONNX file, checked, its dynamic dimensions and number inputs given as
    compile-all takes them (--input-shape, --arg), shape-inferred and uniquely named; never
    run. Returns the graph and the number inputs' values (what If conditions may read)."""
    import onnx

    from auditor.inputs import build_inputs
    from auditor.loaders import load_model
    from cost_model.graph import ensure_unique_node_names

    loaded = load_model(spec)
    inputs = build_inputs(loaded, input_shapes, None, None, arg_specs)
    model = loaded.onnx_model
    given = {s.name: s.shape for s in inputs.specs}
    for vi in model.graph.input:  # pin what the user (or the file) fixed
        shape = given.get(vi.name)
        if shape is None or not vi.type.tensor_type.HasField("shape"):
            continue
        for dim, value in zip(vi.type.tensor_type.shape.dim, shape):
            dim.dim_value = int(value)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    ensure_unique_node_names(model)
    return model, inputs.numbers


def _graph(spec: str, input_shapes: list[str], arg_specs: list[str], results_dir: Path, trust_pickle: bool):
    path = Path(spec)
    if path.suffix.lower() == ".onnx" and not spec.startswith("zoo:"):
        return _onnx_graph(spec, input_shapes, arg_specs)
    # other forms: load and export to the canonical ONNX graph exactly as compile-all does
    # (torch.export traces the module; no compiler runtime runs it)
    from auditor.export import canonical_graph
    from auditor.inputs import build_inputs
    from auditor.loaders import load_model

    model = load_model(spec, trust_pickle=trust_pickle)
    inputs = build_inputs(model, input_shapes, None, None, arg_specs)
    return canonical_graph(model, inputs, results_dir), inputs.numbers


def predict(
    model: str = typer.Argument(..., help="the model: .onnx, .pt2, TorchScript .pt, file.py:factory, .tflite "
                                "or zoo:FAMILY[:k=v,...]"),
    compilers: list[str] = typer.Option([], "--compilers", "-c", help="compiler variant, repeatable "
                                        "(default: every variant the cost model knows)"),
    device: str = typer.Option("local", "--device", help="the device whose fitted cost model to use"),
    cost_model: Path = typer.Option(None, "--cost-model", callback=_absolute,
                                    help="a cost-model file (default: the one fitted or shipped for --device)"),
    block_size: int = typer.Option(16, "--block-size", min=1, help="audio block size (frames)"),
    sample_rate: float = typer.Option(44100.0, "--sample-rate", min=1.0, help="sample rate (Hz)"),
    deadline_us: float = typer.Option(None, "--deadline-us", min=0.0,
                                      help="the deadline in µs (instead of block size / sample rate)"),
    input_shapes: list[str] = typer.Option([], "--input-shape", help="[name=]d0,d1,... for inputs of "
                                           "unknown or dynamic shape"),
    arg_specs: list[str] = typer.Option([], "--arg", help="name=value of a number input (e.g. sr=16000): "
                                        "decides the If branches it selects"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="allow unpickling a plain torch.save'd module"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    results_dir: Path = typer.Option(DEFAULT_RESULTS, "--results-dir", "-o", callback=_absolute,
                                     help="results directory (fitted cost models live in cost-models/)"),
) -> None:
    """Predict each compiler's latency (p50, p99), deadline risk and memory without running the model."""
    from auditor.commands.fit import coverage_tally
    from auditor.commands.options import variant_label
    from cost_model import locate, modelfile
    from cost_model.prediction import predict_graph, recommend

    path = cost_model or locate.find(results_dir, device)
    if path is None:
        raise AuditorError(
            f"no cost model fitted for device {device!r}: measure the adaptation sweep there "
            f"(auditor dataset build --spec datasets/sweeps/adapt.json --device {device}) and run "
            f"`auditor fit --device {device}`")
    cost = modelfile.load(path)
    if cost_model is None and cost.device != device:
        raise AuditorError(f"{path}: describes device {cost.device!r}, not {device!r}")
    cost.known_failures = cost.known_failures.with_coverage(coverage_tally(results_dir, lenient=True))
    variants = None
    if compilers:
        variants = []
        for c in compilers:
            label = variant_label(c)
            if label not in cost.variants:
                raise AuditorError(f"the cost model for {cost.device} has no variant {label!r} "
                                   f"(it has: {', '.join(sorted(cost.variants))})")
            variants.append(label)
    deadline = deadline_us if deadline_us is not None else block_size / sample_rate * 1e6
    graph, numbers = _graph(model, input_shapes, arg_specs, results_dir, trust_pickle)
    preds = predict_graph(graph, cost, deadline, variants, numbers)
    advice = recommend(preds, deadline)
    about = {"device": cost.device, "cpu": cost.cpu, "cost_model": str(path), "trained_on": cost.sources,
             "prior": cost.prior, "deadline_us": deadline, "nodes": len(graph.graph.node)}
    if as_json:
        print(json.dumps({"model": model, **about, "label": "predicted, not measured",
                          "variants": [p.to_dict() for p in preds], "recommendation": advice}, indent=1))
        return
    from tabulate import tabulate

    print(f"{model}: {len(graph.graph.node)} ONNX nodes — PREDICTED (not measured) for device {cost.device} "
          f"({cost.cpu}), cost model {path.name}")
    rows = []
    for p in preds:
        top = ", ".join(u["ops"] + (f" x{u['count']}" if u["count"] > 1 else "") + f" {100 * u['share']:.0f}%"
                        for u in p.top_units)
        mem = "-" if p.memory_bytes is None else f"{p.memory_bytes / 2**20:.0f} MiB"
        rows.append([p.variant, f"{p.p50_us:.1f} [{p.p50_interval[0]:.1f}-{p.p50_interval[1]:.1f}]",
                     f"{p.p99_us:.1f} [{p.p99_interval[0]:.1f}-{p.p99_interval[1]:.1f}]",
                     f"{100 * p.deadline_probability:.0f}%", mem, top, "low" if p.low_confidence else "ok"])
    print(tabulate(rows, headers=["variant", "p50 µs [90%]", "p99 µs [90%]", f"P(p99<={deadline:.0f}µs)",
                                  "memory", "top operators (p50 share)", "confidence"]))
    for p in preds:
        for flag in p.flags:
            print(f"  {p.variant}: {flag}")
    print(advice)


def beside_measurement(bundle, summaries: list[dict], device: str, budget_us: float, results_dir: Path,
                       store=None, data_dir: Path | None = None) -> list[str]:
    """compile-all's check of the cost model: predicted vs measured p50/p99 per variant that
    both have (lines to print; none when no cost model describes this device); with a store,
    each prediction is kept with its run (summaries, reports)."""
    from cost_model import locate, modelfile
    from cost_model.prediction import predict_graph

    path = locate.find(results_dir, device)
    if path is None or "onnx" not in bundle.files:
        return []
    try:
        cost = modelfile.load(path)
        import onnx

        graph = onnx.load(str(bundle.path("onnx")))
        wanted = [s["variant"] for s in summaries if s["variant"] in cost.variants and s["status"] == "ok"
                  and not s["emulated"]]
        numbers = {}
        if data_dir is not None and (data_dir / "inputs.npz").is_file():  # the audit's own inputs
            from auditor.inputs import InputSet

            numbers = InputSet.load(data_dir / "inputs.npz", bundle.inputs, "audit").numbers
        preds = {p.variant: p for p in predict_graph(graph, cost, budget_us, wanted, numbers)} if wanted else {}
    except AuditorError as e:
        return [f"cost model {path.name} not used: {e}"]
    rows, gated = [], False
    for s in summaries:
        p = preds.get(s["variant"])
        if p is None:
            continue
        # the model learns from uncontended samples (cost_model.records): compare with those
        measured = s.get("uncontended") if (s.get("uncontended") or {}).get("n") else s
        gated = gated or measured is not s
        if store is not None:
            store.record_prediction(s["run_id"], {
                "model_file": str(path), "cpu": cost.cpu, "p50_us": p.p50_us, "p50_lo": p.p50_interval[0],
                "p50_hi": p.p50_interval[1], "p99_us": p.p99_us, "p99_lo": p.p99_interval[0],
                "p99_hi": p.p99_interval[1], "low_confidence": p.low_confidence, "flags": p.flags})
            s["predicted"] = store.prediction(s["run_id"])
        rows.append([s["variant"] + (" [low confidence]" if p.low_confidence else ""),
                     f"{p.p50_us:.1f}", f"{measured['p50_us']:.1f}", f"{100 * (p.p50_us / measured['p50_us'] - 1):+.0f}%",
                     f"{p.p99_us:.1f}", f"{measured['p99_us']:.1f}",
                     f"{100 * (p.p99_us / measured['p99_us'] - 1):+.0f}%"])
    if not rows:
        return []
    from tabulate import tabulate

    # a table of its own, so it fits the 100-column terminal like the measurement table
    return [f"PREDICTED by {path.name} ({cost.cpu[:40]}) beside MEASURED{' (uncontended)' if gated else ''}:",
            *tabulate(rows, headers=["variant", "pred p50 µs", "p50 µs", "err", "pred p99 µs", "p99 µs", "err"],
                      tablefmt="simple", disable_numparse=True).splitlines()]
