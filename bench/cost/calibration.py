"""Models with known costs, for the tests and for `python -m bench.cost.memprobe --calibrate`.

They follow the model conventions (factory signature, a symmetry contract) so they run through the same code
paths as zoo models (``create_model('bench.cost.calibration:alloc_model', ...)``).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.contract import SCALAR, SymmetryContract

MIB = 2**20


class ConvLayer(nn.Module):
    """One plain 'same'-padded Conv2d (no bias) following the layer conventions: known FLOPs 2·HW·C_in·C_out·k²."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding="same", bias=False)
        self.symmetry = SymmetryContract("trivial", {"out": SCALAR})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AllocModel(nn.Module):
    """A 1×1 conv whose forward also materialises a float32 buffer of exactly `mb` MiB (kept alive until return)."""

    def __init__(self, in_channels: int, mb: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 1)
        self.numel = int(mb * MIB) // 4
        self.symmetry = SymmetryContract("trivial", {"out": SCALAR})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        buf = torch.ones(self.numel, dtype=torch.float32, device=x.device)  # written -> resident
        return self.conv(x) + buf[:1].sum() * 0


class OOMModel(nn.Module):
    """Raises `torch.OutOfMemoryError` in forward when the input is larger than `max_side` (simulated OOM)."""

    def __init__(self, in_channels: int, max_side: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size, padding="same")
        self.max_side = max_side
        self.symmetry = SymmetryContract("trivial", {"out": SCALAR})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > self.max_side:
            raise torch.OutOfMemoryError(f"simulated: CUDA out of memory at side {x.shape[-1]}")
        return self.conv(x)


def conv_layer(in_channels: int = 16, num_classes: int = 10, kernel_size: int = 3,
               channels: int | None = None) -> nn.Module:
    """`channels` = output channels (default: in_channels), as the zoo's layer factories take it."""
    return ConvLayer(in_channels, channels or in_channels, kernel_size)


def alloc_model(in_channels: int = 1, num_classes: int = 10, mb: float = 200.0) -> nn.Module:
    return AllocModel(in_channels, mb)


def oom_model(in_channels: int = 1, num_classes: int = 10, max_side: int = 64, kernel_size: int = 3,
              channels: int | None = None) -> nn.Module:
    return OOMModel(in_channels, max_side, kernel_size)
