"""Continuous angles: the output's error at each angle, the interpolation floor, and the Lie derivative.

Everything reuses the suite's pieces: band-limited disk inputs and interpolated rotation from bench.rotation, the
masked relative error, floors and Lie derivatives from bench.equivariance_metrics, rho_out / group pooling from
bench.fields. As in the equivariance protocol, maps are compared inside the rotation-safe disk, fields at angles
outside their fibre group after group pooling, and every error comes with the round-trip floor that the rotation
alone costs at the output's resolution (the input's, for vectors) and the error of an isotropic Gaussian blur.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bench import equivariance_metrics as em
from bench.fields import apply_rho, group_pool, in_group
from bench.rotation import rotate_many

from .compare import View, channel_norm

BLUR_SIGMA = 1.5  # pixels, as the equivariance protocol's default
CHUNK = 64  # images per forward pass


@dataclass
class AngleResult:
    angle_deg: float
    error: float
    floor: float  # round-trip floor at the output's resolution (the input's for vectors)
    input_floor: float
    blur_floor: float

    def to_dict(self) -> dict:
        return dict(vars(self))


def _pooled(view: View, t: torch.Tensor) -> torch.Tensor:
    """The map compared at angles where rho_out is undefined: group-pooled fields, channel norms, or t itself."""
    if view.kind == "field":
        return group_pool(view.spec, t)
    if view.kind == "norm":
        return channel_norm(t)
    return t


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + CHUNK]) for i in range(0, x.shape[0], CHUNK)])


def angle_errors(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, view: View, angles: Sequence[float],
                 method: str) -> list[AngleResult]:
    """Error of the output of fn at each angle (mean over the images x), with floors."""
    angles = list(angles)
    f0 = _batched(fn, x)
    fg = _batched(fn, rotate_many(x, angles, method).flatten(0, 1)).reshape(len(angles), *f0.shape)
    input_floor = em.roundtrip_floor(x, angles, method).tolist()
    blur = em.blur_floor(x, angles, method, BLUR_SIGMA).tolist()
    if view.kind == "invariant" or f0.dim() < 4:
        errors = em.masked_relative_error(fg, f0.expand_as(fg)).mean(dim=-1).tolist()
        floors = input_floor
    else:
        mask = em.map_mask(f0)
        errors = []
        for i, a in enumerate(angles):
            if view.kind == "field" and in_group(view.spec, a, False):
                pred, target = fg[i], apply_rho(view.spec, rotate_many(f0, [a], method)[0], a, False)
            else:
                pred, target = _pooled(view, fg[i]), rotate_many(_pooled(view, f0), [a], method)[0]
            errors.append(em.masked_relative_error(pred, target, mask).mean().item())
        floors = em.roundtrip_floor(_pooled(view, f0), angles, method).tolist()
    return [AngleResult(float(a), e, fl, i, b) for a, e, fl, i, b in zip(angles, errors, floors, input_floor, blur)]


def lie_derivative(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, view: View,
                   method: str) -> tuple[float, str]:
    """(value, unit): LEE of softmax(output) for vector outputs (1/rad), the relative Lie derivative of the
    (group-pooled) output map otherwise (relative/rad); mean over the images."""
    with torch.no_grad():
        sample = fn(x[:1])
    if view.kind == "invariant" or sample.dim() < 4:
        return em.lie_derivative_logits(fn, x, method).mean().item(), "1/rad"
    return em.lie_derivative_map(lambda inp: _pooled(view, fn(inp)), x, method).mean().item(), "relative/rad"
