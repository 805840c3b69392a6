"""The symmetry contract: the only thing a model tells the suite about itself.

A model sets `model.symmetry = SymmetryContract(...)`. The contract names the group the model claims and,
for every feature tensor it exposes, how that tensor transforms (its field type). The equivariance protocol
derives rho_out from it; nothing else about the protocols leaks into model code.

Feature exposure: a network implements `forward_features(x) -> dict[str, Tensor]` (a separate method, so the
normal `forward` pays nothing); a single layer just returns its output map from `forward`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

FieldKind = Literal["invariant", "scalar", "regular", "irreps"]


@dataclass(frozen=True)
class FieldSpec:
    """How one exposed feature tensor transforms.

    - ``invariant``: a vector (N, C) with no spatial axes (logits, pooled features): rho = identity.
    - ``scalar``: maps (N, C, H, W) whose channels are scalar fields (plain CNN, GMR): rho = identity.
    - ``regular`` / ``irreps``: maps whose channels form escnn (or e2cnn) fields; ``field_type`` is that
      FieldType and rho_out(g) is applied with it.
    """

    kind: FieldKind
    field_type: Any = None

    def __post_init__(self) -> None:
        if self.kind not in ("invariant", "scalar", "regular", "irreps"):
            raise ValueError(f"FieldSpec.kind must be invariant|scalar|regular|irreps, got {self.kind!r}")
        if self.kind in ("regular", "irreps") and self.field_type is None:
            raise ValueError(f"FieldSpec(kind={self.kind!r}) needs the escnn/e2cnn field_type")

    @property
    def spatial(self) -> bool:
        return self.kind != "invariant"


INVARIANT = FieldSpec("invariant")
SCALAR = FieldSpec("scalar")

_GROUP_RE = re.compile(r"^(?:(trivial)|(D4-grid)|([CD])(\d+)|(SO2|O2))$")


@dataclass(frozen=True)
class SymmetryContract:
    """The group a model claims and the field types of its exposed features.

    group: ``trivial`` (no claim), ``D4-grid`` (exact under the 8 pixel-grid symmetries only, approximately
    equivariant at other angles, e.g. GMR-Conv), ``C<N>``/``D<N>`` (discrete rotations [and reflections]),
    ``SO2``/``O2`` (all rotations [and reflections]).
    """

    group: str
    features: Mapping[str, FieldSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _GROUP_RE.match(self.group):
            raise ValueError(
                f"unknown group {self.group!r}; valid: trivial, D4-grid, C<N>, D<N>, SO2, O2"
            )

    @property
    def rotation_order(self) -> int:
        """N of the claimed rotation subgroup; 0 means continuous (SO2/O2), 1 means no rotations."""
        m = _GROUP_RE.match(self.group)
        assert m is not None
        if m.group(1):
            return 1
        if m.group(2):
            return 4
        if m.group(3):
            return int(m.group(4))
        return 0

    @property
    def reflections(self) -> bool:
        return self.group.startswith("D") or self.group == "O2"

    def claims(self, angle_deg: float, reflect: bool = False) -> bool:
        """Whether the model claims *exact* equivariance to rotation by angle_deg (after an optional flip)."""
        if reflect and not self.reflections:
            return False
        n = self.rotation_order
        if n == 0:
            return True
        step = 360.0 / n
        k = angle_deg / step
        return math.isclose(k, round(k), abs_tol=1e-9)


def exposed_features(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """All features a model exposes for input x: `forward_features` if it has one, else {'out': model(x)}."""
    fn = getattr(model, "forward_features", None)
    if fn is not None:
        return dict(fn(x))
    return {"out": model(x)}


def contract_of(model: torch.nn.Module) -> SymmetryContract:
    """The model's declared contract; a clear error if it declares none."""
    contract = getattr(model, "symmetry", None)
    if not isinstance(contract, SymmetryContract):
        raise TypeError(
            f"{type(model).__name__} declares no symmetry contract: set `model.symmetry = "
            "SymmetryContract(group=..., features={...})` (see bench.contract)"
        )
    return contract
