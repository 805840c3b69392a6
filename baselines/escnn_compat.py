"""Every workaround for escnn / e2cnn internals, in one place, checked against the versions it was written for.

The baselines use these libraries' public API for everything they compute; the functions here reach into private
attributes (basis-expansion blocks and weight ranges, the sampled-basis module cache, the Clebsch-Gordan disk
cache) only to make model *construction* fast and safe. Each is verified by a test against the library's own
result (tests/test_baselines_init.py: He-init variances element by element; test_fields.py: transforms).
`check_versions()` warns once when an installed version differs from the pinned one, naming both, because a
private attribute may change meaning between releases.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.metadata
import io
import math
import warnings
import zlib
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.fields import library_of

PINNED = {"escnn": "1.0.11", "e2cnn": "0.2.3"}
_CHECKED: set[str] = set()


def check_versions(lib: str) -> None:
    """Warn (once per library) when the installed escnn / e2cnn is not the version these workarounds target."""
    if lib in _CHECKED:
        return
    _CHECKED.add(lib)
    try:
        found = importlib.metadata.version(lib)
    except importlib.metadata.PackageNotFoundError:
        return
    if found != PINNED[lib]:
        warnings.warn(f"equibench's {lib} workarounds (baselines/escnn_compat.py) were written for {lib} "
                      f"{PINNED[lib]}; found {found}. The baselines tests (tests/test_baselines_init.py, "
                      f"tests/test_fields.py) tell whether they still hold.", RuntimeWarning, stacklevel=2)


def basis_expansion(conv: nn.Module) -> Any:
    """The basis-expansion module of an R2Conv (a public property in escnn, private in e2cnn)."""
    lib = library_of(conv)
    check_versions(lib)
    return conv.basisexpansion if lib == "escnn" else conv._basisexpansion


# ---------------------------------------------------------------------------------------------------------------
# fast generalised He init
# ---------------------------------------------------------------------------------------------------------------
def _blocks(expansion: Any, lib: str) -> tuple[list, list, dict]:
    if lib == "escnn":
        in_reprs, out_reprs = list(expansion._in_reprs), list(expansion._out_reprs)

        def block(pair):
            return getattr(expansion, f"block_expansion_{expansion._escape_pair(pair)}")
    else:
        in_reprs = list(expansion._in_type.representations)
        out_reprs = list(expansion._out_type.representations)

        def block(pair):
            return getattr(expansion, f"block_expansion_{pair}")

    blocks = {pair: block(pair) for pair in expansion._representations_pairs}
    return in_reprs, out_reprs, blocks


_BLOCK_ATTRS: dict[int, tuple[Any, list]] = {}


def _block_attrs(block: Any) -> list:
    """[(input irrep, output irrep index)] per basis element of one single-block expansion (memoised).

    The libraries share block expansions between layers (they cache them by basis and sampling grid), so the memo
    is keyed by the object; it keeps a reference so the id cannot be reused.
    """
    hit = _BLOCK_ATTRS.get(id(block))
    if hit is None or hit[0] is not block:
        hit = (block, [(a["in_irrep"], a["out_irrep_idx"]) for a in block.get_basis_info()])
        _BLOCK_ATTRS[id(block)] = hit
    return hit[1]


def _he_blocks(expansion: Any, lib: str) -> list[tuple[int, int, torch.Tensor]]:
    """[(start, end, per-basis-element std of one field pair)] for every representation pair of an expansion.

    Library rule (escnn/e2cnn `_generalized_he_init_variances`): the weight of a basis element mapping input
    irrep type `a` to output irrep position `o` has std 1 / sqrt(#distinct input irrep types reaching o *
    #basis elements from irrep type a to o). Every output field of one representation sees all input fields, so
    both counts depend only on (output representation, irrep index in it, input irrep type): computed once per
    block instead of once per weight. The std of one field pair repeats over all (out field, in field) pairs.
    """
    in_reprs, out_reprs, blocks = _blocks(expansion, lib)
    in_count = Counter(r.name for r in in_reprs)
    attrs = {pair: _block_attrs(blk) for pair, blk in blocks.items()}
    basis_count: dict[tuple, int] = defaultdict(int)
    for (a, b), lst in attrs.items():
        for irr, j in lst:
            basis_count[(b, j, irr)] += in_count[a]
    inputs: dict[tuple, set] = defaultdict(set)
    for b, j, irr in basis_count:
        inputs[(b, j)].add(irr)
    out = []
    for (a, b), lst in attrs.items():
        start, end = expansion._weights_ranges[(a, b)]
        v = torch.tensor([1.0 / math.sqrt(len(inputs[(b, j)]) * basis_count[(b, j, irr)]) for irr, j in lst])
        out.append((start, end, v))
    return out


def he_variances(expansion: Any, lib: str | None = None) -> torch.Tensor:
    """The per-weight factors of the library's `generalized_he_init` (its `_generalized_he_init_variances`)."""
    lib = lib or library_of(expansion)
    out = torch.empty(expansion.dimension())
    for start, end, v in _he_blocks(expansion, lib):
        out[start:end] = v.repeat((end - start) // len(v))
    return out


@torch.no_grad()
def fast_he_init_(conv: nn.Module, generator: torch.Generator | None = None) -> None:
    """Generalised He init of an escnn/e2cnn R2Conv built with ``initialize=False`` (same distribution).

    In place: standard normal weights, each field pair's segment scaled by its per-basis-element factors.
    """
    lib = library_of(conv)
    exp = basis_expansion(conv)
    w = conv.weights
    w.normal_(generator=generator)
    for start, end, v in _he_blocks(exp, lib):
        w[start:end].view(-1, len(v)).mul_(v.to(w.device, w.dtype))


def unshare_basis(conv: nn.Module) -> None:
    """Give the conv its own block-expansion modules (sharing the sampled-basis tensors, no copy).

    escnn and e2cnn cache each sampled basis as one module object and hand that same object to every conv that
    needs it, in every model of the process. `model.to(device/dtype)` converts buffers by reassigning them on the
    module object, so moving one model would silently move the basis of every other model built in the process
    (a CPU float32 model then fails after a CUDA or float64 one). A shallow copy with its own buffer dict keeps the
    tensors shared until a conversion, which then only affects this conv.
    """
    exp = basis_expansion(conv)
    for name, blk in list(exp._modules.items()):
        if name.startswith("block_expansion_") and blk is not None:
            own = copy.copy(blk)
            own._parameters = dict(blk._parameters)
            own._buffers = dict(blk._buffers)
            own._modules = dict(blk._modules)
            exp._modules[name] = own




def derived_state_key(key: str) -> bool:
    """State-dict entries escnn derives from the architecture (basis-expansion indices and samples, eval-mode
    filter caches): rebuilt by the constructor / `.eval()`, never loaded from a checkpoint (some are shared,
    read-only views)."""
    return key.endswith((".filter", ".expanded_bias")) or "._basisexpansion." in key


# ---------------------------------------------------------------------------------------------------------------
# escnn build speed: an in-process memo in front of escnn's on-disk (joblib) Clebsch-Gordan cache
# ---------------------------------------------------------------------------------------------------------------
_ESCNN_MEMO_INSTALLED = False


def install_escnn_memo() -> None:
    """Memoise escnn's Clebsch-Gordan look-ups in memory (idempotent).

    escnn keeps CG coefficients in a joblib disk cache and reloads them from disk on *every* call; iterating the
    attributes of a kernel basis calls it thousands of times (about 2 ms each), which dominated building D_N/O(2)
    models. The memo returns copies of exactly what escnn's cached function returns, so results are unchanged.
    """
    global _ESCNN_MEMO_INSTALLED
    if _ESCNN_MEMO_INSTALLED:
        return
    import escnn.group._clebsh_gordan as cg

    check_versions("escnn")

    def memo(fn):
        store: dict = {}

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            key = (args, tuple(sorted(kwargs.items())))
            try:
                hash(key)
            except TypeError:
                return fn(*args, **kwargs)
            if key not in store:
                store[key] = fn(*args, **kwargs)
            return copy.deepcopy(store[key])

        wrapper._equibench_memo = True
        return wrapper

    for name in ("_clebsh_gordan_tensor", "_find_tensor_decomposition"):
        fn = getattr(cg, name, None)
        if fn is not None and not getattr(fn, "_equibench_memo", False):
            solver = seeded(getattr(fn, "func", fn))
            if name == "_find_tensor_decomposition":
                solver = with_enough_irreps(solver)
            setattr(cg, name, memo(solver))
    _ESCNN_MEMO_INSTALLED = True


def with_enough_irreps(fn: Any) -> Any:
    """escnn's tensor-product decomposition `fn(J, l, group_class, **group_keys)`, after instantiating every irrep of
    a continuous group up to the sum of J's and l's frequencies.

    escnn decomposes J x l over the irreps the group has *instantiated so far*, and raises InsufficientIrrepsException
    when those do not cover it: building `o2` first in a fresh process failed (its disk cache hid this whenever an
    earlier process had filled it). The irreps of J x l have frequencies up to freq(J) + freq(l), so instantiating
    those makes the answer (which is unique) independent of what the process built before."""

    @functools.wraps(fn)
    def wrapper(J, l, group_class, **group_keys):  # noqa: E741 (escnn's names)
        import escnn.group

        group = escnn.group.groups_dict[group_class]._generator(**group_keys)
        if getattr(group, "continuous", False) and hasattr(group, "bl_irreps"):
            for irrep_id in group.bl_irreps(int(J[-1]) + int(l[-1])):
                group.irrep(*irrep_id)
        return fn(J, l, group_class, **group_keys)

    return wrapper


def seeded(fn: Any) -> Any:
    """`fn` (escnn's function *behind* its joblib disk cache) under numpy's global RNG seeded from its arguments.

    escnn solves for Clebsch-Gordan coefficients of continuous groups (O(2), SO(2)) from random group samples
    (`G.sample()` draws from numpy's global RNG), so the basis it finds is one of many, decided by whatever ran
    before in the process -- and then frozen in its on-disk cache. D_N and O(2) models built with the same torch
    seed therefore computed different functions on different installations (d4 logits differed by 2-10 %).
    Seeding per call from the arguments (and skipping the disk cache, whose entries may come from an unseeded
    run) makes the basis a function of the arguments alone; the global RNG state is restored afterwards."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        key = repr((args, sorted(kwargs.items()))).encode()
        state = np.random.get_state()
        np.random.seed(zlib.crc32(key))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # escnn prints when it needed extra samples
                return fn(*args, **kwargs)
        finally:
            np.random.set_state(state)

    return wrapper
