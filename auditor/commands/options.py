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
