"""rho_out via the symmetry contract agrees with escnn's own GeometricTensor.transform and makes escnn layers
exactly equivariant at their group elements (this pins our element convention to escnn's)."""

import warnings

import pytest
import torch

from bench.contract import FieldSpec
from bench.fields import apply_rho, group_pool, in_group, library_element
from bench.rotation import bandlimited_images, rotate

warnings.filterwarnings("ignore", category=UserWarning)
from escnn import gspaces  # noqa: E402  (a test dependency: tox and CI install it)
from escnn import nn as enn  # noqa: E402


def _layer(gs, out_reprs):
    torch.manual_seed(0)
    inp = enn.FieldType(gs, [gs.trivial_repr])
    out = enn.FieldType(gs, out_reprs)
    return inp, out, enn.R2Conv(inp, out, 5, padding=2).eval()


CASES = {
    "C8": lambda: gspaces.rot2dOnR2(8),
    "D4": lambda: gspaces.flipRot2dOnR2(4),
    "SO2": lambda: gspaces.rot2dOnR2(-1, maximum_frequency=3),
    "O2": lambda: gspaces.flipRot2dOnR2(-1, maximum_frequency=3),
}


def _reprs(gs):
    if gs.fibergroup.order() > 0:
        return 2 * [gs.regular_repr]
    if gs.flips_order > 0:
        return [gs.irrep(1, 1), gs.irrep(0, 0), gs.irrep(1, 2)]
    return [gs.irrep(1), gs.irrep(2), gs.irrep(0)]


@pytest.mark.parametrize("name", list(CASES))
def test_rho_out_matches_escnn_transform_and_gives_exact_equivariance(name):
    gs = CASES[name]()
    inp, out, conv = _layer(gs, _reprs(gs))
    kind = "regular" if gs.fibergroup.order() > 0 else "irreps"
    spec = FieldSpec(kind, out)
    x = bandlimited_images(2, 1, 17, seed=1)
    with torch.no_grad():
        y = conv(enn.GeometricTensor(x, inp)).tensor
        elements = [(a, r) for a in (90, 180, 270) for r in (False, True)]
        for angle, reflect in elements:
            if not in_group(spec, angle, reflect):
                assert reflect and gs.flips_order == 0
                continue
            ours = apply_rho(spec, rotate(y, angle, reflect=reflect), angle, reflect)
            theirs = enn.GeometricTensor(y, out).transform(library_element(out, angle, reflect)).tensor
            assert (ours - theirs).abs().max() < 1e-6
            lhs = conv(enn.GeometricTensor(rotate(x, angle, reflect=reflect), inp)).tensor
            assert ((lhs - ours).norm() / ours.norm()) < 1e-5


def test_discrete_groups_reject_elements_outside_the_group():
    gs = gspaces.rot2dOnR2(4)
    spec = FieldSpec("regular", enn.FieldType(gs, [gs.regular_repr]))
    assert in_group(spec, 270, False) and not in_group(spec, 45, False) and not in_group(spec, 0, True)
    with pytest.raises(ValueError):
        apply_rho(spec, torch.zeros(1, 4, 3, 3), 45, False)


def test_group_pool_is_invariant_to_fibre_permutation():
    gs = gspaces.rot2dOnR2(8)
    spec = FieldSpec("regular", enn.FieldType(gs, 3 * [gs.regular_repr]))
    y = torch.randn(2, 24, 5, 5)
    moved = apply_rho(spec, y, 135, False)
    assert not torch.allclose(moved, y)
    assert torch.equal(group_pool(spec, moved), group_pool(spec, y))
    assert group_pool(spec, y).shape == (2, 3, 5, 5)


def test_scalar_fields_transform_trivially():
    y = torch.randn(2, 3, 5, 5)
    assert torch.equal(apply_rho(FieldSpec("scalar"), y, 33.0, True), y)
