"""The demo's example blocks, small enough for a Bela audio callback.

Usable directly as python factories, e.g. `auditor compile-all examples/blocks.py:mlp`.
"""

import torch
from torch import nn


class MLP(nn.Module):
    """A control-mapping MLP: 16 sensor features -> 8 synthesis parameters."""

    def __init__(self, inputs=16, hidden=64, outputs=8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, outputs),
        )

    def forward(self, x):
        return self.net(x)


class Conv1dBlock(nn.Module):
    """A dilated causal-style 1D conv stack over one 64-sample audio block."""

    def __init__(self, channels=16, kernel=3):
        super().__init__()
        self.inp = nn.Conv1d(1, channels, kernel, padding=1)
        self.dilated = nn.Conv1d(channels, channels, kernel, padding=2, dilation=2)
        self.out = nn.Conv1d(channels, 1, 1)

    def forward(self, x):
        x = torch.relu(self.inp(x))
        x = torch.relu(self.dilated(x))
        return self.out(x)


def mlp():
    return MLP().eval(), (torch.randn(1, 16),)


def conv1d():
    return Conv1dBlock().eval(), (torch.randn(1, 1, 64),)
