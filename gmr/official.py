"""Bridges from the official GMR-Conv package (pip ``GMR-Conv`` 1.0.3, module ``GMR_Conv``) to ours.

The official package is imported lazily (it needs torchvision and torchio at import time) and only to
recognise its classes; everything here reads attributes and tensors, no official code is executed.

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

_OFFICIAL_ONLY_KEYS = ("weight_index_mat", "default_weight_index_mat", "mus", "sigmas", "infer_weight_matrix")


def _official_module() -> Any:
    import GMR_Conv.gmr_conv as official  # noqa: PLC0415 - lazy on purpose

    return official


def official_config(layer: nn.Module) -> dict[str, Any]:
    """Our constructor arguments equivalent to an official GMR conv layer."""
    if getattr(layer, "transposed", False):
        raise ValueError("transposed official GMR layers are not supported")
    if getattr(layer, "train_index_mat", False):
        raise ValueError("official layers with train_index_mat=True (learned ring masks) are not supported")
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
    ``sigma_scale`` does not matter: ``log_sigmas`` are copied."""
    from .conv import GMRConv2d, GMRConv3d

    official = _official_module()
    if cls is None:
        if isinstance(layer, official.GMR_Conv3d):
            cls = GMRConv3d
        elif isinstance(layer, official.GMR_Conv2d):
            cls = GMRConv2d
        else:
            raise ValueError(f"expected an official GMR_Conv2d or GMR_Conv3d, got {type(layer).__name__}")
    cfg = official_config(layer)
    cfg.update(overrides)
    w = layer.weight
    ours = cls(**cfg, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        ours.weight.copy_(w)
        if ours.bias is not None and layer.bias is not None:
            ours.bias.copy_(layer.bias)
        if ours.log_sigmas is not None and getattr(layer, "log_sigmas", None) is not None:
            ours.log_sigmas.copy_(layer.log_sigmas)
    ours.train(layer.training)
    return ours


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the official-only GMR buffers (ring masks, ``mus``); every other key keeps its name and shape.

    Our GMR-ResNets use the official module names, and our GMR layers store ``weight``, ``log_sigmas`` and
    ``bias`` under the official names, so nothing needs renaming."""
    return {k: v for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in _OFFICIAL_ONLY_KEYS}


def load_official_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                             strict: bool = True) -> Any:
    """Load an official GMR model's state dict (e.g. ``GMR_Conv.gmr_resnet18().state_dict()``) into ours.

    Returns ``model.load_state_dict``'s result (missing/unexpected keys when ``strict=False``)."""
    return model.load_state_dict(convert_official_state_dict(state_dict), strict=strict)
