"""`rotshapes`: an embedded, orientation-free dataset of procedurally drawn shapes (no download).

Every image shows one object whose class is a rotation- and reflection-invariant property: its shape
(disk, ellipse, triangle, square, five-point star), its number of arms (plus, three-armed "Y"), a
crescent, or its number of parts (two or three dots). The object is drawn at an angle uniform in
[0, 360) in the training and the test split alike, so orientation carries no information about the class:
the class-conditional distribution is invariant under every rotation and reflection. What stays to be
learnt is the shape itself, under nuisance variation that is the same for every class: size, position
(a small offset in a uniform direction), filled or outlined (and the stroke width), brightness, edge
softness, shape parameters (ellipse aspect, star depth, arm width, dot spacing) and per-pixel Gaussian
noise of random strength.

Rendering is analytic: each object is a signed-distance function evaluated in the object's own frame at
the exact continuous angle, on a 2x2 supersampled grid per pixel (offsets symmetric under the square's
symmetries) with a linear edge ramp, then box-averaged. No pixel image is ever rotated, so no interpolation
artefact depends on the angle. 29x29 (odd: the rotation centre is a pixel centre), masked to the
rotation-safe disk of radius 14 like `rotdigits`; no ink reaches beyond radius 13.4 at any angle.

Pixels inside the disk are normalised with the training split's mean/std inside the disk; pixels outside
are exactly 0. Split: 500 train and 100 test images per class (5,000 / 1,000), drawn from independent
random streams derived from the fixed dataset seed, independent of the run seed. Generating both splits
takes a few seconds on one thread (2–5 s on a busy shared two-core machine); the tensors are built
once per process (functools.lru_cache).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from bench.cost.timing import fixed_threads
from bench.datasets import DATASETS, register_dataset
from bench.datasets.common import TensorImageDataset, embedded_split, normalised_in_disk
from bench.errors import UsageError
from bench.rotation import disk_mask

IMAGE_SIZE = 29
SUPERSAMPLE = 2  # sub-pixel samples per axis
CHUNK = 64  # images rendered at once (keeps the (N, H*W*S*S) work arrays in cache)
PER_CLASS = {"train": 500, "test": 100}
DATASET_SEED = 0
CLASSES = ("disk", "ellipse", "triangle", "square", "star", "plus", "tri_arm", "crescent", "two_dots",
           "three_dots")

# nuisance ranges (uniform), shared by every class
SIZE = (6.0, 9.5)  # object scale in pixels (circumradius of the unit shape)
OFFSET = 1.5  # max distance of the object's centre from the image centre, pixels
STROKE = (1.5, 2.5)  # outline width, pixels (half of the objects are outlined)
BRIGHTNESS = (0.5, 1.0)
SOFTNESS = (0.8, 1.6)  # width of the edge ramp, pixels
NOISE = (0.05, 0.3)  # std of the per-pixel Gaussian noise
# no ink beyond this distance from the centre, at any angle (unit shapes reach 1.03 at most: the arm corners)
OBJECT_RADIUS = SIZE[1] * 1.03 + OFFSET + STROKE[1] / 2 + SOFTNESS[1] / 2


class Generated(NamedTuple):
    """Raw images (N, 1, H, W) in object units (background 0, zero outside the disk), labels, angles (rad)."""

    images: torch.Tensor
    labels: torch.Tensor
    angles: torch.Tensor


def uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """n draws uniform in [low, high), float64 (parameters are drawn in double, rendering runs in float32)."""
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def column(values: torch.Tensor) -> torch.Tensor:
    """Per-image parameters as an (N, 1) float32 column that broadcasts against (N, P) sample coordinates."""
    return values.to(torch.float32)[:, None]


# -- signed distances of the unit shapes: object frame (x, y: (N, P)), circumradius 1 ------------------------
def sd_disk(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.hypot(x, y) - 1.0


def sd_ellipse(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """First-order distance to the ellipse with semi-axes 1 and b (exact on the curve, smooth elsewhere)."""
    b = column(uniform(gen, len(x), 0.45, 0.65))
    k0 = torch.hypot(x, y / b)
    k1 = torch.hypot(x, y / b**2).clamp_min(1e-6)
    return k0 * (k0 - 1.0) / k1


def regular_polygon(x: torch.Tensor, y: torch.Tensor, sides: int) -> torch.Tensor:
    """Exact signed distance to the regular polygon with circumradius 1 and an edge normal along +x.

    The plane is folded into the sector around one edge normal (the polygon's symmetry); there the distance
    is that to one edge segment. (The cheaper max over edge lines is wrong outside the corners: an outline
    drawn with it grows spikes that reach 1 / cos(pi / sides) times further.)"""
    half = math.pi / sides
    phi = torch.remainder(torch.atan2(y, x) + half, 2 * half) - half
    r = torch.hypot(x, y)
    u = r * torch.cos(phi) - math.cos(half)  # across the edge, from its line
    v = (r * torch.sin(phi)).abs() - math.sin(half)  # along the edge, beyond its end
    return torch.hypot(u.clamp_min(0), v.clamp_min(0)) + u.clamp_max(0)


def sd_triangle(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return regular_polygon(x, y, 3)


def sd_square(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return regular_polygon(x, y, 4)


def sd_star(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Five points: the boundary radius falls linearly (in angle) from 1 at a tip to `inner` between tips."""
    inner = column(uniform(gen, len(x), 0.4, 0.6))
    half = math.pi / 5  # half a sector
    phi = torch.remainder(torch.atan2(y, x) + half, 2 * half) - half
    return torch.hypot(x, y) - (1.0 - (1.0 - inner) * (phi.abs() / half))


def arms(x: torch.Tensor, y: torch.Tensor, count: int, width: torch.Tensor) -> torch.Tensor:
    """Union of `count` bars from the centre to radius 1 at equal angles, half-width `width` (N, 1)."""
    out = None
    for i in range(count):
        a = 2 * math.pi * i / count
        du = (x * math.cos(a) + y * math.sin(a) - 0.5).abs() - 0.5  # along the arm, from its middle
        dv = (y * math.cos(a) - x * math.sin(a)).abs() - width
        box = torch.hypot(du.clamp_min(0), dv.clamp_min(0)) + torch.maximum(du, dv).clamp_max(0)
        out = box if out is None else torch.minimum(out, box)
    assert out is not None
    return out


def sd_plus(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return arms(x, y, 4, column(uniform(gen, len(x), 0.15, 0.25)))


def sd_tri_arm(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return arms(x, y, 3, column(uniform(gen, len(x), 0.15, 0.25)))


def sd_crescent(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The unit disk minus a disk of radius 0.75..0.9 shifted by 0.35..0.55 along the object's x axis."""
    cut_r = column(uniform(gen, len(x), 0.75, 0.9))
    shift = column(uniform(gen, len(x), 0.35, 0.55))
    return torch.maximum(torch.hypot(x, y) - 1.0, cut_r - torch.hypot(x - shift, y))


def dots(x: torch.Tensor, y: torch.Tensor, centres: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Union of disks of radius `radius` (N,) at `centres` (N, K, 2)."""
    c = centres.to(torch.float32)
    d = torch.stack([torch.hypot(x - c[:, k, 0:1], y - c[:, k, 1:2]) for k in range(c.shape[1])]).amin(dim=0)
    return d - column(radius)


def sd_two_dots(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = len(x)
    radius = uniform(gen, n, 0.25, 0.35)
    half = radius + 0.1 + uniform(gen, n, 0.0, 1.0) * (0.8 - 2 * radius)  # a gap >= 0.2, outer edge <= 1
    zeros = torch.zeros_like(half)
    centres = torch.stack([torch.stack([half, zeros], -1), torch.stack([-half, zeros], -1)], dim=1)
    return dots(x, y, centres, radius)


def sd_three_dots(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Three dots near the corners of a triangle: angles 0, 120, 240 degrees each jittered by +-20."""
    n = len(x)
    radius = uniform(gen, n, 0.22, 0.3)
    angles = torch.arange(3, dtype=torch.float64) * (2 * math.pi / 3) + uniform(gen, 3 * n, -0.35, 0.35).view(n, 3)
    dist = uniform(gen, 3 * n, 0.55, 0.7).view(n, 3)  # outer edge <= 1; neighbours do not overlap
    centres = torch.stack([dist * torch.cos(angles), dist * torch.sin(angles)], dim=-1)
    return dots(x, y, centres, radius)


SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]] = {
    "disk": sd_disk, "ellipse": sd_ellipse, "triangle": sd_triangle, "square": sd_square, "star": sd_star,
    "plus": sd_plus, "tri_arm": sd_tri_arm, "crescent": sd_crescent, "two_dots": sd_two_dots,
    "three_dots": sd_three_dots,
}


# -- rendering -----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def sample_points(size: int = IMAGE_SIZE, supersample: int = SUPERSAMPLE) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y (H*W*S*S,) float64 sample positions (x right, y up, pixels from the centre), grouped by pixel.

    The sub-pixel offsets (2i+1)/(2S) - 1/2 are symmetric under the square's symmetries, so a quarter turn of
    the object maps the sample set onto itself and renders exactly as torch.rot90 of the image."""
    c = (size - 1) / 2.0
    sub = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    pos = torch.arange(size, dtype=torch.float64)[:, None] + sub[None, :]  # (size, S)
    y = (c - pos)[:, None, :, None].expand(size, size, supersample, supersample)
    x = (pos - c)[None, :, None, :].expand(size, size, supersample, supersample)
    return x.reshape(-1), y.reshape(-1)


def render(signed: torch.Tensor, softness: torch.Tensor, size: int = IMAGE_SIZE,
           supersample: int = SUPERSAMPLE) -> torch.Tensor:
    """Coverage in [0, 1] from signed distances in pixels (N, H*W*S*S): linear ramp, box-averaged per pixel."""
    cover = (0.5 - signed / column(softness)).clamp(0.0, 1.0)
    return cover.view(len(signed), size, size, supersample * supersample).mean(dim=-1)


class Nuisance(NamedTuple):
    """Per-image parameters shared by every class (tensors of length N; angles in radians, lengths in pixels)."""

    angle: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor  # (N, 2): x right, y up
    outlined: torch.Tensor  # bool
    stroke: torch.Tensor
    brightness: torch.Tensor
    softness: torch.Tensor
    noise: torch.Tensor


def sample_nuisance(n: int, gen: torch.Generator, max_angle: float = 2 * math.pi) -> Nuisance:
    """Draw the class-independent parameters; `max_angle` < 2 pi only for tests (a deliberately oriented set)."""
    angle = uniform(gen, n, 0.0, max_angle)
    scale = uniform(gen, n, *SIZE)
    off_r = OFFSET * torch.sqrt(torch.rand(n, generator=gen, dtype=torch.float64))  # uniform on the disk
    off_a = uniform(gen, n, 0.0, 2 * math.pi)
    offset = torch.stack([off_r * torch.cos(off_a), off_r * torch.sin(off_a)], dim=-1)
    outlined = torch.rand(n, generator=gen, dtype=torch.float64) < 0.5
    return Nuisance(angle, scale, offset, outlined, uniform(gen, n, *STROKE), uniform(gen, n, *BRIGHTNESS),
                    uniform(gen, n, *SOFTNESS), uniform(gen, n, *NOISE))


def draw_objects(label: int, nu: Nuisance, gen: torch.Generator) -> torch.Tensor:
    """Noise-free, unmasked (N, H, W) float32 images of class `label` with the given nuisance parameters.

    Each sample point p is taken into the object's frame, q = R(-angle) (p - offset) / scale (in double, so
    the frame is exact to float32), and the unit shape's signed distance, scaled back to pixels, becomes
    coverage there."""
    px, py = sample_points()
    dx, dy = px[None] - nu.offset[:, 0:1], py[None] - nu.offset[:, 1:2]
    cos, sin, scale = torch.cos(nu.angle)[:, None], torch.sin(nu.angle)[:, None], nu.scale[:, None]
    x = ((cos * dx + sin * dy) / scale).to(torch.float32)
    y = ((cos * dy - sin * dx) / scale).to(torch.float32)
    signed = SHAPES[CLASSES[label]](x, y, gen) * column(nu.scale)
    signed = torch.where(nu.outlined[:, None], signed.abs() - column(nu.stroke) / 2, signed)
    return render(signed, nu.softness) * column(nu.brightness)[:, :, None]


def draw_class(label: int, n: int, gen: torch.Generator, max_angle: float = 2 * math.pi) -> tuple[torch.Tensor, torch.Tensor]:
    """n raw images (n, 1, H, W) of class `label` (noisy, zero outside the disk) and their angles (radians)."""
    nu = sample_nuisance(n, gen, max_angle)
    img = torch.cat([draw_objects(label, Nuisance(*(v[i:i + CHUNK] for v in nu)), gen)
                     for i in range(0, n, CHUNK)])
    img = img + column(nu.noise)[:, :, None] * torch.randn(img.shape, generator=gen)
    img = img * disk_mask(IMAGE_SIZE).to(img.dtype)
    return img.unsqueeze(1), nu.angle


def stream(split: str, label: int, seed: int) -> torch.Generator:
    """An independent random stream per (dataset seed, split, class)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + (0 if split == "train" else 500_009) + label)


@functools.lru_cache(maxsize=4)
def generate(split: str, seed: int = DATASET_SEED) -> Generated:
    """All raw images of a split, classes interleaved by a fixed permutation (cached; treat as read-only)."""
    if split not in PER_CLASS:
        raise UsageError(f"rotshapes has no split {split!r}; valid splits: {', '.join(PER_CLASS)}")
    n = PER_CLASS[split]
    # one thread: the kernels are small elementwise ones, whose fork-join costs more than it saves (10x slower
    # with two threads on a busy two-core machine); it also keeps the bytes independent of the caller's setting
    with fixed_threads(1):
        images, angles = zip(*(draw_class(k, n, stream(split, k, seed)) for k in range(len(CLASSES))))
    labels = torch.arange(len(CLASSES)).repeat_interleave(n)
    order = torch.randperm(len(labels), generator=stream(split, len(CLASSES), seed))
    return Generated(torch.cat(images)[order].contiguous(), labels[order].contiguous(), torch.cat(angles)[order])


def disk_stats() -> tuple[float, float]:
    """Mean and std of the raw training images over the pixels inside the disk."""
    inside = generate("train").images[:, :, disk_mask(IMAGE_SIZE)].double()
    return float(inside.mean()), float(inside.std())


@functools.lru_cache(maxsize=2)
def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (N, 1, 29, 29) images and labels of a split (cached; treat as read-only)."""
    raw = generate(split)
    return normalised_in_disk(raw.images, DATASETS.entry("rotshapes").meta["info"]), raw.labels.clone()


@register_dataset("rotshapes")
def rotshapes(split: str, data_dir: Path | None = None, download: bool = False, **kw: Any) -> TensorImageDataset:
    return embedded_split("rotshapes", split, kw, tensors)
