"""The small backbone built from escnn or e2cnn fields (shared by `baselines.escnn_models` and `e2cnn_models`).

A `FieldFamily` says, for one group and one kind of hidden field, what one *unit* of width is:

| kind      | unit (conv output)                                   | BN               | nonlinearity        | invariant map            |
|-----------|------------------------------------------------------|------------------|---------------------|--------------------------|
| regular   | 1 regular field (|G| channels)                       | InnerBatchNorm   | ReLU                | group pooling (max)      |
| gated     | 1 scalar + L(+1) gates + irreps 1..L (+ O(2) sign)   | IIDBatchNorm2d (escnn) / GNormBatchNorm (e2cnn) | ReLU on scalars, sigmoid gates | FieldInvariants |
| fourier   | 1 band-limited regular field, irreps 0..L (1+2L ch)  | IIDBatchNorm2d   | FourierELU (N grid) | FieldInvariants          |

The input is `in_channels` trivial fields (an image). Every conv is an `R2Conv` with 'same' padding, no bias,
built with `initialize=False` and then given the library's generalised He init by `escnn_compat.fast_he_init_`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from baselines.common import (
    BLUR_SIGMA,
    KERNELS,
    POOL_AFTER,
    SmallNet,
    base_channels,
    pop_unused,
    reference_params,
    resolve_units,
)
from baselines.escnn_compat import install_escnn_memo
from baselines.steerable import (
    FieldInvariants,
    GatedActivation,
    RegularGroupPooling,
    TensorModule,
    bn_param_count,
    conv_param_count,
    make_r2conv,
)
from bench.contract import INVARIANT, FieldSpec, SymmetryContract
from bench.errors import UsageError


def _lib(lib: str):
    if lib == "escnn":
        import escnn.gspaces as gspaces
        import escnn.nn as enn
    elif lib == "e2cnn":
        import e2cnn.gspaces as gspaces
        import e2cnn.nn as enn
    else:
        raise ValueError(lib)
    return gspaces, enn


@functools.cache
def make_gspace(lib: str, n: int, flip: bool, max_freq: int | None = None) -> Any:
    """Cached gspace: n > 0 discrete C_n / D_n, n = -1 continuous SO(2) / O(2) with `max_freq`."""
    gspaces, _ = _lib(lib)
    if lib == "escnn":
        install_escnn_memo()
        fn = gspaces.flipRot2dOnR2 if flip else gspaces.rot2dOnR2
        return fn(n) if n > 0 else fn(-1, maximum_frequency=max_freq)
    cls = gspaces.FlipRot2dOnR2 if flip else gspaces.Rot2dOnR2
    return cls(n) if n > 0 else cls(N=-1, maximum_frequency=max_freq)


@dataclass(frozen=True)
class FieldFamily:
    lib: str  # "escnn" | "e2cnn"
    kind: str  # "regular" | "gated" | "fourier"
    n: int  # group order of the rotations (N), or -1 for SO(2)/O(2)
    flip: bool = False
    max_freq: int = 3  # L for the continuous groups
    grid_n: int = 16  # FourierELU samples

    @property
    def group(self) -> str:
        if self.n > 0:
            return f"{'D' if self.flip else 'C'}{self.n}"
        return "O2" if self.flip else "SO2"

    @property
    def gspace(self) -> Any:
        return make_gspace(self.lib, self.n, self.flip, None if self.n > 0 else self.max_freq)

    @property
    def enn(self):
        return _lib(self.lib)[1]

    # -- field layout of one layer with `u` units ------------------------------------------------------------
    def _gated_irreps(self) -> list:
        g = self.gspace.fibergroup
        if self.flip:
            return [g.irrep(1, 0)] + [g.irrep(1, f) for f in range(1, self.max_freq + 1)]
        return [g.irrep(f) for f in range(1, self.max_freq + 1)]

    @functools.cached_property
    def _fourier_proto(self) -> Any:
        return self._fourier(1)

    def _fourier(self, u: int) -> Any:
        if self.lib != "escnn":
            raise UsageError("the FourierELU family needs escnn")
        g = self.gspace.fibergroup
        return self.enn.FourierELU(self.gspace, u, irreps=g.bl_irreps(self.max_freq), N=self.grid_n, inplace=False)

    def conv_out_reprs(self, u: int) -> list:
        gs = self.gspace
        if self.kind == "regular":
            return u * [gs.regular_repr]
        if self.kind == "gated":
            gated = self._gated_irreps()
            return u * [gs.trivial_repr] + u * len(gated) * [gs.trivial_repr] + u * gated
        return u * list(self._fourier_proto.in_type.representations)

    def act_out_reprs(self, u: int) -> list:
        if self.kind == "gated":
            return u * [self.gspace.trivial_repr] + u * self._gated_irreps()
        return self.conv_out_reprs(u)

    @property
    def unit_channels(self) -> int:
        return sum(r.size for r in self.conv_out_reprs(1))

    @property
    def bn_name(self) -> str:
        if self.kind == "regular":
            return "InnerBatchNorm"
        return "IIDBatchNorm2d" if self.lib == "escnn" else "GNormBatchNorm"

    def pooled_dim(self, u: int) -> int:
        if self.kind == "regular":
            return u
        return FieldInvariants(self.field_type(self.act_out_reprs(u))).out_dim

    def field_type(self, reprs: Sequence[Any]) -> Any:
        return self.enn.FieldType(self.gspace, list(reprs))

    def trivial_type(self, c: int) -> Any:
        return self.field_type(c * [self.gspace.trivial_repr])

    # -- modules ---------------------------------------------------------------------------------------------
    def activation(self, u: int) -> nn.Module:
        if self.kind == "regular":
            return nn.ReLU(inplace=True)
        if self.kind == "gated":
            return GatedActivation(u, [r.size for r in u * self._gated_irreps()])
        return TensorModule(self._fourier(u))

    def invariant_map(self, out_type: Any) -> nn.Module:
        if self.kind == "regular":
            return RegularGroupPooling(len(out_type), self.gspace.fibergroup.order())
        return FieldInvariants(out_type)

    # -- parameters -----------------------------------------------------------------------------------------
    def count(self, in_channels: int, num_classes: int, units: Sequence[int], kernels: Sequence[int] = KERNELS) -> int:
        gs = self.gspace
        prev = self.trivial_type(in_channels).representations
        n = 0
        for u, k in zip(units, kernels):
            out = self.conv_out_reprs(u)
            n += conv_param_count(gs, prev, out, k) + bn_param_count(gs, self.bn_name, out)
            prev = self.act_out_reprs(u)
        return n + self.pooled_dim(units[-1]) * num_classes + num_classes

    def channel_units(self, channels: Sequence[int]) -> tuple[int, ...]:
        return tuple(max(1, round(c / self.unit_channels)) for c in channels)


def build_field_net(
    fam: FieldFamily,
    in_channels: int,
    num_classes: int,
    match: str = "params",
    width: float = 1.0,
    widths: Sequence[int] | None = None,
) -> SmallNet:
    """The small backbone with `fam`'s convolutions; `widths` are units (see the table in the module doc)."""
    channels = base_channels(width)
    units = resolve_units(
        match,
        widths,
        count=lambda u: fam.count(in_channels, num_classes, u),
        target=lambda: reference_params(in_channels, num_classes, width),
        channel_units=lambda: fam.channel_units(channels),
        base=[c / fam.unit_channels for c in channels],
    )
    enn = fam.enn
    in_type = fam.trivial_type(in_channels)
    layers: list[nn.Module] = []
    for i, (u, k) in enumerate(zip(units, KERNELS)):
        conv_type = fam.field_type(fam.conv_out_reprs(u))
        layers += [
            TensorModule(make_r2conv(fam.lib, in_type, conv_type, k)),
            TensorModule(getattr(enn, fam.bn_name)(conv_type)),
            fam.activation(u),
        ]
        in_type = fam.field_type(fam.act_out_reprs(u))
        if i in POOL_AFTER:
            layers.append(TensorModule(enn.PointwiseAvgPoolAntialiased(in_type, sigma=BLUR_SIGMA, stride=2)))
    body = nn.Sequential(*layers)
    inv = fam.invariant_map(in_type)
    pooled_dim = fam.pooled_dim(units[-1])
    kind = "regular" if fam.kind == "regular" else "irreps"
    contract = SymmetryContract(
        fam.group,
        features={"features": FieldSpec(kind, field_type=in_type), "pooled": INVARIANT, "logits": INVARIANT},
    )
    net = SmallNet(body, inv, pooled_dim, num_classes, contract, widths=units, family=f"{fam.lib}-{fam.kind}")
    net.field_family = fam
    return net


def field_net_factory(name: str, lib: str, kind: str, n: int, flip: bool, doc: str | None = None):
    """A registry factory for one field family in the small backbone (escnn and e2cnn share it).

    `max_frequency` (L) and `grid_n` (FourierELU samples) matter for the continuous groups only."""

    def factory(
        in_channels: int = 1,
        num_classes: int = 10,
        match: str = "params",
        width: float = 1.0,
        widths: Sequence[int] | None = None,
        max_frequency: int = 3,
        grid_n: int = 16,
        **kw: Any,
    ) -> nn.Module:
        pop_unused(kw, name)
        fam = FieldFamily(lib, kind, n, flip, max_freq=max_frequency, grid_n=grid_n)
        return build_field_net(fam, in_channels, num_classes, match, width, widths)

    factory.__name__ = name
    factory.__doc__ = doc
    return factory
