"""`check(model, input_shape)`: diagnose a model's equivariance; `assert_equivariant`: the same as a test assertion.

Order of the diagnosis (docs/check.md has the JSON schema):
1. exact symmetries: the relative error of the output under each of the 7 grid elements (bench.diagnose.grid), in
   one batched forward pass of seeded Gaussian-noise images (every pixel matters), and the largest exact subgroup;
2. where exactness breaks: the error of every module's output in execution order (bench.diagnose.trace) and, per
   failing element, the first module whose output is no longer exact;
3. likely causes, by rule (bench.diagnose.causes); with ``sizes``, the input sides at which the model is exact;
4. continuous angles: the error at each angle with its floor, and the Lie derivative (bench.diagnose.angles).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.errors import UsageError
from bench.rotation import DEFAULT_METHOD, bandlimited_images, check_method, parse_angles

from . import grid
from .angles import AngleResult, angle_errors, lie_derivative
from .causes import Cause, find_causes
from .compare import View, default_view
from .grid import ELEMENTS, GridElement
from .subject import Subject, default_dtype, prepare
from .trace import GridBatch, GridTrace, ModuleCall, TraceError, run_traced, tensor_and_view

SCHEMA_VERSION = 1
DEFAULT_ANGLES = "0:350:10"  # 36 angles
DTYPES = {"float64": torch.float64, "float32": torch.float32}
MAX_SIZES = 512


@dataclass
class ElementResult:
    """One grid element. error/exact are None where the element is undefined: a rotation or transpose of a
    non-square input, or an element outside the fibre group of a field-typed input."""

    element: str
    error: float | None
    exact: bool | None
    claimed: bool | None  # whether the model's symmetry contract claims it (None: no contract)
    compared: str  # how the output was compared (see bench.diagnose.compare)


@dataclass
class ModuleResult:
    name: str
    type: str
    call: int  # 1 for the first call of this module in the pass, 2 for its second, ...
    compared: str
    error: float | None  # under the first failing element (None when every element is exact)
    input_error: float | None
    exact: bool | None
    errors: dict[str, float | None]  # under every element


@dataclass
class SizeResult:
    size: int
    exact_group: str | None
    exact_elements: list[str]
    error: str | None = None  # the model's error message at this size


@dataclass
class CheckResult:
    """Everything `check` found; `to_dict()` is the documented JSON (docs/check.md)."""

    target: str
    input_shape: tuple[int, int, int]
    dtype: str
    stored_dtype: str | None  # lowest-precision floating dtype of the model's parameters/buffers
    tolerance: float
    seed: int
    images: int
    rotation: str
    contract_group: str | None
    output: dict[str, Any]
    elements: list[ElementResult]
    exact_group: str
    first_failing_element: str | None
    first_breaking_module: str | None
    breaks: dict[str, str | None]
    modules: list[ModuleResult]
    causes: list[Cause]
    features: list[FeatureResult] = field(default_factory=list)
    angles: list[AngleResult] = field(default_factory=list)
    lie_derivative: float | None = None
    lie_derivative_unit: str | None = None
    exact_sizes: list[int] | None = None
    sizes: list[SizeResult] | None = None
    sizes_group: str | None = None
    notes: list[str] = field(default_factory=list)

    def element(self, name: str) -> ElementResult:
        return next(e for e in self.elements if e.element == name)

    @property
    def exact_elements(self) -> list[str]:
        return [e.element for e in self.elements if e.exact]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "target": self.target,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "stored_dtype": self.stored_dtype,
            "tolerance": self.tolerance,
            "seed": self.seed,
            "images": self.images,
            "rotation": self.rotation,
            "contract_group": self.contract_group,
            "output": self.output,
            "elements": [vars(e).copy() for e in self.elements],
            "exact_group": self.exact_group,
            "exact_elements": self.exact_elements,
            "first_failing_element": self.first_failing_element,
            "first_breaking_module": self.first_breaking_module,
            "breaks": dict(self.breaks),
            "modules": [vars(m).copy() for m in self.modules],
            "causes": [c.to_dict() for c in self.causes],
            "features": [vars(f).copy() for f in self.features],
            "angles": [a.to_dict() for a in self.angles],
            "lie_derivative": self.lie_derivative,
            "lie_derivative_unit": self.lie_derivative_unit,
            "notes": list(self.notes),
        }
        if self.sizes is not None:
            d["exact_sizes"] = list(self.exact_sizes or [])
            d["sizes_group"] = self.sizes_group
            d["sizes"] = [vars(s).copy() for s in self.sizes]
        return _finite(d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _finite(obj: Any) -> Any:
    """JSON has no inf/nan: they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------------------
# argument checking
# ------------------------------------------------------------------------------------------------------------
def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise UsageError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")


def parse_shape(shape: Sequence[int] | str | None) -> tuple[int, int, int]:
    """(C, H, W) from a sequence of three positive ints or 'C,H,W'."""
    bad = UsageError(f"input shape must be three positive integers C,H,W (e.g. 1,29,29); got {shape!r}")
    if shape is None:
        raise UsageError("an input shape C,H,W is needed (e.g. 1,29,29)")
    if isinstance(shape, str):
        try:
            shape = [int(p) for p in shape.replace("x", ",").split(",")]
        except ValueError:
            raise bad from None
    try:
        values = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise bad from None
    if len(values) != 3 or min(values) < 1 or any(isinstance(v, bool) for v in shape):
        raise bad
    return values  # type: ignore[return-value]


def parse_sizes(sizes: Sequence[int] | str | None) -> list[int] | None:
    """Input sides to scan: 'A:B' (inclusive), 'A:B:step', or a sequence of ints."""
    if sizes is None:
        return None
    bad = UsageError(f"sizes must be 'A:B' (inclusive, 1 <= A <= B) or 'A:B:step', or a list of positive ints; "
                     f"got {sizes!r}")
    if isinstance(sizes, str):
        try:
            parts = [int(p) for p in sizes.split(":")]
        except ValueError:
            raise bad from None
        if len(parts) not in (2, 3) or parts[0] < 1 or parts[1] < parts[0] or (len(parts) == 3 and parts[2] < 1):
            raise bad
        out = list(range(parts[0], parts[1] + 1, parts[2] if len(parts) == 3 else 1))
    else:
        try:
            out = [int(s) for s in sizes]
        except (TypeError, ValueError):
            raise bad from None
        if not out or min(out) < 1:
            raise bad
    if len(out) > MAX_SIZES:
        raise UsageError(f"sizes selects {len(out)} sizes; at most {MAX_SIZES}")
    return out


# ------------------------------------------------------------------------------------------------------------
# running the model
# ------------------------------------------------------------------------------------------------------------
def _output_of(out: Any, batch: int, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, View | None]:
    """The model's output tensor (and a GeometricTensor's view); a clear UsageError for unusable outputs."""
    t, declared = tensor_and_view(out)
    if t is None:
        raise UsageError(f"the model returned {type(out).__name__}, not a tensor")
    if t.dim() < 1 or t.shape[0] != batch:
        raise UsageError(f"the model's output {tuple(t.shape)} does not keep the batch axis of its input "
                         f"{in_shape}")
    return t, declared


def _output_tensor(subject: Subject):
    def fn(x: torch.Tensor) -> torch.Tensor:
        return tensor_and_view(subject.forward(x))[0]

    return fn


@dataclass
class FeatureResult:
    """An exposed feature (forward_features) compared under its declared field type."""

    name: str
    shape: list[int]
    compared: str
    errors: dict[str, float | None]


@dataclass
class GridOutcome:
    errors: dict[str, float | None]  # every element; None where undefined
    view: View
    output_shape: tuple[int, ...]
    trace: GridTrace
    features: list[FeatureResult] = field(default_factory=list)


def grid_pass(subject: Subject, x: torch.Tensor, compare: bool = True, record_ops: bool = True) -> GridOutcome:
    """The output's error under every grid element (and, with `compare`, every module's) in one forward pass."""
    h, w = x.shape[-2:]
    elements = tuple(e for e in ELEMENTS if e.defined_for(h, w) and subject.input_view.in_group(e))
    batch = GridBatch(elements, x.shape[0])
    xb = torch.cat([x] + [subject.transform_input(e, x) for e in elements])
    exposed = subject.features if compare else None
    try:
        out, trace = run_traced(exposed or subject.forward, subject.module, xb, subject.input_view, batch,
                                subject.field_model, compare=compare, record_ops=record_ops)
        features = dict(out) if exposed is not None else {}
        if exposed is not None:
            out = features["logits"] if "logits" in features else subject.forward(xb)
    except TraceError:
        raise
    except Exception as exc:  # the model's own error, whatever it is, is the user's to see
        raise UsageError(f"the model raised on an input of shape {tuple(x.shape[1:])} (batch of "
                         f"{xb.shape[0]}): {type(exc).__name__}: {exc}") from exc
    t, declared = _output_of(out, xb.shape[0], tuple(xb.shape))
    view = declared or subject.declared_output_view(t) or trace.lookup(t) or default_view(t, subject.field_model)
    if view is None:
        raise UsageError(f"cannot compare the model's output of shape {tuple(t.shape[1:])} per image: outputs must "
                         "be vectors (N, D) or maps (N, C, H, W)")
    errors: dict[str, float | None] = {e.name: None for e in ELEMENTS}
    errors.update(batch.errors(t, view))
    return GridOutcome(errors, view, tuple(t.shape[1:]), trace, _feature_results(subject, trace, batch, features))


def _feature_results(subject: Subject, trace: GridTrace, batch: GridBatch,
                     features: dict[str, Any]) -> list[FeatureResult]:
    out = []
    for name, value in features.items():
        t, declared = tensor_and_view(value)
        if t is None or t.shape[0] != batch.size:
            continue
        view = subject.feature_view(name) or declared or trace.lookup(t) or default_view(t, subject.field_model)
        if view is None:
            continue
        errors = {e.name: None for e in ELEMENTS}
        errors.update(batch.errors(t, view))
        out.append(FeatureResult(name, list(t.shape[1:]), view.label(), errors))
    return out


def first_break(calls: Sequence[ModuleCall], element: str, tol: float) -> ModuleCall | None:
    for call in calls:
        err = call.errors.get(element)
        if err is None or err > tol:
            return call
    return None


def _is_exact(err: float | None, tol: float) -> bool:
    return err is not None and err <= tol


def _seeded_noise(shape: tuple[int, ...], seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def _device(subject: Subject) -> torch.device:
    p = next(iter(subject.module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


# ------------------------------------------------------------------------------------------------------------
# the diagnosis
# ------------------------------------------------------------------------------------------------------------
def check(model: nn.Module, input_shape: Sequence[int] | str, *, angles: object = DEFAULT_ANGLES,
          rotation: str = DEFAULT_METHOD, dtype: torch.dtype | str = torch.float64, seed: int = 0,
          sizes: Sequence[int] | str | None = None, images: int = 2, target: str | None = None,
          device: torch.device | str | None = None) -> CheckResult:
    """Diagnose the equivariance of `model` on inputs of shape `input_shape` (C, H, W).

    angles: degrees for the continuous-angle part (bench.rotation.parse_angles syntax); None or [] skips it.
    rotation: interpolation for those angles (bench.rotation.METHODS; default: the protocols' DEFAULT_METHOD).
    dtype: float64 (default; round-off ~1e-15) or float32. The model is copied; the original is not touched.
    sizes: input sides to scan for exactness ('A:B' inclusive, or a list); None skips the scan.
    images: random images per element / angle (any one image detects a broken grid symmetry).
    Bad arguments, and a model that raises, give `bench.errors.UsageError`.
    """
    dt = parse_dtype(dtype)
    shape = parse_shape(input_shape)
    angle_list = parse_angles(angles) if angles not in (None, [], ()) else []
    check_method(rotation)
    size_list = parse_sizes(sizes)
    if not isinstance(images, int) or images < 1:
        raise UsageError(f"images must be a positive integer, got {images!r}")
    if not isinstance(model, nn.Module):
        raise UsageError(f"check needs a torch.nn.Module, got {type(model).__name__}")
    stored = grid.stored_dtype(model)
    tol = grid.tolerance(dt, stored)
    with default_dtype(dt):
        return _diagnose(model, prepare(model, dt, device), shape, dt, stored, tol, angle_list, rotation,
                         size_list, images, seed, target)


def _diagnose(model: nn.Module, subject: Subject, shape: tuple[int, int, int], dt: torch.dtype,
              stored: torch.dtype | None, tol: float, angle_list: list[float], rotation: str,
              size_list: list[int] | None, images: int, seed: int, target: str | None) -> CheckResult:
    device_ = _device(subject)
    x = _seeded_noise((images, *shape), seed, dt, device_)
    outcome = grid_pass(subject, x)  # the model's own errors surface here, as UsageErrors
    contract = subject.contract
    claimed = grid.subgroup(contract.group) if contract is not None else None
    elements = [ElementResult(e.name, outcome.errors[e.name], None if outcome.errors[e.name] is None
                              else _is_exact(outcome.errors[e.name], tol),
                              None if claimed is None else e.name in claimed, outcome.view.label(e))
                for e in ELEMENTS]
    exact = {r.element for r in elements if r.exact}
    failing = [r.element for r in elements if r.exact is False]
    calls = outcome.trace.calls
    breaks = {name: first_break(calls, name, tol) for name in failing}
    first = failing[0] if failing else None
    not_claimed = None
    if claimed is not None and set(failing) - claimed:
        unclaimed = [f for f in failing if f not in claimed]
        not_claimed = Cause("not_claimed", "", f"the model's symmetry contract claims {contract.group}, which does "
                            f"not contain {', '.join(unclaimed)}: no exactness is expected there.", unclaimed)
    result = CheckResult(
        target=target or type(model).__name__,
        input_shape=shape,
        dtype=str(dt).replace("torch.", ""),
        stored_dtype=None if stored is None else str(stored).replace("torch.", ""),
        tolerance=tol,
        seed=seed,
        images=images,
        rotation=rotation,
        contract_group=contract.group if contract is not None else None,
        output={"shape": list(outcome.output_shape), "compared": outcome.view.label()},
        elements=elements,
        exact_group=grid.largest_exact_subgroup(exact),
        first_failing_element=first,
        first_breaking_module=None if first is None else (breaks[first].name if breaks[first] else ""),
        breaks={k: (v.name if v else "") for k, v in breaks.items()},
        modules=[_module_result(c, first, tol) for c in calls],
        causes=find_causes(outcome.trace.ops, breaks, failing, tol, not_claimed),
        features=outcome.features,
    )
    if grid.subgroup_name(frozenset(exact)) is None:
        result.notes.append(f"the exact elements ({', '.join(sorted(exact))}) do not form a group: some errors "
                            "are close to the tolerance")
    if claimed is not None and claimed - exact:
        missing = [e.name for e in ELEMENTS if e.name in claimed - exact]
        result.notes.append(f"the contract claims {contract.group}, but at this input shape the model is not exact "
                            f"under {', '.join(missing)}")
    if angle_list:
        _continuous(result, subject, shape, outcome.view, angle_list, rotation, images, seed, dt, device_)
    if size_list is not None:
        _scan_sizes(result, subject, shape[0], size_list, images, seed, dt, device_, tol)
    return result


def _module_result(call: ModuleCall, first: str | None, tol: float) -> ModuleResult:
    element = grid.BY_NAME[first] if first else None
    error = call.errors.get(first) if first else None
    return ModuleResult(call.name, call.type, call.call, call.view.label(element), error,
                        call.input_errors.get(first) if first else None,
                        None if first is None else _is_exact(error, tol), dict(call.errors))


def _continuous(result: CheckResult, subject: Subject, shape: tuple[int, int, int], view: View,
                angles: list[float], rotation: str, images: int, seed: int, dtype: torch.dtype,
                device: torch.device) -> None:
    c, h, w = shape
    if h != w:
        result.notes.append("continuous angles need a square input; skipped")
        return
    xa = bandlimited_images(images, c, h, seed=seed, dtype=dtype).to(device)
    fn = _output_tensor(subject)
    result.angles = angle_errors(fn, xa, view, angles, rotation)
    try:
        result.lie_derivative, result.lie_derivative_unit = lie_derivative(fn, xa, view, rotation)
    except (RuntimeError, NotImplementedError) as exc:  # a model that is not differentiable in its input
        result.notes.append(f"Lie derivative unavailable: {type(exc).__name__}: {exc}")


def _scan_sizes(result: CheckResult, subject: Subject, channels: int, sizes: list[int], images: int, seed: int,
                dtype: torch.dtype, device: torch.device, tol: float) -> None:
    rows = []
    for n in sizes:
        x = _seeded_noise((images, channels, n, n), seed, dtype, device)
        try:
            errors = grid_pass(subject, x, compare=False, record_ops=False).errors
        except UsageError as exc:
            rows.append(SizeResult(n, None, [], str(exc)))
            continue
        exact = [e.name for e in ELEMENTS if _is_exact(errors[e.name], tol)]
        rows.append(SizeResult(n, grid.largest_exact_subgroup(exact), exact))
    groups = [r.exact_group for r in rows if r.exact_group is not None]
    best = next((g for g in grid.SUBGROUPS if g in groups), "trivial")  # SUBGROUPS is ordered largest first
    result.sizes = rows
    result.sizes_group = best
    members = grid.SUBGROUPS[best]
    result.exact_sizes = [] if best == "trivial" else [r.size for r in rows if members <= set(r.exact_elements)]


# ------------------------------------------------------------------------------------------------------------
# the test assertion
# ------------------------------------------------------------------------------------------------------------
def assert_equivariant(model: nn.Module, group: str | Iterable[str] = "D4",
                       input_shape: Sequence[int] | str = (1, 29, 29), atol: float | None = None,
                       dtype: torch.dtype | str = torch.float64, seed: int = 0) -> CheckResult:
    """Raise AssertionError unless `model` is exactly equivariant under every element of `group` (a subgroup of
    D4 such as 'C4', 'D4', 'C2', 'D1[flip_h]', a contract group such as 'C8' intersected with the grid, or a
    list of element names) on inputs of `input_shape`. The message names the failing element, its error and the
    first breaking module. `atol` defaults to the dtype's exactness tolerance. Returns the CheckResult."""
    members = grid.subgroup(group)
    result = check(model, input_shape, angles=None, dtype=dtype, seed=seed)
    tol = result.tolerance if atol is None else float(atol)
    for e in ELEMENTS:
        if e.name not in members:
            continue
        r = result.element(e.name)
        if r.error is None:
            raise AssertionError(f"{result.target}: {e.name} is undefined for input shape {result.input_shape} "
                                 "(rotations and transposes need square inputs)")
        if r.error > tol:
            raise AssertionError(_failure_message(result, e, r.error, tol, group))
    return result


def _failure_message(result: CheckResult, e: GridElement, error: float, tol: float, group: object) -> str:
    module = next((m for m in result.modules if m.errors.get(e.name) is None or m.errors[e.name] > tol), None)
    where = f"`{module.name}` ({module.type})" if module is not None else "the model's own forward"
    msg = (f"{result.target} is not equivariant under {e.name} (in group {group!r}): relative error {error:.3g} > "
           f"atol {tol:.1g} (input {'x'.join(map(str, result.input_shape))}, {result.dtype}); first breaking "
           f"module: {where}")
    causes = [c for c in result.causes if e.name in c.elements and c.rule != "not_claimed"]
    if causes:
        msg += f"; likely cause: {causes[0].message}"
    return msg
