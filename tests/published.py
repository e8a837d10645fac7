"""Published models that ship inside PyPI wheels, fetched at test time and cached.

`published_model("basic-pitch", "0.4.0", "basic_pitch/.../nmp.onnx")` downloads the wheel
once (`pip download --no-deps --only-binary=:all:`) into ~/.cache/auditor/published/ and
extracts the one file. When the registry cannot be reached the test is skipped, saying so;
any other pip failure fails the test.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CACHE = Path.home() / ".cache" / "auditor" / "published"
_UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                "Network is unreachable", "ProxyError", "ConnectTimeout", "ReadTimeout",
                "Could not fetch URL", "No matching distribution found")

# name -> (PyPI project, version, member of its wheel)
MODELS = {
    # Spotify's Basic Pitch: converted from TF by tf2onnx (opset 15, input serving_default_input_2:0,
    # NHWC-style layout, reflect Pads); the same network as a .tflite
    "basic-pitch-nmp.onnx": ("basic-pitch", "0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx"),
    "basic-pitch-nmp.tflite": ("basic-pitch", "0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.tflite"),
    # openWakeWord: a wake-word classifier exported from PyTorch, and the TF-converted
    # speech embedding model (NHWC input) it runs on
    "hey_mycroft.onnx": ("openwakeword", "0.5.1", "openwakeword/resources/models/hey_mycroft_v0.1.onnx"),
    "embedding_model.onnx": ("openwakeword", "0.5.1", "openwakeword/resources/models/embedding_model.onnx"),
    "embedding_model.tflite": ("openwakeword", "0.5.1", "openwakeword/resources/models/embedding_model.tflite"),
    "melspectrogram.onnx": ("openwakeword", "0.5.1", "openwakeword/resources/models/melspectrogram.onnx"),
    # Silero VAD: a streaming voice-activity model as TorchScript that keeps its state inside
    # (forward(x, sr: int)), and as ONNX with explicit state in/out, an int64 sr and If
    "silero_vad.jit": ("silero-vad", "6.2.3", "silero_vad/data/silero_vad.jit"),
    "silero_vad.onnx": ("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx"),
}


def _wheel(project: str, version: str) -> Path:
    stem = project.replace("-", "_")
    found = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--timeout", "30",
         "--retries", "1", "-d", str(CACHE), f"{project}=={version}"],
        capture_output=True, text=True, timeout=600)
    found = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
    if proc.returncode == 0 and found:
        return found[0]
    text = proc.stdout + proc.stderr
    last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), f"exit {proc.returncode}")
    if any(marker in text for marker in _UNREACHABLE):
        pytest.skip(f"the package registry is unreachable: pip download {project}=={version}: {last.strip()}")
    pytest.fail(f"pip download {project}=={version} failed: {last.strip()}")


def published_model(name: str) -> Path:
    """The model file `name` of MODELS, from its cached wheel."""
    project, version, member = MODELS[name]
    target = CACHE / f"{project}-{version}" / Path(member).name
    if not target.exists():
        with zipfile.ZipFile(_wheel(project, version)) as whl:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(target.suffix + ".part")
            partial.write_bytes(whl.read(member))
            partial.rename(target)
    return target
