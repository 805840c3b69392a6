"""Bridges from the official GMR-Conv package (pip ``GMR-Conv`` 1.0.3, module ``GMR_Conv``) to ours.

The official package is imported lazily (it needs torchvision and torchio at import time) and only to
recognise its classes; everything here reads attributes and tensors, no official code is executed.

Ring masks (``weight_index_mat``): the official layers keep their ring indicator masks in the state dict.
GMR-Conv <= 1.0.2 *trained* them by default (``train_index_mat=True``; 1.0.3 made ``False`` the default), so
a checkpoint from those versions usually holds learned, non-isotropic masks and computes a different function
from the fixed rings (and is no longer exactly equivariant). Ours keeps the rings fixed, so every bridge here
compares the masks with the default geometry and raises :class:`~bench.errors.UsageError` naming the version
instead of silently dropping them (:func:`check_ring_masks`).

Differences that are *deliberate* (official defects we do not reproduce):
- The official 2D forward always takes its "dw" path, which ignores ``padding_mode`` (always zero padding).
  ``from_official`` keeps the layer's declared ``padding_mode``; pass ``padding_mode="zeros"`` to reproduce the
  official numbers for a layer declared with another mode.
- The official ``clip_sigma`` attribute actually holds whatever was passed as ``dw_fwd`` (positional shift in
  its constructor); we copy the attribute, i.e. what the official forward really does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bench.errors import UsageError

from . import rings
from .conv import GMRConv2d, GMRConv3d, _GMRConvNd

_OFFICIAL_ONLY_KEYS = ("weight_index_mat", "default_weight_index_mat", "mus", "sigmas", "infer_weight_matrix")


def _official_module() -> Any:
    import GMR_Conv.gmr_conv as official  # noqa: PLC0415 - lazy on purpose

    return official


def official_config(layer: nn.Module) -> dict[str, Any]:
    """Our constructor arguments equivalent to an official GMR conv layer."""
    if getattr(layer, "transposed", False):
        raise ValueError("transposed official GMR layers are not supported")
    padding = layer.padding
    cfg: dict[str, Any] = {
        "in_channels": layer.in_channels,
        "out_channels": layer.out_channels,
        "kernel_size": layer.kernel_size[0],
        "stride": tuple(layer.stride),
        "padding": padding if isinstance(padding, str) else tuple(padding),
        "dilation": tuple(layer.dilation),
        "groups": layer.groups,
        "bias": layer.bias is not None,
        "padding_mode": layer.padding_mode,
        "num_rings": layer.num_rings,
        "force_circular": bool(layer.force_circular),
        "gaussian_mixture": bool(layer.gaussian_mixture_ring),
        "train_sigma": isinstance(getattr(layer, "log_sigmas", None), nn.Parameter),
        "clip_sigma": bool(layer.clip_sigma),
        "smoothing": "ring",
    }
    if len(set(layer.kernel_size)) != 1:
        raise ValueError(f"official layer has a non-square kernel {tuple(layer.kernel_size)}")
    return cfg


def from_official(layer: nn.Module, cls: type | None = None, **overrides: Any) -> nn.Module:
    """Our layer (``cls`` defaults to GMRConv2d/GMRConv3d by the official class) with the official weights.

    ``overrides`` replace constructor arguments (e.g. ``impl="dense"``, ``padding_mode="zeros"``). Note that
    ``sigma_scale`` does not matter: ``log_sigmas`` are copied. A layer whose ring masks differ from the
    default (learned, ``train_index_mat=True``) raises :class:`~bench.errors.UsageError`, see
    :func:`check_ring_masks`."""
    official = _official_module()
    if cls is None:
        if isinstance(layer, official.GMR_Conv3d):
            cls = GMRConv3d
        elif isinstance(layer, official.GMR_Conv2d):
            cls = GMRConv2d
        else:
            raise UsageError(f"expected an official GMR_Conv2d or GMR_Conv3d, got {type(layer).__name__}")
    cfg = official_config(layer)
    cfg.update(overrides)
    w = layer.weight
    ours = cls(**cfg, device=w.device, dtype=w.dtype)
    masks = getattr(layer, "weight_index_mat", None)
    if masks is not None:
        check_ring_masks(f"{type(layer).__name__}.weight_index_mat", masks, _fixed_masks(ours))
    with torch.no_grad():
        ours.weight.copy_(w)
        if ours.bias is not None and layer.bias is not None:
            ours.bias.copy_(layer.bias)
        if ours.log_sigmas is not None and getattr(layer, "log_sigmas", None) is not None:
            ours.log_sigmas.copy_(layer.log_sigmas)
    ours.train(layer.training)
    return ours


LEARNED_MASKS_HELP = (
    "It was trained with learned ring masks: train_index_mat=True, the default of GMR-Conv <= 1.0.2 "
    "(GMR-Conv 1.0.3 made fixed masks the default). Our GMR layers keep the rings fixed and isotropic, which is "
    "what makes them exactly equivariant, so they cannot compute this checkpoint's function. Run it with the "
    "official GMR_Conv package (1.0.3 loads it too and uses the stored masks), or retrain with fixed masks."
)


def check_ring_masks(name: str, masks: torch.Tensor, default: torch.Tensor) -> None:
    """Raise :class:`~bench.errors.UsageError` unless the official ring masks ``masks`` (shape ending in (R, k^d),
    officially (1, 1, R, k^d)) equal the fixed ring indicators ``default`` (same trailing shape) exactly.

    The default masks are exact 0/1 values in every float dtype, so any difference at all means they were
    trained and the official forward computes another kernel."""
    if masks.shape[-2:] != default.shape[-2:]:
        raise UsageError(f"{name}: ring masks of shape {tuple(masks.shape)} do not fit this layer's "
                         f"{tuple(default.shape)} (number of rings x kernel pixels)")
    delta = (masks.detach().double().cpu() - default.detach().double().cpu()).abs().max().item()
    if delta != 0.0:
        raise UsageError(f"{name}: the ring masks differ from the fixed ring geometry (max |delta| = "
                         f"{delta:.3g}). {LEARNED_MASKS_HELP}")


def _fixed_masks(layer: _GMRConvNd) -> torch.Tensor:
    """The fixed ring indicators (R, k^d) of one of our layers, whatever its smoothing mode."""
    return rings.ring_masks(layer.kernel_size[0], layer.ndim, layer.num_rings, layer.force_circular)


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the official-only GMR buffers (ring masks, ``mus``); every other key keeps its name and shape.

    Our GMR-ResNets use the official module names, and our GMR layers store ``weight``, ``log_sigmas`` and
    ``bias`` under the official names, so nothing needs renaming. Ring masks are checked before they are
    dropped: a ``weight_index_mat`` that differs from the ``default_weight_index_mat`` stored next to it
    (learned masks, GMR-Conv <= 1.0.2) raises :class:`~bench.errors.UsageError`."""
    for key, masks in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        default = state_dict.get(f"{prefix}.default_weight_index_mat" if prefix else "default_weight_index_mat")
        if leaf == "weight_index_mat" and default is not None:
            check_ring_masks(key, masks, default)
    return {k: v for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in _OFFICIAL_ONLY_KEYS}


def load_official_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                             strict: bool = True) -> Any:
    """Load an official GMR model's state dict (e.g. ``GMR_Conv.gmr_resnet18().state_dict()``) into ours.

    Every ``weight_index_mat`` is compared with the stored default *and* with the fixed rings of our layer of
    the same name, so learned masks (GMR-Conv <= 1.0.2) raise :class:`~bench.errors.UsageError` even with
    ``strict=False``. Returns ``model.load_state_dict``'s result (missing/unexpected keys when
    ``strict=False``)."""
    converted = convert_official_state_dict(state_dict)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, _GMRConvNd)}
    for key, masks in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf == "weight_index_mat" and prefix in layers:
            check_ring_masks(key, masks, _fixed_masks(layers[prefix]))
    return model.load_state_dict(converted, strict=strict)
