"""Ring geometry and the Gaussian-mixture ring basis of a GMR kernel (2D discs and 3D spherical shells).

Geometry (identical to the official GMR-Conv 1.0.3 so that ``smoothing="ring"`` reproduces its kernels):

- ``D(p)`` is the Euclidean distance of kernel pixel ``p`` to the centre pixel (``k`` odd, ``h = k // 2``).
- ``force_circular=True``: ``R = h + 1`` rings, edges ``linspace(0, h + 0.5, R + 1)``; ring ``l`` holds the
  pixels with ``edge_l <= D < edge_{l+1}``; pixels with ``D >= h + 0.5`` (the corners) belong to no ring.
- ``force_circular=False``: ``R = h + 2`` rings, edges ``linspace(0, max D, R)``; the last ring holds the pixels
  at exactly ``max D`` (the corners).

Mixture (``gaussian_mixture=True``): component ``j`` is a Gaussian of width ``sigma_j`` centred on ring ``j``,
``g_j(t) = exp(-(t - j)^2 / (2 sigma_j^2)) / (sigma_j * 2.5066)`` where ``t`` is a position measured in *ring
units* (the official code uses the truncated constant 2.5066 for sqrt(2 pi); we keep it so kernels match
bit-for-bit up to rounding).

- ``smoothing="ring"`` (official): ``t`` is the pixel's integer ring index, so the basis is piecewise constant
  per ring: ``Basis_j(p) = g_j(ring(p))``.
- ``smoothing="radius"`` (ours): ``t = r / s`` is the continuous radius ``r`` of a point in pixels divided by the
  ring spacing ``s`` (pixels per ring), and the basis value of a pixel is the average of ``g_j`` over an
  ``S x S`` (``S^3`` in 3D) grid of sub-samples covering the pixel's area. Ring ``j`` is therefore centred at
  radius ``j * s`` pixels and ``sigma_j`` (still in ring units) is ``sigma_j * s`` pixels. ``s = r_last / (R - 1)``
  where ``r_last`` is the radius of the outermost ring centre: ``h`` for circular kernels (so the default
  ``s = 1``: ring centres at integer radii 0..h, sigma in pixels), ``max D`` otherwise. Sub-samples outside the
  radius ``h + 0.5`` are dropped for circular kernels (a disc support instead of corner pixels).
  Without the mixture, radius mode uses a piecewise-linear "hat" profile ``max(0, 1 - |t - j|)``.

Ring units are the same in both modes (the ring index ``l`` sits at ``t = l``), so the same ``log_sigmas`` mean
the same thing and a kernel trained in one mode is a sensible start for the other.
"""

from __future__ import annotations

import numpy as np
import torch

SQRT_2PI_OFFICIAL = 2.5066  # the official code's (truncated) sqrt(2*pi); kept for exact parity
SIGMA_MIN = 1e-2  # official clamp range for sigma is [1e-2, 2 R]


def default_num_rings(kernel_size: int, force_circular: bool) -> int:
    """Number of rings the official code uses for an odd kernel of side ``kernel_size``."""
    return kernel_size // 2 + (1 if force_circular else 2)


def initial_sigma(kernel_size: int, num_rings: int, sigma_scale: float) -> float:
    """Initial sigma (ring units): the ring band width k / (2 (R - 1)) taken as a FWHM (scale 2.355)."""
    band_width = kernel_size / (2 * max(num_rings - 1, 1))  # R = 1 would divide by zero in the official code
    return band_width / sigma_scale


def _offsets(kernel_size: int, ndim: int) -> np.ndarray:
    """Integer offsets of every kernel pixel from the centre, shape (k**ndim, ndim), row-major order."""
    h = kernel_size // 2
    axes = [np.arange(kernel_size, dtype=np.float64) - h] * ndim
    grids = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=-1)


def pixel_distances(kernel_size: int, ndim: int) -> np.ndarray:
    """Distance of each kernel pixel centre to the kernel centre, flattened (k**ndim,) float64."""
    off = _offsets(kernel_size, ndim)
    return np.sqrt((off**2).sum(-1))


def ring_edges(kernel_size: int, ndim: int, num_rings: int, force_circular: bool) -> np.ndarray:
    """Ring edges in pixels (official definition): R + 1 values if circular, R values otherwise."""
    d = pixel_distances(kernel_size, ndim)
    if force_circular:
        return np.linspace(d.min(), kernel_size // 2 + 0.5, num=num_rings + 1)
    return np.linspace(d.min(), d.max(), num=num_rings)


def ring_masks(kernel_size: int, ndim: int, num_rings: int, force_circular: bool) -> torch.Tensor:
    """Indicator of ring membership, float64 (R, k**ndim); corner pixels of a circular kernel are all-zero."""
    d = pixel_distances(kernel_size, ndim)
    edges = ring_edges(kernel_size, ndim, num_rings, force_circular)
    masks = np.zeros((num_rings, d.size), dtype=np.float64)
    for ring in range(num_rings):
        if not force_circular and ring == num_rings - 1:
            masks[ring] = d == edges[ring]
        else:
            masks[ring] = (d >= edges[ring]) & (d < edges[ring + 1])
    return torch.from_numpy(masks)


def ring_spacing(kernel_size: int, ndim: int, num_rings: int, force_circular: bool) -> float:
    """Pixels per ring unit in radius mode: outermost ring centre radius / (R - 1) (1 for a single ring)."""
    if num_rings <= 1:
        return 1.0
    last = kernel_size // 2 if force_circular else float(pixel_distances(kernel_size, ndim).max())
    return last / (num_rings - 1) if last > 0 else 1.0


def canonical_index(kernel_size: int, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orbit representatives of the kernel pixels under the grid symmetries (axis flips and permutations).

    Returns ``(reps, index)``: ``reps`` (P_rep,) flat indices of one pixel per orbit (sorted absolute offsets)
    and ``index`` (P,) mapping every pixel to its orbit's row in ``reps``. Gathering a per-orbit value through
    ``index`` makes a kernel exactly symmetric, with no rounding differences between mirrored pixels."""
    off = np.abs(_offsets(kernel_size, ndim)).astype(np.int64)
    canon = np.sort(off, axis=-1)  # orbit label: sorted |offsets|
    h = kernel_size // 2
    flat_of = lambda c: int(np.ravel_multi_index(tuple(c + h), (kernel_size,) * ndim))  # noqa: E731
    rep_flat: dict[int, int] = {}
    index = np.empty(len(off), dtype=np.int64)
    reps: list[int] = []
    for p, c in enumerate(canon):
        key = flat_of(c)
        if key not in rep_flat:
            rep_flat[key] = len(reps)
            reps.append(key)
        index[p] = rep_flat[key]
    return torch.tensor(reps, dtype=torch.long), torch.from_numpy(index)


def _symmetric_subsamples(supersample: int) -> np.ndarray:
    """1-D sub-sample offsets (cell centres of S equal cells on [-1/2, 1/2]), exactly antisymmetric."""
    half = (np.arange(supersample // 2, dtype=np.float64)[::-1] + (0.5 if supersample % 2 == 0 else 1.0))
    pos = half / supersample
    mid = [0.0] if supersample % 2 else []
    return np.concatenate([-pos, np.array(mid), pos[::-1]])


def subsample_coords(kernel_size: int, ndim: int, num_rings: int, force_circular: bool,
                     supersample: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sub-sample geometry of the orbit-representative pixels for radius smoothing.

    Returns ``(rho, support, index)``: ring-unit radius ``r / s`` of every sub-sample (P_rep, S**ndim),
    float64; its support weight (1 inside the kernel's support, 0 outside); and the (P,) gather index from
    :func:`canonical_index`. Sub-samples sit at the centres of an S^ndim grid of equal cells tiling the pixel,
    so their mean is the midpoint-rule average of a function over the pixel's area (volume in 3D)."""
    reps, index = canonical_index(kernel_size, ndim)
    off = _offsets(kernel_size, ndim)[reps.numpy()]  # (P_rep, ndim)
    sub_1d = _symmetric_subsamples(supersample)
    sub = np.stack([g.reshape(-1) for g in np.meshgrid(*([sub_1d] * ndim), indexing="ij")], axis=-1)
    pts = off[:, None, :] + sub[None, :, :]
    radius = np.sqrt((pts**2).sum(-1))
    if force_circular:
        support = (radius < kernel_size // 2 + 0.5).astype(np.float64)
    else:
        support = np.ones_like(radius)
    spacing = ring_spacing(kernel_size, ndim, num_rings, force_circular)
    return torch.from_numpy(radius / spacing), torch.from_numpy(support), index


def sigmas_from_log(log_sigmas: torch.Tensor, num_rings: int, clip: bool) -> torch.Tensor:
    """sigma = exp(log_sigma), clamped to the official range [1e-2, 2 R] when ``clip``."""
    sigmas = torch.exp(log_sigmas)
    if clip:
        sigmas = torch.clamp(sigmas, min=SIGMA_MIN, max=2 * num_rings)
    return sigmas


def gaussian(t: torch.Tensor, centres: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """g_j(t) for every component j: result has shape (R, *t.shape)."""
    shape = (-1,) + (1,) * t.dim()
    mu = centres.reshape(shape)
    sg = sigmas.reshape(shape)
    return torch.exp(-0.5 * ((t.unsqueeze(0) - mu) / sg) ** 2) / (sg * SQRT_2PI_OFFICIAL)


def ring_basis(masks: torch.Tensor, sigmas: torch.Tensor | None) -> torch.Tensor:
    """Official basis (R, k**ndim): Gaussian over the ring index mixed into the ring indicators.

    ``sigmas=None`` (no mixture) returns the plain ring indicators."""
    if sigmas is None:
        return masks
    idx = torch.arange(masks.shape[0], dtype=masks.dtype, device=masks.device)
    mixing = gaussian(idx, idx, sigmas)  # (R_components, R_rings)
    return mixing @ masks


def radius_basis(rho: torch.Tensor, support: torch.Tensor, index: torch.Tensor, sigmas: torch.Tensor | None,
                 num_rings: int) -> torch.Tensor:
    """Our basis (R, k**ndim): the mixture evaluated on continuous radius, averaged over each pixel's area.

    Computed once per orbit of pixels and gathered, so it is exactly symmetric. ``sigmas=None`` uses
    piecewise-linear hats between ring centres instead of Gaussians."""
    centres = torch.arange(num_rings, dtype=rho.dtype, device=rho.device)
    if sigmas is None:
        shape = (-1,) + (1,) * rho.dim()
        values = torch.clamp(1 - (rho.unsqueeze(0) - centres.reshape(shape)).abs(), min=0)
    else:
        values = gaussian(rho, centres, sigmas)  # (R, P, S^n)
    return (values * support).mean(-1)[:, index]


