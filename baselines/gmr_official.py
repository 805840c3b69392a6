"""`gmr_official`: the official GMR-Conv package's `GMR_Conv2d` (GMR-Conv 1.0.3) in the small backbone.

Built with keyword arguments only (a positional `dw_fwd` would silently land on another parameter) and its default
"dw" forward (per-ring depthwise convolutions, then a 1x1 mixing conv). Known limitations of the official layer
(see docs/models.md): its dw path ignores `padding_mode` (we only use zeros) and fails for groups > 1 (we use 1);
its eval-mode kernel cache is only used by the dense path, which this model does not take.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from GMR_Conv import GMR_Conv2d  # the module is declared as requiring GMR_Conv
from torch import nn

from baselines.common import pop_unused
from baselines.gmr_family import build_scalar_net, gmr_contract
from baselines.layers import DEFAULT_KERNEL, ConvLayer, _plain_args
from bench.contract import SCALAR, SymmetryContract
from bench.models import register_model


def official_conv(c_in: int, c_out: int, k: int, bias: bool = False) -> nn.Module:
    """The official layer with 'same' zero padding, built with keywords only."""
    return GMR_Conv2d(in_channels=c_in, out_channels=c_out, kernel_size=k, padding=k // 2, bias=bias)


@register_model("gmr_official")
def gmr_official(in_channels: int = 1, num_classes: int = 10, match: str = "params", width: float = 1.0,
                 widths: Sequence[int] | None = None, **kw) -> nn.Module:
    """The official GMR_Conv2d in the small backbone (same widths rule as `gmr`)."""
    pop_unused(kw, "gmr_official")
    return build_scalar_net(official_conv, ("official",), in_channels, num_classes, match, width, widths,
                            gmr_contract(), "gmr")


@register_model("layer_gmr_official")
def layer_gmr_official(in_channels: int = 16, num_classes: int = 10, channels: int | None = None,
                       kernel_size: int = DEFAULT_KERNEL, bias: bool = True, **kw: Any) -> ConvLayer:
    """The official package's GMR_Conv2d (GMR-Conv 1.0.3, its default 'dw' forward) as a single layer."""
    pop_unused(kw, "layer_gmr_official")
    out, k = _plain_args(in_channels, channels, kernel_size)
    conv = official_conv(in_channels, out, k, bias=bias)
    return ConvLayer(conv, SymmetryContract("D4-grid", features={"out": SCALAR}))
