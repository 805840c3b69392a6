"""escnn networks: C_N / D_N regular group convolutions, SO(2) / O(2) steerable CNNs, a C8 ResNet-18.

Small backbone (see `baselines.common` / `baselines.fieldnet`):
- `c4`, `c8`, `c16`, `d4`, `d8`: regular fields, InnerBatchNorm, ReLU, GroupPooling before the global mean.
- `so2`, `o2`: irreps up to frequency `max_frequency` (default 3), gated nonlinearity (exact for every rotation
  of the continuous group; the only equivariance error is the discretisation of the kernels and the images).
- `so2_fourier`: band-limited regular fields (irreps 0..L) with FourierELU on a grid of `grid_n` (16) rotations
  (approximate for general angles; exact for the grid's rotations, so at multiples of 90 degrees).
ResNet-18 scale: `c8_resnet18` (see `build_c8_resnet18`).
"""

from __future__ import annotations

from collections.abc import Sequence

import escnn  # noqa: F401  (the module is declared as requiring escnn)

from bench.models import register_model
from baselines.common import check_match, pop_unused
from baselines.fieldnet import FieldFamily, build_field_net

REGULAR = {"c4": (4, False), "c8": (8, False), "c16": (16, False), "d4": (4, True), "d8": (8, True)}


def _regular_factory(name: str, n: int, flip: bool):
    def factory(
        in_channels: int = 1,
        num_classes: int = 10,
        match: str = "params",
        width: float = 1.0,
        widths: Sequence[int] | None = None,
        **kw,
    ):
        pop_unused(kw, name)
        return build_field_net(FieldFamily("escnn", "regular", n, flip), in_channels, num_classes, match, width, widths)

    factory.__name__ = name
    factory.__doc__ = (
        f"{'D' if flip else 'C'}{n} regular group convolutions (escnn) in the small backbone; `widths` = regular "
        f"fields per layer ({(2 if flip else 1) * n} channels each)."
    )
    return factory


for _name, (_n, _flip) in REGULAR.items():
    register_model(_name)(_regular_factory(_name, _n, _flip))


def _steerable_factory(name: str, kind: str, flip: bool):
    def factory(
        in_channels: int = 1,
        num_classes: int = 10,
        match: str = "params",
        width: float = 1.0,
        widths: Sequence[int] | None = None,
        max_frequency: int = 3,
        grid_n: int = 16,
        **kw,
    ):
        pop_unused(kw, name)
        fam = FieldFamily("escnn", kind, -1, flip, max_freq=max_frequency, grid_n=grid_n)
        return build_field_net(fam, in_channels, num_classes, match, width, widths)

    factory.__name__ = name
    return factory


register_model("so2")(_steerable_factory("so2", "gated", False))
register_model("o2")(_steerable_factory("o2", "gated", True))
register_model("so2_fourier")(_steerable_factory("so2_fourier", "fourier", False))
