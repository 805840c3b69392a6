"""Plugin models for CLI/runner tests, loaded as 'plugin_models:build' (tests/ is put on PYTHONPATH)."""

import time

import torch

from bench.contract import SCALAR, SymmetryContract


class TinyConv(torch.nn.Module):
    symmetry = SymmetryContract("trivial", {"out": SCALAR})

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def build(in_channels: int, num_classes: int, **kw) -> torch.nn.Module:
    return TinyConv(in_channels)


def slow(in_channels: int, num_classes: int, **kw) -> torch.nn.Module:
    """Slow to build, so a sweep of them can be killed part-way."""
    time.sleep(0.4)
    return TinyConv(in_channels)


def broken(in_channels: int, num_classes: int, **kw) -> torch.nn.Module:
    raise RuntimeError("this model always fails to build")
