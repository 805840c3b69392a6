"""Helpers shared by the escnn and e2cnn models (the two libraries expose the same structures).

Nothing here imports escnn or e2cnn at module level; every function receives the library objects it works on.

- `TensorModule`: run an escnn/e2cnn `EquivariantModule` on plain tensors (wrap in / unwrap the GeometricTensor).
- `make_r2conv`: an R2Conv with the fast generalised He init and its own basis modules (both in
  `baselines.escnn_compat`, with every other workaround for the libraries' internals).
- `conv_param_count`: the number of parameters of an `R2Conv(in_type, out_type, k)` without building it: the sum
  over representation pairs of (#in fields x #out fields x basis dimension of the pair); the basis dimension is
  read off a cached one-field-to-one-field conv (whose sampled basis the library caches and reuses for the real
  build). Used by the match='params' width search.
- `FieldInvariants`: an invariant map for steerable fields: each irrep of each field (in the irrep basis, i.e.
  after the field's change of basis) gives one invariant, its value for a trivial irrep and its norm otherwise.
- `GatedActivation`: ReLU on scalar fields, gated nonlinearity (field * sigmoid(gate)) on non-trivial fields;
  exactly equivariant for every group element.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from baselines.escnn_compat import fast_he_init_, unshare_basis
from bench.fields import library_of


def geometric_tensor_cls(lib: str):
    if lib == "escnn":
        from escnn.nn import GeometricTensor
    else:
        from e2cnn.nn import GeometricTensor
    return GeometricTensor


def irrep_of(group: Any, irr: Any) -> Any:
    """The irrep object for an entry of `Representation.irreps` (escnn: id tuple, e2cnn: name)."""
    if isinstance(irr, str):
        return group.irreps[irr]
    return group.irrep(*irr)


class RegularBatchNorm(nn.Module):
    """escnn's InnerBatchNorm for a type made only of regular fields (F fields x |G| channels, contiguous).

    Same computation as `escnn.nn.InnerBatchNorm` (BatchNorm3d over (N, F, |G|, H, W): statistics shared by the
    channels of one field, one affine weight and bias per field), without its construction cost, which is
    quadratic in the number of fields (about 4 s for the C8 ResNet-18's layers).
    """

    def __init__(self, n_fields: int, group_size: int) -> None:
        super().__init__()
        self.n_fields, self.group_size = n_fields, group_size
        self.bn = nn.BatchNorm3d(n_fields)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *shape = x.shape
        return self.bn(x.view(b, self.n_fields, self.group_size, *shape)).view(b, c, *shape)


class RegularGroupPooling(nn.Module):
    """Max over the |G| channels of each regular field: escnn's / e2cnn's GroupPooling for a type made only of
    regular fields, on plain tensors (escnn's allocates its output as float32 whatever the input dtype)."""

    def __init__(self, n_fields: int, group_size: int) -> None:
        super().__init__()
        self.n_fields, self.group_size = n_fields, group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, *shape = x.shape
        return x.view(b, self.n_fields, self.group_size, *shape).amax(dim=2)

    def extra_repr(self) -> str:
        return f"fields={self.n_fields}, group_size={self.group_size}"


class TensorModule(nn.Module):
    """Plain-tensor wrapper around an escnn/e2cnn EquivariantModule."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._gt = geometric_tensor_cls(library_of(module))

    @property
    def in_type(self):
        return self.module.in_type

    @property
    def out_type(self):
        return self.module.out_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self._gt(x, self.module.in_type)).tensor


def make_r2conv(lib: str, in_type: Any, out_type: Any, k: int, **kw: Any) -> nn.Module:
    """R2Conv with 'same' padding, no bias (a BatchNorm follows), fast generalised He init."""
    if lib == "escnn":
        from escnn.nn import R2Conv
    else:
        from e2cnn.nn import R2Conv
    kw.setdefault("padding", k // 2)
    kw.setdefault("bias", False)
    with warnings.catch_warnings():  # e2cnn warns about torch deprecations while building bases
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        conv = R2Conv(in_type, out_type, k, initialize=False, **kw)
    fast_he_init_(conv)
    unshare_basis(conv)
    return conv


# ---------------------------------------------------------------------------------------------------------------
# parameter counting without building
# ---------------------------------------------------------------------------------------------------------------
_PAIR_DIMS: dict[tuple, int] = {}


def _gspace_key(gspace: Any) -> tuple:
    g = gspace.fibergroup
    return (library_of(gspace), type(gspace).__name__, gspace.name, g.name, getattr(g, "_maximum_frequency", None))


def pair_dimension(gspace: Any, in_repr: Any, out_repr: Any, k: int) -> int:
    """Basis dimension of an R2Conv from one `in_repr` field to one `out_repr` field (cached)."""
    key = (_gspace_key(gspace), in_repr.name, out_repr.name, k)
    if key not in _PAIR_DIMS:
        lib = library_of(gspace)
        if lib == "escnn":
            from escnn.nn import FieldType, R2Conv
        else:
            from e2cnn.nn import FieldType, R2Conv
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                conv = R2Conv(FieldType(gspace, [in_repr]), FieldType(gspace, [out_repr]), k, bias=False,
                              initialize=False)
            _PAIR_DIMS[key] = conv.weights.numel()
        except ValueError:  # empty basis for this pair
            _PAIR_DIMS[key] = 0
    return _PAIR_DIMS[key]


def conv_param_count(gspace: Any, in_reprs: Sequence[Any], out_reprs: Sequence[Any], k: int) -> int:
    """Parameters of R2Conv(FieldType(gspace, in_reprs), FieldType(gspace, out_reprs), k, bias=False)."""
    by_name = {r.name: r for r in [*in_reprs, *out_reprs]}
    cin, cout = Counter(r.name for r in in_reprs), Counter(r.name for r in out_reprs)
    return sum(
        ni * no * pair_dimension(gspace, by_name[a], by_name[b], k) for a, ni in cin.items() for b, no in cout.items()
    )



# ---------------------------------------------------------------------------------------------------------------
# invariants and nonlinearities on plain tensors
# ---------------------------------------------------------------------------------------------------------------
def irreps_layout(field_type: Any) -> tuple[np.ndarray | None, list[int], dict[int, list[list[int]]]]:
    """(block-diagonal inverse change of basis or None if it is the identity, trivial channels, {size: [channels]})."""
    group = field_type.fibergroup
    size = field_type.size
    q = np.zeros((size, size))
    trivial: list[int] = []
    groups: dict[int, list[list[int]]] = defaultdict(list)
    p = 0
    for rep in field_type.representations:
        q[p : p + rep.size, p : p + rep.size] = rep.change_of_basis_inv
        o = p
        for irr in rep.irreps:
            irr = irrep_of(group, irr)
            if irr.is_trivial():
                trivial.append(o)
            else:
                groups[irr.size].append(list(range(o, o + irr.size)))
            o += irr.size
        p += rep.size
    if np.allclose(q, np.eye(size), atol=1e-12):
        q = None
    return q, trivial, dict(groups)


class FieldInvariants(nn.Module):
    """Per-pixel invariants of a steerable feature map: trivial irreps as they are, norms of the other irreps."""

    def __init__(self, field_type: Any, eps: float = 1e-8) -> None:
        super().__init__()
        q, trivial, groups = irreps_layout(field_type)
        self.register_buffer("q", None if q is None else torch.tensor(q, dtype=torch.float32), persistent=False)
        self.register_buffer("trivial", torch.tensor(trivial, dtype=torch.long), persistent=False)
        self.sizes = sorted(groups)
        for s in self.sizes:
            self.register_buffer(f"idx{s}", torch.tensor(groups[s], dtype=torch.long).reshape(-1), persistent=False)
        self.out_dim = len(trivial) + sum(len(groups[s]) for s in self.sizes)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.q is not None:
            x = torch.einsum("oi,bi...->bo...", self.q.to(x.dtype), x)
        parts = [x[:, self.trivial]]
        for s in self.sizes:
            v = x[:, getattr(self, f"idx{s}")]
            v = v.reshape(v.shape[0], -1, s, *v.shape[2:])
            parts.append(torch.sqrt((v * v).sum(2) + self.eps))
        return torch.cat(parts, dim=1)


class GatedActivation(nn.Module):
    """Input layout [scalars | gates | gated fields]: ReLU(scalars), gated field * sigmoid(its gate)."""

    def __init__(self, n_scalars: int, gated_sizes: Sequence[int]) -> None:
        super().__init__()
        self.n_scalars = n_scalars
        self.n_gates = len(gated_sizes)
        index = [g for g, s in enumerate(gated_sizes) for _ in range(s)]
        self.register_buffer("gate_index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, g = self.n_scalars, self.n_gates
        gates = torch.sigmoid(x[:, s : s + g])
        return torch.cat([torch.relu(x[:, :s]), x[:, s + g :] * gates[:, self.gate_index]], dim=1)

    def extra_repr(self) -> str:
        return f"scalars={self.n_scalars}, gated={self.n_gates}"


_BN_PER_FIELD: dict[tuple, int] = {}


def bn_param_count(gspace: Any, bn_name: str, reprs: Sequence[Any]) -> int:
    """Parameters of a batch norm `bn_name` over fields `reprs` (they are additive over fields)."""
    lib = library_of(gspace)
    if lib == "escnn":
        import escnn.nn as enn
    else:
        import e2cnn.nn as enn
    total = 0
    by_name = {r.name: r for r in reprs}
    for name, n in Counter(r.name for r in reprs).items():
        key = (_gspace_key(gspace), bn_name, name)
        if key not in _BN_PER_FIELD:
            bn = getattr(enn, bn_name)(enn.FieldType(gspace, [by_name[name]]))
            _BN_PER_FIELD[key] = sum(p.numel() for p in bn.parameters())
        total += n * _BN_PER_FIELD[key]
    return total
