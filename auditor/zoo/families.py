"""The block families of the proposal, as parameterised PyTorch modules.

Each builder takes its parameters and returns (module.eval(), example_inputs). Weights
come from torch's seeded initialisation (the zoo seeds before building), and any
randomness a block needs (sampling noise) is an input, so every run is deterministic.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU,
    "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus, "hardtanh": nn.Hardtanh,
}


def _sparsify(layer: nn.Module, sparsity: float, structure: str) -> None:
    """Zero a share of the weights: single entries (unstructured) or whole output rows."""
    if sparsity <= 0:
        return
    w = layer.weight.data
    gen = torch.Generator().manual_seed(1)
    if structure == "structured":
        rows = torch.rand(w.shape[0], generator=gen) < sparsity
        w[rows] = 0.0
    else:
        w[torch.rand(w.shape, generator=gen) < sparsity] = 0.0


class Linear(nn.Module):
    def __init__(self, in_features, out_features, bias, sparsity, sparsity_structure):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=bias)
        _sparsify(self.fc, sparsity, sparsity_structure)

    def forward(self, x):
        return self.fc(x)


def linear(in_features=64, out_features=64, batch=1, bias=True, sparsity=0.0, sparsity_structure="unstructured"):
    return Linear(in_features, out_features, bias, sparsity, sparsity_structure), (torch.randn(batch, in_features),)


class Conv1dStack(nn.Module):
    def __init__(self, in_channels, channels, layers, kernel, stride, dilation, groups, causal,
                 transposed, activation):
        super().__init__()
        blocks = []
        c_in = in_channels
        for i in range(layers):
            g = groups if (c_in % groups == 0 and channels % groups == 0) else 1
            if transposed:
                conv = nn.ConvTranspose1d(c_in, channels, kernel, stride=stride, groups=g,
                                          padding=(kernel - stride + 1) // 2 if kernel >= stride else 0)
                blocks += [conv]
            else:
                pad = (kernel - 1) * dilation
                conv = nn.Conv1d(c_in, channels, kernel, stride=stride, dilation=dilation, groups=g,
                                 padding=0 if causal else pad // 2)
                blocks += ([nn.ConstantPad1d((pad, 0), 0.0)] if causal else []) + [conv]
            blocks.append(ACTIVATIONS[activation]())
            c_in = channels
        self.net = nn.Sequential(*blocks)

    def forward(self, x):
        return self.net(x)


def conv1d(in_channels=1, channels=16, layers=2, kernel=3, stride=1, dilation=1, groups=1, causal=False,
           transposed=False, activation="relu", length=64):
    module = Conv1dStack(in_channels, channels, layers, kernel, stride, dilation, groups, causal,
                         transposed, activation)
    return module, (torch.randn(1, in_channels, length),)


class Recurrent(nn.Module):
    """Whole-sequence form (state starts at zero) or the streaming single step a real-time
    callback runs (one frame, state in, state out)."""

    def __init__(self, cell, input_size, hidden, layers, streaming):
        super().__init__()
        kind = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = kind(input_size, hidden, num_layers=layers, batch_first=True)
        self.cell = cell
        self.streaming = streaming

    def forward(self, x, *state):
        if not self.streaming:
            out, _ = self.rnn(x)
            return out
        if self.cell == "lstm":
            out, (h, c) = self.rnn(x, (state[0], state[1]))
            return out, h, c
        out, h = self.rnn(x, state[0])
        return out, h


def recurrent(cell="gru", input_size=8, hidden=32, layers=1, seq_len=16, streaming=False):
    module = Recurrent(cell, input_size, hidden, layers, streaming)
    if not streaming:
        return module, (torch.randn(1, seq_len, input_size),)
    state = [torch.zeros(layers, 1, hidden)] * (2 if cell == "lstm" else 1)
    return module, (torch.randn(1, 1, input_size), *[s.clone() for s in state])


def mlp(in_features=16, width=64, depth=2, out_features=8, activation="relu"):
    layers = []
    size = in_features
    for _ in range(depth):
        layers += [nn.Linear(size, width), ACTIVATIONS[activation]()]
        size = width
    layers.append(nn.Linear(size, out_features))
    return nn.Sequential(*layers), (torch.randn(1, in_features),)


class TransformerBlock(nn.Module):
    def __init__(self, d_model, heads, ff, norm):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))
        self.norm_kind = norm
        if norm == "layer":
            self.n1, self.n2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        else:
            self.n1, self.n2 = nn.BatchNorm1d(d_model), nn.BatchNorm1d(d_model)

    def _norm(self, layer, x):
        if self.norm_kind == "layer":
            return layer(x)
        return layer(x.transpose(1, 2)).transpose(1, 2)  # BatchNorm1d wants (N, C, L)

    def forward(self, x):
        a, _ = self.attn(x, x, x, need_weights=False)
        x = self._norm(self.n1, x + a)
        return self._norm(self.n2, x + self.ff(x))


def transformer(d_model=32, heads=2, ff=64, seq_len=16, norm="layer"):
    module = TransformerBlock(d_model, heads, ff, norm)
    if norm == "batch":  # give the running statistics non-trivial values
        for bn in (module.n1, module.n2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return module, (torch.randn(1, seq_len, d_model),)


class MixtureDensityHead(nn.Module):
    def __init__(self, in_features, mixtures, out_dims):
        super().__init__()
        self.mixtures, self.out_dims = mixtures, out_dims
        self.proj = nn.Linear(in_features, mixtures * (1 + 2 * out_dims))

    def forward(self, h):
        p = self.proj(h)
        logits, mu, log_sigma = torch.split(
            p, [self.mixtures, self.mixtures * self.out_dims, self.mixtures * self.out_dims], dim=-1)
        pi = torch.softmax(logits, dim=-1)
        sigma = torch.exp(log_sigma).reshape(-1, self.mixtures, self.out_dims)
        mu = mu.reshape(-1, self.mixtures, self.out_dims)
        mean = torch.sum(pi.unsqueeze(-1) * mu, dim=1)  # mixture mean: a reduction
        return pi, mu, sigma, mean


def mdn(in_features=32, mixtures=5, out_dims=2):
    return MixtureDensityHead(in_features, mixtures, out_dims), (torch.randn(1, in_features),)


class ReparamKL(nn.Module):
    """z = mu + exp(logvar / 2) * noise, and KL(N(mu, var) || N(0, 1)) summed over dims.
    The encoder producing mu/logvar is a linear layer; noise is an input."""

    def __init__(self, in_features, latent):
        super().__init__()
        self.enc = nn.Linear(in_features, 2 * latent)
        self.latent = latent

    def forward(self, x, noise):
        mu, logvar = torch.chunk(self.enc(x), 2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * noise
        kl = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar), dim=-1)
        return z, kl


def reparam_kl(in_features=32, latent=8):
    return ReparamKL(in_features, latent), (torch.randn(1, in_features), torch.randn(1, latent))


class GestureClassifier(nn.Module):
    """Sensor gestures: a window of IMU channels -> conv features -> GRU -> class scores."""

    def __init__(self, channels, hidden, classes):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(channels, hidden, 5, padding=2), nn.ReLU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):  # x: (1, channels, window)
        f = self.conv(x).transpose(1, 2)
        out, _ = self.gru(f)
        return torch.softmax(self.head(out[:, -1]), dim=-1)


def gesture_classifier(channels=6, window=32, hidden=32, classes=8):
    return GestureClassifier(channels, hidden, classes), (torch.randn(1, channels, window),)


class AudioDecoder(nn.Module):
    """Neural synthesis: a latent frame -> upsampling transposed convs -> one audio block."""

    def __init__(self, latent, channels, upsample_layers):
        super().__init__()
        self.channels = channels
        self.fc = nn.Linear(latent, channels * 4)
        ups = []
        for i in range(upsample_layers):
            c_out = 1 if i == upsample_layers - 1 else channels
            ups += [nn.ConvTranspose1d(channels, c_out, 4, stride=2, padding=1)]
            ups += [nn.Tanh() if i == upsample_layers - 1 else nn.LeakyReLU(0.2)]
        self.up = nn.Sequential(*ups)

    def forward(self, z):
        return self.up(self.fc(z).reshape(1, self.channels, 4))


def audio_decoder(latent=16, channels=16, upsample_layers=4):
    return AudioDecoder(latent, channels, upsample_layers), (torch.randn(1, latent),)


class SensorAutoencoder(nn.Module):
    """Dimensionality reduction of sensor data: encoder to a bottleneck and back."""

    def __init__(self, features, bottleneck, width):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, bottleneck))
        self.dec = nn.Sequential(nn.Linear(bottleneck, width), nn.ReLU(), nn.Linear(width, features))

    def forward(self, x):
        code = self.enc(x)
        return self.dec(code), code


def sensor_autoencoder(features=24, bottleneck=3, width=32):
    return SensorAutoencoder(features, bottleneck, width), (torch.randn(1, features),)


# The operators between layers, one per graph: what blocks spend outside their matmuls and
# convolutions (data movement, normalisation, elementwise) and the attention-shaped batched
# matmul no other family has alone. Kernel-level training data for the cost model, sampled
# the way nn-Meter samples kernels; not a block anyone deploys, so never scored as one.
UNARY = {
    "exp": torch.exp, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": nn.functional.gelu,
    "softmax": lambda x: torch.softmax(x, dim=-1), "reduce_sum": lambda x: torch.sum(x, dim=-1),
    "transpose": lambda x: x.transpose(1, 2), "reshape": lambda x: x.reshape(1, x.shape[2], x.shape[1]),
    "slice": lambda x: x[:, :, : max(1, x.shape[2] // 2)], "gather": lambda x: x[:, -1],
    "split": lambda x: torch.chunk(x, 2, dim=-1),
}
BINARY = {"add": torch.add, "mul": torch.mul, "sub": torch.sub, "concat": lambda x, y: torch.cat([x, y], dim=-1),
          "matmul": torch.matmul}
OPS = tuple(UNARY) + ("layernorm", "batchnorm") + tuple(BINARY)


class SingleOp(nn.Module):
    def __init__(self, op, rows, cols):
        super().__init__()
        self.op = op
        if op == "layernorm":
            self.norm = nn.LayerNorm(cols)
        elif op == "batchnorm":
            self.norm = nn.BatchNorm1d(rows)
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x, *y):
        if self.op in ("layernorm", "batchnorm"):
            return self.norm(x)
        if self.op in BINARY:
            return BINARY[self.op](x, y[0])
        return UNARY[self.op](x)


def ops(op="softmax", rows=16, cols=64, heads=1):
    """x: (1, rows, cols); a binary op's second input the same shape, matmul's (heads, cols, rows)
    against x as (heads, rows, cols): attention's scores."""
    module = SingleOp(op, rows, cols)
    if op == "matmul":
        return module, (torch.randn(heads, rows, cols), torch.randn(heads, cols, rows))
    x = torch.randn(1, rows, cols)
    return module, ((x, torch.randn(1, rows, cols)) if op in BINARY else (x,))


# One heavy layer alone (Gemm, Conv, ConvTranspose, GRU, LSTM) over shapes: the heavy
# kernels' kernel-level training data, as the ops family is for the operators between them.
# Without it a held-out single-layer family takes every example of its kernel out of
# training (leave linear out: no Gemm alone is left).
LAYERS = ("gemm", "conv", "conv_transpose", "gru", "lstm")


class SingleLayer(nn.Module):
    def __init__(self, op, inputs, outputs, kernel, stride, dilation, groups):
        super().__init__()
        if op in ("conv", "conv_transpose") and (inputs % groups or outputs % groups):
            raise ValueError(f"groups={groups} must divide inputs={inputs} and outputs={outputs}")
        if op == "gemm":
            self.layer = nn.Linear(inputs, outputs)
        elif op == "conv":  # the conv1d family's non-causal padding
            self.layer = nn.Conv1d(inputs, outputs, kernel, stride=stride, dilation=dilation, groups=groups,
                                   padding=(kernel - 1) * dilation // 2)
        elif op == "conv_transpose":  # and its transposed padding
            self.layer = nn.ConvTranspose1d(inputs, outputs, kernel, stride=stride, groups=groups,
                                            padding=(kernel - stride + 1) // 2 if kernel >= stride else 0)
        else:
            self.layer = {"gru": nn.GRU, "lstm": nn.LSTM}[op](inputs, outputs, batch_first=True)
        self.recurrent = op in ("gru", "lstm")

    def forward(self, x):
        return self.layer(x)[0] if self.recurrent else self.layer(x)


def layer(op="gemm", rows=1, inputs=64, outputs=64, kernel=3, stride=1, dilation=1, groups=1):
    """gemm: x (rows, inputs); conv, conv_transpose: x (1, inputs, rows samples); gru, lstm:
    x (1, rows steps, inputs), hidden size = outputs."""
    module = SingleLayer(op, inputs, outputs, kernel, stride, dilation, groups)
    shape = {"gemm": (rows, inputs), "gru": (1, rows, inputs), "lstm": (1, rows, inputs)}.get(op, (1, inputs, rows))
    return module, (torch.randn(*shape),)
