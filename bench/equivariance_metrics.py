"""Numerical kernels of the equivariance protocol: masked relative errors, the floor, the Lie derivative.

Pure functions on tensors, no job/registry knowledge, so tests can check each against known answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from bench.rotation import check_method, disk_mask, rotate_each, rotate_many, rotation_generator


def _norms(t: torch.Tensor, spatial: bool) -> torch.Tensor:
    return t.flatten(start_dim=-3 if spatial else -1).norm(dim=-1)


def masked_relative_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                          eps: float = 1e-12) -> torch.Tensor:
    """Per-sample ||pred - target|| / ||target||, inside `mask` (H, W) for maps.

    Vectors (..., N, D) -> (..., N); maps (..., N, C, H, W) -> (..., N)."""
    spatial = pred.dim() >= 4
    if mask is not None:
        m = mask.to(pred.dtype)
        pred, target = pred * m, target * m
    return _norms(pred - target, spatial) / _norms(target, spatial).clamp_min(eps)


def map_mask(t: torch.Tensor) -> torch.Tensor:
    """Disk mask matching the spatial size of a (…, H, W) map, on its device."""
    return disk_mask(t.shape[-2], t.shape[-1], device=t.device)


def comparison_mask(t: torch.Tensor, margin: int | None, min_radius: float = 0.0) -> torch.Tensor:
    """Disk of a (…, H, W) map shrunk by `margin` pixels: the pixels a padded network's border does not reach.

    `margin` comes from `bench.margins` (`traced_margins`: the receptive-field bound; `padding_effect_margins`:
    where the border measurably changes the map). The radius never drops below `min_radius` (e.g. half the
    map's disk, a documented fallback for late maps that the bound covers entirely; None margin -> that
    fallback too). An empty mask (a 2x2 map has no pixel centre within 0.5 of its centre) makes every masked
    error 0/0: check ``mask.any()`` before reporting."""
    h, w = t.shape[-2:]
    full = (min(h, w) - 1) / 2.0
    radius = min_radius if margin is None else max(full - margin, min_radius)
    return disk_mask(h, w, radius=radius, device=t.device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Isotropic sampled-Gaussian blur, zero padded: a continuous-rotation-equivariant reference operator.

    Its kernel is symmetric under the 8 grid symmetries, so its error is exactly 0 at multiples of 90 deg and
    otherwise only what the rotation's interpolation costs."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    c = x.shape[-3]
    flat = x.reshape(-1, c, *x.shape[-2:])
    out = F.conv2d(flat, kernel.expand(c, 1, -1, -1), padding=radius, groups=c)
    return out.reshape(x.shape)


def roundtrip_floor(x: torch.Tensor, angles: Sequence[float], method: str) -> torch.Tensor:
    """||R_-a R_a x - x|| / ||x|| inside the disk, per angle (mean over images): what interpolation alone costs."""
    fwd = rotate_many(x, angles, method)
    back = rotate_each(fwd, [-a for a in angles], method)
    return masked_relative_error(back, x.expand_as(back), map_mask(x)).mean(dim=-1)


def blur_floor(x: torch.Tensor, angles: Sequence[float], method: str, sigma: float) -> torch.Tensor:
    """Equivariance error of an isotropic Gaussian blur under the same rotation: the floor for real models."""
    rotated = rotate_many(x, angles, method)
    lhs = gaussian_blur(rotated, sigma)
    rhs = rotate_many(gaussian_blur(x, sigma), angles, method)
    return masked_relative_error(lhs, rhs, map_mask(x)).mean(dim=-1)


def resize_about_centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resample (…, H, W) maps to (size, size) keeping the centre fixed (a scaling about the image centre,
    which commutes with rotations about it): when shrinking, a Gaussian anti-aliasing blur of half an output
    pixel, then bilinear interpolation with aligned corners (centre to centre, corner to corner)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    shrink = (min(h, w) - 1) / max(size - 1, 1)
    if shrink > 1:
        x = gaussian_blur(x, 0.5 * shrink)
    flat = x.reshape(-1, x.shape[-3], h, w) if x.dim() >= 3 else x.reshape(-1, 1, h, w)
    out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=True)
    return out.reshape(*x.shape[:-2], size, size)


def resolution_blur_floor(x: torch.Tensor, size: int, angles: Sequence[float], method: str, sigma: float = 1.5,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-angle floor of a map at resolution `size` made from inputs x: the equivariance error of an exactly
    (continuously) equivariant operator that outputs (size, size) maps, D = blur(sigma px of the output)
    after `resize_about_centre`. Like a network's late features, its left side rotates the large input (a
    small interpolation error) and its right side rotates the small map (a large one); so this, not the
    map's round trip (two interpolations at the small size, not a bound of one), is the floor to read a
    feature's error against. Equals `blur_floor` at the input's own size. `mask` (size, size) defaults to the
    disk."""
    def op(t: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(resize_about_centre(t, size), sigma)

    lhs = op(rotate_many(x, angles, method).flatten(0, 1)).reshape(len(angles), *x.shape[:-2], size, size)
    ref = op(x)
    rhs = rotate_many(ref, angles, method)
    m = disk_mask(size, size, device=x.device) if mask is None else mask
    return masked_relative_error(lhs, rhs, m).mean(dim=-1)


def rotation_tangent(x: torch.Tensor, method: str | None = None) -> torch.Tensor:
    """d/dtheta R_theta x at theta = 0 (theta in radians), exactly: `bench.rotation.rotation_generator`.

    `method` (the interpolator of the finite angles) is accepted for a stable signature and checked, but does
    not change the result: differentiating through an interpolator measures its kernel's slope (bicubic
    grid_sample: 1.4x the true derivative on smooth blobs), not the rotation's, so the Lie derivative used to
    depend on --rotation."""
    if method is not None:
        check_method(method)
    return rotation_generator(x)


def jvp(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J_fn(x) v with forward-mode AD, falling back to the double-backward trick for ops without it."""
    try:
        return torch.func.jvp(fn, (x,), (v,))[1]
    except (NotImplementedError, RuntimeError):
        return torch.autograd.functional.jvp(fn, (x,), (v,))[1]


def lie_derivative_logits(model_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          method: str | None = None) -> torch.Tensor:
    """LEE of Gruver et al. (2023): per image, mean over classes of |d/dtheta softmax(f(R_theta x))| at 0.

    The input tangent is exact (`rotation_tangent`); `method` does not change the result (see there)."""
    v = rotation_tangent(x, method)
    d = jvp(lambda inp: torch.softmax(model_fn(inp), dim=-1), x, v)
    return d.abs().mean(dim=-1)


def lie_derivative_map(map_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, method: str | None = None,
                       mask: torch.Tensor | None = None,
                       pool: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Relative Lie derivative of an invariant-fibre map f: ||J_f(x) Lx - L f(x)|| / ||f(x)|| in `mask`.

    This is d/dtheta [R_-theta f(R_theta x)] at 0, normalised; 0 for a continuously equivariant f. Both
    tangents are exact (`rotation_tangent`; `method` does not change the result). `mask` (H, W) of the map
    defaults to its disk (`map_mask`); `comparison_mask` gives one without the padding-affected border.

    `pool`: a pointwise pooling of each pixel's fibre (max / norm: `bench.fields.group_pool`) applied after
    `map_fn`. The derivative of pool(f) is then taken by the chain rule, J_pool(f) (J_f Lx - L f): L is a
    first-order differential operator, so L pool(f) = pool'(f) L f, and L acts on the smooth field f instead of
    the pooled map, whose kinks (a max, a norm) make the spectral derivative ring. Through the pooled map
    layer_so2's value was 1.08/rad, by the chain rule 0.021 (a 2-degree finite difference of the Fourier
    rotation: 0.030). Where a norm's fibre is exactly 0 its derivative is undefined and counts as 0."""
    v = rotation_tangent(x, method)
    jv = jvp(map_fn, x, v)
    with torch.no_grad():
        fx = map_fn(x)
    if pool is None:
        out, d = fx, jv - rotation_tangent(fx)
    else:
        d = torch.nan_to_num(jvp(pool, fx, jv - rotation_tangent(fx)), nan=0.0, posinf=0.0, neginf=0.0)
        with torch.no_grad():
            out = pool(fx)
    m = (map_mask(out) if mask is None else mask).to(out.dtype)
    return _norms(d * m, True) / _norms(out * m, True).clamp_min(1e-12)
