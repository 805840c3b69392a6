"""Turn an ordinary CNN into a GMR network by swapping its k x k convolutions for GMR convolutions, without
changing the output shape of any module, for any input size.

Downsampling: a strided conv or an overlapping strided pool breaks exact rot90/flip equivariance on even-sized
maps, a non-overlapping ``s x s`` window does not. A stride-``s`` layer whose padding is "same"
(``2 p = d (k - 1)``) outputs ``ceil(H / s)`` rows for every ``H``, exactly what ``AvgPool2d(s, s,
ceil_mode=True)`` / ``MaxPool2d(s, s, ceil_mode=True)`` output, so such layers are rewritten as that pool
followed by the stride-1 layer (equivariant whenever ``H`` is divisible by ``s``). Anything else that cannot be
rewritten without changing a shape, or cannot be made isotropic at all (even or non-square kernels, subclasses
of the conv modules, transposed convs), is left exactly as it was and reported.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

from torch import nn
from torch.nn.modules.utils import _pair

from bench.errors import UsageError

from .conv import GMRConv2d


class NotEquivariantWarning(UserWarning):
    """``convert_to_gmr`` left modules that are not exactly rot90/flip equivariant in the model."""


class Unchanged(NamedTuple):
    """A module ``convert_to_gmr`` left as it was although it is not exactly equivariant, and why."""

    name: str  # qualified name in the model ("" for the model itself)
    module: str  # its repr (type name for modules with children)
    reason: str


class Conversion(NamedTuple):
    """What ``convert_to_gmr`` returns: the converted model (the same object unless the model itself was a
    convertible conv or pool) and the list of modules it left unchanged."""

    model: nn.Module
    unchanged: list[Unchanged]


_CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose3d)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _describe(module: nn.Module) -> str:
    return type(module).__name__ if any(True for _ in module.children()) else repr(module)


def _is_same_padded(stride: tuple[int, int], padding: tuple[int, int], reach: tuple[int, int]) -> bool:
    """Whether every strided axis has 'same' padding 2 p = reach - 1 (reach = d (k - 1) + 1), i.e. outputs
    ceil(H / s) rows for every H, like a ceil-mode s x s pool."""
    return all(s == 1 or 2 * p == r - 1 for s, p, r in zip(stride, padding, reach))


def _window(stride: tuple[int, int]) -> int | tuple[int, int]:
    return stride[0] if stride[0] == stride[1] else stride


def _pool_then(stride: tuple[int, int], layer: nn.Module) -> nn.Module:
    return nn.Sequential(nn.AvgPool2d(_window(stride), _window(stride), ceil_mode=True), layer)


def _gmr_padding(conv: nn.Conv2d, k: int) -> Any:
    """The padding that keeps the output size with kernel ``k`` instead of the conv's own (None if negative)."""
    if conv.padding == "same":
        return "same"
    old = (0, 0) if conv.padding == "valid" else conv.padding
    if k == conv.kernel_size[0]:
        return conv.padding
    pad = tuple(p + d * (k - conv.kernel_size[0]) // 2 for p, d in zip(old, conv.dilation))
    return pad if min(pad) >= 0 else None


def _convert_conv(conv: nn.Conv2d, kernel_size: int | None, equivariant_downsampling: bool,
                  gmr_kwargs: dict[str, Any]) -> nn.Module | str | None:
    kh, kw = conv.kernel_size
    stride = tuple(conv.stride)
    strided = stride != (1, 1)
    pad_numbers = (0, 0) if isinstance(conv.padding, str) else tuple(conv.padding)
    reach = tuple(d * (k - 1) + 1 for d, k in zip(conv.dilation, conv.kernel_size))
    if kh == kw == 1:
        if not strided:
            return None  # pointwise: already equivariant
        if not equivariant_downsampling:
            return "strided 1x1 conv (equivariant_downsampling=False)"
        if not _is_same_padded(stride, pad_numbers, reach):
            return "strided 1x1 conv with padding: no shape-preserving pool + stride-1 form"
        conv.stride = (1, 1)
        return _pool_then(stride, conv)
    if kh != kw or kh % 2 == 0:
        return f"{kh}x{kw} kernel: only odd square kernels can be made isotropic"
    k = kh if kernel_size is None else kernel_size
    padding = _gmr_padding(conv, k)
    if padding is None:
        return f"kernel_size={k} would need negative padding to keep the output size"
    if strided and not _is_same_padded(stride, pad_numbers, reach):
        return (f"strided {kh}x{kw} conv whose padding {pad_numbers} is not dilation*(k-1)/2: no shape-preserving "
                "pool + stride-1 form")
    if strided and conv.padding_mode in ("reflect", "circular") and max(pad_numbers) > 0:
        return (f"strided conv with padding_mode={conv.padding_mode!r}: after pooling, that padding would fail on "
                "inputs the original accepts")
    layer = GMRConv2d(conv.in_channels, conv.out_channels, k, stride=1, padding=padding, dilation=conv.dilation,
                      groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype, **gmr_kwargs)
    return _pool_then(stride, layer) if strided else layer


def _convert_pool(pool: nn.MaxPool2d | nn.AvgPool2d, equivariant_downsampling: bool) -> nn.Module | str | None:
    kernel, stride, padding = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
    dilation = _pair(getattr(pool, "dilation", 1))
    if stride == (1, 1) or (kernel == stride and padding == (0, 0) and dilation == (1, 1)):
        return None  # stride 1, or already non-overlapping
    if not equivariant_downsampling:
        return f"overlapping strided {type(pool).__name__} (equivariant_downsampling=False)"
    reach = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if pool.ceil_mode or not _is_same_padded(stride, padding, reach):
        return "overlapping strided pool without 'same' padding: no shape-preserving non-overlapping form"
    return type(pool)(_window(stride), _window(stride), ceil_mode=True)


def _replacement(module: nn.Module, kernel_size: int | None, equivariant_downsampling: bool,
                 gmr_kwargs: dict[str, Any]) -> nn.Module | str | None:
    """A replacement module, a reason to leave a non-equivariant module as it is, or None (nothing to do)."""
    if type(module) is nn.Conv2d:
        return _convert_conv(module, kernel_size, equivariant_downsampling, gmr_kwargs)
    if isinstance(module, _CONV_TYPES):
        if all(k == 1 for k in module.kernel_size) and all(s == 1 for s in module.stride):
            return None
        return f"{type(module).__name__} is not a plain nn.Conv2d: not converted"
    if type(module) in _POOLS:
        return _convert_pool(module, equivariant_downsampling)
    return None


def _convert_children(module: nn.Module, prefix: str, kernel_size: int | None, equivariant_downsampling: bool,
                      gmr_kwargs: dict[str, Any], unchanged: list[Unchanged]) -> None:
    for name, child in list(module.named_children()):
        qualified = f"{prefix}{name}"
        result = _replacement(child, kernel_size, equivariant_downsampling, gmr_kwargs)
        if isinstance(result, nn.Module):
            setattr(module, name, result)
        elif isinstance(result, str):
            unchanged.append(Unchanged(qualified, _describe(child), result))
        else:
            _convert_children(child, f"{qualified}.", kernel_size, equivariant_downsampling, gmr_kwargs, unchanged)


def convert_to_gmr(model: nn.Module, *, equivariant_downsampling: bool = True, kernel_size: int | None = None,
                   **gmr_kwargs: Any) -> Conversion:
    """Replace, in place, every ``nn.Conv2d`` with an odd square k x k kernel (k > 1) by a :class:`GMRConv2d`
    with the same channels, padding, dilation, groups, bias, padding mode, device and dtype (fresh weights;
    ``kernel_size`` overrides k and adjusts the padding so the output size stays). A strided one becomes
    ``AvgPool2d(stride, ceil_mode=True)`` + a stride-1 GMR conv (see the module docstring for when that keeps
    the shape; otherwise it is left unchanged). 1 x 1 convs stay (they are equivariant).

    ``equivariant_downsampling`` (default True, beyond what the official converter does) also rewrites strided
    1x1 convs as ``AvgPool2d`` + the conv with stride 1 and overlapping strided max/avg pools as non-overlapping
    ``s x s`` pools, wherever that keeps the shape. With it, torchvision's resnet18 becomes exactly rot90/flip
    invariant in eval mode for inputs whose side is divisible by 32, and nothing is left unchanged.

    Returns ``Conversion(model, unchanged)``; if ``unchanged`` (modules left as they were although they are not
    exactly equivariant, with reasons) is not empty, a :class:`NotEquivariantWarning` lists them too.
    """
    if kernel_size is not None and (isinstance(kernel_size, bool) or not isinstance(kernel_size, int)
                                    or kernel_size < 1 or kernel_size % 2 == 0):
        raise UsageError(f"kernel_size must be None or an odd int >= 1 (3, 5, 7, ...), got {kernel_size!r}")
    unchanged: list[Unchanged] = []
    result = _replacement(model, kernel_size, equivariant_downsampling, gmr_kwargs)
    if isinstance(result, nn.Module):
        model = result
    elif isinstance(result, str):
        unchanged.append(Unchanged("", _describe(model), result))
    else:
        _convert_children(model, "", kernel_size, equivariant_downsampling, gmr_kwargs, unchanged)
    if unchanged:
        listing = "; ".join(f"{u.name or '<model>'} {u.module}: {u.reason}" for u in unchanged)
        warnings.warn(f"convert_to_gmr left {len(unchanged)} module(s) unchanged that are not exactly "
                      f"equivariant: {listing}", NotEquivariantWarning, stacklevel=2)
    return Conversion(model, unchanged)
