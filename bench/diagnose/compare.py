"""How one tensor is compared under a grid element: its *view* (how it should transform) and the relative error.

Views:
- ``invariant``: a vector (N, D) (or (N,)): f(g.x) must equal f(x).
- ``scalar``: maps (N, C, ..., H, W) whose channels are scalar fields: f(g.x) = g.f(x) (spatial permutation only).
- ``field``: maps whose channels form an escnn/e2cnn field type: f(g.x) = rho(g) g.f(x) when g is in the field's
  fibre group (bench.fields.apply_rho); otherwise both sides are group-pooled first (max over each regular
  field, norm of every other field; bench.fields.group_pool), a necessary condition for equivariance under any
  permutation/orthogonal action on the fibres.
- ``norm``: maps of unknown field type inside a model with non-scalar fields: the per-pixel norm over all channels
  is compared as a scalar map. It is invariant under every orthogonal rho (escnn's and e2cnn's representations
  are orthogonal), so it never reports a correct layer as broken, at the price of missing breaks that keep norms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.contract import FieldSpec
from bench.equivariance_metrics import masked_relative_error
from bench.fields import apply_rho, group_pool, in_group, library_of

from .grid import GridElement

VIEW_KINDS = ("invariant", "scalar", "field", "norm")


@dataclass(frozen=True)
class View:
    kind: str
    spec: FieldSpec | None = None  # the field type, for kind == "field"

    def label(self, element: GridElement | None = None) -> str:
        """What was compared, for reports: 'scalar', 'invariant', 'norm', 'field:<kind>' or 'field:gpool'."""
        if self.kind != "field":
            return self.kind
        if element is not None and not self.in_group(element):
            return "field:gpool"
        return f"field:{self.spec.kind}"

    def in_group(self, element: GridElement) -> bool:
        return self.kind != "field" or in_group(self.spec, element.angle_deg, element.reflect)


INVARIANT_VIEW = View("invariant")
SCALAR_VIEW = View("scalar")
NORM_VIEW = View("norm")


def is_field_type(obj: object) -> bool:
    """An escnn/e2cnn FieldType (duck-typed: both libraries' FieldTypes carry representations and a gspace)."""
    try:
        library_of(obj)
    except TypeError:
        return False
    return hasattr(obj, "representations") and hasattr(obj, "gspace") and hasattr(obj, "size")


def view_of_field_type(field_type: object) -> View:
    """The view of a tensor of this escnn/e2cnn field type: scalar when every field is trivial."""
    if all(getattr(rep, "is_trivial", lambda: False)() for rep in field_type.representations):
        return SCALAR_VIEW
    kind = "regular" if any("regular" in rep.name for rep in field_type.representations) else "irreps"
    return View("field", FieldSpec(kind, field_type=field_type))


def view_of_spec(spec: FieldSpec) -> View:
    if spec.kind == "invariant":
        return INVARIANT_VIEW
    if spec.kind == "scalar":
        return SCALAR_VIEW
    return View("field", spec)


def default_view(t: torch.Tensor, field_model: bool) -> View | None:
    """View of a tensor nothing declares: vectors invariant; maps scalar (or `norm` in field models);
    3-D tensors (no two spatial axes and not a vector) are not compared."""
    if t.dim() <= 2:
        return INVARIANT_VIEW
    if t.dim() == 3:
        return None
    return NORM_VIEW if field_model else SCALAR_VIEW


_RHO: dict[tuple, tuple[object, torch.Tensor]] = {}


def rho_matrix(spec: FieldSpec, element: GridElement, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """rho_out(element) of a field type as a (C, C) matrix, memoised (escnn rebuilds it on every call).

    Read off bench.fields.apply_rho applied to the unit vectors, so the suite's element convention is kept."""
    key = (id(spec.field_type), element.name, dtype, device)
    hit = _RHO.get(key)
    if hit is None or hit[0] is not spec.field_type:
        size = spec.field_type.size
        eye = torch.eye(size, dtype=dtype, device=device)[:, :, None, None]
        columns = apply_rho(spec, eye, element.angle_deg, element.reflect)[:, :, 0, 0]
        hit = (spec.field_type, columns.T.contiguous())
        _RHO[key] = hit
    return hit[1]


def _as_maps(t: torch.Tensor) -> torch.Tensor:
    """(N, C, ..., H, W) -> (N, C', H, W)."""
    return t if t.dim() == 4 else t.flatten(1, -3)


def channel_norm(t: torch.Tensor) -> torch.Tensor:
    return _as_maps(t).norm(dim=1, keepdim=True)


def relative_error(reference: torch.Tensor, transformed: torch.Tensor, element: GridElement,
                   view: View) -> float | None:
    """Worst over the batch of ||f(g.x) - rho(g) g.f(x)|| / ||rho(g) g.f(x)||; None when it is undefined
    (a non-square map under a rotation, or shapes that cannot match)."""
    if view.kind == "invariant":
        pred, target = transformed.reshape(transformed.shape[0], -1), reference.reshape(reference.shape[0], -1)
    else:
        if not element.defined_for(*reference.shape[-2:]):
            return None
        if view.kind == "norm":
            pred, target = channel_norm(transformed), element.apply(channel_norm(reference))
        elif view.kind == "field" and not view.in_group(element):
            pred = group_pool(view.spec, _as_maps(transformed))
            target = element.apply(group_pool(view.spec, _as_maps(reference)))
        elif view.kind == "field":
            rho = rho_matrix(view.spec, element, reference.dtype, reference.device)
            moved = element.apply(_as_maps(reference))
            target = torch.matmul(rho, moved.flatten(2)).view_as(moved)
            pred = _as_maps(transformed)
        else:
            pred, target = _as_maps(transformed), element.apply(_as_maps(reference))
    if pred.shape != target.shape:
        return None
    return float(masked_relative_error(pred, target).max())
