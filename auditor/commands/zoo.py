"""`auditor zoo list|export`: the block families and their exportable instances."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import typer
from tabulate import tabulate

from auditor import zoo
from auditor.export import prepare_bundle, write_reference
from auditor.inputs import build_inputs
from auditor.loaders import load_model
from store import Store
from auditor.commands.options import RESULTS_DIR

app = typer.Typer(no_args_is_help=True, help="The block zoo: parameterised families of real-time blocks.")


def _handled_by(results_dir: Path, spec: str) -> dict[str, str]:
    """Latest status per compiler variant for one zoo instance, from a store if there is one."""
    if not (results_dir / Store.FILE).exists():
        return {}
    store = Store(results_dir)
    try:
        return store.latest_status_by_variant(spec)
    finally:
        store.close()


@app.command("list")
def list_families(results_dir: Path = RESULTS_DIR,
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Each family, its parameters (range or choices, default), and which compilers handle its default."""
    out = []
    for fam in zoo.FAMILIES.values():
        default_spec = zoo.spec_string(fam.name, fam.resolve({}))
        out.append({
            "family": fam.name, "description": fam.description, "default": default_spec,
            "params": {k: {"default": p.default, "range": p.describe(), "help": p.help} for k, p in fam.params.items()},
            "default_instance_results": _handled_by(results_dir, default_spec),
        })
    if as_json:
        print(json.dumps(out, indent=2))
        return
    for f in out:
        handled = f["default_instance_results"]
        verdict = ", ".join(f"{v}: {s}" for v, s in handled.items()) or "not measured yet"
        print(f"{f['family']}: {f['description']}\n  default instance: {verdict}")
        print(tabulate([[k, p["default"], p["range"], p["help"]] for k, p in f["params"].items()],
                       headers=["parameter", "default", "range", "meaning"], tablefmt="plain")
              .replace("\n", "\n    ").join(["    ", ""]) + "\n")


@app.command("export")
def export(family: str = typer.Argument(..., help="family name (see `auditor zoo list`)"),
           param: list[str] = typer.Option([], "--param", "-p", help="key=value (repeatable)"),
           out_dir: Path = typer.Option(Path("."), "-o", "--out", help="folder to write into")) -> None:
    """Write one instance as .pt2 (torch.export), canonical .onnx, seeded inputs and reference outputs."""
    fam = zoo.family(family)
    params = zoo.parse_params(fam, param)
    spec = zoo.spec_string(fam.name, params)
    model = load_model(spec)
    inputs = build_inputs(model, [])
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = prepare_bundle(model, inputs, Path(tmp))
        data = write_reference(model, inputs, bundle)
        stem = f"{fam.name}-{zoo.identity(fam.name, params)[:8]}"
        written = []
        for fmt, suffix in (("torch-export", ".pt2"), ("onnx", ".onnx")):
            if fmt in bundle.files:
                shutil.copyfile(bundle.path(fmt), out_dir / f"{stem}{suffix}")
                written.append(out_dir / f"{stem}{suffix}")
        for name in ("inputs.npz", "reference.npz"):
            shutil.copyfile(data / name, out_dir / f"{stem}.{name}")
            written.append(out_dir / f"{stem}.{name}")
        (out_dir / f"{stem}.json").write_text(json.dumps(
            {"spec": spec, "family": fam.name, "params": params, "zoo_version": zoo.ZOO_VERSION,
             "inputs": [s.to_dict() for s in bundle.inputs], "outputs": [s.to_dict() for s in bundle.outputs],
             "problems": bundle.problems}, indent=2))
        written.append(out_dir / f"{stem}.json")
    print(f"{spec}\n" + "\n".join(f"  wrote {p}" for p in written))
