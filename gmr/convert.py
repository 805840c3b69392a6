"""Turn an ordinary CNN into a GMR network by swapping its k x k convolutions for GMR convolutions."""

from __future__ import annotations

from typing import Any

from torch import nn

from .conv import GMRConv2d


def _convertible(conv: nn.Conv2d) -> bool:
    kh, kw = conv.kernel_size
    return kh == kw and kh > 1 and kh % 2 == 1 and not isinstance(conv, nn.ConvTranspose2d)


def _strided(conv: nn.Conv2d) -> bool:
    return any(s != 1 for s in conv.stride)


def _pool_then(stride: tuple[int, int], layer: nn.Module) -> nn.Module:
    return nn.Sequential(nn.AvgPool2d(stride, stride), layer)


def convert_to_gmr(model: nn.Module, *, equivariant_downsampling: bool = True, kernel_size: int | None = None,
                   **gmr_kwargs: Any) -> nn.Module:
    """Replace, in place, every ``nn.Conv2d`` with an odd square k x k kernel (k > 1) by a :class:`GMRConv2d`
    with the same channels, padding, dilation, groups, bias, padding mode, device and dtype (fresh weights;
    ``kernel_size`` overrides k and pads to keep the output size). A strided conv becomes
    ``AvgPool2d(stride)`` followed by a stride-1 GMR conv, because a strided conv breaks exact rot90/flip
    equivariance. Other convs (1 x 1, even or non-square kernels) stay as they are.

    ``equivariant_downsampling`` (default True, beyond what the official converter does) also makes the
    remaining downsampling exact on even-sized maps: strided 1x1 (and other unconverted) convs become
    ``AvgPool2d(stride)`` + the conv with stride 1, and strided max pools become non-overlapping
    ``MaxPool2d(stride)``. With it, e.g. torchvision's resnet18 becomes exactly rot90/flip invariant in eval mode
    for inputs whose side is divisible by 32. Returns ``model``.
    """
    for name, child in list(model.named_children()):
        replacement: nn.Module | None = None
        if type(child) is nn.Conv2d and _convertible(child):
            k = child.kernel_size[0] if kernel_size is None else kernel_size
            if isinstance(child.padding, str) or kernel_size is None:
                padding: Any = child.padding
            else:
                padding = tuple(d * (k - 1) // 2 for d in child.dilation)
            layer = GMRConv2d(child.in_channels, child.out_channels, k, stride=1, padding=padding,
                              dilation=child.dilation, groups=child.groups, bias=child.bias is not None,
                              padding_mode=child.padding_mode, device=child.weight.device,
                              dtype=child.weight.dtype, **gmr_kwargs)
            replacement = _pool_then(child.stride, layer) if _strided(child) else layer
        elif equivariant_downsampling and type(child) is nn.Conv2d and _strided(child):
            stride = child.stride
            child.stride = (1, 1)
            replacement = _pool_then(stride, child)
        elif equivariant_downsampling and type(child) is nn.MaxPool2d and child.stride not in (1, (1, 1)):
            s = child.stride
            replacement = nn.MaxPool2d(s, s, ceil_mode=child.ceil_mode)
        if replacement is not None:
            setattr(model, name, replacement)
        else:
            convert_to_gmr(child, equivariant_downsampling=equivariant_downsampling, kernel_size=kernel_size,
                           **gmr_kwargs)
    return model
