"""Every registry model's `check` agrees with its declared symmetry contract.

The exact group must be the contract's group intersected with the pixel grid (GMR and D_N/O2: D4; C_N with 4 | N
and SO2: C4; plain: trivial), and -- the hard part for field networks whose escnn modules are wrapped to return
plain tensors -- no module output may look broken under a claimed element (plain intermediates inherit their
field type or are compared through channel norms). Small widths and inputs keep escnn builds at ~1 s; input sides
are chosen where the contract holds (every downsampling input odd for the small backbone and C8 ResNet, a
multiple of 16 for the GMR ResNet).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from bench import check
from bench.diagnose import grid
from bench.errors import MissingDependencyError
from bench.models import MODELS, create_model, list_models, model_info

NETWORK_KW = {"resnet18": {}, "gmr_resnet18": {"width": 4}, "c8_resnet18": {"width": 1}}
SIDE = {"gmr_resnet18": 16, "c8_resnet18": 9, "resnet18": 8}


def build(name: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if model_info(name)["level"] == "layer":
                return create_model(name, 4, 10, channels=8, kernel_size=5), (4, 9, 9)
            channels = 3 if "resnet18" in name else 1
            model = create_model(name, channels, 10, **NETWORK_KW.get(name, {"widths": (1,) * 6}))
        except MissingDependencyError as exc:
            pytest.skip(str(exc))
    side = SIDE.get(name, 9)
    return model, (channels, side, side)


def zoo() -> list[str]:
    """The built-in models (declared in bench.models, implemented in baselines), not ones other tests register."""
    return [n for n in list_models() if (MODELS.entry(n).module or "").startswith("baselines.")]


@pytest.mark.parametrize("name", zoo())
def test_check_agrees_with_the_declared_contract(name):
    model, shape = build(name)
    claimed = grid.subgroup(model.symmetry.group)
    r = check(model, shape, angles=None, images=1, target=name)
    assert r.contract_group == model.symmetry.group
    assert r.exact_group == grid.subgroup_name(claimed)
    for e in r.elements:
        assert e.exact == (e.element in claimed), (e.element, e.error)
        assert e.claimed == (e.element in claimed)
        if e.element not in claimed:
            assert e.error > 30 * r.tolerance  # far from round-off: a real break
    false_breaks = [(m.name, el, m.errors[el]) for m in r.modules for el in claimed if not m.errors[el] <= r.tolerance]
    assert not false_breaks
    exposed = list(model.symmetry.features) if hasattr(model, "forward_features") else []
    assert [f.name for f in r.features] == exposed  # networks: features, pooled, logits; layers: none
    assert all(f.errors[el] <= r.tolerance for f in r.features for el in claimed)
    if claimed == grid.SUBGROUPS["D4"]:
        assert r.first_breaking_module is None and r.causes == []
    else:
        assert r.first_breaking_module  # a module, not the model's own code
        assert r.causes[0].rule == "not_claimed"
        assert set(r.causes[0].elements) == set(grid.ELEMENT_NAMES) - claimed
