"""The one rotation module of the suite: every protocol rotates and flips images through here.

Conventions (one for the whole suite):
- Images are tensors ``(..., H, W)``; the rotation centre is the image centre ``((W-1)/2, (H-1)/2)`` with pixel
  centres at integer coordinates. Odd sizes therefore rotate about a pixel centre.
- A positive angle rotates counter-clockwise as the image is displayed (row 0 on top), the same direction as
  ``torch.rot90(x, 1, dims=(-2, -1))``.
- A group element is ``(angle_deg, reflect)`` and acts as ``g.x = R_angle(F(x))``, where ``F`` is the horizontal
  flip (mirror left-right, ``torch.flip(x, (-1,))``). A vertical flip is ``(180, True)``.
- Multiples of 90 degrees and flips are exact index permutations. Other angles are split into an exact rot90
  part and a residual in (-45, 45] that is interpolated, so interpolation error never exceeds that of 45 deg.
- Interpolated samples that fall outside the image read `fill` (default 0, "corners filled with 0"): a
  number or one value per channel. Datasets state theirs (`DatasetInfo.fill`: the normalised value of an empty
  pixel), so that rotated test images get the background their training images had.

Methods: ``nearest``, ``bilinear``, ``bicubic`` (torch ``grid_sample``, cubic A=-0.75), ``bspline`` (cubic
B-spline interpolation of the prefiltered image, what ``scipy.ndimage`` does with ``order=3``; batched torch)
and ``fourier`` (three-shear rotation with FFT sub-pixel shifts on a 2x zero-padded canvas, exact for
band-limited images up to the finite canvas). docs/metrics.md tabulates the floor of each
(``python -m bench.floors_table``); `DEFAULT_METHOD` is the one every protocol uses unless told otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bench.errors import UsageError

METHODS = ("nearest", "bilinear", "bicubic", "bspline", "fourier")
#: Zero margin around an image before the B-spline prefilter: the prefilter's impulse response decays as
#: (2 - sqrt 3)^d, 1.4e-7 at 12 px, so the FFT's wrap-around is invisible (scipy pads 'grid-constant' by 12 too).
BSPLINE_PAD = 12
#: The one rotation every protocol uses unless a profile says otherwise (docs/metrics.md, floors table): the
#: prefiltered cubic B-spline. Its blur floor (what an exactly equivariant operator scores, the floor of every
#: model's curve) is the lowest of all methods at every angle on band-limited and on dataset inputs: 1.3-17x
#: below bicubic's, 1.7-3x below Fourier's (whose ringing at hard edges - the disk border, digit strokes, ReLU
#: kinks - spreads over the whole image); its single-rotation error on band-limited inputs is within 1.6x of
#: Fourier's and 4-10x below bicubic's. On CPU it costs ~10x bicubic and ~0.4x Fourier.
DEFAULT_METHOD = "bspline"


def parse_angles(spec: object, what: str = "angles") -> list[float]:
    """Angles in degrees, one rule for every protocol: a number, a list, or comma-separated parts, each a
    number or an inclusive 'start:stop:step' range ('0:360:10' is the 37 angles 0, 10, ..., 360: the stop is
    kept when it lands). '0:360:5,22.5' adds 22.5 to the 5-degree grid; the result is sorted, without repeats."""
    bad = UsageError(f"{what} must be 'start:stop:step' (step > 0, stop >= start), 'a,b,c' (parts may be "
                     f"ranges) or a list of numbers, got {spec!r}")
    if isinstance(spec, bool):
        raise bad
    if isinstance(spec, int | float):
        return [float(spec)]
    if isinstance(spec, list | tuple):
        if not spec or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in spec):
            raise bad
        return [float(a) for a in spec]
    if not isinstance(spec, str):
        raise bad
    values: list[float] = []
    try:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if ":" not in part:
                values.append(float(part))
                continue
            start, stop, step = (float(p) for p in part.split(":"))
            if not all(map(math.isfinite, (start, stop, step))) or step <= 0 or stop < start:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            if count > 100_000:
                raise ValueError
            values += [round(start + i * step, 9) for i in range(count)]
    except ValueError:
        raise bad from None
    if not values:
        raise bad
    return sorted(set(values)) if "," in spec else values


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(f"unknown rotation method {method!r}; valid: {', '.join(METHODS)}")
    return method


def split_angle(angle_deg: float) -> tuple[int, float]:
    """angle = 90*k + r with k in 0..3 and r in (-45, 45]; r is snapped to 0 when it is a rounding residue."""
    k = math.floor((angle_deg + 45.0) / 90.0)
    r = angle_deg - 90.0 * k
    if r <= -45.0:
        k, r = k - 1, r + 90.0
    if abs(r) < 1e-9:
        r = 0.0
    return k % 4, r


def is_grid_angle(angle_deg: float) -> bool:
    """True when the angle is a multiple of 90 degrees (an exact pixel permutation)."""
    return split_angle(angle_deg)[1] == 0.0


Fill = float | Sequence[float] | torch.Tensor


def rotate(x: torch.Tensor, angle_deg: float, method: str = DEFAULT_METHOD, reflect: bool = False,
           fill: Fill = 0.0) -> torch.Tensor:
    """Apply the group element (angle_deg, reflect) to images x of shape (..., H, W)."""
    check_method(method)
    if reflect:
        x = torch.flip(x, dims=(-1,))
    k, r = split_angle(float(angle_deg))
    if k:
        x = torch.rot90(x, k, dims=(-2, -1))
    if r == 0.0:
        return x
    if x.shape[-1] != x.shape[-2] and k % 2:
        raise ValueError("non-square images can only be rotated by multiples of 180 degrees exactly")
    return rotate_interpolated(x, torch.tensor(math.radians(r), dtype=x.dtype, device=x.device), method, fill)


def rotate_many(x: torch.Tensor, angles_deg: Sequence[float], method: str = DEFAULT_METHOD,
                reflect: bool = False, fill: Fill = 0.0) -> torch.Tensor:
    """Rotate x (N, C, H, W) by every angle: returns (A, N, C, H, W).

    With `bspline` the images' spline coefficients are computed once and shared by every angle (the prefilter
    was ~70 % of an equivariance job when it ran once per angle): the prefilter commutes with flips and rot90
    (it is the same separable filter along both axes of a square canvas), so the coefficients of the exactly
    turned image are the turned coefficients."""
    if method != "bspline" or x.shape[-1] != x.shape[-2] or x.dtype not in (torch.float32, torch.float64):
        return rotate_each(x.unsqueeze(0).expand(len(angles_deg), *x.shape), angles_deg, method, reflect, fill)
    f = fill_tensor(fill, x)
    base = torch.flip(x, dims=(-1,)) if reflect else x
    out = base.unsqueeze(0).repeat(len(angles_deg), *([1] * x.dim()))
    by_turn: dict[int, list[tuple[int, float]]] = {}
    for i, a in enumerate(angles_deg):
        k, r = split_angle(float(a))
        if k:
            out[i] = torch.rot90(base, k, dims=(-2, -1))
        if r != 0.0:
            by_turn.setdefault(k, []).append((i, r))
    coeffs = bspline_coefficients(base if f is None else base - f) if by_turn else None
    for k, pending in by_turn.items():
        idx = [i for i, _ in pending]
        thetas = torch.tensor([math.radians(r) for _, r in pending], dtype=x.dtype, device=x.device)
        turned = torch.rot90(coeffs, k, dims=(-2, -1)) if k else coeffs
        rotated = _sample_bspline(turned.unsqueeze(0).expand(len(idx), *turned.shape), thetas, *x.shape[-2:])
        out[idx] = rotated if f is None else rotated + f
    return out


def rotate_each(x: torch.Tensor, angles_deg: Sequence[float], method: str = DEFAULT_METHOD,
                reflect: bool = False, fill: Fill = 0.0) -> torch.Tensor:
    """Rotate x[i] (any shape (..., H, W)) by angles_deg[i]; returns a tensor shaped like x.

    All interpolated angles go through one batched interpolation call (the protocols' hot path)."""
    check_method(method)
    if x.shape[0] != len(angles_deg):
        raise ValueError(f"rotate_each got {len(angles_deg)} angles for {x.shape[0]} leading entries")
    base = torch.flip(x, dims=(-1,)) if reflect else x
    out = torch.empty_like(x)
    pending: list[tuple[int, float]] = []
    for i, a in enumerate(angles_deg):
        k, r = split_angle(float(a))
        turned = torch.rot90(base[i], k, dims=(-2, -1)) if k else base[i]
        if r == 0.0:
            out[i] = turned
        else:
            out[i] = turned  # interpolated below, in one call
            pending.append((i, r))
    if pending:
        idx = [i for i, _ in pending]
        thetas = torch.tensor([math.radians(r) for _, r in pending], dtype=x.dtype, device=x.device)
        out[idx] = rotate_interpolated(out[idx], thetas, method, fill)
    return out


def fill_tensor(fill: Fill, x: torch.Tensor) -> torch.Tensor | None:
    """`fill` shaped to broadcast over x (..., C, H, W) (one value per channel, or one for all); None for 0."""
    f = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
    if not bool(f.ne(0).any()):
        return None
    if f.numel() == 1:
        return f.reshape(())
    if x.dim() < 3 or x.shape[-3] != f.numel():
        raise ValueError(f"fill has {f.numel()} values but the images have shape {tuple(x.shape)} "
                         "(one value per channel, or one for all)")
    return f.reshape(-1, 1, 1)


def rotate_interpolated(x: torch.Tensor, theta: torch.Tensor, method: str, fill: Fill = 0.0) -> torch.Tensor:
    """Interpolated rotation by theta radians (scalar, or one angle per leading index of x).

    Samples outside the image read `fill`: the rotation of x - fill, plus fill (every method is linear, so
    this equals rotating the un-normalised image with black corners when fill is the normalised black).
    Differentiable in theta, but its derivative at 0 is the interpolator's, not the rotation's: the Lie
    derivative uses `rotation_generator`. No exact fast path here on purpose.
    """
    check_method(method)
    f = fill_tensor(fill, x)
    if f is not None:
        return rotate_interpolated(x - f, theta, method) + f
    if method == "fourier":
        return _rotate_fourier(x, theta)
    if method == "bspline":
        return _rotate_bspline(x, theta)
    return _rotate_grid(x, theta, method)


def _source_points(h: int, w: int, theta: torch.Tensor, dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(col, row) pixel coordinates, each (n, H, W), where output pixel p reads the input: R(-theta) p about
    the centre, with y pointing up (so a positive theta turns the content counter-clockwise)."""
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows = torch.arange(h, dtype=dtype, device=device)
    cols = torch.arange(w, dtype=dtype, device=device)
    yy = (cy - rows)[:, None].expand(h, w)  # y points up
    xx = (cols - cx)[None, :].expand(h, w)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    return c * xx + s * yy + cx, cy - (-s * xx + c * yy)


def _batched(x: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x as (n, C', H, W) with one angle per leading entry (or one angle for all), and theta as (n,)."""
    h, w = x.shape[-2:]
    lead = x.shape[:-2]
    theta = theta.reshape(-1)
    n = theta.numel()
    if n != 1 and (not lead or lead[0] != n):
        raise ValueError(f"got {n} angles for a batch with leading shape {tuple(lead)}")
    return x.reshape(n, -1, h, w), theta


def _normalised_grid(cols: torch.Tensor, rows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """grid_sample grid (align_corners=True: -1/+1 are the border pixel centres) from pixel coordinates."""
    return torch.stack([cols / max(w - 1, 1) * 2 - 1, rows / max(h - 1, 1) * 2 - 1], dim=-1)


def _rotate_grid(x: torch.Tensor, theta: torch.Tensor, method: str) -> torch.Tensor:
    """grid_sample rotation about the image centre (zeros outside)."""
    h, w = x.shape[-2:]
    imgs, theta = _batched(x, theta)
    cols, rows = _source_points(h, w, theta, x.dtype, x.device)
    out = F.grid_sample(imgs, _normalised_grid(cols, rows, h, w), mode=method, padding_mode="zeros",
                        align_corners=True)
    return out.reshape(x.shape)


def bspline_coefficients(x: torch.Tensor, pad: int = BSPLINE_PAD) -> torch.Tensor:
    """Cubic B-spline coefficients c of images (..., H, W) zero-extended by `pad` px: sum_k c_k b3(i - k) = x_i.

    The inverse of the sampled B-spline [1, 4, 1] / 6 is applied along each axis in the Fourier domain of the
    padded canvas (its transfer function (4 + 2 cos w) / 6 >= 1/3 never vanishes), batched and on any device,
    instead of scipy's recursive filter. Returns (..., H + 2 pad, W + 2 pad)."""
    big = F.pad(x.reshape(-1, *x.shape[-2:]), (pad, pad, pad, pad)).reshape(*x.shape[:-2], x.shape[-2] + 2 * pad,
                                                                           x.shape[-1] + 2 * pad)
    for dim in (-1, -2):
        n = big.shape[dim]
        freqs = torch.fft.rfftfreq(n, device=x.device, dtype=x.dtype)
        shape = [1] * big.dim()
        shape[dim] = freqs.numel()
        transfer = ((4 + 2 * torch.cos(2 * math.pi * freqs)) / 6).reshape(shape)
        big = torch.fft.irfft(torch.fft.rfft(big, dim=dim) / transfer, n=n, dim=dim)
    return big


def _bspline_taps(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cubic B-spline interpolation at `pos` as two linear interpolations (all four weights are positive):
    weights w0..w3 on floor(pos) - 1 .. floor(pos) + 2 merge into g0 = w0 + w1 at floor - 1 + w1 / g0 and
    g1 = w2 + w3 at floor + 1 + w3 / g1, so grid_sample's bilinear mode evaluates the spline exactly."""
    base = torch.floor(pos)
    t = pos - base
    w0, w1 = (1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6
    w3 = t**3 / 6
    w2 = 1 - w0 - w1 - w3
    g0, g1 = w0 + w1, w2 + w3
    return g0, base - 1 + w1 / g0, g1, base + 1 + w3 / g1


def _rotate_bspline(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Prefiltered cubic B-spline rotation (scipy.ndimage order=3 on the zero-extended image); half precision
    inputs are computed in float32 (torch's FFTs need it)."""
    if x.dtype not in (torch.float32, torch.float64):
        return _rotate_bspline(x.float(), theta.float()).to(x.dtype)
    h, w = x.shape[-2:]
    coeffs = bspline_coefficients(x, BSPLINE_PAD)
    return _sample_bspline(coeffs, theta, h, w)


def _sample_bspline(coeffs: torch.Tensor, theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The rotation by theta of the H x W images whose spline coefficients (..., H + 2 pad, W + 2 pad) are
    `coeffs` (one angle for all, or one per leading index), shaped (..., H, W)."""
    lead = coeffs.shape[:-2]
    coeffs, theta = _batched(coeffs, theta)
    pad = BSPLINE_PAD
    cols, rows = _source_points(h, w, theta, coeffs.dtype, coeffs.device)
    gx0, cx0, gx1, cx1 = _bspline_taps(cols + pad)
    gy0, ry0, gy1, ry1 = _bspline_taps(rows + pad)
    hp, wp = coeffs.shape[-2:]
    # the four bilinear fetches in one grid_sample call, stacked along the grid's rows
    grid = _normalised_grid(torch.cat([cx0, cx1, cx0, cx1], dim=1), torch.cat([ry0, ry0, ry1, ry1], dim=1), hp, wp)
    fetched = F.grid_sample(coeffs, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    f00, f10, f01, f11 = fetched.split(h, dim=-2)
    weights = [(gx0 * gy0), (gx1 * gy0), (gx0 * gy1), (gx1 * gy1)]
    out = sum(wt[:, None] * f for wt, f in zip(weights, (f00, f10, f01, f11)))
    return out.reshape(*lead, h, w)


def _shift_rows(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift each row of x (..., H, W) right by shifts (broadcast to (..., H, 1)) pixels via an FFT phase ramp."""
    w = x.shape[-1]
    freqs = torch.fft.rfftfreq(w, device=x.device, dtype=x.dtype)
    spec = torch.fft.rfft(x, dim=-1)
    phase = torch.exp(-2j * math.pi * freqs * shifts)
    return torch.fft.irfft(spec * phase, n=w, dim=-1)


def _rotate_fourier(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Three-shear rotation R = Sx(a) Sy(b) Sx(a), a = -tan(theta/2), b = sin(theta), on a 2x padded canvas."""
    h, w = x.shape[-2:]
    if h != w:
        raise ValueError("Fourier rotation needs square images")
    lead = x.shape[:-2]
    theta = theta.reshape(-1)
    n = theta.numel()
    imgs = x.reshape(n, -1, h, w)
    pad = h // 2 + 1
    big = F.pad(imgs, (pad, pad, pad, pad))
    size = big.shape[-1]
    centre = (size - 1) / 2.0
    coord = torch.arange(size, dtype=x.dtype, device=x.device) - centre
    a = (-torch.tan(theta / 2))[:, None, None, None]
    b = torch.sin(theta)[:, None, None, None]
    y_of_row = (-coord)[None, None, :, None]  # y points up
    x_of_col = coord[None, None, :, None]

    def shear_x(img: torch.Tensor) -> torch.Tensor:  # x' = x + a*y: row at height y moves right by a*y
        return _shift_rows(img, a * y_of_row)

    def shear_y(img: torch.Tensor) -> torch.Tensor:  # y' = y + b*x: column at x moves up by b*x
        t = img.transpose(-1, -2)  # now rows are columns; moving "up" = towards row 0 = negative shift
        return _shift_rows(t, -b * x_of_col).transpose(-1, -2)

    out = shear_x(shear_y(shear_x(big)))
    return out[..., pad:pad + h, pad:pad + w].reshape(*lead, h, w)


def spectral_derivative(x: torch.Tensor, dim: int) -> torch.Tensor:
    """d/d(index) of x along `dim` by FFT of its mirror extension (x followed by x reversed, period 2n).

    The mirror extension is continuous, so a map that is constant up to its border (a conv's bias) gets a zero
    derivative, as in the continuum, instead of the Gibbs ringing a zero- or periodically-extended FFT gives
    at a jump. For images that vanish near their border (band-limited inputs, disk-masked data) it equals the
    derivative of the trigonometric interpolant, i.e. it is exact for band-limited content. The Nyquist bin
    is dropped (the derivative of a real sampled sine at Nyquist is undefined)."""
    n = x.shape[dim]
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    ext = torch.cat([work, work.flip(dim)], dim=dim)
    freqs = torch.fft.rfftfreq(2 * n, device=x.device, dtype=work.dtype)
    mult = (2j * math.pi) * freqs
    mult[-1] = 0  # Nyquist (2n is even)
    shape = [1] * x.dim()
    shape[dim] = mult.numel()
    spec = torch.fft.rfft(ext, dim=dim) * mult.reshape(shape)
    return torch.fft.irfft(spec, n=2 * n, dim=dim).narrow(dim, 0, n).to(x.dtype)


def rotation_generator(x: torch.Tensor) -> torch.Tensor:
    """d/dtheta R_theta x at theta = 0 (radians) for images (..., H, W), exactly, whatever the interpolator.

    With display coordinates x = col - cx (right) and y = cy - row (up), R_theta x (p) = x(R_-theta p), so the
    derivative is (y d/dx - x d/dy) x = (cy - row) d/dcol + (col - cx) d/drow, the partial derivatives taken
    spectrally (`spectral_derivative`). It equals the tangent of the Fourier rotation on band-limited images
    (tests/test_rotation.py checks it against a central difference), not that of an interpolator: bicubic
    grid_sample's slope at the grid is 1.5x a central difference, bilinear's is a one-sided difference."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, dtype=x.dtype, device=x.device)
    cols = torch.arange(w, dtype=x.dtype, device=x.device)
    y_up = ((h - 1) / 2.0 - rows)[:, None]
    x_right = (cols - (w - 1) / 2.0)[None, :]
    return y_up * spectral_derivative(x, -1) + x_right * spectral_derivative(x, -2)


def disk_mask(h: int, w: int | None = None, radius: float | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (H, W) mask of pixels whose centre lies within `radius` of the image centre.

    Default radius (min(H, W) - 1) / 2: the largest disk that every rotation maps into the image."""
    w = h if w is None else w
    if radius is None:
        radius = (min(h, w) - 1) / 2.0
    rows = torch.arange(h, device=device, dtype=torch.float64) - (h - 1) / 2.0
    cols = torch.arange(w, device=device, dtype=torch.float64) - (w - 1) / 2.0
    return (rows[:, None] ** 2 + cols[None, :] ** 2) <= radius**2 + 1e-9


def radial_taper(h: int, w: int | None = None, width: float = 2.0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Smooth (H, W) window: 1 inside the disk, raised-cosine fall to 0 over `width` pixels at its edge.

    Multiplying by it keeps an image band-limited-ish *and* confined to the rotation-safe disk."""
    w = h if w is None else w
    outer = (min(h, w) - 1) / 2.0
    rows = torch.arange(h, device=device, dtype=torch.float64) - (h - 1) / 2.0
    cols = torch.arange(w, device=device, dtype=torch.float64) - (w - 1) / 2.0
    r = torch.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)
    t = ((outer - r) / width).clamp(0.0, 1.0)
    return (0.5 - 0.5 * torch.cos(math.pi * t)).to(dtype)


def _bandlimited_spectrum(n: int, channels: int, size: int, cutoff: float, seed: int) -> torch.Tensor:
    """rfft2 spectrum (float64) of the seeded low-passed noise behind `bandlimited_images` (before the taper)."""
    if not 0 < cutoff <= 0.5:
        raise UsageError(f"cutoff must be in (0, 0.5] cycles/pixel, got {cutoff}")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, channels, size, size, generator=gen, dtype=torch.float64)
    fy = torch.fft.fftfreq(size, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(size, dtype=torch.float64)[None, :]
    return torch.fft.rfft2(noise) * torch.exp(-0.5 * (fx**2 + fy**2) / cutoff**2)


def bandlimited_images(n: int, channels: int, size: int, cutoff: float = 0.1, seed: int = 0,
                       dtype: torch.dtype = torch.float32, taper: float = 4.0) -> torch.Tensor:
    """Seeded random images (n, channels, size, size) with an isotropic spectrum inside a disk.

    White noise is low-passed by a radial Gaussian whose std is `cutoff` cycles/pixel (0.5 = Nyquist), then
    multiplied by a raised-cosine disk window and scaled to unit RMS. Band-limited inputs keep the error that
    interpolation itself causes small, so a measured error is the model's. `bandlimited_rotated` evaluates
    the same continuous image rotated, exactly."""
    img = torch.fft.irfft2(_bandlimited_spectrum(n, channels, size, cutoff, seed), s=(size, size))
    img = img * radial_taper(size, dtype=torch.float64, width=taper)
    rms = img.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
    return (img / rms).to(dtype)


def bandlimited_rotated(n: int, channels: int, size: int, angle_deg: float, cutoff: float = 0.1, seed: int = 0,
                        dtype: torch.dtype = torch.float32, taper: float = 4.0) -> torch.Tensor:
    """The exact rotation by `angle_deg` of the continuous image that `bandlimited_images` samples.

    That image is taper(r) * B(p): B the periodic trigonometric polynomial of the low-passed noise, taper the
    radial window. The window is rotation invariant, so the rotated image is taper(r) * B(R_-angle p), and B
    is summed from its Fourier coefficients at the off-grid points (direct DFT, float64): a reference that owes
    nothing to any interpolator, for the floors table and the tests."""
    spec = _bandlimited_spectrum(n, channels, size, cutoff, seed)
    coeffs = torch.fft.fft2(torch.fft.irfft2(spec, s=(size, size))) / size**2  # B(p) = sum_k coeffs_k e^(2 pi i k.p / size)
    k = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)  # integer frequencies, signed
    theta = torch.tensor([math.radians(angle_deg)], dtype=torch.float64)
    cols, rows = _source_points(size, size, theta, torch.float64, torch.device("cpu"))
    phase_r = torch.exp(2j * math.pi * rows.reshape(-1, 1) * k / size)  # (P, size)
    phase_c = torch.exp(2j * math.pi * cols.reshape(-1, 1) * k / size)
    values = torch.einsum("ncuv,pu,pv->ncp", coeffs, phase_r, phase_c).real.reshape(n, channels, size, size)
    window = radial_taper(size, dtype=torch.float64, width=taper)
    unrotated = torch.fft.irfft2(spec, s=(size, size)) * window
    rms = unrotated.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
    return (values * window / rms).to(dtype)
