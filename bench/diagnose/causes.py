"""Likely causes of broken grid symmetries, detected by rule from the traced pass.

Geometry rules work on every convolution / pooling / padding op that ran (`trace.OpRecord`): the centres of
its output samples, in the coordinates of its input, form a lattice; the op can commute with a grid element only
if the element maps that lattice onto itself. The lattice is drawn on a doubled-resolution indicator image and
the element is applied with the same code as everywhere else (`GridElement.apply`), so the rule cannot disagree
with the element definitions. A lattice that is not symmetric comes from a stride whose window grid is not
centred for this input size, or from asymmetric padding (``padding='same'`` with an even kernel, ``F.pad`` /
``ZeroPad2d`` with unequal sides).

Weight rules look only where a break starts (the first module whose output is no longer exact while its input
still is): a convolution between scalar fields commutes with g only if every kernel slice is invariant under g.
A flatten of a map into a vector orders it by pixel position, so a linear layer after it is not invariant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from .grid import BY_NAME, ELEMENTS, GridElement
from .trace import ModuleCall, OpRecord


@dataclass
class Cause:
    """One likely cause: the rule that found it, where (qualified module name, '' = the model's own forward),
    a message for people, and the failing elements it explains."""

    rule: str
    module: str
    message: str
    elements: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "module": self.module, "message": self.message, "elements": list(self.elements)}


def where(module: str, module_type: str = "") -> str:
    if not module:
        return "the model's own forward"
    return f"`{module}` ({module_type})" if module_type else f"`{module}`"


# ------------------------------------------------------------------------------------------------------------
# sampling lattices
# ------------------------------------------------------------------------------------------------------------
def _centres(n_out: int, kernel: int, stride: int, dilation: int, pad_before: int) -> list[int]:
    """Doubled input coordinates of the output samples' window centres."""
    return [2 * (i * stride - pad_before) + dilation * (kernel - 1) for i in range(n_out)]


def lattice_breaks(op: OpRecord) -> list[str]:
    """Grid elements (defined for the op's input) that do not map its output lattice onto itself."""
    n_h, n_w = op.in_shape[-2:]
    m_h, m_w = op.out_shape[-2:]
    rows = _centres(m_h, op.kernel[0], op.stride[0], op.dilation[0], op.pads[0])
    cols = _centres(m_w, op.kernel[1], op.stride[1], op.dilation[1], op.pads[2])
    margin = max(0, -min(rows + cols), max(r - 2 * (n_h - 1) for r in rows), max(c - 2 * (n_w - 1) for c in cols))
    img = torch.zeros(2 * (n_h - 1) + 2 * margin + 1, 2 * (n_w - 1) + 2 * margin + 1, dtype=torch.uint8)
    img[[r + margin for r in rows], :] += 1
    img[:, [c + margin for c in cols]] += 1
    img = (img == 2).to(torch.uint8)
    broken = []
    for e in ELEMENTS:
        if not e.defined_for(n_h, n_w):
            continue
        window_square = op.kernel[0] == op.kernel[1] and op.dilation[0] == op.dilation[1]
        if not torch.equal(e.apply(img), img) or (e.swaps_axes and not window_square):
            broken.append(e.name)
    return broken


def _good_sizes(n: int, kernel: int, stride: int, dilation: int, pad: int) -> list[int]:
    """Input sides near n at which a stride-s window grid with symmetric padding is centred."""
    return [m for m in range(max(1, n - stride), n + stride + 1)
            if m != n and (m + 2 * pad - dilation * (kernel - 1) - 1) % stride == 0]


def _describe_op(op: OpRecord) -> str:
    parts = [op.op]
    if op.op != "pad":
        parts.append(f"kernel {op.kernel[0]}x{op.kernel[1]}, stride {op.stride[0]}x{op.stride[1]}")
    parts.append("pads (top, bottom, left, right) = ({}, {}, {}, {})".format(*op.pads))
    return ", ".join(parts)


def geometry_cause(op: OpRecord, failing: Iterable[str]) -> Cause | None:
    broken = [e for e in lattice_breaks(op) if e in set(failing)]
    if not broken:
        return None
    top, bottom, left, right = op.pads
    n_h, n_w = op.in_shape[-2:]
    at = f"{op.op} in {where(op.module, op.module_type)}"
    if top != bottom or left != right:
        extra = " (padding='same' with an even kernel pads one pixel more after than before)" if op.padding_same else ""
        return Cause("asymmetric_padding", op.module,
                     f"{at} pads unequally: {_describe_op(op)}{extra}. Its output is shifted by half a pixel "
                     "against the input's centre; pad symmetrically and use odd kernels.", broken)
    if op.stride != (1, 1):
        axes: dict[tuple[int, ...], list[str]] = {}
        for axis, n, k, s, d, p in (("rows", n_h, op.kernel[0], op.stride[0], op.dilation[0], top),
                                    ("columns", n_w, op.kernel[1], op.stride[1], op.dilation[1], left)):
            if (n + 2 * p - d * (k - 1) - 1) % s:
                axes.setdefault((n, k, s, d, p), []).append(axis)
        parts = []
        for (n, k, s, d, p), names in axes.items():
            good = ", ".join(map(str, _good_sizes(n, k, s, d, p)))
            parts.append(f"its {n} input {' and '.join(names)} (a stride-{s} grid is centred iff "
                         f"n + 2*pad - dilation*(k-1) - 1 is a multiple of {s}, e.g. n = {good})")
        detail = "; ".join(parts) if parts else "its input (stride, kernel or padding differ between the axes)"
        return Cause("strided_sampling_not_centred", op.module,
                     f"{at} ({_describe_op(op)}) samples a window grid that is not centred on {detail}. Change the "
                     "input size (see --sizes) or the padding.", broken)
    return Cause("anisotropic_kernel", op.module,
                 f"{at} ({_describe_op(op)}) has a non-square window: it cannot commute with rotations by 90 "
                 "degrees or with the transposes.", broken)


# ------------------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------------------
def kernel_asymmetry(weight: torch.Tensor, element: GridElement) -> float:
    """||g.K - K|| / ||K|| over all kernel slices (inf for a non-square kernel under a rotation/transpose)."""
    if not element.defined_for(*weight.shape[-2:]):
        return float("inf")
    w = weight.detach()
    return float((element.apply(w) - w).norm() / w.norm().clamp_min(1e-300))


def inside(module: str, scope: str) -> bool:
    return not scope or module == scope or module.startswith(scope + ".")


def break_causes(breaks: dict[str, ModuleCall | None], ops: Sequence[OpRecord], tol: float,
                 structural: Sequence[Cause] = (), unclaimed: Iterable[str] = ()) -> list[Cause]:
    """Causes at each failing element's first breaking module: a break in code between modules, an
    anisotropic scalar-field kernel, or (when neither they nor a structural cause inside it apply) the module."""
    causes: list[Cause] = []
    for name, call in breaks.items():
        if call is None:
            causes.append(Cause("break_between_modules", "",
                                "every module's output is exact but the model's output is not: the model's own "
                                "forward code after its modules breaks the symmetry.", [name]))
            continue
        in_err = call.input_errors.get(name)
        if name in call.input_errors and (in_err is None or in_err > tol):  # absent: the input was not comparable
            parent = call.name.rpartition(".")[0]
            shown = "not comparable" if in_err is None else f"{in_err:.2e}"
            causes.append(Cause("break_between_modules", parent,
                                f"the input of `{call.name}` is already not exact under {name} ({shown}): the break "
                                f"is in functional code between modules, in {where(parent)} (slicing, F.pad, "
                                "flatten/view, a hand-written op).", [name]))
            continue
        element = BY_NAME[name]
        found = any(name in c.elements and inside(c.module, call.name) for c in structural)
        if not found and call.view.kind == "scalar":
            for op in ops:
                if op.op == "conv2d" and op.weight is not None and inside(op.module, call.name):
                    asym = kernel_asymmetry(op.weight, element)
                    if asym > tol:
                        causes.append(Cause("anisotropic_kernel", op.module,
                                            f"the kernel of the convolution in {where(op.module, op.module_type)} "
                                            f"is not symmetric under {name} (relative asymmetry {asym:.2g}): a "
                                            "convolution between scalar fields commutes with a grid symmetry only "
                                            "if its kernel is invariant under it (isotropic kernels, e.g. GMR, "
                                            "or steerable field types, e.g. escnn R2Conv).", [name]))
                        found = True
                        break
        if not found and name not in set(unclaimed):  # an unclaimed element needs no further explanation
            causes.append(Cause("unexplained", call.name,
                                f"{where(call.name, call.type)} breaks {name} although its input is exact "
                                f"(compared as {call.view.label(element)}); no rule matched its own computation.",
                                [name]))
    return causes


def flatten_causes(ops: Sequence[OpRecord], failing: Sequence[str]) -> list[Cause]:
    out = []
    for op in ops:
        if op.op == "flatten" and failing:
            c, h, w = (op.in_shape[0], *op.in_shape[-2:]) if len(op.in_shape) >= 3 else (1, 1, 1)
            out.append(Cause("flatten_map", op.module,
                             f"a {c}x{h}x{w} map is flattened into a vector in {where(op.module, op.module_type)}: "
                             "the vector is ordered by pixel position, so what follows (e.g. a linear layer) is not "
                             "invariant to any grid symmetry. Pool globally over H and W first.", list(failing)))
    return out


def merge(causes: Iterable[Cause]) -> list[Cause]:
    """One cause per (rule, module): elements merged in the order of ELEMENTS, first message kept."""
    merged: dict[tuple[str, str], Cause] = {}
    for c in causes:
        key = (c.rule, c.module)
        if key in merged:
            merged[key].elements = sorted(set(merged[key].elements) | set(c.elements),
                                          key=[e.name for e in ELEMENTS].index)
        else:
            merged[key] = Cause(c.rule, c.module, c.message, list(c.elements))
    return list(merged.values())


def find_causes(ops: Sequence[OpRecord], breaks: dict[str, ModuleCall | None], failing: Sequence[str],
                tol: float, not_claimed: Cause | None = None) -> list[Cause]:
    """All causes for the failing elements: contract note first, then geometry in execution order, flatten ops,
    then what happens at each first breaking module."""
    structural = [c for op in ops if op.op in ("conv2d", "max_pool2d", "avg_pool2d", "pad")
                  for c in [geometry_cause(op, failing)] if c is not None]
    structural += flatten_causes(ops, failing)
    causes = ([not_claimed] if not_claimed else []) + structural
    unclaimed = not_claimed.elements if not_claimed else ()
    return merge(causes + break_causes(breaks, ops, tol, structural, unclaimed))
