"""Plain (non-equivariant) baselines: `cnn` (the small backbone) and `resnet18` (torchvision, small-input stem)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from baselines.common import SmallNet, base_channels, check_match, plain_body, pop_unused
from bench.contract import INVARIANT, SCALAR, SymmetryContract
from bench.models import register_model


def plain_contract() -> SymmetryContract:
    return SymmetryContract("trivial", features={"features": SCALAR, "pooled": INVARIANT, "logits": INVARIANT})


def he_init_(module: nn.Module) -> None:
    """He (Kaiming) normal init, fan_in, for every plain Conv2d (the escnn models get the generalised version)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_cnn(in_channels: int, num_classes: int, widths: Sequence[int]) -> SmallNet:
    body = plain_body(in_channels, widths, lambda c_in, c_out, k: nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False))
    he_init_(body)
    return SmallNet(body, nn.Identity(), widths[-1], num_classes, plain_contract(), widths=widths, family="plain")


@register_model("cnn")
def cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    match: str = "params",
    width: float = 1.0,
    widths: Sequence[int] | None = None,
    **kw,
) -> SmallNet:
    """The plain reference network (it *is* the target of match='params'/'channels', so `match` changes nothing)."""
    check_match(match)
    pop_unused(kw, "cnn")
    widths = tuple(widths) if widths is not None else base_channels(width)
    return build_cnn(in_channels, num_classes, widths)


class ResNetFeatures(nn.Module):
    """A torchvision-style ResNet with `forward_features` (features = last stage, before global pooling)."""

    def __init__(self, net: nn.Module, symmetry: SymmetryContract) -> None:
        super().__init__()
        self.net = net
        self.symmetry = symmetry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        features = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        pooled = torch.flatten(n.avgpool(features), 1)
        return {"features": features, "pooled": pooled, "logits": n.fc(pooled)}


@register_model("resnet18")
def resnet18(in_channels: int = 3, num_classes: int = 10, match: str = "params", **kw) -> ResNetFeatures:
    """torchvision ResNet-18 with a small-input (CIFAR) stem: 3x3 stride-1 conv, no max-pool.

    It is the reference of the ResNet-18 scale (`c8_resnet18` matches its parameter count), so `match` is
    accepted and ignored. 11,173,962 parameters for 3 input channels and 10 classes (stock torchvision
    ResNet-18 with its 7x7 stem: 11,181,642).
    """
    check_match(match)
    pop_unused(kw, "resnet18")
    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    return ResNetFeatures(net, plain_contract())
