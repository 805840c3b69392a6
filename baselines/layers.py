"""Single-layer models (`layer_*`): one convolution, `forward(x)` returns its output map.

Common keyword arguments (what the efficiency protocol passes): ``channels`` = number of output channels (default
``in_channels``; input and output channel counts are equal at the protocol's base point) and ``kernel_size``
(default 7), plus ``bias`` (default True: each library's own bias) and 'same' zero padding, stride 1.

How plain channel counts map to fields in the escnn / e2cnn layers:
- input (``in_type="trivial"``, the default): ``in_channels`` trivial (scalar) fields, i.e. an image or any map
  whose channels do not mix under rotation. This is the only input type the equivariance protocol can feed
  (it rotates inputs spatially, channels untouched), so it is the default.
  ``in_type="regular"`` (C8/D8) or ``"irreps"`` (SO(2)) gives the hidden-layer case regular -> regular /
  irreps -> irreps (``in_channels`` must then be a multiple of |G| for regular fields); use it for cost
  measurements of hidden layers, not for equivariance measurements.
- output: ``layer_c8`` / ``layer_e2cnn_c8``: ceil(channels / 8) regular C8 fields (8 channels each);
  ``layer_d8``: ceil(channels / 16) regular D8 fields (16 channels each); the output therefore has
  ``channels`` rounded up to a multiple of |G|. ``layer_so2``: irreps of SO(2) filled cyclically
  psi_0, psi_1, ..., psi_L (sizes 1, 2, ..., 2; L = ``max_frequency``, default 3) until exactly ``channels``
  channels (a last 1-channel gap is filled with psi_0).

escnn/e2cnn layers train by expanding the kernel basis every forward (eval mode caches the kernel). They have an
``export()`` method returning the equivalent plain `torch.nn.Conv2d` layer with the same symmetry contract (the
numbers are identical), and the factories accept ``exported=True`` to return that form directly.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

import gmr as gmr_package
from baselines.common import pop_unused
from bench.contract import SCALAR, FieldSpec, SymmetryContract
from bench.errors import UsageError
from bench.models import register_model

DEFAULT_KERNEL = 7


class ConvLayer(nn.Module):
    """One convolution on plain tensors with a symmetry contract {"out": FieldSpec}."""

    def __init__(self, conv: nn.Module, symmetry: SymmetryContract, input_spec: FieldSpec | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.symmetry = symmetry
        self.input_spec = input_spec or SCALAR  # how the input's channels transform (informative)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    @torch.no_grad()
    def export(self) -> ConvLayer:
        """The plain-Conv2d form: GMR's assembled kernel, or a copy of a plain conv (already in that form).

        The official GMR package offers no export, so its layer raises NotImplementedError."""
        if isinstance(self.conv, nn.Conv2d) and type(self.conv) is nn.Conv2d:
            conv = copy.deepcopy(self.conv)
        elif callable(getattr(self.conv, "export", None)):
            conv = self.conv.export()
        else:
            raise NotImplementedError(f"{type(self.conv).__name__} has no plain-convolution export")
        out = ConvLayer(conv, self.symmetry, self.input_spec)
        out.train(self.training)
        return out


class FieldConvLayer(ConvLayer):
    """An escnn/e2cnn R2Conv as a layer (wrapped in `TensorModule`); `export()` gives the plain Conv2d form."""

    @property
    def r2conv(self) -> nn.Module:
        return self.conv.module

    @torch.no_grad()
    def export(self) -> ConvLayer:
        r2 = self.r2conv
        was_training = r2.training
        conv = r2.export()  # sets r2 to eval and copies its expanded filter
        conv.weight = nn.Parameter(conv.weight.detach().clone())
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias.detach().clone())
        r2.train(was_training)
        out = ConvLayer(conv, self.symmetry, self.input_spec)
        out.train(self.training)
        return out


def _plain_args(in_channels: int, channels: int | None, kernel_size: int) -> tuple[int, int]:
    out = in_channels if channels is None else int(channels)
    if out < 1 or in_channels < 1:
        raise UsageError(f"channels must be >= 1, got in={in_channels} out={out}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UsageError(f"kernel_size must be a positive odd int, got {kernel_size}")
    return out, kernel_size


@register_model("layer_conv2d")
def layer_conv2d(
    in_channels: int = 16, num_classes: int = 10, channels: int | None = None, kernel_size: int = DEFAULT_KERNEL,
    bias: bool = True, **kw: Any,
) -> ConvLayer:
    """torch.nn.Conv2d(in_channels, channels, kernel_size, padding=k//2) (PyTorch's default init)."""
    pop_unused(kw, "layer_conv2d")
    out, k = _plain_args(in_channels, channels, kernel_size)
    conv = nn.Conv2d(in_channels, out, k, padding=k // 2, bias=bias)
    return ConvLayer(conv, SymmetryContract("trivial", features={"out": SCALAR}))


# ---------------------------------------------------------------------------------------------------------------
# GMR layers
# ---------------------------------------------------------------------------------------------------------------
def _gmr_layer(name: str, smoothing: str, in_channels, channels, kernel_size, bias, kw) -> ConvLayer:
    out, k = _plain_args(in_channels, channels, kernel_size)
    conv = gmr_package.GMRConv2d(in_channels, out, k, padding=k // 2, bias=bias, smoothing=smoothing, **kw)
    return ConvLayer(conv, SymmetryContract("D4-grid", features={"out": SCALAR}))


@register_model("layer_gmr")
def layer_gmr(in_channels: int = 16, num_classes: int = 10, channels: int | None = None,
              kernel_size: int = DEFAULT_KERNEL, bias: bool = True, **gmr_kw: Any) -> ConvLayer:
    """Our GMRConv2d (ring smoothing, = the official numerics); extra keywords go to GMRConv2d."""
    return _gmr_layer("layer_gmr", "ring", in_channels, channels, kernel_size, bias, gmr_kw)


@register_model("layer_gmr_radius")
def layer_gmr_radius(in_channels: int = 16, num_classes: int = 10, channels: int | None = None,
                     kernel_size: int = DEFAULT_KERNEL, bias: bool = True, **gmr_kw: Any) -> ConvLayer:
    """Our GMRConv2d with smoothing='radius' (Gaussian mixture on the pixel radius)."""
    return _gmr_layer("layer_gmr_radius", "radius", in_channels, channels, kernel_size, bias, gmr_kw)


# ---------------------------------------------------------------------------------------------------------------
# escnn / e2cnn layers
# ---------------------------------------------------------------------------------------------------------------
def so2_irreps_fill(group: Any, channels: int, max_frequency: int) -> list:
    """SO(2) irreps psi_0, psi_1, ..., psi_L repeated until exactly `channels` channels."""
    pattern = [group.irrep(f) for f in range(max_frequency + 1)]
    out, size, i = [], 0, 0
    while size < channels:
        irr = pattern[i % len(pattern)]
        if size + irr.size > channels:
            irr = pattern[0]
        out.append(irr)
        size += irr.size
        i += 1
    return out


def _field_layer(
    name: str, lib: str, n: int, flip: bool, in_channels: int, channels: int | None, kernel_size: int, bias: bool,
    in_type: str, exported: bool, max_frequency: int = 3,
) -> ConvLayer:
    from baselines.fieldnet import _lib, make_gspace
    from baselines.steerable import TensorModule, make_r2conv

    out_c, k = _plain_args(in_channels, channels, kernel_size)
    gs = make_gspace(lib, n, flip, None if n > 0 else max_frequency)
    enn = _lib(lib)[1]
    if n > 0:
        order = gs.fibergroup.order()
        out_reprs = math.ceil(out_c / order) * [gs.regular_repr]
        kind = "regular"
        if in_type == "regular":
            if in_channels % order:
                raise UsageError(f"{name}: in_type='regular' needs in_channels divisible by |G|={order}, got {in_channels}")
            in_reprs = (in_channels // order) * [gs.regular_repr]
        elif in_type == "trivial":
            in_reprs = in_channels * [gs.trivial_repr]
        else:
            raise UsageError(f"{name}: in_type must be 'trivial' or 'regular', got {in_type!r}")
    else:
        out_reprs = so2_irreps_fill(gs.fibergroup, out_c, max_frequency)
        kind = "irreps"
        if in_type == "irreps":
            in_reprs = so2_irreps_fill(gs.fibergroup, in_channels, max_frequency)
        elif in_type == "trivial":
            in_reprs = in_channels * [gs.trivial_repr]
        else:
            raise UsageError(f"{name}: in_type must be 'trivial' or 'irreps', got {in_type!r}")
    ft_in, ft_out = enn.FieldType(gs, in_reprs), enn.FieldType(gs, out_reprs)
    conv = make_r2conv(lib, ft_in, ft_out, k, bias=bias)
    group = (f"{'D' if flip else 'C'}{n}") if n > 0 else ("O2" if flip else "SO2")
    in_kind = "scalar" if in_type == "trivial" else kind
    layer = FieldConvLayer(
        TensorModule(conv),
        SymmetryContract(group, features={"out": FieldSpec(kind, field_type=ft_out)}),
        SCALAR if in_kind == "scalar" else FieldSpec(in_kind, field_type=ft_in),
    )
    return layer.export() if exported else layer


def _field_factory(name: str, lib: str, n: int, flip: bool):
    default_in = "trivial"

    def factory(in_channels: int = 16, num_classes: int = 10, channels: int | None = None,
                kernel_size: int = DEFAULT_KERNEL, bias: bool = True, in_type: str = default_in,
                exported: bool = False, max_frequency: int = 3, **kw: Any) -> ConvLayer:
        pop_unused(kw, name)
        return _field_layer(name, lib, n, flip, in_channels, channels, kernel_size, bias, in_type, exported,
                            max_frequency)

    factory.__name__ = name
    return factory


# Registered by the modules that import their library (so a build never includes that import):
#   baselines.escnn_models: layer_c8, layer_d8, layer_so2; baselines.e2cnn_models: layer_e2cnn_c8;
#   baselines.gmr_official: layer_gmr_official (defined there, so no module imports the other both ways).
LIB_LAYERS = {
    "layer_c8": ("escnn", 8, False),
    "layer_d8": ("escnn", 8, True),
    "layer_so2": ("escnn", -1, False),
    "layer_e2cnn_c8": ("e2cnn", 8, False),
}


def register_lib_layers(lib: str) -> None:
    for name, (layer_lib, n, flip) in LIB_LAYERS.items():
        if layer_lib == lib:
            register_model(name)(_field_factory(name, lib, n, flip))
