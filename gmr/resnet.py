"""GMR-ResNets with the official architecture and module names (so official state dicts load 1:1).

Stem: GMR 5x5 (stride 1, no bias) + BN + ReLU + AvgPool2d(2). Four stages of widths 64/128/256/512 (times
``width / 64``) with one kernel size per stage. Downsampling never uses a strided GMR conv (a strided conv
breaks exact rot90/flip equivariance): it is AvgPool2d(2) followed by a stride-1 GMR conv, and the shortcut is
AvgPool2d + 1x1 conv + BN. Then global average pooling and a linear head. GMR weights are re-initialised
N(0, sqrt(2) / sqrt(C_out * k^2)) as in the official code. Input sides must be divisible by 16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .conv import GMRConv2d


def _per_stage(value: Any, name: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return [value[0]] * 4
        if len(value) != 4:
            raise ValueError(f"{name} must be one value or a sequence of 4 (one per stage), got {value!r}")
        return list(value)
    return [value] * 4


def _gmr(k: int, cin: int, cout: int, stride: int, num_rings: int | None, gmr_kwargs: dict[str, Any]) -> nn.Module:
    """A 'same'-padded stride-1 GMR conv, preceded by AvgPool2d(stride) when downsampling."""
    conv = GMRConv2d(cin, cout, k, padding=k // 2, bias=False, num_rings=num_rings, **gmr_kwargs)
    if stride == 1:
        return conv
    return nn.Sequential(nn.AvgPool2d(stride, stride), conv)


class GMRBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, kernel_size: int,
                 num_rings: int | None, gmr_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.conv1 = _gmr(kernel_size, inplanes, planes, stride, num_rings, gmr_kwargs)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _gmr(kernel_size, planes, planes, 1, num_rings, gmr_kwargs)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class GMRBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, kernel_size: int,
                 num_rings: int | None, gmr_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _gmr(kernel_size, planes, planes, stride, num_rings, gmr_kwargs)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class GMRResNet(nn.Module):
    """GMR-ResNet (see module docstring). ``gmr_kwargs`` go to every GMR layer (e.g. ``smoothing="radius"``,
    ``impl="dense"``, ``force_circular=False``); ``num_rings`` is per stage (the stem keeps its default)."""

    def __init__(self, block: type[GMRBasicBlock] | type[GMRBottleneck], layers: Sequence[int], num_classes: int = 10,
                 kernel_sizes: int | Sequence[int] = (9, 9, 5, 5), in_channels: int = 3, *, width: int = 64,
                 num_rings: int | None | Sequence[int | None] = None, stem_kernel_size: int = 5,
                 skip_first_pool: bool = False, zero_init_residual: bool = False, **gmr_kwargs: Any) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must list the number of blocks of the 4 stages, got {layers!r}")
        ks = _per_stage(kernel_sizes, "kernel_sizes")
        rs = _per_stage(num_rings, "num_rings")
        self.kernel_sizes = ks
        self.conv1 = GMRConv2d(in_channels, width, stem_kernel_size, padding=stem_kernel_size // 2, bias=False,
                               **gmr_kwargs)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.first_avgpool: nn.Module = nn.Identity() if skip_first_pool else nn.AvgPool2d(2, 2)
        self.inplanes = width
        for i, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2))):
            stage = self._make_layer(block, width * 2**i, blocks, stride, ks[i], rs[i], gmr_kwargs)
            setattr(self, f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        self._init_weights(zero_init_residual)

    def _make_layer(self, block: type[GMRBasicBlock] | type[GMRBottleneck], planes: int, blocks: int, stride: int,
                    kernel_size: int, num_rings: int | None, gmr_kwargs: dict[str, Any]) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride),
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, kernel_size, num_rings, gmr_kwargs)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None, kernel_size, num_rings, gmr_kwargs)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, GMRConv2d):
                fan_out = m.out_channels * m.kernel_size[0] ** 2
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0) / math.sqrt(fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, GMRBottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, GMRBasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """``features``: last map before global pooling; ``pooled``: invariant vector; ``logits``."""
        x = self.first_avgpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        pooled = self.flatten(self.avgpool(x))
        return {"features": x, "pooled": pooled, "logits": self.fc(pooled)}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["logits"]


def gmr_resnet18(num_classes: int = 10, kernel_sizes: int | Sequence[int] = (9, 9, 5, 5), in_channels: int = 3,
                 **kwargs: Any) -> GMRResNet:
    """GMR-ResNet-18 (basic blocks 2-2-2-2); [9,9,5,5] with 10 classes has 3,996,685 parameters."""
    return GMRResNet(GMRBasicBlock, (2, 2, 2, 2), num_classes, kernel_sizes, in_channels, **kwargs)


def gmr_resnet34(num_classes: int = 10, kernel_sizes: int | Sequence[int] = (9, 9, 5, 5), in_channels: int = 3,
                 **kwargs: Any) -> GMRResNet:
    """GMR-ResNet-34 (basic blocks 3-4-6-3)."""
    return GMRResNet(GMRBasicBlock, (3, 4, 6, 3), num_classes, kernel_sizes, in_channels, **kwargs)


def gmr_resnet50(num_classes: int = 10, kernel_sizes: int | Sequence[int] = (9, 9, 5, 5), in_channels: int = 3,
                 **kwargs: Any) -> GMRResNet:
    """GMR-ResNet-50 (bottleneck blocks 3-4-6-3, expansion 4)."""
    return GMRResNet(GMRBottleneck, (3, 4, 6, 3), num_classes, kernel_sizes, in_channels, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["GMRBasicBlock", "GMRBottleneck", "GMRResNet", "count_parameters", "gmr_resnet18", "gmr_resnet34",
           "gmr_resnet50"]
