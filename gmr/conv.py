"""GMR convolution layers: isotropic kernels built from a Gaussian mixture over rings (2D) or shells (3D).

A GMR kernel is ``K[o, i] = sum_j W[o, i, j] * Basis_j`` with one basis kernel per ring (see :mod:`gmr.rings`),
so it is invariant under every symmetry of the pixel grid and a GMR layer (stride 1, symmetric padding) is
exactly equivariant to 90 degree rotations and flips.

Two forward implementations give the same numbers (up to float rounding):

- ``dense``: assemble ``K`` (C_out, C_in/groups, k, k) and run one convolution.
- ``two_stage``: convolve every input channel with the R basis kernels (a depthwise convolution with channel
  multiplier R that already applies stride, dilation and padding), then mix C_in*R -> C_out with a 1x1
  convolution (which applies groups and bias). On CPU the depthwise stage runs in channels-last layout, which
  oneDNN executes about 2x faster than the NCHW layout; the output is returned in the input's layout.

``impl="auto"`` picks between them with :func:`choose_impl` (a FLOP model with measured per-device factors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rings

IMPLS = ("auto", "dense", "two_stage")
SMOOTHINGS = ("ring", "radius")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("same", "valid")


# --------------------------------------------------------------------------------------------------- cost model
@dataclass(frozen=True)
class CostModel:
    """Relative cost of the two forward paths, in units of one multiply-add of a dense convolution.

    Per output position and batch item (both paths produce their output at the strided resolution, so stride
    scales them equally and cancels out of the comparison):

    - dense:      ``C_in * (C_out / groups) * k^d``                      (x ``dense_train`` when training)
    - two_stage:  ``C_in * R * depthwise_penalty * (depthwise_overhead + k^d)``   (x ``depthwise_train``)
                  ``+ C_in * R * (C_out / groups)``                      (x ``dense_train`` when training)

    ``depthwise_penalty`` / ``depthwise_overhead`` express that a depthwise convolution runs far below the
    FLOP rate of a dense one (it is memory bound: every one of its C_in*R outputs is written and read back by
    the 1x1 mix); ``depthwise_train`` that its backward pass (input and basis gradients) is relatively slower
    still. The CPU numbers were fitted by hand to oneDNN timings of the issue grid on a shared AMD EPYC
    (docs/gmr_perf.md): dense wins for C=16 at every k and for C=64 at k=3; two-stage wins for C=64 at k>=9 in
    eval; in training dense wins or ties everywhere. The CUDA numbers are an unmeasured estimate (no GPU was
    available when this was written); ``impl="dense"``/``"two_stage"`` always override the model.
    """

    depthwise_penalty: float
    depthwise_overhead: float
    depthwise_train: float
    dense_train: float = 3.0


COST_MODELS: dict[str, CostModel] = {
    # oneDNN (float32/bfloat16/float16 on CPU); two-stage runs channels-last
    "cpu": CostModel(depthwise_penalty=3.0, depthwise_overhead=78.0, depthwise_train=9.0),
    # float64 on CPU has no oneDNN kernels; the grouped (depthwise) conv falls back to one small call per
    # group, thousands per network, each an OpenMP region that stalls whenever another process holds a core
    # (a GMR-ResNet-18 forward went from 0.3 s to 27 s on a busy 2-core machine): always dense
    "cpu-float64": CostModel(depthwise_penalty=1e9, depthwise_overhead=0.0, depthwise_train=1.0),
    "cuda": CostModel(depthwise_penalty=4.0, depthwise_overhead=16.0, depthwise_train=3.0),
}
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def cost_model_key(device_type: str, dtype: torch.dtype | None = None) -> str:
    """Which :data:`COST_MODELS` entry applies: ``cpu``, ``cpu-float64`` (non-oneDNN dtypes) or ``cuda``."""
    if device_type == "cpu":
        return "cpu" if dtype is None or dtype in _ONEDNN_DTYPES else "cpu-float64"
    return "cuda"


def impl_costs(in_channels: int, out_channels: int, kernel_size: int, num_rings: int, *, groups: int = 1,
               ndim: int = 2, device_type: str = "cpu", dtype: torch.dtype | None = None,
               training: bool = False) -> dict[str, float]:
    """Modelled cost of each implementation per output position (see :class:`CostModel`)."""
    model = COST_MODELS[cost_model_key(device_type, dtype)]
    taps = kernel_size**ndim
    dense_mult = model.dense_train if training else 1.0
    dw_mult = model.depthwise_train if training else 1.0
    dense = in_channels * (out_channels / groups) * taps * dense_mult
    stage1 = in_channels * num_rings * model.depthwise_penalty * (model.depthwise_overhead + taps) * dw_mult
    mix = in_channels * num_rings * (out_channels / groups) * dense_mult
    return {"dense": dense, "two_stage": stage1 + mix}


def choose_impl(in_channels: int, out_channels: int, kernel_size: int, num_rings: int, *, groups: int = 1,
                ndim: int = 2, device_type: str = "cpu", dtype: torch.dtype | None = None,
                training: bool = False) -> str:
    """The cheaper implementation under the cost model; ties go to ``dense`` (one kernel launch)."""
    costs = impl_costs(in_channels, out_channels, kernel_size, num_rings, groups=groups, ndim=ndim,
                       device_type=device_type, dtype=dtype, training=training)
    return "two_stage" if costs["two_stage"] < costs["dense"] else "dense"


# --------------------------------------------------------------------------------------------------- validation
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_tuple(name: str, value: Any, ndim: int, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) != ndim:
            raise ValueError(f"{name} must be an int or a sequence of {ndim} ints >= {minimum}, got {value!r}")
        return tuple(_check_int(name, v, minimum) for v in value)
    return (_check_int(name, value, minimum),) * ndim


def _check_choice(name: str, value: Any, valid: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
    return value


def _check_kernel_size(value: Any, ndim: int) -> int:
    sides = _check_tuple("kernel_size", value, ndim, 1)
    if len(set(sides)) != 1 or sides[0] % 2 == 0:
        raise ValueError(
            f"GMR kernels are isotropic: kernel_size must be an odd int (or a tuple of {ndim} equal odd ints), "
            f"e.g. 3, 5, 7, 9; got {value!r}"
        )
    return sides[0]


# ------------------------------------------------------------------------------------------------------- layers
class _GMRConvNd(nn.Module):
    """Shared implementation of :class:`GMRConv2d` and :class:`GMRConv3d`; see their docstrings."""

    ndim: ClassVar[int]
    _conv: ClassVar[Callable[..., Tensor]]
    _channels_last: ClassVar[torch.memory_format]

    # Compare the parameters' values (not only their autograd version counters) before reusing the eval-mode
    # kernel cache. Costs one equality check per parameter per forward (a device sync on CUDA) and catches
    # edits through ``.data``, which bypass the version counter. Set to False on a subclass/instance to skip.
    verify_cache_values: bool = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        num_rings: int | None = None,
        force_circular: bool = True,
        gaussian_mixture: bool = True,
        train_sigma: bool = True,
        sigma_scale: float = 2.355,
        clip_sigma: bool = True,
        smoothing: str = "ring",
        impl: str = "auto",
        *,
        supersample: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        nd = self.ndim
        self.in_channels = _check_int("in_channels", in_channels, 1)
        self.out_channels = _check_int("out_channels", out_channels, 1)
        self.groups = _check_int("groups", groups, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be divisible by "
                f"groups ({groups})"
            )
        k = _check_kernel_size(kernel_size, nd)
        self.kernel_size = (k,) * nd
        self.stride = _check_tuple("stride", stride, nd, 1)
        self.dilation = _check_tuple("dilation", dilation, nd, 1)
        if isinstance(padding, str):
            _check_choice("padding", padding, PADDING_STRINGS)
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' needs stride 1; use an int padding with strided convolutions")
            self.padding: str | tuple[int, ...] = padding
        else:
            self.padding = _check_tuple("padding", padding, nd, 0)
        self.padding_mode = _check_choice("padding_mode", padding_mode, PADDING_MODES)
        self._impl = _check_choice("impl", impl, IMPLS)
        self._smoothing = _check_choice("smoothing", smoothing, SMOOTHINGS)
        if num_rings is None:
            num_rings = rings.default_num_rings(k, bool(force_circular))
        self._num_rings = _check_int("num_rings", num_rings, 1)
        if isinstance(sigma_scale, bool) or not isinstance(sigma_scale, (int, float, np.floating)):
            raise TypeError(f"sigma_scale must be a positive finite float, got {sigma_scale!r}")
        if not (math.isfinite(sigma_scale) and sigma_scale > 0):
            raise ValueError(f"sigma_scale must be a positive finite float, got {sigma_scale!r}")
        self.sigma_scale = float(sigma_scale)
        if supersample is None:
            supersample = 8 if nd == 2 else 4
        self._supersample = _check_int("supersample", supersample, 1)
        self._force_circular = bool(force_circular)
        self._gaussian_mixture = bool(gaussian_mixture)
        self.train_sigma = bool(train_sigma)
        self.clip_sigma = bool(clip_sigma)

        factory = {"device": device, "dtype": dtype}
        R = self._num_rings
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels // self.groups, R, **factory))
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.log_sigmas: Tensor | None
        if self._gaussian_mixture:
            fdtype = dtype or torch.get_default_dtype()
            # sigma itself is rounded to the parameter dtype before the log, as in the official code
            sig0 = torch.full((R,), rings.initial_sigma(k, R, self.sigma_scale), device=device, dtype=fdtype)
            log_sigmas = torch.log(sig0)
            if self.train_sigma:
                self.log_sigmas = nn.Parameter(log_sigmas)
            else:
                self.register_buffer("log_sigmas", log_sigmas)
        else:
            self.register_buffer("log_sigmas", None)
        self._register_geometry(factory)
        self._kernel_cache: dict[str, tuple[tuple[Any, ...], tuple[Tensor, ...], Tensor]] = {}
        self.reset_parameters()

    # -- construction helpers ----------------------------------------------------------------------------------
    def _register_geometry(self, factory: dict[str, Any]) -> None:
        """Fixed ring geometry as non-persistent buffers: they follow ``.to()`` but stay out of state dicts."""
        k, nd, R = self.kernel_size[0], self.ndim, self._num_rings
        fdtype = factory["dtype"] or torch.get_default_dtype()
        dev = factory["device"]
        if self._smoothing == "ring":
            masks = rings.ring_masks(k, nd, R, self._force_circular)
            self.register_buffer("_ring_masks", masks.to(device=dev, dtype=fdtype), persistent=False)
        else:
            rho, support, index = rings.subsample_coords(k, nd, R, self._force_circular, self._supersample)
            self.register_buffer("_rho", rho.to(device=dev, dtype=fdtype), persistent=False)
            self.register_buffer("_support", support.to(device=dev, dtype=fdtype), persistent=False)
            self.register_buffer("_gather", index.to(device=dev), persistent=False)

    def reset_parameters(self) -> None:
        """Official initialisation: weight U(+-1/sqrt(C_in/groups * k^d)); bias U(+-1/sqrt(C_in/groups * R))
        (the official code takes the bias fan-in from the ring weight, not from the k x k kernel)."""
        fan_in = (self.in_channels // self.groups) * self.kernel_size[0] ** self.ndim
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            b = 1.0 / math.sqrt((self.in_channels // self.groups) * self._num_rings)
            nn.init.uniform_(self.bias, -b, b)
        self._kernel_cache.clear()

    # -- read-only configuration (the geometry buffers depend on it) ------------------------------------------
    @property
    def num_rings(self) -> int:
        return self._num_rings

    @property
    def force_circular(self) -> bool:
        return self._force_circular

    @property
    def gaussian_mixture(self) -> bool:
        return self._gaussian_mixture

    @property
    def smoothing(self) -> str:
        return self._smoothing

    @property
    def supersample(self) -> int:
        return self._supersample

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        self._impl = _check_choice("impl", value, IMPLS)

    # -- kernels -------------------------------------------------------------------------------------------------
    def sigmas(self) -> Tensor | None:
        """Current sigmas in ring units (clamped like the official code), or None without the mixture."""
        if self.log_sigmas is None:
            return None
        return rings.sigmas_from_log(self.log_sigmas, self._num_rings, self.clip_sigma)

    def basis(self) -> Tensor:
        """The R basis kernels, shape (R, k, ..., k), differentiable w.r.t. ``log_sigmas``."""
        sig = self.sigmas()
        if self._smoothing == "ring":
            flat = rings.ring_basis(self._ring_masks, sig)
        else:
            flat = rings.radius_basis(self._rho, self._support, self._gather, sig, self._num_rings)
        return flat.reshape(self._num_rings, *self.kernel_size)

    def kernel(self) -> Tensor:
        """The assembled dense kernel K[o, i] = sum_j W[o, i, j] Basis_j, shape (C_out, C_in/groups, k, ...)."""
        b = self.basis()
        k = torch.einsum("oir,rp->oip", self.weight, b.reshape(self._num_rings, -1))
        return k.reshape(*self.weight.shape[:2], *self.kernel_size)

    def _stage1_weight(self) -> Tensor:
        """Depthwise weight of the two-stage path: the R basis kernels once per input channel."""
        b = self.basis().unsqueeze(1)  # (R, 1, k, ...)
        return b.repeat(self.in_channels, *([1] * (b.dim() - 1)))

    # -- eval-mode cache -----------------------------------------------------------------------------------------
    def _cache_sources(self) -> tuple[Tensor, ...]:
        return tuple(t for t in (self.weight, self.log_sigmas) if t is not None)

    def _cache_key(self) -> tuple[Any, ...]:
        key: list[Any] = [self.clip_sigma]
        for t in (*self._cache_sources(), *self.buffers(recurse=False)):
            key += [t._version, t.data_ptr(), t.device, t.dtype, tuple(t.shape)]
        return tuple(key)

    def _cached(self, name: str, build: Callable[[], Tensor]) -> Tensor:
        """``build()`` or its cached value. Cached only in eval mode when no parameter gradient is needed; the
        key (autograd version counters, storage pointers, devices, dtypes) changes on in-place updates,
        ``load_state_dict``, ``.to()`` and re-assigned parameters; ``verify_cache_values`` also compares the
        values, which catches ``.data`` edits that the version counter misses."""
        sources = self._cache_sources()
        if self.training or (torch.is_grad_enabled() and any(t.requires_grad for t in sources)):
            return build()
        key = self._cache_key()
        hit = self._kernel_cache.get(name)
        if hit is not None and hit[0] == key:
            if not self.verify_cache_values or all(torch.equal(a, b) for a, b in zip(hit[1], sources)):
                return hit[2]
        with torch.no_grad():
            value = build()
        snapshot = tuple(t.detach().clone() for t in sources) if self.verify_cache_values else ()
        self._kernel_cache[name] = (key, snapshot, value)
        return value

    def clear_cache(self) -> None:
        """Drop cached kernels (never needed for correctness; frees their memory)."""
        self._kernel_cache.clear()

    def train(self, mode: bool = True) -> _GMRConvNd:
        self._kernel_cache.clear()
        return super().train(mode)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _GMRConvNd:
        self._kernel_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:  # pickling / torch.save: cached kernels are not state
        state = super().__getstate__()
        state["_kernel_cache"] = {}
        return state

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._kernel_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    # -- forward ---------------------------------------------------------------------------------------------
    def _padding_numbers(self) -> tuple[int, ...]:
        if self.padding == "valid":
            return (0,) * self.ndim
        if self.padding == "same":  # odd kernels: d (k - 1) / 2 on both sides
            return tuple(d * (k - 1) // 2 for d, k in zip(self.dilation, self.kernel_size))
        return tuple(self.padding)

    def resolve_impl(self, x: Tensor | None = None) -> str:
        """The implementation the next forward on ``x`` will use (``impl`` unless it is "auto")."""
        if self._impl != "auto":
            return self._impl
        ref = x if x is not None else self.weight
        training = self.training and torch.is_grad_enabled()
        return choose_impl(self.in_channels, self.out_channels, self.kernel_size[0], self._num_rings,
                           groups=self.groups, ndim=self.ndim, device_type=ref.device.type, dtype=ref.dtype,
                           training=training)

    def forward(self, x: Tensor) -> Tensor:
        unbatched = x.dim() == self.ndim + 1
        if unbatched:
            x = x.unsqueeze(0)
        pad = self._padding_numbers()
        if self.padding_mode != "zeros":
            x = F.pad(x, [p for p in reversed(pad) for _ in range(2)], mode=self.padding_mode)
            pad = (0,) * self.ndim
        if self.resolve_impl(x) == "dense":
            weight = self._cached("dense", self.kernel)
            out = type(self)._conv(x, weight, self.bias, self.stride, pad, self.dilation, self.groups)
        else:
            out = self._two_stage(x, pad)
        return out.squeeze(0) if unbatched else out

    def _two_stage(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        conv = type(self)._conv
        stage1 = self._cached("two_stage", self._stage1_weight)
        channels_last = x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES  # oneDNN depthwise is NHWC-fast
        xin = x.contiguous(memory_format=self._channels_last) if channels_last else x
        y = conv(xin, stage1, None, self.stride, pad, self.dilation, self.in_channels)
        mix = self.weight.reshape(self.out_channels, -1, *([1] * self.ndim))
        out = conv(y, mix, self.bias, 1, 0, 1, self.groups)
        if channels_last and x.is_contiguous() and not out.is_contiguous():
            out = out.contiguous()
        return out

    # -- misc ------------------------------------------------------------------------------------------------
    def export(self) -> nn.Module:
        """A plain ``nn.Conv2d``/``nn.Conv3d`` with the current assembled kernel (same outputs, no GMR)."""
        cls = nn.Conv2d if self.ndim == 2 else nn.Conv3d
        conv = cls(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                   self.dilation, self.groups, self.bias is not None, self.padding_mode,
                   device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.kernel())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size[0]}, num_rings={self.num_rings}"
        if any(v != 1 for v in self.stride):
            s += f", stride={self.stride}"
        if self.padding != (0,) * self.ndim:
            s += f", padding={self.padding}"
        if any(v != 1 for v in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        s += f", smoothing={self.smoothing!r}, impl={self.impl!r}"
        if not self.force_circular:
            s += ", force_circular=False"
        if not self.gaussian_mixture:
            s += ", gaussian_mixture=False"
        return s

    @classmethod
    def from_official(cls, layer: nn.Module, **overrides: Any) -> _GMRConvNd:
        """Build ours from an official ``GMR_Conv.GMR_Conv2d``/``GMR_Conv3d`` with the same outputs.

        See :func:`gmr.official.from_official` (``overrides`` replace constructor arguments)."""
        from .official import from_official

        return from_official(layer, cls, **overrides)


class GMRConv2d(_GMRConvNd):
    """Gaussian Mixture Ring convolution (2D): an isotropic k x k kernel with R learnable ring weights per
    (out, in) channel pair, exactly equivariant to rot90s and flips of the grid.

    Args follow ``nn.Conv2d`` plus: ``num_rings`` (default k//2 + 1, or k//2 + 2 when not ``force_circular``);
    ``force_circular`` (drop the corners beyond radius k//2 + 0.5); ``gaussian_mixture`` (mix rings with learnable
    Gaussians of widths ``sigma = exp(log_sigmas)``, in ring units, initialised to the ring band width as a FWHM
    divided by ``sigma_scale``); ``train_sigma`` (``log_sigmas`` is a parameter, else a buffer); ``clip_sigma``
    (clamp sigma to [0.01, 2R]); ``smoothing``: "ring" (official, Gaussian over the ring index, piecewise
    constant kernel) or "radius" (Gaussian over each pixel's continuous radius averaged over ``supersample``^2
    sub-samples, a smooth radial profile: component j is centred at radius j*s pixels with s = (k//2)/(R-1),
    i.e. s = 1 px and sigma in pixels for the default circular geometry; see :mod:`gmr.rings`); ``impl``: "dense", "two_stage" or "auto"
    (cheaper one under :func:`choose_impl`'s cost model for this layer's channels, kernel size, rings,
    groups, the input's device type and train/eval). Parameters: ``weight`` (C_out, C_in/groups, R),
    ``log_sigmas`` (R), ``bias`` (C_out). In eval mode the assembled kernel is cached and the cache is
    invalidated by any parameter change (see ``_cached``).
    """

    ndim = 2
    _conv = staticmethod(F.conv2d)
    _channels_last = torch.channels_last


class GMRConv3d(_GMRConvNd):
    """Gaussian Mixture Ring convolution for volumes: spherical shells instead of rings, exactly equivariant
    to the 48 symmetries of the voxel grid (90 degree rotations about each axis and reflections).

    Same arguments as :class:`GMRConv2d` (``supersample`` defaults to 4, i.e. 4^3 sub-samples per voxel).
    """

    ndim = 3
    _conv = staticmethod(F.conv3d)
    _channels_last = torch.channels_last_3d
