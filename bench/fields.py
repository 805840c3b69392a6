"""rho_out: how a declared feature field transforms under a group element of the suite's convention.

The suite's element ``(angle_deg, reflect)`` acts on images as ``R_angle . F`` (see bench.rotation). escnn and
e2cnn parametrise their fibre groups differently (their images are indexed (row, col) with the first axis as
"x"), so this module converts our element into the library's element and applies the field's representation
with the library itself: escnn's ``FieldType.transform_fibers``, e2cnn's representation matrices. The
conversion is checked against escnn's own ``GeometricTensor.transform`` in tests/test_fields.py.
"""

from __future__ import annotations

import math

import torch

from bench.contract import FieldSpec


def library_of(obj: object) -> str:
    """'escnn' or 'e2cnn': the library an object's class comes from (field types, gspaces, modules)."""
    module = type(obj).__module__
    if module.startswith("escnn"):
        return "escnn"
    if module.startswith("e2cnn"):
        return "e2cnn"
    raise TypeError(f"{type(obj).__name__} is neither an escnn nor an e2cnn object")


def _group_kind(field_type: object) -> tuple[bool, int]:
    """(has reflections, rotation order N; 0 = continuous) of the field type's fibre group."""
    gspace = field_type.gspace
    lib = library_of(field_type)
    if lib == "escnn":
        flips = gspace.flips_order > 0
        n = gspace.rotations_order
    else:
        flips = type(gspace).__name__ == "FlipRot2dOnR2"
        order = gspace.fibergroup.order()
        n = (order // 2 if flips else order) if order > 0 else 0
    return flips, max(int(n), 0)


def in_group(spec: FieldSpec, angle_deg: float, reflect: bool) -> bool:
    """Whether (angle_deg, reflect) is an element of the field's fibre group (so rho_out is defined)."""
    if spec.kind in ("invariant", "scalar"):
        return True
    flips, n = _group_kind(spec.field_type)
    if reflect and not flips:
        return False
    if n == 0:
        return True
    k = angle_deg * n / 360.0
    return math.isclose(k, round(k), abs_tol=1e-9)


def library_element(field_type: object, angle_deg: float, reflect: bool) -> object:
    """Our (angle_deg, reflect) as an element of the field type's fibre group.

    Measured, not assumed (tests/test_fields.py checks it against escnn's GeometricTensor.transform): escnn's
    rotation by +a equals our counter-clockwise display rotation by a, and its reflection (flip axis pi/2) is
    our horizontal flip applied first, so the element is simply (reflect, a).
    """
    flips, n = _group_kind(field_type)
    theta = math.radians(angle_deg)
    lib = library_of(field_type)
    if lib == "escnn":
        group = field_type.gspace.fibergroup
        if n == 0:
            return group.element((int(reflect), theta), "radians") if flips else group.element(theta, "radians")
        k = round(theta * n / (2 * math.pi)) % n
        return group.element((int(reflect), k), "int") if flips else group.element(k, "int")
    # e2cnn: raw group elements
    if n == 0:
        return (int(reflect), theta) if flips else theta
    k = round(theta * n / (2 * math.pi)) % n
    return (int(reflect), k) if flips else k


def apply_rho(spec: FieldSpec, x: torch.Tensor, angle_deg: float, reflect: bool) -> torch.Tensor:
    """rho_out(g) applied to the fibres (channel axis 1) of x; identity for scalar/invariant features."""
    if spec.kind in ("invariant", "scalar"):
        return x
    if not in_group(spec, angle_deg, reflect):
        raise ValueError(f"({angle_deg} deg, reflect={reflect}) is not in the fibre group of this field")
    ft = spec.field_type
    element = library_element(ft, angle_deg, reflect)
    if library_of(ft) == "escnn":
        return ft.transform_fibers(x, element)
    rep = torch.as_tensor(ft.representation(element), dtype=x.dtype, device=x.device)
    return torch.einsum("ij,nj...->ni...", rep, x)


def group_pool(spec: FieldSpec, x: torch.Tensor) -> torch.Tensor:
    """Invariant scalar maps from a field: max over each regular field's fibre, norm of each irrep field.

    Used for angles outside a discrete group, where rho_out is undefined but pooled features should be
    (approximately) invariant."""
    if spec.kind in ("invariant", "scalar"):
        return x
    ft = spec.field_type
    outs = []
    start = 0
    for rep in ft.representations:
        size = rep.size
        block = x[:, start:start + size]
        if spec.kind == "regular" and "regular" in rep.name:
            outs.append(block.amax(dim=1, keepdim=True))
        else:
            outs.append(block.norm(dim=1, keepdim=True))
        start += size
    return torch.cat(outs, dim=1)
