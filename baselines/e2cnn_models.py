"""e2cnn twins of the escnn networks, in the same backbone: `e2cnn_c8`, `e2cnn_d8` (regular fields) and
`e2cnn_so2` (irreps up to `max_frequency`, gated nonlinearity; e2cnn has no IIDBatchNorm, so GNormBatchNorm).

They exist to cross-check escnn: the same exact properties must hold and the parameter counts must be close
(the kernel bases of the two libraries differ slightly in their default ring / frequency cut-offs).
"""

from __future__ import annotations

from collections.abc import Sequence

import e2cnn.gspaces  # noqa: F401  (the module is declared as requiring e2cnn; imported here, not in a build)
import e2cnn.nn  # noqa: F401

from baselines.common import pop_unused
from baselines.fieldnet import FieldFamily, build_field_net
from baselines.layers import register_lib_layers
from bench.models import register_model


def _factory(name: str, kind: str, n: int, flip: bool):
    def factory(
        in_channels: int = 1,
        num_classes: int = 10,
        match: str = "params",
        width: float = 1.0,
        widths: Sequence[int] | None = None,
        max_frequency: int = 3,
        **kw,
    ):
        pop_unused(kw, name)
        fam = FieldFamily("e2cnn", kind, n, flip, max_freq=max_frequency)
        return build_field_net(fam, in_channels, num_classes, match, width, widths)

    factory.__name__ = name
    return factory


register_model("e2cnn_c8")(_factory("e2cnn_c8", "regular", 8, False))
register_model("e2cnn_d8")(_factory("e2cnn_d8", "regular", 8, True))
register_model("e2cnn_so2")(_factory("e2cnn_so2", "gated", -1, False))


register_lib_layers("e2cnn")
