"""Parsing the compiler variants a command was asked to run (shared by compile-all and dataset)."""

from __future__ import annotations

from compilers import registry
from ground.errors import AuditorError


def parse_compiler_specs(values: list[str]) -> list[registry.Variant]:
    """`-c onnxruntime:graph_opt=basic,threads=2 -c torch-eager`, or `-c a,b` for bare names."""
    if not values:
        return registry.default_variants()
    specs: list[str] = []
    for value in values:
        specs.extend(value.split(",") if ":" not in value else [value])
    variants = []
    for spec in filter(None, (s.strip() for s in specs)):
        try:
            variants.append(registry.parse_variant(spec))
        except ValueError as e:
            raise AuditorError(f"--compilers {spec!r}: {e}")
    return variants
