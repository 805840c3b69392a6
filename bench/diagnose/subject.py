"""The model under diagnosis: a private copy in the check's dtype, in eval mode, with how its input and output
transform.

- Input: a model's ``input_spec`` (the zoo's layers declare one; regular-field inputs get rho_in), an escnn/e2cnn
  ``EquivariantModule``'s ``in_type`` (plain tensors are wrapped into GeometricTensors), else scalar channels.
- Output: a GeometricTensor's own type; else the symmetry contract's ``out`` feature, or its ``logits`` feature
  for a vector; else what the traced pass inferred (bench.diagnose.trace); else vectors invariant, maps scalar.
- Exposed features: a network's ``forward_features(x) -> dict`` (bench.contract) runs in the traced pass instead of
  ``forward`` (its ``logits`` is then the output), and every feature is compared under its declared field type.
- ``field_model``: the contract, the input or any submodule (escnn/e2cnn) involves non-scalar fields; plain maps
  of unknown type are then compared through their channel norm instead of as scalar fields.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.contract import FieldSpec, SymmetryContract
from bench.errors import UsageError
from bench.fields import apply_rho, library_of

from .compare import SCALAR_VIEW, View, is_field_type, view_of_field_type, view_of_spec
from .grid import GridElement


def _from_library(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] in ("escnn", "e2cnn")


@dataclass
class Subject:
    module: nn.Module
    forward: Callable[[torch.Tensor], Any]
    input_view: View
    contract: SymmetryContract | None
    field_model: bool
    features: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None  # forward_features, if exposed

    def feature_view(self, name: str) -> View | None:
        """The contract's view of an exposed feature (None: not declared)."""
        spec = self.contract.features.get(name) if self.contract is not None else None
        return view_of_spec(spec) if spec is not None else None

    def transform_input(self, element: GridElement, x: torch.Tensor) -> torch.Tensor:
        y = element.apply(x)
        if self.input_view.kind == "field":
            y = apply_rho(self.input_view.spec, y, element.angle_deg, element.reflect)
        return y

    def declared_output_view(self, out: torch.Tensor) -> View | None:
        """The contract's view of the model's output, if it declares one."""
        if self.contract is None:
            return None
        features = self.contract.features
        spec = features.get("out") or (features.get("logits") if out.dim() == 2 else None)
        return view_of_spec(spec) if spec is not None else None


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run with `dtype` as torch's default: libraries that allocate with the default dtype while caching kernels
    or in forward (e2cnn's basis expansion does) then work in the check's dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def private_copy(model: nn.Module, dtype: torch.dtype, device: torch.device | str | None) -> nn.Module:
    """A deep copy of `model` in `dtype` on `device` (default: where its parameters are), in eval mode.

    The check must not change the user's model (dtype, mode, cached kernels)."""
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    try:
        return copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    except Exception as exc:  # the model's own error (a library that cannot change dtype, an uncopyable member)
        raise UsageError(f"cannot prepare a {str(dtype).replace('torch.', '')} copy of the model in eval mode: "
                         f"{type(exc).__name__}: {exc}") from exc


def prepare(model: nn.Module, dtype: torch.dtype, device: torch.device | str | None = None) -> Subject:
    module = private_copy(model, dtype, device)
    contract = getattr(model, "symmetry", None)
    contract = contract if isinstance(contract, SymmetryContract) else None
    in_type = getattr(module, "in_type", None)
    wraps_input = _from_library(module) and is_field_type(in_type)
    input_spec = getattr(module, "input_spec", None)
    if wraps_input:
        input_view = view_of_field_type(in_type)
    elif isinstance(input_spec, FieldSpec):
        input_view = view_of_spec(input_spec)
    else:
        input_view = SCALAR_VIEW
    field_model = (
        input_view.kind == "field"
        or (contract is not None and any(s.kind in ("regular", "irreps") for s in contract.features.values()))
        or any(_from_library(m) for m in module.modules())
    )
    if wraps_input:
        geometric_tensor = importlib.import_module(f"{library_of(module)}.nn").GeometricTensor

        def forward(x: torch.Tensor) -> Any:
            return module(geometric_tensor(x, in_type))
    else:
        forward = module
    features = getattr(module, "forward_features", None)
    return Subject(module, forward, input_view, contract, field_model, features if callable(features) else None)
