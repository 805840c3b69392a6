"""What every network in the zoo shares: the small backbone layout, anti-aliased pooling, fair widths.

The small backbone (used by `cnn`, `gmr`, `gmr_radius`, `gmr_official`, `c4`..`d8`, `so2`, `o2`, `so2_fourier`
and the e2cnn twins) is the one of Weiler & Cesa's MNIST experiments, with only the convolution swapped:

    6 blocks  conv(k) -> batch norm -> nonlinearity, kernels 7,5,5,5,5,5, "same" zero padding, stride 1
    anti-aliased average pooling (Gaussian blur sigma=0.66, 5x5, stride 2, padding 2) after blocks 2 and 4
    invariant map (identity | group pooling | field norms) -> global spatial mean -> linear head

Strided ops are only the two blur pools, and a stride-2 window with symmetric padding keeps the rotation centre
iff its input side is odd (samples 0, 2, ..., n-1 are symmetric about (n-1)/2). So inputs with an odd side whose
half is odd again after the first pool (29 -> 15 -> 8, 33 -> 17 -> 9) keep every 90-degree rotation / flip exact.

Fair widths: every factory takes ``match``:
- ``"params"`` (default): the per-layer widths are the base widths times one scale factor, searched (then
  refined layer by layer) so that the parameter count is as close as possible to that of the plain `cnn` with
  the same ``in_channels``, ``num_classes`` and ``width`` (always within +-5%).
- ``"channels"``: each layer has (as nearly as the field sizes allow) the same number of channels as `cnn`.
``width`` multiplies the base widths (16, 24, 32, 32, 48, 64) of the plain reference; ``widths`` (6 ints, in the
family's own units: channels, fields or multiplicities) overrides everything.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract import SymmetryContract
from bench.errors import UsageError

BASE_WIDTHS: tuple[int, ...] = (16, 24, 32, 32, 48, 64)
KERNELS: tuple[int, ...] = (7, 5, 5, 5, 5, 5)
POOL_AFTER: tuple[int, ...] = (1, 3)  # 0-based: blur-pool after the 2nd and the 4th block
BLUR_SIGMA = 0.66
MATCH_TOLERANCE = 0.05
MATCHES = ("params", "channels")


# ---------------------------------------------------------------------------------------------------------------
# anti-aliased pooling (numerically the same filter as escnn's PointwiseAvgPoolAntialiased2D)
# ---------------------------------------------------------------------------------------------------------------
def gaussian_blur_filter(sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """The normalised (fs, fs) Gaussian escnn's `PointwiseAvgPoolAntialiased2D` uses, fs = 2*round(3*sigma)+1."""
    fs = 2 * int(round(3 * sigma)) + 1
    coords = torch.arange(fs, dtype=torch.get_default_dtype()) - (fs - 1) / 2.0
    r2 = coords[None, :] ** 2 + coords[:, None] ** 2
    g = torch.exp(-r2 / (2 * sigma**2))
    return g / g.sum()


class BlurPool2d(nn.Module):
    """Depthwise Gaussian blur + stride (anti-aliased average pooling) with symmetric zero padding."""

    def __init__(self, sigma: float = BLUR_SIGMA, stride: int = 2) -> None:
        super().__init__()
        g = gaussian_blur_filter(sigma)
        self.register_buffer("filter", g[None, None], persistent=False)
        self.stride = stride
        self.padding = (g.shape[-1] - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.filter.to(dtype=x.dtype).expand(c, 1, -1, -1)
        return F.conv2d(x, w, stride=self.stride, padding=self.padding, groups=c)

    def extra_repr(self) -> str:
        return f"kernel={self.filter.shape[-1]}, stride={self.stride}, padding={self.padding}"


# ---------------------------------------------------------------------------------------------------------------
# the network wrapper
# ---------------------------------------------------------------------------------------------------------------
class SmallNet(nn.Module):
    """body (feature map) -> invariant map -> global spatial mean -> linear head.

    `forward` returns logits; `forward_features` returns {"features", "pooled", "logits"} (a separate method, so
    `forward` does not pay for exposing features).
    """

    def __init__(
        self,
        body: nn.Module,
        to_invariant: nn.Module,
        pooled_dim: int,
        num_classes: int,
        symmetry: SymmetryContract,
        widths: Sequence[int] = (),
        family: str = "",
    ) -> None:
        super().__init__()
        self.body = body
        self.to_invariant = to_invariant
        self.head = nn.Linear(pooled_dim, num_classes)
        self.symmetry = symmetry
        self.widths = tuple(widths)
        self.family = family

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.to_invariant(self.body(x)).mean(dim=(-2, -1)))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        pooled = self.to_invariant(features).mean(dim=(-2, -1))
        return {"features": features, "pooled": pooled, "logits": self.head(pooled)}


def backbone_body(
    in_channels: int,
    widths: Sequence[int],
    conv: Callable[[int, int, int, int], nn.Module],
    norm: Callable[[int], nn.Module],
    act: Callable[[int], nn.Module],
    pool: Callable[[int], nn.Module],
    kernels: Sequence[int] = KERNELS,
    pool_after: Sequence[int] = POOL_AFTER,
) -> nn.Sequential:
    """The shared 6-block layout; `conv(i, c_in, c_out, k)` etc. receive the layer index and widths.

    For plain families widths are channels; escnn families pass their own unit counts and ignore c_in/c_out.
    """
    layers: list[nn.Module] = []
    c_in = in_channels
    for i, (c_out, k) in enumerate(zip(widths, kernels)):
        layers += [conv(i, c_in, c_out, k), norm(i), act(i)]
        if i in pool_after:
            layers.append(pool(i))
        c_in = c_out
    return nn.Sequential(*layers)


def plain_body(
    in_channels: int, widths: Sequence[int], make_conv: Callable[[int, int, int], nn.Module], kernels: Sequence[int] = KERNELS
) -> nn.Sequential:
    """The backbone for families whose features are plain scalar channels (cnn, GMR): BatchNorm2d, ReLU, BlurPool2d."""
    return backbone_body(
        in_channels,
        widths,
        conv=lambda i, c_in, c_out, k: make_conv(c_in, c_out, k),
        norm=lambda i: nn.BatchNorm2d(widths[i]),
        act=lambda i: nn.ReLU(inplace=True),
        pool=lambda i: BlurPool2d(),
        kernels=kernels,
    )


# ---------------------------------------------------------------------------------------------------------------
# fair widths
# ---------------------------------------------------------------------------------------------------------------
def check_match(match: str) -> str:
    if match not in MATCHES:
        raise UsageError(f"match must be one of {', '.join(MATCHES)}; got {match!r}")
    return match


def scaled_units(base: Sequence[float], scale: float, min_units: int = 1) -> tuple[int, ...]:
    return tuple(max(min_units, int(round(b * scale))) for b in base)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def search_units(
    count: Callable[[tuple[int, ...]], int],
    target: int,
    base: Sequence[float],
    min_units: int = 1,
    refine: bool = True,
) -> tuple[int, ...]:
    """Units per layer whose parameter count is closest to `target`.

    1. bisection on one common scale factor s (units = round(base * s)); keep the closer of the two brackets;
    2. greedy refinement: change one layer by +-1 unit while that brings the count closer to the target.
    `count` must be cheap (analytic or a cached basis-dimension lookup), it is called a few dozen times.
    """
    memo: dict[tuple[int, ...], int] = {}

    def c(units: tuple[int, ...]) -> int:
        if units not in memo:
            memo[units] = count(units)
        return memo[units]

    lo, hi = 1e-3, 1.0
    while c(scaled_units(base, hi, min_units)) < target and hi < 1e4:
        hi *= 2
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if c(scaled_units(base, mid, min_units)) < target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-6:
            break
    candidates = [scaled_units(base, lo, min_units), scaled_units(base, hi, min_units)]
    best = min(candidates, key=lambda u: abs(c(u) - target))
    if refine:
        for _ in range(4 * len(base)):
            options = []
            for i in range(len(best)):
                for d in (-1, 1):
                    u = list(best)
                    u[i] += d
                    if u[i] >= min_units:
                        options.append(tuple(u))
            cand = min(options, key=lambda u: abs(c(u) - target))
            if abs(c(cand) - target) >= abs(c(best) - target):
                break
            best = cand
    return best


def resolve_units(
    match: str,
    widths: Sequence[int] | None,
    count: Callable[[tuple[int, ...]], int],
    target: Callable[[], int],
    channel_units: Callable[[], tuple[int, ...]],
    base: Sequence[float],
) -> tuple[int, ...]:
    """The units per layer for one family: explicit `widths`, else matched channels, else matched params."""
    check_match(match)
    if widths is not None:
        widths = tuple(int(w) for w in widths)
        if len(widths) != len(base) or min(widths) < 1:
            raise UsageError(f"widths must be {len(base)} positive ints, got {widths!r}")
        return widths
    if match == "channels":
        return channel_units()
    return search_units(count, target(), base)


# reference: the plain cnn's parameter count (conv without bias, BatchNorm affine, linear head)
def plain_param_count(in_channels: int, num_classes: int, widths: Sequence[int], kernels: Sequence[int] = KERNELS) -> int:
    n, c_in = 0, in_channels
    for c_out, k in zip(widths, kernels):
        n += c_in * c_out * k * k + 2 * c_out
        c_in = c_out
    return n + c_in * num_classes + num_classes


def base_channels(width: float = 1.0) -> tuple[int, ...]:
    """Channels per layer of the plain reference `cnn` at width multiplier `width`."""
    if width <= 0:
        raise UsageError(f"width must be > 0, got {width}")
    return scaled_units(BASE_WIDTHS, width)


@functools.lru_cache(maxsize=256)
def reference_params(in_channels: int, num_classes: int, width: float = 1.0) -> int:
    """Parameter count of `cnn` (the target of match='params')."""
    return plain_param_count(in_channels, num_classes, base_channels(width))


def pop_unused(kw: dict[str, Any], name: str) -> None:
    """Reject keyword arguments a factory does not understand (a typo must not pass silently)."""
    if kw:
        raise UsageError(f"model {name!r} got unexpected keyword arguments: {', '.join(sorted(kw))}")


def bilinear_conv_count(make_conv: Callable[[int, int], nn.Module]) -> Callable[[int, int], int]:
    """Parameter count of conv(c_in, c_out) as an exact bilinear function fitted on four tiny builds.

    Any conv whose parameters are a*c_in*c_out + b*c_in + c*c_out + d (plain, GMR: weights C_out*C_in*R, sigmas R,
    bias C_out) is reproduced exactly; used by the width search so that it never builds full networks.
    """
    p = {(i, o): param_count(make_conv(i, o)) for i in (1, 2) for o in (1, 2)}
    a = p[2, 2] - p[2, 1] - p[1, 2] + p[1, 1]
    b = p[2, 1] - p[1, 1] - a
    c = p[1, 2] - p[1, 1] - a
    d = p[1, 1] - a - b - c
    return lambda ci, co: a * ci * co + b * ci + c * co + d


def plain_family_count(
    conv_count: Callable[[int, int, int], int], in_channels: int, num_classes: int, widths: Sequence[int],
    kernels: Sequence[int] = KERNELS,
) -> int:
    """Parameters of the plain-tensor backbone (BatchNorm2d affine, linear head) with conv counts `conv_count`."""
    n, c_in = 0, in_channels
    for c_out, k in zip(widths, kernels):
        n += conv_count(k, c_in, c_out) + 2 * c_out
        c_in = c_out
    return n + c_in * num_classes + num_classes
