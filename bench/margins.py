"""How far into each feature map the image border reaches: the margin to leave out when comparing maps.

Why: a zero-padded convolution reads zeros beyond the border of its input. For the network's first layer
that is harmless (the protocols confine inputs to a disk, so the image really is zero out there), but every
later map is non-zero up to its border (biases, normalisation shifts), and its zero padding is a square frame
that does not rotate with the content. So even an exactly equivariant stack gives f(g x) != g f(x) within the
margin its padding reaches, and on small late maps (8x8) that ring is most of the disk. Comparing maps only
inside ``disk radius - margin`` (`bench.equivariance_metrics.comparison_mask`) measures the model, not its
border. The margin counts every padded layer, the first included, so it is an upper bound.

Arithmetic: a layer with kernel k, stride s, padding p, dilation d maps a margin m (the outer m rows/columns
of its input are affected) to ``ceil((m + p) / s)`` at the near border (output pixel j reads inputs from
``s j - p``); the far border is computed the same way from the far edge, and the larger of the two is kept
(the comparison disk is centred). A stride-1 'same' k x k conv adds k // 2; a 2x2 average pool halves it
(rounding up). Elementwise ops (activations, normalisation, residual sums, 1x1 convs) keep the larger margin
of their inputs.

`traced_margins` finds every exposed map's margin by watching one forward pass with a TorchFunctionMode:
no model needs to declare anything. Ops that change the spatial size in a way it does not know
(interpolation, crops, adaptive pools to more than 1x1, transposed convs) make the margin unknown (None).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from bench.contract import exposed_features

_UNKNOWN = -1  # internal marker; reported as None


def layer_margin(margin: int, size: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1) -> tuple[int, int]:
    """(margin, size) of one axis of a conv/pool output, from its input's margin and size (see module doc)."""
    span = dilation * (kernel - 1)
    out = (size + 2 * padding - span - 1) // stride + 1
    near = max(0, math.ceil((margin + padding) / stride))
    # output j reads up to s j - p + span; it is affected when that reaches the far margin (>= size - margin)
    first_far = math.ceil((size - margin + padding - span) / stride)
    far = max(0, out - max(first_far, 0))
    return min(max(near, far), out), out


def stack_margin(size: int, layers: Sequence[tuple[int, int, int]], margin: int = 0) -> tuple[int, int]:
    """(margin, size) after a stack of (kernel, stride, padding) layers applied to a `size`-pixel axis."""
    for kernel, stride, padding in layers:
        margin, size = layer_margin(margin, size, kernel, stride, padding)
    return margin, size


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _arg(args: Sequence[Any], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def _conv_geometry(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    weight = _arg(args, kwargs, 1, "weight", None)
    k = tuple(int(v) for v in weight.shape[-2:])
    stride = _pair(_arg(args, kwargs, 3, "stride", 1))
    dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
    padding = _arg(args, kwargs, 4, "padding", 0)
    if isinstance(padding, str):
        padding = (0, 0) if padding == "valid" else tuple(d * (kk - 1) // 2 for d, kk in zip(dilation, k))
    return k, stride, _pair(padding), dilation  # type: ignore[return-value]


def _pool_geometry(args: Sequence[Any], kwargs: dict[str, Any], dilated: bool) -> tuple[tuple[int, int], ...]:
    k = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
    stride = _arg(args, kwargs, 2, "stride", None)
    stride = k if stride is None or stride == [] or stride == () else _pair(stride)
    padding = _pair(_arg(args, kwargs, 3, "padding", 0))
    dilation = _pair(_arg(args, kwargs, 4, "dilation", 1)) if dilated else (1, 1)  # avg_pool2d has none
    return k, stride, padding, dilation


_GEOMETRY: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[tuple[int, int], ...]]] = {
    "conv2d": _conv_geometry,
    "avg_pool2d": lambda a, kw: _pool_geometry(a, kw, dilated=False),
    "max_pool2d": lambda a, kw: _pool_geometry(a, kw, dilated=True),
    "max_pool2d_with_indices": lambda a, kw: _pool_geometry(a, kw, dilated=True),
}


class MarginTracker(TorchFunctionMode):
    """Propagates border margins through every torch call made inside it (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.margins: dict[int, tuple[torch.Tensor, int]] = {}  # id -> (tensor kept alive, margin)

    def track(self, t: torch.Tensor, margin: int = 0) -> None:
        """Start tracking `t` (the model input: margin 0); only tensors computed from tracked ones are followed,
        so weight and kernel arithmetic never counts."""
        self.margins[id(t)] = (t, margin)

    def _tracked(self, t: torch.Tensor) -> bool:
        entry = self.margins.get(id(t))
        return entry is not None and entry[0] is t

    def margin(self, t: torch.Tensor) -> int | None:
        m = self.margins[id(t)][1] if self._tracked(t) else 0
        return None if m == _UNKNOWN else m

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in _tensors((args, kwargs)) if self._tracked(t)]
        outputs = _tensors(out)
        if not inputs or not outputs:
            return out
        ms = [self.margins[id(t)][1] for t in inputs]
        margin = _UNKNOWN if _UNKNOWN in ms else max(ms)
        name = getattr(func, "__name__", "")
        src, dst = inputs[0], outputs[0]
        if name in _GEOMETRY and margin != _UNKNOWN and dst.dim() >= 3:
            k, s, p, d = _GEOMETRY[name](args, kwargs)
            axes = [layer_margin(margin, src.shape[-2 + i], k[i], s[i], p[i], d[i])[0] for i in range(2)]
            margin = max(axes)
        elif name == "pad" and margin != _UNKNOWN:
            pads = _arg(args, kwargs, 1, "pad", ())
            margin += max((int(v) for v in pads), default=0)
        elif dst.dim() >= 2 and src.dim() >= 2 and tuple(dst.shape[-2:]) != tuple(src.shape[-2:]):
            # an unknown resampling; a global pool to 1x1 (or a reduction) leaves no spatial map to mask
            margin = 0 if dst.dim() < 3 or tuple(dst.shape[-2:]) == (1, 1) else _UNKNOWN
        for t in outputs:
            self.margins[id(t)] = (t, margin)
        return out


def traced_margins(model: torch.nn.Module | Callable[[torch.Tensor], dict[str, torch.Tensor]],
                   x: torch.Tensor) -> dict[str, int | None]:
    """Border margin (pixels) of every exposed map of `model` on inputs like x (one image suffices);
    None where an op the tracker does not understand changed the spatial size. Vectors get 0."""
    call = model if not isinstance(model, torch.nn.Module) else (lambda inp: exposed_features(model, inp))
    with torch.no_grad(), MarginTracker() as tracker:
        tracker.track(x)
        feats = call(x)
    return {name: tracker.margin(t) if t.dim() >= 3 else 0 for name, t in feats.items()}


def padding_effect_margins(model: torch.nn.Module | Callable[[torch.Tensor], dict[str, torch.Tensor]],
                           x: torch.Tensor, tol: float = 1e-3, pad: int = 64) -> dict[str, int | None]:
    """Measured margin of every exposed map: how far in its zero padding actually changes it, on inputs x.

    The input is embedded in a zero canvas `pad` px wider on each side (a multiple of every map's total
    stride, so the maps' pixel grids stay aligned) and the maps of the big input, cropped back, are compared
    with the originals: they differ only where the padding of some layer was read. The margin is the smallest
    m such that, inside the disk of radius (side - 1) / 2 - m, the relative difference is at most `tol`
    (None when even the centre pixel differs more). With tol ~ 0 on generic weights and inputs it equals
    `traced_margins` (the receptive-field bound); at a tolerance below the measurement's floor it says which
    ring of a late map is border rather than model. Inputs confined to a disk make the first layer's padding
    harmless, as it is in the protocols."""
    call = model if not isinstance(model, torch.nn.Module) else (lambda inp: exposed_features(model, inp))
    from bench.rotation import disk_mask

    with torch.no_grad():
        small = call(x)
        big = call(torch.nn.functional.pad(x, (pad,) * 4))
    out: dict[str, int | None] = {}
    for name, f in small.items():
        if f.dim() < 3 or tuple(f.shape[-2:]) == (1, 1):
            out[name] = 0
            continue
        h, w = f.shape[-2:]
        g = big[name]
        grow_r, grow_c = g.shape[-2] - h, g.shape[-1] - w
        if grow_r <= 0 or grow_r % 2 or grow_c % 2 or (2 * pad) % grow_r:  # not a map that scales with the input
            out[name] = None
            continue
        off_r, off_c = grow_r // 2, grow_c // 2
        diff = f - g[..., off_r:off_r + h, off_c:off_c + w]
        out[name] = None
        for m in range((min(h, w) + 1) // 2):
            keep = disk_mask(h, w, radius=(min(h, w) - 1) / 2 - m, device=f.device).to(f.dtype)
            if not keep.any():
                break
            err = (diff * keep).norm() / (f * keep).norm().clamp_min(1e-30)
            if err.item() <= tol:
                out[name] = m
                break
    return out
