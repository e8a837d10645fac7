"""The block zoo: parameterised families, their parameter ranges, and `zoo:` model specs.

`zoo:mlp:depth=3,activation=gelu` names one instance anywhere a model path is taken
(`compile-all`, `zoo export`, sweep specs). Unset parameters take their defaults; the
instance's identity is the family, the zoo version and every resolved parameter.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from typing import Any, Callable

from ground.errors import AuditorError

ZOO_VERSION = 1  # bump when a family's graph changes, so stored points are not mixed up


@dataclass(frozen=True)
class Param:
    default: Any
    help: str
    choices: tuple | None = None  # categorical
    low: float | None = None  # numeric range (inclusive)
    high: float | None = None
    log: bool = False  # sample on a log scale (sizes)

    def parse(self, name: str, text: str) -> Any:
        kind = type(self.default)
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                value: Any = text.lower() in ("true", "1")
            else:
                value = kind(text)
        except ValueError:
            raise AuditorError(f"parameter {name}={text!r} is not a {kind.__name__}") from None
        self.check(name, value)
        return value

    def check(self, name: str, value: Any) -> None:
        if self.choices is not None and value not in self.choices:
            raise AuditorError(f"parameter {name}={value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.low is not None and not (self.low <= value <= self.high):
            raise AuditorError(f"parameter {name}={value!r} is outside {self.low}..{self.high}")

    def sample(self, rng: random.Random) -> Any:
        if self.choices is not None:
            return rng.choice(self.choices)
        if isinstance(self.default, int):
            if self.log:
                return int(round(2 ** rng.uniform(math.log2(self.low), math.log2(self.high))))
            return rng.randint(int(self.low), int(self.high))
        return round(rng.uniform(self.low, self.high), 3)

    def describe(self) -> str:
        if self.choices is not None:
            return "|".join(map(str, self.choices))
        return f"{self.low:g}..{self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    build: Callable[..., tuple]
    params: dict[str, Param]

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise AuditorError(f"zoo family {self.name} has no parameter {unknown[0]!r} "
                               f"(parameters: {', '.join(self.params)})")
        resolved = {k: p.default for k, p in self.params.items()}
        for k, v in given.items():
            self.params[k].check(k, v)
            resolved[k] = v
        return resolved


# families.ACTIVATIONS maps each of these to its torch module (tests/test_zoo.py checks)
ACT = ("relu", "tanh", "sigmoid", "gelu", "silu", "elu", "leaky_relu", "softplus", "hardtanh")


def _builder(name: str) -> Callable[..., tuple]:
    """The family's model builder, imported on first use: expanding or checking a spec (the
    CLI, `dataset build`'s orchestrator) needs no torch (~2 s to import), building a model does."""
    def build(**params):
        from auditor.zoo import families

        return getattr(families, name)(**params)
    build.__name__ = name
    return build


BOOL = (False, True)
# families.OPS, the ops family's operators (tests/test_zoo.py checks the two lists agree)
OPS = ("exp", "tanh", "sigmoid", "gelu", "softmax", "reduce_sum", "transpose", "reshape", "slice", "gather",
       "split", "layernorm", "batchnorm", "add", "mul", "sub", "concat", "matmul")
# families.LAYERS, the layer family's heavy layers (tests/test_zoo.py checks the two lists agree)
LAYERS = ("gemm", "conv", "conv_transpose", "gru", "lstm")

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("linear", "matrix-vector product (one linear layer), optional weight sparsity", _builder("linear"), {
        "in_features": Param(64, "input size", low=8, high=2048, log=True),
        "out_features": Param(64, "output size", low=8, high=2048, log=True),
        "batch": Param(1, "rows (1 = matrix-vector)", low=1, high=16),
        "bias": Param(True, "with bias", choices=BOOL),
        "sparsity": Param(0.0, "share of weights zeroed", low=0.0, high=0.95),
        "sparsity_structure": Param("unstructured", "zero single weights or whole rows",
                                    choices=("unstructured", "structured")),
    }),
    Family("conv1d", "1D convolution stack: groups (depthwise), dilation, causal padding, transposed",
           _builder("conv1d"), {
        "in_channels": Param(1, "input channels", low=1, high=64, log=True),
        "channels": Param(16, "channels per layer", low=2, high=128, log=True),
        "layers": Param(2, "conv layers", low=1, high=6),
        "kernel": Param(3, "kernel size", low=1, high=15),
        "stride": Param(1, "stride (transposed: upsampling factor)", low=1, high=4),
        "dilation": Param(1, "dilation", low=1, high=8),
        "groups": Param(1, "groups (= channels: depthwise)", choices=(1, 2, 4, 8, 16)),
        "causal": Param(False, "left padding only (streaming audio)", choices=BOOL),
        "transposed": Param(False, "transposed (upsampling) convolutions", choices=BOOL),
        "activation": Param("relu", "activation", choices=ACT),
        "length": Param(64, "samples per block", low=16, high=1024, log=True),
    }),
    Family("recurrent", "LSTM/GRU over a sequence, or the streaming single step (state in, state out)",
           _builder("recurrent"), {
        "cell": Param("gru", "cell type", choices=("lstm", "gru")),
        "input_size": Param(8, "features per step", low=1, high=64, log=True),
        "hidden": Param(32, "hidden size", low=4, high=256, log=True),
        "layers": Param(1, "stacked layers", low=1, high=3),
        "seq_len": Param(16, "steps per call (whole-sequence form)", low=1, high=128, log=True),
        "streaming": Param(False, "one step per call with explicit state", choices=BOOL),
    }),
    Family("mlp", "multi-layer perceptron with a choice of activation", _builder("mlp"), {
        "in_features": Param(16, "inputs", low=2, high=512, log=True),
        "width": Param(64, "hidden width", low=4, high=1024, log=True),
        "depth": Param(2, "hidden layers", low=1, high=8),
        "out_features": Param(8, "outputs", low=1, high=256, log=True),
        "activation": Param("relu", "activation", choices=ACT),
    }),
    Family("transformer", "transformer encoder block: attention + feed-forward, layer or batch norm",
           _builder("transformer"), {
        "d_model": Param(32, "model width", choices=(16, 32, 64, 128)),
        "heads": Param(2, "attention heads", choices=(1, 2, 4, 8)),
        "ff": Param(64, "feed-forward width", low=16, high=512, log=True),
        "seq_len": Param(16, "sequence length (the same block is measured at several)", low=1, high=128, log=True),
        "norm": Param("layer", "normalisation", choices=("layer", "batch")),
    }),
    Family("mdn", "mixture-density head: softmax, exp, split, reshape and a reduction", _builder("mdn"), {
        "in_features": Param(32, "inputs", low=4, high=512, log=True),
        "mixtures": Param(5, "mixture components", low=1, high=32),
        "out_dims": Param(2, "output dimensions", low=1, high=16),
    }),
    Family("reparam_kl", "reparameterised sampling and KL divergence of a diagonal normal (noise is an input)",
           _builder("reparam_kl"), {
        "in_features": Param(32, "inputs", low=4, high=512, log=True),
        "latent": Param(8, "latent dimensions", low=1, high=128, log=True),
    }),
    Family("gesture_classifier", "sensor gesture classifier: conv features -> GRU -> softmax",
           _builder("gesture_classifier"), {
        "channels": Param(6, "sensor channels", low=1, high=32),
        "window": Param(32, "samples per window", low=8, high=256, log=True),
        "hidden": Param(32, "feature/hidden size", low=8, high=128, log=True),
        "classes": Param(8, "gesture classes", low=2, high=32),
    }),
    Family("audio_decoder", "neural audio synthesis decoder: latent -> transposed-conv upsampling -> audio",
           _builder("audio_decoder"), {
        "latent": Param(16, "latent size", low=2, high=128, log=True),
        "channels": Param(16, "channels", low=2, high=64, log=True),
        "upsample_layers": Param(4, "x2 upsampling stages (block = 4 * 2^n samples)", low=1, high=6),
    }),
    Family("sensor_autoencoder", "autoencoder for dimensionality reduction of sensor data",
           _builder("sensor_autoencoder"), {
        "features": Param(24, "sensor features", low=2, high=256, log=True),
        "bottleneck": Param(3, "code size", low=1, high=32),
        "width": Param(32, "hidden width", low=4, high=512, log=True),
    }),
    Family("ops", "one operator between layers (data movement, normalisation, elementwise, attention's "
           "batched matmul): kernel-level training data for the cost model, not a block", _builder("ops"), {
        "op": Param("softmax", "the operator", choices=OPS),
        "rows": Param(16, "rows (sequence steps, channels)", low=1, high=256, log=True),
        "cols": Param(64, "columns (features)", low=4, high=1024, log=True),
        "heads": Param(1, "matmul only: batch of (rows x cols) @ (cols x rows)", low=1, high=8),
    }),
    Family("layer", "one heavy layer alone (Gemm, 1D convolution, transposed convolution, GRU, LSTM): "
           "kernel-level training data for the cost model, not a block", _builder("layer"), {
        "op": Param("gemm", "the layer", choices=LAYERS),
        "rows": Param(1, "gemm: rows (batch); conv: samples; gru/lstm: steps", low=1, high=1024, log=True),
        "inputs": Param(64, "input features / channels", low=1, high=2048, log=True),
        "outputs": Param(64, "output features / channels / hidden size", low=1, high=2048, log=True),
        "kernel": Param(3, "conv only: kernel size", low=1, high=15),
        "stride": Param(1, "conv only: stride (transposed: upsampling factor)", low=1, high=4),
        "dilation": Param(1, "conv only: dilation", low=1, high=8),
        "groups": Param(1, "conv only: groups (must divide inputs and outputs)", choices=(1, 2, 4, 8, 16)),
    }),
]}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise AuditorError(f"no zoo family {name!r} (families: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def parse_params(fam: Family, items: list[str]) -> dict[str, Any]:
    given = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise AuditorError(f"zoo parameter {item!r}: expected key=value")
        if key not in fam.params:
            raise AuditorError(f"zoo family {fam.name} has no parameter {key!r} (parameters: {', '.join(fam.params)})")
        given[key] = fam.params[key].parse(key, value)
    return fam.resolve(given)


def spec_string(name: str, params: dict[str, Any]) -> str:
    return f"zoo:{name}:" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))


def parse_spec(spec: str) -> tuple[Family, dict[str, Any]]:
    """'zoo:mlp:depth=3,width=32' -> (family, resolved params)."""
    _, _, rest = spec.partition(":")
    name, _, params = rest.partition(":")
    fam = family(name)
    return fam, parse_params(fam, [p for p in params.split(",") if p])


def identity(name: str, params: dict[str, Any]) -> str:
    text = json.dumps({"zoo": ZOO_VERSION, "family": name, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build(fam: Family, params: dict[str, Any]):
    import torch

    torch.manual_seed(0)
    try:
        module, args = fam.build(**params)
    except (ValueError, RuntimeError, AssertionError) as e:  # e.g. d_model not divisible by heads
        raise AuditorError(f"zoo {fam.name} with {params} cannot be built: {e}")
    return module.eval(), list(args)
