"""Plain (non-equivariant) baselines: `cnn` (the small backbone) and `resnet18` (torchvision, small-input stem)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from baselines.common import SmallNet, base_channels, check_match, plain_body, pop_unused
from bench.contract import INVARIANT, SCALAR, SymmetryContract
from bench.errors import UsageError
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


#: stem name -> (first conv kernel, its stride, keep torchvision's 3x3/2 max-pool)
RESNET_STEMS: dict[str, tuple[int, int, bool]] = {
    "cifar": (3, 1, False),       # small-input stem: the stages run at 1, 1/2, 1/4, 1/8 of the input side
    "keep_conv1": (5, 1, True),   # official GMR-Conv --res-keep-conv1: 5x5 stride 1, max-pool kept: 1/2 .. 1/16
    "imagenet": (7, 2, True),     # stock torchvision: 1/4 .. 1/32
}


@register_model("resnet18")
def resnet18(in_channels: int = 3, num_classes: int = 10, match: str = "params", stem: str = "cifar",
             **kw) -> ResNetFeatures:
    """torchvision ResNet-18; default small-input (CIFAR) stem: 3x3 stride-1 conv, no max-pool.

    ``stem='keep_conv1'`` is what the official GMR-Conv code trains as its ResNet-18 baseline with
    ``--res-keep-conv1``: torchvision's 7x7 stride-2 conv replaced by a 5x5 stride-1 one, the max-pool kept,
    so the four stages run at 16, 8, 4, 2 px on 32x32 inputs, like `gmr_resnet18` (GMR 5x5 stem + AvgPool);
    ``stem='imagenet'`` is the stock network. It is the reference of the ResNet-18 scale (`c8_resnet18` and
    `gmr_resnet18` match its default's parameter count), so `match` is accepted and ignored. Parameters for 3
    input channels and 10 classes: 11,173,962 (cifar), 11,177,034 (keep_conv1), 11,181,642 (imagenet).
    """
    check_match(match)
    pop_unused(kw, "resnet18")
    if stem not in RESNET_STEMS:
        raise UsageError(f"resnet18: unknown stem {stem!r}; valid: {', '.join(RESNET_STEMS)}")
    k, stride, keep_pool = RESNET_STEMS[stem]
    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=k, stride=stride, padding=k // 2, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    if not keep_pool:
        net.maxpool = nn.Identity()
    return ResNetFeatures(net, plain_contract())
