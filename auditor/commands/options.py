"""CLI options shared by several verbs, declared once.

User paths are made absolute here, at the entry: children (workers, converters, CMake,
compilers) run in directories of their own, where a relative path would point elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import typer


def absolute(path: Path | None) -> Path | None:
    """The path as the user meant it from where they typed it (no symlinks resolved)."""
    return None if path is None else Path(path).expanduser().absolute()


RESULTS_DIR = typer.Option(Path("auditor-results"), "--results-dir", "-o", callback=absolute,
                           help="results directory (store, models, runs, reports)")
INPUT_SHAPE = typer.Option([], "--input-shape",
                           help="[name=]d0,d1,... (repeatable; name:d0,d1 also works, split at the last ':')")
ARG = typer.Option([], "--arg", help="name=value of a number argument (forward(x, sr: int)) "
                   "or a 0-d ONNX input (repeatable)")
TRUST_PICKLE = typer.Option(False, "--trust-pickle", help="allow unpickling a plain torch.save'd module")
COMPILERS = typer.Option([], "--compilers", "-c",
                         help="compiler variant, repeatable: NAME or NAME:key=value,... "
                         "(default: every compiler's variants, or a sweep spec's)")
DEVICE = typer.Option("local", "--device",
                      help="where to measure: local, qemu-armv7 (emulated), ssh://user@host[:port]")
TIMEOUT = typer.Option(600.0, "--timeout", help="seconds one compiler variant may take")
JSON = typer.Option(False, "--json", help="print the result as JSON")


def variant_label(spec: str) -> str:
    """A -c spec as the store labels its runs, parsed as compile-all parses it (typed values:
    `litert:xnnpack=false` is `litert[xnnpack=False]`); a spec that does not parse (another
    install's compiler or option) is taken as written."""
    from compilers import registry
    from cost_model import locate

    try:
        return registry.parse_variant(spec).label
    except ValueError:
        return locate.variant_label(spec)
