"""Known-answer models for `bench.check` (tests/test_check*.py); also loadable as CLI plugins
('check_models:iso_strided_net', tests/ is on sys.path in the test run).

Every answer here follows from the construction, independently of bench.diagnose:
- `IsoConv2d`: a Conv2d whose kernel is averaged over the 8 grid symmetries (written here with torch ops), so a
  stride-1 symmetric-padding layer commutes with all of them.
- `iso_strided_net`: IsoConv2d layers and one stride-2 layer `down` (k=3, padding 1): its window grid is centred
  iff the input side n is odd, so the net is exactly D4-invariant at odd n. At even n the grid is shifted by the
  same amount along both axes, so only the transpose survives: exact group D1[transpose].
- `iso_two_strides_net`: two such stride-2 layers: exact iff n and (n+1)/2 are odd, i.e. n = 1 (mod 4).
- `Symmetrized`: a plain CNN averaged over a subgroup's elements: invariant under exactly that subgroup.
- `plain_cnn`: random kernels, exact under nothing; the first conv breaks every element.
- `same_even_net`: 'same' padding with a 2x2 isotropic kernel pads one pixel after, none before, on both axes:
  exact under the transpose only.
- `LeftPadNet`: F.pad(x, (1, 0, 0, 0)) in forward: columns shifted, rows untouched: exact under flip_v only.
- `flatten_net`: isotropic convs, then flatten + linear: not invariant to anything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def grid_images(x: torch.Tensor) -> list[torch.Tensor]:
    """x under the 8 symmetries of the square (identity first), from torch ops only."""
    rots = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
    return rots + [torch.flip(r, (-1,)) for r in rots]


class IsoConv2d(nn.Conv2d):
    """Conv2d with a D4-symmetric kernel: one random value per orbit {(|dy|, |dx|)} of kernel offsets, so the
    8 grid images of the kernel are bit-identical (averaging would leave float32 rounding differences)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        kh, kw = self.weight.shape[-2:]
        table = torch.randn(*self.weight.shape[:2], kh, kw) / (kh * kw) ** 0.5
        with torch.no_grad():
            for y in range(kh):
                for x in range(kw):
                    a, b = sorted((abs(2 * y - (kh - 1)), abs(2 * x - (kw - 1))))
                    self.weight[:, :, y, x] = table[:, :, a // 2, b // 2]


class IsoStridedNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, strides: int = 1, width: int = 6) -> None:
        super().__init__()
        self.stem = IsoConv2d(in_channels, width, 3, padding=1)
        self.down = IsoConv2d(width, width, 3, stride=2, padding=1)
        self.down2 = IsoConv2d(width, width, 3, stride=2, padding=1) if strides > 1 else nn.Identity()
        self.body = nn.Sequential(nn.ReLU(), IsoConv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.down2(self.down(torch.relu(self.stem(x)))))
        return self.head(x.mean(dim=(-2, -1)))


def iso_strided_net(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(1)
    return IsoStridedNet(in_channels, num_classes)


def iso_two_strides_net(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(2)
    return IsoStridedNet(in_channels, num_classes, strides=2)


class PlainCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))


def plain_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(3)
    return PlainCNN(in_channels, num_classes)


PLAIN_INSTANCE = plain_cnn(1, 10)  # for the 'pkg.mod:attr' CLI target form

# subgroup name -> the non-identity elements as torch ops (independent of bench.diagnose.grid)
GROUP_OPS = {
    "C2": [lambda x: torch.rot90(x, 2, (-2, -1))],
    "C4": [lambda x, k=k: torch.rot90(x, k, (-2, -1)) for k in (1, 2, 3)],
    "D1[flip_h]": [lambda x: torch.flip(x, (-1,))],
    "D1[transpose]": [lambda x: x.transpose(-2, -1)],
    "D2[flip_h,flip_v]": [lambda x: torch.rot90(x, 2, (-2, -1)), lambda x: torch.flip(x, (-1,)),
                          lambda x: torch.flip(x, (-2,))],
}


class Symmetrized(nn.Module):
    """mean over g in G of base(g x): invariant under exactly G (the base is a random plain CNN)."""

    def __init__(self, base: nn.Module, group: str) -> None:
        super().__init__()
        self.base = base
        self.ops = [lambda x: x, *GROUP_OPS[group]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.base(op(x)) for op in self.ops]).mean(0)


def symmetrized(group: str, in_channels: int = 1) -> nn.Module:
    return Symmetrized(plain_cnn(in_channels, 5), group)


class SameEvenNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = IsoConv2d(in_channels, 4, 2, padding="same")
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).pow(3).mean(dim=(-2, -1)))


def same_even_net(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(4)
    return SameEvenNet(in_channels, num_classes)


class LeftPadNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = IsoConv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 0, 0, 0))
        return self.head(torch.relu(self.conv(x)).pow(2).mean(dim=(-2, -1)))


class FlattenNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = IsoConv2d(in_channels, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(27, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(torch.relu(self.conv(x)))))


def flatten_net(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(6)
    return FlattenNet(in_channels, num_classes)


class GaussianBlurModel(nn.Module):
    """An isotropic Gaussian blur as a model: its error at any angle is exactly the suite's blur floor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from bench.equivariance_metrics import gaussian_blur

        return gaussian_blur(x, 1.5)


def broken_factory(in_channels: int, num_classes: int) -> nn.Module:
    raise RuntimeError("this factory always fails")


def not_a_module(in_channels: int, num_classes: int) -> object:
    return "a string"
