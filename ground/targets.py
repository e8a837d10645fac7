"""What code is generated for: the host and the board, by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """What code is generated for. `host` is this machine; the board is ARMv7 Cortex-A8."""

    name: str
    triple: str
    cpu: str | None = None
    features: tuple[str, ...] = ()
    float_abi: str | None = None
    cxx: str = "g++"  # the C++ compiler that builds native code for this target
    cxx_flags: tuple[str, ...] = ()
    cxx_package: str = "g++"  # the Debian package that provides it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_host(self) -> bool:
        return self.name == "host"


TARGETS: dict[str, Target] = {
    "host": Target(name="host", triple="x86_64-linux-gnu"),
    "armv7-cortex-a8": Target(
        name="armv7-cortex-a8",
        triple="armv7a-linux-gnueabihf",
        cpu="cortex-a8",
        features=("+neon",),
        float_abi="hard",
        cxx="arm-linux-gnueabihf-g++",
        cxx_flags=("-mcpu=cortex-a8", "-mfpu=neon", "-mfloat-abi=hard"),
        cxx_package="g++-arm-linux-gnueabihf",
    ),
}
