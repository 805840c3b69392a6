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

``impl="auto"`` (the default) times both on the first call for each input signature and keeps the faster one
process-wide (:mod:`gmr.autotune`, on by default); with measuring off it uses the deterministic cost model
:func:`gmr.cost_model.choose_impl`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import UsageError

from . import autotune, rings
from .cost_model import ONEDNN_DTYPES, choose_impl, worth_measuring

IMPLS = ("auto", "dense", "two_stage")
SMOOTHINGS = ("ring", "radius")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("same", "valid")


# --------------------------------------------------------------------------------------------------- validation
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise UsageError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_tuple(name: str, value: Any, ndim: int, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) != ndim:
            raise UsageError(f"{name} must be an int or a sequence of {ndim} ints >= {minimum}, got {value!r}")
        return tuple(_check_int(name, v, minimum) for v in value)
    return (_check_int(name, value, minimum),) * ndim


def _check_choice(name: str, value: Any, valid: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise UsageError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
    return value


def _check_kernel_size(value: Any, ndim: int) -> int:
    sides = _check_tuple("kernel_size", value, ndim, 1)
    if len(set(sides)) != 1 or sides[0] % 2 == 0:
        raise UsageError(
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

    # Also compare the parameters' values with a snapshot before reusing the eval-mode kernel cache. Off by
    # default: the version-counter check is nearly free, while this costs one comparison per parameter per
    # forward (and a device sync on CUDA). It only adds protection against in-place edits through ``.data``,
    # which bypass autograd's version counter (call ``clear_cache()`` after such edits instead).
    verify_cache_values: bool = False

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
            raise UsageError(
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
                raise UsageError("padding='same' needs stride 1; use an int padding with strided convolutions")
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
            raise UsageError(f"sigma_scale must be a positive finite float, got {sigma_scale!r}")
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
        self._kernel_cache: dict[str, tuple[Any, ...]] = {}
        self._impl_memo: dict[Hashable, str] = {}  # input signature -> impl chosen by "auto"
        self._impl_memo_generation = -1  # autotune.STATE.generation the memo belongs to
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
    def _tensors(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(weight, log_sigmas, bias) read from the module's dicts: ``nn.Module.__getattr__`` costs about 1 us
        per attribute, a large share of a small layer's per-call budget. Falls back to attribute access for a
        weight that is not a registered parameter (``torch.nn.utils.parametrize``, hook-based weight norm)."""
        params = self._parameters
        w = params.get("weight")
        if w is None:
            w = self.weight
        s = params["log_sigmas"] if "log_sigmas" in params else self._buffers.get("log_sigmas")
        b = params["bias"] if "bias" in params else getattr(self, "bias", None)
        return w, s, b

    def _cached(self, name: str, build: Callable[[], Tensor]) -> Tensor:
        """``build()`` or its cached value. Cached only in eval mode when no parameter gradient is needed.

        The cache entry holds the parameter objects and their (autograd version, storage pointer) pairs: an
        in-place update (optimizer step, ``load_state_dict``, ``copy_`` under ``no_grad``), a re-assigned
        parameter or ``.data = ...`` all invalidate it, at the cost of a few attribute reads per forward.
        ``.to()``, ``train()``/``eval()`` and loading clear it. In-place edits through ``.data`` are invisible
        to the version counter (as they are to autograd); ``verify_cache_values`` catches them too."""
        if self.training:
            return build()
        w, s, _ = self._tensors()
        if torch.is_grad_enabled() and (w.requires_grad or (s is not None and s.requires_grad)):
            return build()
        key = (w._version, w.data_ptr(), self.clip_sigma) if s is None else (
            w._version, w.data_ptr(), s._version, s.data_ptr(), self.clip_sigma)
        hit = self._kernel_cache.get(name)
        if hit is not None and hit[0] is w and hit[1] is s and hit[2] == key and (
                not self.verify_cache_values or self._snapshot_matches(hit[3])):
            return hit[4]
        with torch.no_grad():
            value = build()
        snapshot = tuple(t.detach().clone() for t in (w, s) if t is not None) if self.verify_cache_values else ()
        self._kernel_cache[name] = (w, s, key, snapshot, value)
        return value

    def _snapshot_matches(self, snapshot: tuple[Tensor, ...]) -> bool:
        current = tuple(t for t in self._tensors()[:2] if t is not None)
        return len(snapshot) == len(current) and all(torch.equal(a, b) for a, b in zip(snapshot, current))

    def clear_cache(self) -> None:
        """Drop cached kernels and this layer's memo of ``auto`` choices (needed only after in-place edits
        through ``.data`` or after changing ``stride``/``padding``/``dilation``/``groups`` in place)."""
        self._kernel_cache.clear()
        self._impl_memo.clear()

    def train(self, mode: bool = True) -> _GMRConvNd:
        self._kernel_cache.clear()
        return super().train(mode)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _GMRConvNd:
        self._kernel_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:  # pickling / torch.save: cached kernels are not state
        state = super().__getstate__()
        state["_kernel_cache"] = {}
        state["_impl_memo"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:  # also layers pickled by versions without the memo
        state.setdefault("_kernel_cache", {})
        state.setdefault("_impl_memo", {})
        state["_impl_memo_generation"] = -1
        super().__setstate__(state)

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

    def _prepare(self, x: Tensor) -> tuple[Tensor, tuple[int, ...], bool]:
        """(batched input, padded by ``padding_mode`` if not zeros; the conv's own padding; was unbatched)."""
        unbatched = x.dim() == self.ndim + 1
        if unbatched:
            x = x.unsqueeze(0)
        pad = self._padding_numbers()
        if self.padding_mode != "zeros":
            x = F.pad(x, [p for p in reversed(pad) for _ in range(2)], mode=self.padding_mode)
            pad = (0,) * self.ndim
        return x, pad, unbatched

    def forward(self, x: Tensor) -> Tensor:
        x, pad, unbatched = self._prepare(x)
        impl = self._impl
        if impl == "auto":
            impl = self._auto_impl(x, pad)
        out = self._forward_impl(x, pad, impl)
        return out.squeeze(0) if unbatched else out

    def _forward_impl(self, x: Tensor, pad: tuple[int, ...], impl: str) -> Tensor:
        if impl == "dense":
            weight = self._cached("dense", self.kernel)
            return type(self)._conv(x, weight, self._tensors()[2], self.stride, pad, self.dilation, self.groups)
        return self._two_stage(x, pad)

    # -- impl="auto" -------------------------------------------------------------------------------------------
    def resolve_impl(self, x: Tensor | None = None) -> str:
        """The implementation a forward on ``x`` uses now (``impl`` unless it is "auto").

        With "auto" and an ``x`` this is exactly the forward's decision, so it may time both paths (see
        :mod:`gmr.autotune`); without ``x`` it is the cost model's choice for the weight's device and dtype."""
        if self._impl != "auto":
            return self._impl
        if x is None:
            return self._model_impl(self.weight, torch.is_grad_enabled() and self.training)
        x, pad, _ = self._prepare(x)
        return self._auto_impl(x, pad)

    def _auto_impl(self, x: Tensor, pad: tuple[int, ...]) -> str:
        """The memoised choice for this input signature: a handful of attribute reads and one dict lookup
        (without autograd no parameter is even looked at)."""
        if torch.is_grad_enabled():
            grads = (x.requires_grad, *(t.requires_grad for t in self._grad_sources()))
            needs_grad = any(grads)
        else:
            grads, needs_grad = None, False
        signature = (x.shape, x.dtype, x.device, x.is_contiguous(), grads, self.training, torch.get_num_threads(),
                     torch._C._is_any_autocast_enabled())
        if self._impl_memo_generation != autotune.STATE.generation:
            self._impl_memo = {}
            self._impl_memo_generation = autotune.STATE.generation
        impl = self._impl_memo.get(signature)
        if impl is None:
            impl = self._decide_impl(x, pad, signature, needs_grad)
        return impl

    def _grad_sources(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self._tensors() if t is not None)

    def _decide_impl(self, x: Tensor, pad: tuple[int, ...], signature: tuple[Any, ...], needs_grad: bool) -> str:
        """Measured winner (looked up process-wide, else timed now), or the cost model when measuring is off or
        not worth it (float64 on a CPU, where the two-stage path is pathologically slow).

        A cost-model answer given only because measuring is impossible right now (tracing, a dispatch mode,
        ...) is not memoised, so a later ordinary call still measures."""
        if (not autotune.autotune_enabled() or torch.are_deterministic_algorithms_enabled()
                or not worth_measuring(x.device.type, x.dtype)):
            impl = self._model_impl(x, needs_grad)  # memoised: the switches are meant to be set up front
            self._impl_memo[signature] = impl
            return impl
        key = (self._layer_signature(pad), signature)
        impl = autotune.winner(key)
        if impl is None and autotune.can_measure(x):
            runs = self._timing_runs(x, pad, needs_grad)
            impl = autotune.record(key, autotune.time_paths(runs, timer=autotune.clock_for(x)))
            if impl is not None:  # the losing path's cached kernel is dead weight
                self._kernel_cache.pop("two_stage" if impl == "dense" else "dense", None)
        if impl is None:
            return self._model_impl(x, needs_grad)
        self._impl_memo[signature] = impl
        return impl

    def _layer_signature(self, pad: tuple[int, ...]) -> tuple[Any, ...]:
        """Everything about the layer that changes the two paths' costs (weights' values do not)."""
        return (type(self).__name__, self.in_channels, self.out_channels, self.kernel_size[0], self._num_rings,
                tuple(self.stride), tuple(pad), tuple(self.dilation), self.groups, self.bias is not None,
                self._smoothing, self._gaussian_mixture)

    def _model_impl(self, ref: Tensor, needs_grad: bool) -> str:
        return choose_impl(self.in_channels, self.out_channels, self.kernel_size[0], self._num_rings,
                           groups=self.groups, ndim=self.ndim, device_type=ref.device.type, dtype=ref.dtype,
                           training=needs_grad)

    def _timing_runs(self, x: Tensor, pad: tuple[int, ...], needs_grad: bool) -> dict[str, Callable[[], Any]]:
        """One call of each path as the caller will run it: forward only, or forward + the backward pass
        (``torch.autograd.grad``, so nothing accumulates into ``.grad`` and the caller's graph is untouched)."""
        if not needs_grad:
            return {impl: (lambda impl=impl: self._forward_impl(x, pad, impl)) for impl in autotune.IMPLS}
        xin = x.detach().requires_grad_(x.requires_grad)
        inputs = [p for p in self.parameters() if p.requires_grad] + ([xin] if xin.requires_grad else [])

        def step(impl: str) -> None:
            out = self._forward_impl(xin, pad, impl)
            torch.autograd.grad(out, inputs, torch.ones_like(out), allow_unused=True)

        return {impl: (lambda impl=impl: step(impl)) for impl in autotune.IMPLS}

    def _two_stage(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        conv = type(self)._conv
        stage1 = self._cached("two_stage", self._stage1_weight)
        channels_last = x.device.type == "cpu" and x.dtype in ONEDNN_DTYPES  # oneDNN depthwise is NHWC-fast
        xin = x.contiguous(memory_format=self._channels_last) if channels_last else x
        y = conv(xin, stage1, None, self.stride, pad, self.dilation, self.in_channels)
        weight, _, bias = self._tensors()
        mix = weight.reshape(self.out_channels, -1, *([1] * self.ndim))
        out = conv(y, mix, bias, 1, 0, 1, self.groups)
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
    i.e. s = 1 px and sigma in pixels for the default circular geometry; see :mod:`gmr.rings`); ``impl``:
    "dense", "two_stage" or "auto" (the faster of the two, measured on the first call for each input signature
    and cached process-wide, see :mod:`gmr.autotune`; the cost model :func:`gmr.choose_impl` when measuring is
    off). Parameters: ``weight`` (C_out, C_in/groups, R),
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
