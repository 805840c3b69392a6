"""The symmetries of the pixel grid: the 7 non-identity elements of D4, its 10 subgroups, exactness tolerances.

Element definitions (square images ``x[..., i, j]``, ``N`` pixels a side), each ``out[..., i, j] = x[..., src]``:

| name            | src                  | as the suite's element (angle, reflect): ``R_angle(F(x))`` |
|-----------------|----------------------|------------------------------------------------------------|
| ``rot90``       | ``(j, N-1-i)``       | (90, no)   = ``torch.rot90(x, 1, (-2, -1))`` (counter-clockwise) |
| ``rot180``      | ``(N-1-i, N-1-j)``   | (180, no)  |
| ``rot270``      | ``(N-1-j, i)``       | (270, no)  |
| ``flip_h``      | ``(i, N-1-j)``       | (0, yes)   = ``x[..., ::-1]`` (mirror left-right) |
| ``flip_v``      | ``(N-1-i, j)``       | (180, yes) = ``x[..., ::-1, :]`` |
| ``transpose``   | ``(j, i)``           | (90, yes)  |
| ``antitranspose`` | ``(N-1-j, N-1-i)`` | (270, yes) |

Every element is applied through `bench.rotation.rotate` (the suite's one rotation module; these angles take its
exact permutation path), so rho_out of escnn/e2cnn fields (`bench.fields`) uses the same element.

Exactness tolerance: a model that is exactly equivariant in real arithmetic shows only floating-point round-off,
of two kinds. Compute round-off: one rounded sum of K terms errs by at most about K*u (u = 1.1e-16 in float64,
6.0e-8 in float32), typically sqrt(K)*u, and a network composes a few dozen of them: a correct float64 model stays
below ~1e-12 (the zoo's GMR and e2cnn models: at most 2e-15). Stored round-off: constants kept in float32
(PyTorch's default for parameters and buffers, e.g. escnn's sampled kernel bases) are exact only to u32, so even
float64 arithmetic shows ~1e-8..1e-6 for such models (the zoo's escnn models: at most 7e-7 at any module). The
tolerance is the larger of the compute dtype's and the stored dtype's entry below; real breaks (a shifted
sampling grid, an anisotropic kernel, a flatten) are 1e-3 and larger (the zoo's smallest: 1.4e-2).

| computed in | stored in  | tolerance | measured on the zoo (largest error of a claimed element, any module) |
|-------------|------------|-----------|-----------------------------------------------------------------------|
| float64     | float64    | 1e-9      | 2e-15 (GMR, e2cnn: their constants keep the symmetry bit-exactly) |
| float64     | float32    | 1e-5      | 7e-7 (escnn bases) |
| float32     | any        | 1e-4      | 1.7e-6 |

float64 is the default because it separates round-off from real breaks by the most orders of magnitude.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from bench.errors import UsageError
from bench.rotation import rotate

COMPUTE_TOLERANCE: dict[torch.dtype, float] = {torch.float64: 1e-9, torch.float32: 1e-4}
STORED_TOLERANCE: dict[torch.dtype, float] = {torch.float64: 0.0, torch.float32: 1e-5, torch.float16: 1e-2,
                                              torch.bfloat16: 1e-1}


def tolerance(compute: torch.dtype, stored: torch.dtype | None = None) -> float:
    """The exactness tolerance on relative errors (see the module docstring) for a model whose lowest-precision
    floating parameter/buffer is `stored` (None: no floating state), run in `compute`."""
    if compute not in COMPUTE_TOLERANCE:
        raise UsageError(f"dtype must be one of float64, float32; got {compute}")
    return max(COMPUTE_TOLERANCE[compute], STORED_TOLERANCE.get(stored, 0.0) if stored is not None else 0.0)


def stored_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The lowest-precision floating dtype among a module's parameters and buffers (None if it has none)."""
    dtypes = {t.dtype for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()}
    return max(dtypes, key=lambda d: torch.finfo(d).eps, default=None)


@dataclass(frozen=True)
class GridElement:
    """One symmetry of the pixel grid, as the suite's group element (angle_deg, reflect)."""

    name: str
    angle_deg: int
    reflect: bool

    @property
    def swaps_axes(self) -> bool:
        """Rows become columns (needs square images)."""
        return self.angle_deg % 180 == 90

    def defined_for(self, h: int, w: int) -> bool:
        return h == w or not self.swaps_axes

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The element acting on the last two (spatial) axes of x: an exact index permutation."""
        return rotate(x, self.angle_deg, reflect=self.reflect)


ELEMENTS: tuple[GridElement, ...] = (
    GridElement("rot90", 90, False),
    GridElement("rot180", 180, False),
    GridElement("rot270", 270, False),
    GridElement("flip_h", 0, True),
    GridElement("flip_v", 180, True),
    GridElement("transpose", 90, True),
    GridElement("antitranspose", 270, True),
)
BY_NAME: dict[str, GridElement] = {e.name: e for e in ELEMENTS}
ELEMENT_NAMES: tuple[str, ...] = tuple(BY_NAME)

# The 10 subgroups of D4, largest first (the order `largest_exact_subgroup` searches). Reflection subgroups name
# their mirrors, so every name is unambiguous.
SUBGROUPS: dict[str, frozenset[str]] = {
    "D4": frozenset(ELEMENT_NAMES),
    "C4": frozenset({"rot90", "rot180", "rot270"}),
    "D2[flip_h,flip_v]": frozenset({"rot180", "flip_h", "flip_v"}),
    "D2[transpose,antitranspose]": frozenset({"rot180", "transpose", "antitranspose"}),
    "C2": frozenset({"rot180"}),
    "D1[flip_h]": frozenset({"flip_h"}),
    "D1[flip_v]": frozenset({"flip_v"}),
    "D1[transpose]": frozenset({"transpose"}),
    "D1[antitranspose]": frozenset({"antitranspose"}),
    "trivial": frozenset(),
}

_CONTRACT_RE = re.compile(r"^(?:([CD])(\d+)|(SO2|O2)|(D4-grid))$", re.IGNORECASE)


def element(name: str) -> GridElement:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown grid element {name!r}; valid: {', '.join(ELEMENT_NAMES)}") from None


def subgroup(group: str | Iterable[str]) -> frozenset[str]:
    """The non-identity grid elements of `group`.

    `group` is one of the SUBGROUPS names, a contract group intersected with the grid (``C<N>`` -> C_gcd(N,4),
    ``D<N>`` -> D_gcd(N,4) with the suite's mirror flip_h, ``SO2`` -> C4, ``O2`` and ``D4-grid`` -> D4), or an
    iterable of element names."""
    if not isinstance(group, str):
        names = list(group)
        for n in names:
            element(n)
        return frozenset(names)
    for name, members in SUBGROUPS.items():
        if group.lower() == name.lower():
            return members
    m = _CONTRACT_RE.match(group)
    if m:
        if m.group(4):
            return SUBGROUPS["D4"]
        if m.group(3):
            return SUBGROUPS["C4" if m.group(3).upper() == "SO2" else "D4"]
        n = int(m.group(2))
        if n >= 1:
            g = math.gcd(n, 4)
            if m.group(1).upper() == "C":
                return SUBGROUPS[{1: "trivial", 2: "C2", 4: "C4"}[g]]
            return SUBGROUPS[{1: "D1[flip_h]", 2: "D2[flip_h,flip_v]", 4: "D4"}[g]]
    raise UsageError(
        f"unknown group {group!r}; valid: {', '.join(SUBGROUPS)}, a contract group (C<N>, D<N>, SO2, O2, "
        f"D4-grid; intersected with the grid) or a list of elements ({', '.join(ELEMENT_NAMES)})"
    )


def subgroup_name(members: frozenset[str]) -> str | None:
    for name, m in SUBGROUPS.items():
        if m == members:
            return name
    return None


def largest_exact_subgroup(exact: Iterable[str]) -> str:
    """Name of the largest subgroup of D4 all of whose non-identity elements are in `exact`."""
    exact = set(exact)
    for name, members in SUBGROUPS.items():  # largest first
        if members <= exact:
            return name
    raise AssertionError("unreachable: the trivial group is always exact")
