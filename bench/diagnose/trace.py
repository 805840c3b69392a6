"""One traced forward pass over the identity input and its 7 grid transforms, batched.

The batch is ``[x, g1.x, ..., gk.x]`` (B images each). Forward hooks on every ``named_modules()`` entry compare,
the moment a module returns (before any later in-place op can change its output), the identity part of its
output with each transformed part, under the view (bench.diagnose.compare) of that output:

1. a GeometricTensor output: its own field type;
2. a tensor already typed (the same object came out of an inner module, or an in-place op returned its input);
3. a module with an escnn/e2cnn ``out_type`` whose size matches (the zoo's ``TensorModule`` wrappers);
4. an elementwise / pooling / normalisation module of torch.nn with as many channels as its typed input: the
   input's type (so ReLU after a regular-field conv is compared as regular fields);
5. otherwise: vectors invariant, maps scalar; in models with non-scalar fields maps of unknown type are compared
   through their per-pixel norm (never a false break for orthogonal representations).

Pre-hooks measure each module's *input* the same way, so a break that happens in functional code between modules
shows as a module whose input is already not exact. A TorchFunctionMode records the geometry of every
convolution, pooling, padding and flatten that runs (with the module it runs in) for the rule-based causes.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .compare import View, default_view, is_field_type, relative_error, view_of_field_type
from .grid import GridElement

_TYPE_PRESERVING_MODULES = {
    "torch.nn.modules.activation", "torch.nn.modules.dropout", "torch.nn.modules.pooling",
    "torch.nn.modules.batchnorm", "torch.nn.modules.instancenorm", "torch.nn.modules.padding",
    "torch.nn.modules.upsampling", "torch.nn.modules.linear",  # linear: only nn.Identity (see below)
}


def preserves_type(module: nn.Module) -> bool:
    """torch.nn modules whose output has the field type of their input when the channel count is kept."""
    if isinstance(module, nn.MultiheadAttention | nn.Linear | nn.Bilinear | nn.LazyLinear):
        return False
    return type(module).__module__ in _TYPE_PRESERVING_MODULES


def tensor_and_view(obj: Any) -> tuple[torch.Tensor | None, View | None]:
    """The tensor a module returned (first tensor of a tuple/list/dict) and the view a GeometricTensor declares."""
    if isinstance(obj, torch.Tensor):
        return obj, None
    inner = getattr(obj, "tensor", None)
    if isinstance(inner, torch.Tensor) and is_field_type(getattr(obj, "type", None)):
        return inner, view_of_field_type(obj.type)
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list | tuple) else ()
    for v in values:
        t, view = tensor_and_view(v)
        if t is not None:
            return t, view
    return None, None


@dataclass(frozen=True)
class GridBatch:
    """Layout of the traced batch: the identity images, then the same B images under each element."""

    elements: tuple[GridElement, ...]
    images: int

    @property
    def size(self) -> int:
        return self.images * (1 + len(self.elements))

    def errors(self, t: torch.Tensor, view: View) -> dict[str, float | None]:
        parts = t.reshape(1 + len(self.elements), self.images, *t.shape[1:])
        return {e.name: relative_error(parts[0], parts[i + 1], e, view) for i, e in enumerate(self.elements)}


@dataclass
class ModuleCall:
    """One module call of the traced pass: the relative error of its output (and input) under every element."""

    name: str
    type: str
    call: int
    view: View
    errors: dict[str, float | None]
    input_errors: dict[str, float | None]
    shape: tuple[int, ...]  # one image's output shape


@dataclass
class OpRecord:
    """A convolution / pooling / padding / flatten that ran, with the module it ran in ('' = the model)."""

    op: str
    module: str
    module_type: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    ceil_mode: bool = False
    padding_same: bool = False
    weight: torch.Tensor | None = None


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = tuple(int(a) for a in v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _bind(names: Sequence[str], defaults: dict[str, Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAXPOOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVGPOOL = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}


def _geometry(op: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    if op == "conv2d":
        p = _bind(_CONV, {"stride": 1, "padding": 0, "dilation": 1}, args, kwargs)
        kernel = tuple(p["weight"].shape[-2:])
        stride, dilation = _pair(p["stride"]), _pair(p["dilation"])
        geo = {"kernel": kernel, "stride": stride, "dilation": dilation, "weight": p["weight"]}
        padding = p["padding"]
        if padding == "same":
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]  # torch pads total // 2 before, the rest after
            geo.update(pads=(total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2),
                       padding_same=True)
        elif padding == "valid":
            geo["pads"] = (0, 0, 0, 0)
        else:
            ph, pw = _pair(padding)
            geo["pads"] = (ph, ph, pw, pw)
        return geo
    if op == "pad":
        p = _bind(("input", "pad"), {}, args, kwargs)
        pad = list(p["pad"]) + [0] * (4 - len(p["pad"]))
        return {"pads": (pad[2], pad[3], pad[0], pad[1])}
    p = _bind(_MAXPOOL if "max" in op else _AVGPOOL, _POOL_DEFAULTS, args, kwargs)
    kernel = _pair(p["kernel_size"])
    stride = kernel if p["stride"] in (None, [], ()) else _pair(p["stride"])
    ph, pw = _pair(p["padding"])
    return {"kernel": kernel, "stride": stride, "dilation": _pair(p["dilation"]), "pads": (ph, ph, pw, pw),
            "ceil_mode": bool(p["ceil_mode"])}


_GEOMETRY_OPS = {"conv2d": "conv2d", "max_pool2d": "max_pool2d", "_max_pool2d": "max_pool2d",
                 "max_pool2d_with_indices": "max_pool2d", "avg_pool2d": "avg_pool2d", "pad": "pad"}
_FLATTEN_OPS = ("flatten", "view", "reshape")


class _OpRecorder(TorchFunctionMode):
    def __init__(self, trace: GridTrace) -> None:
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        trace = self.trace
        if trace.paused or not args or not isinstance(args[0], torch.Tensor):
            return out
        name = getattr(func, "__name__", "")
        x = args[0]
        if x.dim() < 4 or x.shape[0] != trace.batch.size:
            return out
        if name in _GEOMETRY_OPS and x.dim() == 4:
            with trace.own_work():
                geometry = _guarded(_geometry)(_GEOMETRY_OPS[name], args, kwargs)
                trace.record_op(_GEOMETRY_OPS[name], x, out, **geometry)
        elif name in _FLATTEN_OPS and isinstance(out, torch.Tensor) and out.dim() == 2 and x.shape[-1] * x.shape[-2] > 1:
            with trace.own_work():
                trace.record_op("flatten", x, out)
        return out


class TraceError(RuntimeError):
    """An error inside the diagnosis' own hooks (a bug here), told apart from errors the model raises."""


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise TraceError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


@dataclass
class _Typed:
    ref: weakref.ref
    view: View
    version: int
    errors: dict[str, float | None] | None


@dataclass
class GridTrace:
    """Hooks + op recorder around one batched forward pass (use as a context manager)."""

    model: nn.Module
    batch: GridBatch
    field_model: bool
    compare: bool = True
    record_ops: bool = True
    calls: list[ModuleCall] = field(default_factory=list)
    ops: list[OpRecord] = field(default_factory=list)
    paused: bool = False
    _types: dict[int, _Typed] = field(default_factory=dict)
    _stack: list[tuple[str, nn.Module, dict[str, float | None]]] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _handles: list[Any] = field(default_factory=list)
    _mode: _OpRecorder | None = None

    @contextmanager
    def own_work(self) -> Iterator[None]:
        """The diagnosis' own computations inside hooks: not recorded as model ops, and single-threaded (small
        ops in OpenMP regions stall for milliseconds whenever another process holds a core)."""
        threads, paused = torch.get_num_threads(), self.paused
        self.paused = True
        if threads != 1:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            self.paused = paused
            if threads != 1:
                torch.set_num_threads(threads)

    # -- tensor types ------------------------------------------------------------------------------------------
    def register(self, t: torch.Tensor, view: View, errors: dict[str, float | None] | None = None) -> None:
        self._types[id(t)] = _Typed(weakref.ref(t), view, t._version, errors)

    def _entry(self, t: torch.Tensor) -> _Typed | None:
        hit = self._types.get(id(t))
        return hit if hit is not None and hit.ref() is t else None

    def lookup(self, t: torch.Tensor) -> View | None:
        hit = self._entry(t)
        return hit.view if hit is not None else None

    def _errors(self, t: torch.Tensor, view: View) -> dict[str, float | None]:
        """Errors of t under every element; reused when t is a registered, unmodified output."""
        hit = self._entry(t)
        if hit is not None and hit.errors is not None and hit.version == t._version and hit.view == view:
            return hit.errors
        return self.batch.errors(t, view)

    def _output_view(self, module: nn.Module, args: tuple, out: torch.Tensor, declared: View | None) -> View | None:
        if declared is not None:
            return declared
        known = self.lookup(out)
        if known is not None:
            return known
        out_type = getattr(module, "out_type", None)
        if is_field_type(out_type) and out.dim() >= 4 and out.shape[1] == out_type.size:
            return view_of_field_type(out_type)
        if preserves_type(module):
            inp, in_declared = tensor_and_view(args)
            in_view = in_declared or (self.lookup(inp) if inp is not None else None)
            if in_view is not None and inp.dim() == out.dim() and inp.shape[1] == out.shape[1]:
                return in_view
        return default_view(out, self.field_model)

    # -- hooks ------------------------------------------------------------------------------------------------
    def _pre(self, name: str):
        @_guarded
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            errors: dict[str, float | None] = {}
            if self.compare:
                with self.own_work():
                    t, declared = tensor_and_view((args, kwargs))
                    if t is not None and t.dim() >= 1 and t.shape[0] == self.batch.size:
                        view = declared or self.lookup(t) or default_view(t, self.field_model)
                        if view is not None:
                            errors = self._errors(t, view)
            self._stack.append((name, module, errors))

        return hook

    def _post(self, name: str):
        @_guarded
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            _, _, input_errors = self._stack.pop()
            t, declared = tensor_and_view(output)
            if t is None or t.dim() < 1 or t.shape[0] != self.batch.size:
                return
            with self.own_work():
                view = self._output_view(module, (args, kwargs), t, declared)
                if view is None:
                    return
                if not self.compare or not name:  # the model itself is compared by the caller (its contract)
                    self.register(t, view)
                    return
                errors = self._errors(t, view)
                self.register(t, view, errors)
                self._counts[name] += 1
                self.calls.append(ModuleCall(name, type(module).__name__, self._counts[name], view, errors,
                                             input_errors, tuple(t.shape[1:])))

        return hook

    @_guarded
    def record_op(self, op: str, x: torch.Tensor, out: Any, **geometry: Any) -> None:
        name, module, _ = self._stack[-1] if self._stack else ("", self.model, {})
        out = out[0] if isinstance(out, tuple | list) and out else out
        out_shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
        self.ops.append(OpRecord(op, name, type(module).__name__, tuple(x.shape[1:]), out_shape, **geometry))

    def __enter__(self) -> GridTrace:
        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post(name), with_kwargs=True))
        if self.record_ops:
            self._mode = _OpRecorder(self)
            self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._mode is not None:
            self._mode.__exit__(*exc)
            self._mode = None
        for h in self._handles:
            h.remove()
        self._handles.clear()


def run_traced(fn: Callable[[torch.Tensor], Any], model: nn.Module, x: torch.Tensor, input_view: View,
               batch: GridBatch, field_model: bool, compare: bool = True,
               record_ops: bool = True) -> tuple[Any, GridTrace]:
    """fn(x) (x already laid out as `batch`) under a GridTrace; returns (output, trace)."""
    trace = GridTrace(model, batch, field_model, compare=compare, record_ops=record_ops)
    trace.register(x, input_view)
    with torch.no_grad(), trace:
        out = fn(x)
    return out, trace
