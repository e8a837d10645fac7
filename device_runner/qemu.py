"""ARMv7 Cortex-A8 under qemu-arm on this machine: the cross path end to end, timings emulated."""

from __future__ import annotations

import shutil

from device_runner.device import DeviceError
from device_runner.local import LocalDevice, run_local

QEMU_CPU = "cortex-a8"


class QemuArmv7Device(LocalDevice):
    """ARMv7 Cortex-A8 under qemu-arm on this machine. Outputs are real; timings are
    emulated and say nothing about the board (17-185x slower here, +-40% noise)."""

    target_name = "armv7-cortex-a8"
    emulated = True

    def __init__(self) -> None:
        super().__init__(spec="qemu-armv7")
        self.qemu = shutil.which("qemu-arm")

    def run(self, argv, timeout_s, cwd=None):
        if self.qemu is None:
            raise DeviceError("qemu-arm not found (apt-get install qemu-user)")
        # Dynamically linked ARM binaries find the armhf loader and libraries through
        # multiarch (libc6:armhf); -L would mix in the cross toolchain's loader instead.
        return run_local([self.qemu, "-cpu", QEMU_CPU, *argv], timeout_s, cwd)

    def run_syscall_traced(self, argv, trace_path, timeout_s, cwd=None):
        if self.qemu is None:
            raise DeviceError("qemu-arm not found (apt-get install qemu-user)")
        # qemu-arm's own log of the guest's system calls (ptrace would see the emulator's).
        done = run_local([self.qemu, "-cpu", QEMU_CPU, "-strace", "-D", trace_path, *argv], timeout_s, cwd)
        return done, ("qemu-arm -strace (the guest's system calls, exact; its lines carry the process "
                      "id, so threads are not told apart: the counts are the whole process's)"), False

    def which(self, tool: str) -> bool:
        return False  # nothing of the host's runs "on" the emulated board but the runner

    def facts(self) -> dict:
        from ground.host import host_facts

        version = ""
        if self.qemu:
            done = run_local([self.qemu, "--version"], 30, None)
            version = done.stdout.splitlines()[0] if done.stdout else ""
        return {"device": self.spec, "emulated": True, "machine": "armv7l",
                "cpu_model": f"qemu-arm -cpu {QEMU_CPU}", "emulator": version,
                "emulator_host": {k: host_facts()[k] for k in ("cpu_model", "machine", "cores")}}
