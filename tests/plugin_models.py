"""Plugin models for CLI/runner tests, loaded as 'plugin_models:build' (tests/ is put on PYTHONPATH)."""

import time

import torch

from bench.contract import INVARIANT, SCALAR, SymmetryContract


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
    """Slow to build (`delay` seconds), so a sweep of them can be killed or raced part-way."""
    time.sleep(float(kw.get("delay", 0.4)))
    return TinyConv(in_channels)


def broken(in_channels: int, num_classes: int, **kw) -> torch.nn.Module:
    raise RuntimeError("this model always fails to build")


class TinyNet(torch.nn.Module):
    """A small classifier (conv, global pool, linear) for sweeps that train."""

    symmetry = SymmetryContract("trivial", {"logits": INVARIANT})

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(-2, -1)))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.forward(x)}


def slow_net(in_channels: int, num_classes: int, **kw) -> torch.nn.Module:
    """A network that takes a while to build (so a job that trains it is slow)."""
    time.sleep(float(kw.get("delay", 1.5)))
    return TinyNet(in_channels, num_classes)
