"""Devices (local now; ssh and qemu-armv7 to come), the native runner, perf capture."""
