"""GMR-Conv networks built on our `gmr` package: `gmr`, `gmr_radius` (small backbone) and `gmr_resnet18`.

GMR kernels are isotropic, so every layer commutes exactly with the 8 symmetries of the pixel grid (rot90s and
flips, channels not permuted): the contract is group "D4-grid" with scalar features. The small backbone only
strides in its two blur pools, so inputs like 29x29 / 33x33 keep the exact symmetries end to end.

Extra keyword arguments of the factories (e.g. ``num_rings``, ``impl``, ``force_circular``) go to every GMRConv2d.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

import gmr as gmr_package
from baselines.common import (
    KERNELS,
    SmallNet,
    base_channels,
    bilinear_conv_count,
    check_match,
    param_count,
    plain_body,
    plain_family_count,
    reference_params,
    resolve_units,
)
from bench.contract import INVARIANT, SCALAR, SymmetryContract
from bench.errors import UsageError
from bench.models import register_model


def gmr_contract() -> SymmetryContract:
    return SymmetryContract("D4-grid", features={"features": SCALAR, "pooled": INVARIANT, "logits": INVARIANT})


_COUNTS: dict[tuple, Any] = {}


def build_scalar_net(
    make_conv,
    key: tuple,
    in_channels: int,
    num_classes: int,
    match: str,
    width: float,
    widths: Sequence[int] | None,
    contract: SymmetryContract,
    family: str,
) -> SmallNet:
    """The small backbone with a scalar-field conv `make_conv(c_in, c_out, k)` and fair widths."""
    channels = base_channels(width)
    counts = {}
    for k in set(KERNELS):
        ck = (*key, k)
        if ck not in _COUNTS:
            _COUNTS[ck] = bilinear_conv_count(lambda i, o, k=k: make_conv(i, o, k))
        counts[k] = _COUNTS[ck]
    units = resolve_units(
        match,
        widths,
        count=lambda u: plain_family_count(lambda k, i, o: counts[k](i, o), in_channels, num_classes, u),
        target=lambda: reference_params(in_channels, num_classes, width),
        channel_units=lambda: channels,
        base=channels,
    )
    body = plain_body(in_channels, units, make_conv)
    return SmallNet(body, nn.Identity(), units[-1], num_classes, contract, widths=units, family=family)


def _gmr_net(name: str, smoothing: str, in_channels, num_classes, match, width, widths, gmr_kw) -> SmallNet:
    GMRConv2d = gmr_package.GMRConv2d
    gmr_kw = dict(gmr_kw)
    if "smoothing" in gmr_kw:
        raise UsageError(f"{name}: smoothing is fixed by the model name (gmr: ring, gmr_radius: radius)")

    def make_conv(c_in: int, c_out: int, k: int) -> nn.Module:
        return GMRConv2d(c_in, c_out, k, padding=k // 2, bias=False, smoothing=smoothing, **gmr_kw)

    key = ("gmr", smoothing, tuple(sorted(gmr_kw.items())))
    return build_scalar_net(make_conv, key, in_channels, num_classes, match, width, widths, gmr_contract(), "gmr")


@register_model("gmr")
def gmr(in_channels: int = 1, num_classes: int = 10, match: str = "params", width: float = 1.0,
        widths: Sequence[int] | None = None, **gmr_kw: Any) -> SmallNet:
    """GMRConv2d (smoothing='ring', numerically the official layer) in the small backbone."""
    return _gmr_net("gmr", "ring", in_channels, num_classes, match, width, widths, gmr_kw)


@register_model("gmr_radius")
def gmr_radius(in_channels: int = 1, num_classes: int = 10, match: str = "params", width: float = 1.0,
               widths: Sequence[int] | None = None, **gmr_kw: Any) -> SmallNet:
    """GMRConv2d with smoothing='radius' in the small backbone."""
    return _gmr_net("gmr_radius", "radius", in_channels, num_classes, match, width, widths, gmr_kw)


# ---------------------------------------------------------------------------------------------------------------
# ResNet-18 scale
# ---------------------------------------------------------------------------------------------------------------
def resnet18_params(in_channels: int, num_classes: int) -> int:
    """Parameters of our `resnet18` (torchvision ResNet-18, 3x3 stride-1 stem, no max-pool): exact formula."""
    return 11_173_962 - 3 * 576 - 513 * 10 + in_channels * 576 + 513 * num_classes


def _quadratic_width(count, target: int, lo: int = 8, hi: int = 1024) -> int:
    """Integer width whose (exactly quadratic) parameter count is closest to `target`."""
    xs = (16, 32, 48)
    ys = [count(x) for x in xs]
    # Lagrange fit of p(w) = a w^2 + b w + c
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    a = ((y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)) / (x2 - x0)
    b = (y1 - y0) / (x1 - x0) - a * (x0 + x1)
    c = y0 - a * x0 * x0 - b * x0
    disc = b * b - 4 * a * (c - target)
    w = (-b + math.sqrt(max(disc, 0.0))) / (2 * a) if a > 0 else (target - c) / b
    cands = {max(lo, min(hi, int(math.floor(w)) + d)) for d in (-1, 0, 1, 2)}
    return min(cands, key=lambda x: abs(a * x * x + b * x + c - target))


@register_model("gmr_resnet18")
def gmr_resnet18(in_channels: int = 3, num_classes: int = 10, match: str = "params",
                 kernel_sizes: Sequence[int] = (9, 9, 5, 5), width: int | None = None, **gmr_kw: Any) -> nn.Module:
    """GMR-ResNet-18 from `gmr` (stem 5x5 + AvgPool2d(2), stages with kernels `kernel_sizes`, AvgPool downsampling).

    match='channels': the paper's widths 64/128/256/512 (3,996,685 parameters with 3 in-channels, 10 classes).
    match='params' (default): base width chosen so the count matches our `resnet18` (within a few 0.1%).
    Exact rot90/flip invariance needs input sides divisible by 16 (four 2x2 average pools).
    """
    _gmr_resnet18 = gmr_package.gmr_resnet18
    check_match(match)
    ks = list(kernel_sizes)

    def build(w: int) -> nn.Module:
        return _gmr_resnet18(num_classes=num_classes, kernel_sizes=ks, in_channels=in_channels, width=w, **gmr_kw)

    if width is None:
        if match == "channels":
            width = 64
        else:
            width = _quadratic_width(lambda w: param_count(build(w)), resnet18_params(in_channels, num_classes))
    net = build(int(width))
    net.symmetry = gmr_contract()
    return net
