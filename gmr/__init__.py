"""Our GMR-Conv (Gaussian Mixture Ring convolution): isotropic kernels, exactly equivariant to the pixel grid's
rotations and flips, numerically matching the official GMR-Conv 1.0.3 package with ``smoothing="ring"``.

Public API: :class:`GMRConv2d`, :class:`GMRConv3d`, :func:`choose_impl` (the dense/two-stage cost model),
:func:`gmr_resnet18`/:func:`gmr_resnet34`/:func:`gmr_resnet50`, :func:`convert_to_gmr`, and the bridges to the
official package :func:`from_official` and :func:`load_official_state_dict` (``GMR_Conv`` imported lazily).
"""

from .conv import (
    COST_MODELS,
    IMPLS,
    PADDING_MODES,
    SMOOTHINGS,
    CostModel,
    GMRConv2d,
    GMRConv3d,
    choose_impl,
    cost_model_key,
    impl_costs,
)
from .convert import convert_to_gmr
from .official import convert_official_state_dict, from_official, load_official_state_dict
from .resnet import GMRBasicBlock, GMRBottleneck, GMRResNet, gmr_resnet18, gmr_resnet34, gmr_resnet50

__all__ = [
    "COST_MODELS",
    "IMPLS",
    "PADDING_MODES",
    "SMOOTHINGS",
    "CostModel",
    "GMRBasicBlock",
    "GMRBottleneck",
    "GMRConv2d",
    "GMRConv3d",
    "GMRResNet",
    "choose_impl",
    "convert_official_state_dict",
    "cost_model_key",
    "convert_to_gmr",
    "from_official",
    "gmr_resnet18",
    "gmr_resnet34",
    "gmr_resnet50",
    "impl_costs",
    "load_official_state_dict",
]
