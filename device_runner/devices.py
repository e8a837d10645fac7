"""Every kind of device by the spec that names it, and parsing a `--device` spec.

A spec is a word (`local`, `qemu-armv7`) or a scheme and an address (`ssh://user@host`).
"""

from __future__ import annotations

import importlib

from device_runner.device import Device, DeviceError

# spec word or scheme -> "module:Class"; modules are imported lazily, so the ssh library
# loads only for an ssh:// device and a missing one breaks no other kind.
DEVICES: dict[str, str] = {
    "local": "device_runner.local:LocalDevice",
    "qemu-armv7": "device_runner.qemu:QemuArmv7Device",
    "qemu-arm": "device_runner.qemu:QemuArmv7Device",  # the emulator's own name
    "ssh://": "device_runner.ssh_device:SshDevice",
}


def kind(spec: str) -> str:
    """The DEVICES key a spec is looked up by: its scheme (`ssh://`) or the whole word."""
    scheme, sep, _address = spec.strip().partition("://")
    return f"{scheme}{sep}" if sep else spec.strip()


def device_class(key: str) -> type[Device]:
    module, cls = DEVICES[key].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:  # a library only this kind of device needs
        raise DeviceError(f"{key} devices need the Python package {e.name!r}, which is not installed "
                          f"(pip install {e.name})") from None


def usage() -> str:
    """`local, qemu-armv7 or ssh://user@host[:port]`, from the table."""
    seen = list(dict.fromkeys(DEVICES.values()))  # one name per class, aliases left out
    words = [next(k for k, v in DEVICES.items() if v == target) for target in seen]
    words = [k + "user@host[:port]" if k.endswith("://") else k for k in words]
    return f"{', '.join(words[:-1])} or {words[-1]}"


def parse_device(spec: str) -> Device:
    """A spec -> its Device (not yet connected); DeviceError naming the kinds for an unknown one."""
    key = kind(spec)
    if key not in DEVICES:
        raise DeviceError(f"unknown device {spec!r}: use {usage()}")
    return device_class(key).from_spec(spec)
