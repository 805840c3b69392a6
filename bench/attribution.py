"""Per-stage attribution against each stage's own floor, so pointwise ops stop looking like culprits.

The protocol's per-stage number is ||s(R h) - R s(h)|| / ||R s(h)|| for stage s on its input h. A pointwise
stage (ReLU, BatchNorm in eval mode, a 1x1 conv) commutes with every rotation in the continuum; what that
number shows for it is that interpolating its non-smooth output (the kinks a ReLU makes) differs from
interpolating its input first, ~1e-1 at 45 degrees. So each stage is read against the error an exactly
equivariant stage *of the same kind* gets under the same rotation:

- pointwise stages (detected, not declared: they commute with a random permutation of the pixels) are their
  own exactly equivariant version, so their floor is their measured error and their excess is 0;
- spatial stages get `bench.equivariance_metrics.resolution_blur_floor` of their input at their output's size
  (an isotropic blur that resamples like the stage does).

`stage_attribution` returns error, floor and excess = max(error - floor, 0). `stage_lie_derivative` is the
alternative the issue names: the exact (spectral) Lie derivative of the stage, 0 for pointwise stages.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.equivariance_metrics import (
    lie_derivative_map,
    map_mask,
    masked_relative_error,
    resolution_blur_floor,
)
from bench.rotation import rotate_many

Stage = Callable[[torch.Tensor], torch.Tensor]


def is_pointwise(stage: Stage, h: torch.Tensor, seed: int = 0, rtol: float = 1e-5) -> bool:
    """Whether `stage` acts on each pixel on its own (channels may mix): s(P h) == P s(h) for a random
    permutation P of the H*W positions. Needs an output of the input's spatial size."""
    with torch.no_grad():
        out = stage(h)
        if out.dim() < 3 or tuple(out.shape[-2:]) != tuple(h.shape[-2:]):
            return False
        hw = h.shape[-2] * h.shape[-1]
        perm = torch.randperm(hw, generator=torch.Generator().manual_seed(seed)).to(h.device)

        def permute(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(-2)[..., perm].reshape(t.shape)

        lhs = stage(permute(h))
        rhs = permute(out)
    scale = rhs.abs().max().clamp_min(1e-30)
    return bool(((lhs - rhs).abs().max() / scale) <= rtol)


def stage_error(stage: Stage, h: torch.Tensor, angle: float, method: str,
                mask: torch.Tensor | None = None) -> float:
    """||s(R h) - R s(h)|| / ||R s(h)|| inside `mask` of the output (default its disk), mean over images."""
    with torch.no_grad():
        out = stage(h)
        lhs = stage(rotate_many(h, [angle], method)[0])
        rhs = rotate_many(out, [angle], method)[0]
    return masked_relative_error(lhs, rhs, map_mask(out) if mask is None else mask).mean().item()


def _spatial_floor(stage: Stage, h: torch.Tensor, angle: float, method: str, sigma: float,
                   mask: torch.Tensor | None) -> float:
    with torch.no_grad():
        size = stage(h[:1]).shape[-1]
        return resolution_blur_floor(h, size, [angle], method, sigma, mask).item()


def stage_floor(stage: Stage, h: torch.Tensor, angle: float, method: str, sigma: float = 1.5,
                mask: torch.Tensor | None = None) -> float:
    """The error an exactly equivariant stage of the same kind gets (see module doc)."""
    if is_pointwise(stage, h):
        return stage_error(stage, h, angle, method, mask)
    return _spatial_floor(stage, h, angle, method, sigma, mask)


def stage_attribution(stage: Stage, h: torch.Tensor, angle: float, method: str, sigma: float = 1.5,
                      mask: torch.Tensor | None = None) -> dict[str, float | bool]:
    """error, floor and excess (= max(error - floor, 0)) of one stage; pointwise says which floor applied."""
    pointwise = is_pointwise(stage, h)
    error = stage_error(stage, h, angle, method, mask)
    floor = error if pointwise else _spatial_floor(stage, h, angle, method, sigma, mask)
    return {"error": error, "floor": floor, "excess": max(error - floor, 0.0), "pointwise": pointwise}


def stage_lie_derivative(stage: Stage, h: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean relative Lie derivative of one stage (exact generator, `lie_derivative_map`); 0 for pointwise
    stages, which commute with every rotation (their sampled Lie derivative would only show the spectral
    derivative's ringing at their kinks). Stages that change the spatial size have no map Lie derivative
    here: use `stage_attribution`."""
    if is_pointwise(stage, h):
        return 0.0
    with torch.no_grad():
        if tuple(stage(h[:1]).shape[-2:]) != tuple(h.shape[-2:]):
            raise ValueError("stage_lie_derivative needs a stage that keeps the map size")
    return lie_derivative_map(stage, h, mask=mask).mean().item()
