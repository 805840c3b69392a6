"""Our GMR-Conv (Gaussian Mixture Ring convolution): isotropic kernels, exactly equivariant to the pixel grid's
rotations and flips, numerically matching the official GMR-Conv 1.0.3 package with ``smoothing="ring"``.

Public API: :class:`GMRConv2d`, :class:`GMRConv3d`; the measured ``impl="auto"`` switch :func:`set_autotune`
(on by default, see :mod:`gmr.autotune`) and its deterministic fallback :func:`choose_impl` (the cost model);
:func:`gmr_resnet18`/:func:`gmr_resnet34`/:func:`gmr_resnet50`; :func:`convert_to_gmr`; and the bridges to the
official package :func:`from_official` and :func:`load_official_state_dict` (``GMR_Conv`` imported lazily).

Module-level imports form a tree: rings <- cost_model, autotune <- conv <- official, convert, resnet.
"""

from .autotune import autotune_enabled, autotune_results, clear_autotune_cache, set_autotune
from .conv import IMPLS, PADDING_MODES, SMOOTHINGS, GMRConv2d, GMRConv3d
from .convert import Conversion, NotEquivariantWarning, Unchanged, convert_to_gmr
from .cost_model import COST_MODELS, CostModel, choose_impl, cost_model_key, impl_costs
from .official import convert_official_state_dict, from_official, load_official_state_dict
from .resnet import GMRBasicBlock, GMRBottleneck, GMRResNet, gmr_resnet18, gmr_resnet34, gmr_resnet50

__all__ = [
    "COST_MODELS",
    "IMPLS",
    "PADDING_MODES",
    "SMOOTHINGS",
    "Conversion",
    "CostModel",
    "GMRBasicBlock",
    "GMRBottleneck",
    "GMRConv2d",
    "GMRConv3d",
    "GMRResNet",
    "NotEquivariantWarning",
    "Unchanged",
    "autotune_enabled",
    "autotune_results",
    "choose_impl",
    "clear_autotune_cache",
    "convert_official_state_dict",
    "convert_to_gmr",
    "cost_model_key",
    "from_official",
    "gmr_resnet18",
    "gmr_resnet34",
    "gmr_resnet50",
    "impl_costs",
    "load_official_state_dict",
    "set_autotune",
]
