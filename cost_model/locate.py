"""Where cost-model files live: fitted ones in the results directory, shipped ones as
package data (cost_model/models/<device>.json)."""

from __future__ import annotations

import re
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "models"


def device_slug(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", device).strip("_") or "local"


def fitted_path(results_dir: Path, device: str) -> Path:
    return Path(results_dir) / "cost-models" / f"{device_slug(device)}.json"


def shipped_path(device: str) -> Path:
    return SHIPPED / f"{device_slug(device)}.json"


def find(results_dir: Path, device: str) -> Path | None:
    """The model for a device: one fitted in the results directory first, else a shipped one."""
    for path in (fitted_path(results_dir, device), shipped_path(device)):
        if path.is_file():
            return path
    return None


def variant_label(spec: str) -> str:
    """'name:k=v,k2=v2' (the -c form) -> 'name[k=v,k2=v2]' (the stored variant label)."""
    if "[" in spec or ":" not in spec:
        return spec
    name, _, opts = spec.partition(":")
    return f"{name}[{opts}]"
