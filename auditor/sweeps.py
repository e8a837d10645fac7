"""Sweep specs: small JSON files naming zoo families, parameter grids or seeded samples.

    {"name": "host-v1", "compilers": ["onnxruntime", "torch-eager"],
     "timing": {"runs": 200, "warmup": 20, "max_seconds": 2.0, "profile_runs": 20},
     "families": [
        {"family": "mlp", "grid": {"depth": [1, 2], "width": [16, 64]}, "fixed": {"activation": "relu"}},
        {"family": "linear", "random": 40, "seed": 1, "fixed": {"batch": 1}}]}

A grid is the cartesian product of its lists; `random: N` draws N instances from the
parameters' ranges (seeded, duplicates dropped), or from narrower ones given as
`"ranges": {"rows": [1, 64]}` (a family whose parameters mean different things per op
needs them); `fixed` applies to both.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor import zoo
from ground.errors import AuditorError, first_line

TIMING_KEYS = {"runs", "min_runs", "warmup", "max_seconds", "profile_runs", "converge", "gate"}
SPREAD_KEYS = {"share", "repeats", "seed"}


@dataclass
class Sweep:
    name: str
    compilers: list[str]
    timing: dict[str, Any]
    points: list[str]  # zoo specs, in build order, unique
    description: str = ""
    source: str = ""
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (spec, why) never measured
    # run-to-run spread: {"share": 0.1, "repeats": 3, "seed": 0} (dataset build --quiet)
    spread: dict[str, Any] = field(default_factory=dict)


def _grid_points(fam: zoo.Family, grid: dict[str, list], fixed: dict[str, Any]) -> list[dict]:
    keys = list(grid)
    return [{**fixed, **dict(zip(keys, combo))} for combo in itertools.product(*(grid[k] for k in keys))]


def _random_points(fam: zoo.Family, count: int, seed: int, fixed: dict[str, Any],
                   ranges: dict[str, list]) -> list[dict]:
    params = dict(fam.params)
    for name, bounds in ranges.items():
        p = params.get(name)
        if p is None or p.low is None or not (isinstance(bounds, list) and len(bounds) == 2):
            raise AuditorError(f"sweep ranges: {fam.name}'s {name!r} is not a numeric parameter given as [low, high]")
        if not (p.low <= bounds[0] <= bounds[1] <= p.high):
            raise AuditorError(f"sweep ranges: {name} {bounds} is not within {fam.name}'s {p.low:g}..{p.high:g}")
        params[name] = dataclasses.replace(p, low=bounds[0], high=bounds[1])
    rng = random.Random(seed)
    return [{**{k: p.sample(rng) for k, p in params.items() if k not in fixed}, **fixed}
            for _ in range(count)]


def load_sweep(path: Path) -> Sweep:
    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AuditorError(f"sweep spec {path}: no such file")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AuditorError(f"sweep spec {path}: not valid JSON ({first_line(e)})")
    if not isinstance(spec, dict) or "families" not in spec:
        raise AuditorError(f"sweep spec {path}: needs a 'families' list")
    timing = spec.get("timing", {})
    if set(timing) - TIMING_KEYS:
        raise AuditorError(f"sweep spec {path}: unknown timing keys {sorted(set(timing) - TIMING_KEYS)}")
    if timing.get("min_runs", 0) > timing.get("runs", 200):
        raise AuditorError(f"sweep spec {path}: timing min_runs {timing['min_runs']} is more than runs "
                           f"{timing.get('runs', 200)}")
    spread = spec.get("spread", {})
    if not isinstance(spread, dict) or set(spread) - SPREAD_KEYS:
        raise AuditorError(f"sweep spec {path}: 'spread' takes {sorted(SPREAD_KEYS)}")
    points: list[str] = []
    rejected: list[tuple[str, str]] = []
    for entry in spec["families"]:
        fam = zoo.family(entry.get("family", "?"))
        fixed = entry.get("fixed", {})
        raw = _grid_points(fam, entry["grid"], fixed) if "grid" in entry else \
            _random_points(fam, int(entry.get("random", 0)), int(entry.get("seed", 0)), fixed,
                           entry.get("ranges", {}))
        for params in raw:
            try:
                resolved = fam.resolve(params)
            except AuditorError as e:
                rejected.append((zoo.spec_string(fam.name, params), str(e)))
                continue
            s = zoo.spec_string(fam.name, resolved)
            if s not in points:
                points.append(s)
    return Sweep(name=spec.get("name", Path(path).stem), compilers=spec.get("compilers", []),
                 timing=timing, points=points, description=spec.get("description", ""),
                 source=str(path), rejected=rejected, spread=spread)


def round_robin(points: list[str], count: int) -> list[str]:
    """The first `count` points taken a family at a time in turn (each family's points in spec
    order), so a partial build covers every family; a larger count keeps a smaller one's points,
    so building 300 now and 634 later measures only the rest."""
    by_family: dict[str, list[str]] = {}
    for p in points:
        by_family.setdefault(p.split(":")[1], []).append(p)
    queues = list(by_family.values())
    picked: list[str] = []
    depth = 0
    while len(picked) < min(count, len(points)):
        for q in queues:
            if depth < len(q) and len(picked) < count:
                picked.append(q[depth])
        depth += 1
    return picked

