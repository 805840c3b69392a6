"""e2cnn twins of the escnn networks, in the same backbone: `e2cnn_c8`, `e2cnn_d8` (regular fields) and
`e2cnn_so2` (irreps up to `max_frequency`, gated nonlinearity; e2cnn has no IIDBatchNorm, so GNormBatchNorm).

They exist to cross-check escnn: the same exact properties must hold and the parameter counts must be close
(the kernel bases of the two libraries differ slightly in their default ring / frequency cut-offs).
"""

from __future__ import annotations

import e2cnn.gspaces  # noqa: F401  (the module is declared as requiring e2cnn; imported here, not in a build)
import e2cnn.nn  # noqa: F401

from baselines.fieldnet import field_net_factory
from baselines.layers import register_lib_layers
from bench.models import register_model

register_model("e2cnn_c8")(field_net_factory("e2cnn_c8", "e2cnn", "regular", 8, False, "C8 regular fields (e2cnn)"))
register_model("e2cnn_d8")(field_net_factory("e2cnn_d8", "e2cnn", "regular", 8, True, "D8 regular fields (e2cnn)"))
register_model("e2cnn_so2")(field_net_factory("e2cnn_so2", "e2cnn", "gated", -1, False, "SO(2) irreps, gated (e2cnn)"))


register_lib_layers("e2cnn")
