"""escnn networks: C_N / D_N regular group convolutions, SO(2) / O(2) steerable CNNs, a C8 ResNet-18.

Small backbone (see `baselines.common` / `baselines.fieldnet`):
- `c4`, `c8`, `c16`, `d4`, `d8`: regular fields, InnerBatchNorm, ReLU, group pooling (max per field) before the
  global mean.
- `so2`, `o2`: irreps up to frequency `max_frequency` (default 3), gated nonlinearity (exact for every rotation
  of the continuous group; the only equivariance error is the discretisation of the kernels and the images).
- `so2_fourier`: band-limited regular fields (irreps 0..L) with FourierELU on a grid of `grid_n` (16) rotations
  (approximate for general angles; exact for the grid's rotations, so at multiples of 90 degrees).
ResNet-18 scale: `c8_resnet18` (see its docstring).
"""

from __future__ import annotations

import escnn.gspaces  # noqa: F401  (the module is declared as requiring escnn; imported here, not in a build)
import escnn.nn  # noqa: F401
import torch
from torch import nn

from baselines.common import BLUR_SIGMA, SmallNet, check_match, pop_unused
from baselines.fieldnet import FieldFamily, field_net_factory
from baselines.layers import register_lib_layers
from baselines.steerable import (
    RegularBatchNorm,
    RegularGroupPooling,
    TensorModule,
    conv_param_count,
    make_r2conv,
)
from bench.contract import INVARIANT, FieldSpec, SymmetryContract
from bench.models import register_model

REGULAR = {"c4": (4, False), "c8": (8, False), "c16": (16, False), "d4": (4, True), "d8": (8, True)}


for _name, (_n, _flip) in REGULAR.items():
    register_model(_name)(field_net_factory(
        _name, "escnn", "regular", _n, _flip,
        f"{'D' if _flip else 'C'}{_n} regular group convolutions (escnn) in the small backbone; `widths` = regular "
        f"fields per layer ({(2 if _flip else 1) * _n} channels each).",
    ))

register_model("so2")(field_net_factory("so2", "escnn", "gated", -1, False, "SO(2) irreps, gated nonlinearity"))
register_model("o2")(field_net_factory("o2", "escnn", "gated", -1, True, "O(2) irreps, gated nonlinearity"))
register_model("so2_fourier")(field_net_factory("so2_fourier", "escnn", "fourier", -1, False,
                                                "SO(2) band-limited regular fields with FourierELU"))


# ---------------------------------------------------------------------------------------------------------------
# ResNet-18 scale: C8 regular-field ResNet-18
# ---------------------------------------------------------------------------------------------------------------
class _C8BasicBlock(nn.Module):
    """escnn basic block on plain tensors; downsampling = anti-aliased average pool then stride-1 convs."""

    def __init__(self, fam: FieldFamily, in_type, out_type, downsample: bool, kernel_size: int = 3) -> None:
        super().__init__()
        enn = fam.enn
        self.pool = (
            TensorModule(enn.PointwiseAvgPoolAntialiased(in_type, sigma=BLUR_SIGMA, stride=2))
            if downsample
            else nn.Identity()
        )
        self.conv1 = TensorModule(make_r2conv("escnn", in_type, out_type, kernel_size))
        n_out, order = len(out_type), out_type.gspace.fibergroup.order()
        self.bn1 = RegularBatchNorm(n_out, order)
        self.conv2 = TensorModule(make_r2conv("escnn", out_type, out_type, kernel_size))
        self.bn2 = RegularBatchNorm(n_out, order)
        self.shortcut: nn.Module = nn.Identity()
        if in_type != out_type:
            self.shortcut = nn.Sequential(
                TensorModule(make_r2conv("escnn", in_type, out_type, 1)), RegularBatchNorm(n_out, order)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _c8_resnet_count(fam: FieldFamily, in_channels: int, num_classes: int, w: int, k: int = 3) -> int:
    gs = fam.gspace
    reg = gs.regular_repr
    prev = in_channels * [gs.trivial_repr]
    n = conv_param_count(gs, prev, w * [reg], k) + 2 * w
    c_in = w
    for stage in range(4):
        c = w * 2**stage
        for block in range(2):
            src = c_in if block == 0 else c
            n += conv_param_count(gs, src * [reg], c * [reg], k) + conv_param_count(gs, c * [reg], c * [reg], k)
            n += 2 * 2 * c
            if src != c:
                n += conv_param_count(gs, src * [reg], c * [reg], 1) + 2 * c
        c_in = c
    return n + 8 * w * num_classes + num_classes


@register_model("c8_resnet18")
def c8_resnet18(
    in_channels: int = 3, num_classes: int = 10, match: str = "params", width: int | None = None, **kw
) -> SmallNet:
    """C8 regular-field ResNet-18 (escnn): 3x3 stem (no downsampling), 4 stages x 2 basic blocks with
    `width`, 2w, 4w, 8w regular C8 fields, anti-aliased average-pool downsampling at stages 2-4 (the shortcut
    is pool + 1x1 R2Conv + batch norm), group pooling, global mean, linear head. Batch norms are
    `steerable.RegularBatchNorm` (the computation of escnn's InnerBatchNorm, which is slow to build at this width).

    match='params' (default): `width` (fields) chosen so the count matches our `resnet18` (11.17M for 3 -> 10);
    match='channels': width 8 fields = 64 channels, like resnet18's 64/128/256/512 channels.
    Exact under rot90 when every downsampling input is odd, e.g. 33x33 (33 -> 17 -> 9 -> 5).
    """
    from baselines.gmr_family import resnet18_params

    check_match(match)
    pop_unused(kw, "c8_resnet18")
    fam = FieldFamily("escnn", "regular", 8, False)
    if width is None:
        if match == "channels":
            width = 8
        else:
            target = resnet18_params(in_channels, num_classes)
            lo, hi = 1, 64
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _c8_resnet_count(fam, in_channels, num_classes, mid) < target:
                    lo = mid
                else:
                    hi = mid
            width = min((lo, hi), key=lambda w: abs(_c8_resnet_count(fam, in_channels, num_classes, w) - target))
    w = int(width)
    gs = fam.gspace
    in_type = fam.trivial_type(in_channels)
    t = fam.field_type(w * [gs.regular_repr])
    layers: list[nn.Module] = [
        TensorModule(make_r2conv("escnn", in_type, t, 3)),
        RegularBatchNorm(w, 8),
        nn.ReLU(inplace=True),
    ]
    for stage in range(4):
        out_t = fam.field_type(w * 2**stage * [gs.regular_repr])
        for block in range(2):
            layers.append(_C8BasicBlock(fam, t, out_t, downsample=(stage > 0 and block == 0)))
            t = out_t
    contract = SymmetryContract("C8", features={"features": FieldSpec("regular", field_type=t),
                                                "pooled": INVARIANT, "logits": INVARIANT})
    net = SmallNet(nn.Sequential(*layers), RegularGroupPooling(8 * w, 8), 8 * w, num_classes, contract,
                   widths=(w, 2 * w, 4 * w, 8 * w), family="escnn-regular-resnet")
    net.field_family = fam
    return net


register_lib_layers("escnn")
