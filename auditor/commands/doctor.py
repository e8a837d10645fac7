"""`auditor doctor`: what this machine has: Python, torch, every compiler, perf, CPU."""

from __future__ import annotations

import json

from tabulate import tabulate

from auditor.commands.options import JSON
from auditor.convert import CONVERTERS
from compilers import registry
from device_runner import perf
from device_runner.build import rtsan_probe
from ground.host import host_facts, package_version


# What the native runner and each device kind need on this machine.
DEVICE_TOOLS = (
    ("cmake", "cmake", "building the native runner"),
    ("ninja", "ninja-build", "faster runner builds (optional)"),
    ("g++", "g++", "the runner and SOFIE on local"),
    ("arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf", "ARMv7 runners (qemu-armv7, a Bela over ssh)"),
    ("qemu-arm", "qemu-user", "--device qemu-armv7 (emulated timings)"),
)
# Python packages a device kind needs (the ssh device speaks SSH through paramiko).
DEVICE_PACKAGES = (("paramiko", "--device ssh://user@host[:port]"),)


def device_tools() -> list[dict]:
    import shutil

    return [{"tool": t, "install": f"apt-get install {pkg}", "for": why, "found": shutil.which(t) is not None}
            for t, pkg, why in DEVICE_TOOLS] + [
        {"tool": f"{dist} (Python)", "install": f"pip install {dist}", "for": why,
         "found": package_version(dist) is not None} for dist, why in DEVICE_PACKAGES]


def doctor(as_json: bool = JSON) -> None:
    """Versions and availability of everything auditor uses, with how to add what is missing."""
    host = host_facts()
    compilers = []
    for name in registry.names():
        cls = registry.get(name)
        ok, detail = cls.available()
        compilers.append({"compiler": name, "available": ok, "version": detail if ok else None,
                          "reason": None if ok else detail, "install": None if ok else cls.install_hint,
                          "per_op": cls.per_op_method, "accepts": list(cls.accepts)})
    converters = [{"converter": name, "version": package_version(name), "for": what}
                  for name, what in CONVERTERS.items()]
    facts = {"host": host, "torch": package_version("torch"), "onnx": package_version("onnx"),
             "compilers": compilers, "converters": converters, "perf": perf.probe(), "devices": device_tools(),
             "rtsan": rtsan_probe()}
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    print(f"python {host['python']}  torch {facts['torch']}  onnx {facts['onnx']}")
    print(f"cpu {host['cpu_model']} ({host['cores']} cores, {host['machine']}), kernel {host['kernel']}")
    print(f"cpu flags: {' '.join(host['cpu_flags']) or 'unknown'}\n")
    print(tabulate([[c["compiler"], "yes" if c["available"] else "NO", c["version"] or c["reason"],
                     c["per_op"] or "—", ", ".join(c["accepts"]), c["install"] or ""] for c in compilers],
                   headers=["compiler", "installed", "version / reason", "per-op timings", "takes", "to add"]))
    print("\nconverters (their graphs are labelled converted):")
    for c in converters:
        print(f"  {c['converter']:<24} {c['version'] or 'NO':<8} {c['for']}")
    print("\nnative runner and devices:")
    for d in facts["devices"]:
        print(f"  {d['tool']:<24} {'yes' if d['found'] else 'NO'}  {d['for']}"
              + ("" if d["found"] else f"  ({d['install']})"))
    r = facts["rtsan"]
    print("\nRealtimeSanitizer (second opinion on the runner's rt audit): "
          + (f"yes, {r['compiler']} (clang {r['version']}): {r['how']}" if r["available"] else f"NO: {r['how']}"))
    p = facts["perf"]
    print(f"\nperf: {p['version'] or 'unavailable'} (perf_event_paranoid={p['paranoid']}); {p['record']}")
    if p["events"]:
        print("perf stat events: " + ", ".join(f"{e} {s}" for e, s in p["events"].items()))
