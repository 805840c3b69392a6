"""bench.check / bench.assert_equivariant on known-answer models (tests/check_models.py).

Every expected value follows from how the model is built (see check_models' docstring), not from running the
code under test: exact groups, the module named as the break, the input sizes at which a model is exact."""

from __future__ import annotations

import itertools
import json

import check_models as cm
import pytest
import torch

import bench
from bench.diagnose import grid
from bench.errors import UsageError

SMALL = (1, 9, 9)


def diagnose(model, shape=SMALL, **kw):
    kw.setdefault("angles", None)
    return bench.check(model, shape, **kw)


# ------------------------------------------------------------------------------------------------------------
# the grid elements and subgroups
# ------------------------------------------------------------------------------------------------------------
def test_elements_follow_the_issue_definitions():
    n = 5
    x = torch.arange(2 * n * n, dtype=torch.float64).reshape(2, n, n)  # all entries distinct
    expected = {
        "rot90": torch.rot90(x, 1, (-2, -1)),
        "rot180": torch.rot90(x, 2, (-2, -1)),
        "rot270": torch.rot90(x, 3, (-2, -1)),
        "flip_h": x.flip(-1),
        "flip_v": x.flip(-2),
        "transpose": torch.stack([torch.tensor([[c[j, i] for j in range(n)] for i in range(n)]) for c in x]),
        "antitranspose": torch.stack([torch.tensor([[c[n - 1 - j, n - 1 - i] for j in range(n)] for i in range(n)])
                                      for c in x]),
    }
    # rot90 is counter-clockwise as displayed: the top-right corner moves to the top-left
    assert expected["rot90"][0, 0, 0] == x[0, 0, n - 1]
    assert list(grid.ELEMENT_NAMES) == list(expected)
    for e in grid.ELEMENTS:
        assert torch.equal(e.apply(x), expected[e.name]), e.name


def _compose(a, b):
    """The element equal to applying b, then a (found by acting on an index image)."""
    img = torch.arange(16.0).reshape(4, 4)
    out = a.apply(b.apply(img))
    if torch.equal(out, img):
        return None
    return next(e.name for e in grid.ELEMENTS if torch.equal(e.apply(img), out))


def test_the_ten_subgroups_are_exactly_the_subgroups_of_d4():
    closed = set()
    for r in range(8):
        for subset in itertools.combinations(grid.ELEMENT_NAMES, r):
            s = set(subset)
            if all(_compose(grid.BY_NAME[a], grid.BY_NAME[b]) in s | {None} for a in s for b in s):
                closed.add(frozenset(s))
    assert len(closed) == 10
    assert closed == set(grid.SUBGROUPS.values())
    sizes = [len(m) + 1 for m in grid.SUBGROUPS.values()]
    assert sizes == sorted(sizes, reverse=True)  # largest first: largest_exact_subgroup relies on it


@pytest.mark.parametrize("name,members", [
    ("C4", {"rot90", "rot180", "rot270"}), ("C8", {"rot90", "rot180", "rot270"}), ("C2", {"rot180"}),
    ("C6", {"rot180"}), ("C3", set()), ("SO2", {"rot90", "rot180", "rot270"}), ("D1", {"flip_h"}),
    ("D6", {"rot180", "flip_h", "flip_v"}), ("D8", set(grid.ELEMENT_NAMES)), ("O2", set(grid.ELEMENT_NAMES)),
    ("D4-grid", set(grid.ELEMENT_NAMES)), ("trivial", set()), ("d2[transpose,antitranspose]",
                                                              {"rot180", "transpose", "antitranspose"}),
    (["flip_v"], {"flip_v"}),
])
def test_group_names(name, members):
    assert grid.subgroup(name) == members


@pytest.mark.parametrize("bad", ["D2x", "C0", "Z4", ["rot45"]])
def test_bad_group_names_are_usage_errors(bad):
    with pytest.raises(UsageError, match="valid"):
        grid.subgroup(bad)


def test_tolerance_follows_compute_and_stored_dtype():
    assert grid.tolerance(torch.float64, torch.float64) == 1e-9
    assert grid.tolerance(torch.float64, torch.float32) == 1e-5
    assert grid.tolerance(torch.float32, torch.float64) == 1e-4
    assert grid.tolerance(torch.float64, None) == 1e-9


# ------------------------------------------------------------------------------------------------------------
# exact groups and where they break
# ------------------------------------------------------------------------------------------------------------
def test_plain_cnn_is_exact_under_nothing_and_breaks_at_its_first_conv():
    r = diagnose(cm.plain_cnn())
    assert r.exact_group == "trivial"
    assert all(e.exact is False and e.error > 1e-3 for e in r.elements)
    assert r.first_failing_element == "rot90"
    assert r.first_breaking_module == "features.0"
    assert set(r.breaks.values()) == {"features.0"}
    assert r.contract_group is None and all(e.claimed is None for e in r.elements)
    causes = {c.rule: c for c in r.causes}
    assert causes["anisotropic_kernel"].module == "features.0"
    assert "not_claimed" not in causes


@pytest.mark.parametrize("group", list(cm.GROUP_OPS))
def test_a_symmetrised_network_is_exact_under_exactly_its_group(group):
    r = diagnose(cm.symmetrized(group))
    assert r.exact_group == group
    members = grid.SUBGROUPS[group]
    for e in r.elements:
        assert e.exact == (e.element in members), e
        if e.element in members:
            assert e.error < 1e-13
        else:
            assert e.error > 1e-3


def test_isotropic_net_with_a_stride_is_exact_only_at_odd_sizes_and_names_the_strided_layer():
    exact = diagnose(cm.iso_strided_net(), (1, 9, 9))
    assert exact.exact_group == "D4"
    assert exact.first_failing_element is None and exact.first_breaking_module is None
    assert exact.causes == []
    assert all(m.exact is None and max(m.errors.values()) < 1e-12 for m in exact.modules)

    broken = diagnose(cm.iso_strided_net(), (1, 10, 10))
    # the stride-2 grid is shifted by the same half pixel along both axes: only the transpose survives
    assert broken.exact_group == "D1[transpose]"
    assert broken.first_breaking_module == "down"
    assert set(broken.breaks) == grid.SUBGROUPS["D4"] - {"transpose"}
    assert set(broken.breaks.values()) == {"down"}
    before = [m for m in broken.modules if m.name == "stem"]
    assert before and before[0].exact is True  # the stride-1 layer before it is still exact
    (cause,) = [c for c in broken.causes if c.rule == "strided_sampling_not_centred"]
    assert cause.module == "down" and "10 input rows" in cause.message
    assert not [c for c in broken.causes if c.rule == "unexplained"]


@pytest.mark.parametrize("factory,sizes", [(cm.iso_strided_net, [9, 11, 13, 15, 17]),
                                           (cm.iso_two_strides_net, [9, 13, 17])])
def test_size_scan_lists_the_sizes_where_the_model_is_exact(factory, sizes):
    r = diagnose(factory(), (1, 10, 10), sizes="8:17")
    assert r.sizes_group == "D4"
    assert r.exact_sizes == sizes
    assert [s.size for s in r.sizes] == list(range(8, 18))
    assert all(s.exact_group == ("D4" if s.size in sizes else "D1[transpose]") for s in r.sizes)


def test_size_scan_records_sizes_the_model_cannot_take():
    model = torch.nn.Sequential(cm.IsoConv2d(1, 2, 5))  # no padding: needs a side of at least 5
    r = diagnose(model, (1, 9, 9), sizes=[3, 9])
    assert r.sizes[0].exact_group is None and "the model raised" in r.sizes[0].error
    assert r.sizes[1].exact_group == "D4" and r.exact_sizes == [9]


def test_same_padding_with_an_even_kernel_keeps_only_the_transpose():
    r = diagnose(cm.same_even_net())
    assert r.exact_group == "D1[transpose]"
    assert r.first_breaking_module == "conv"
    (cause,) = [c for c in r.causes if c.rule == "asymmetric_padding"]
    assert cause.module == "conv" and "padding='same'" in cause.message
    assert "transpose" not in cause.elements and "antitranspose" in cause.elements


def test_functional_pad_in_forward_is_found_between_modules():
    r = diagnose(cm.LeftPadNet())
    assert r.exact_group == "D1[flip_v]"  # only the columns are shifted
    rules = {c.rule: c for c in r.causes}
    assert rules["asymmetric_padding"].module == ""  # the model's own forward
    assert rules["break_between_modules"].module == ""
    assert r.first_breaking_module == "conv"
    conv = next(m for m in r.modules if m.name == "conv")
    assert conv.input_error is None  # its input is not square any more: rot90 is not even defined


def test_flatten_then_linear_is_a_non_invariant_global_op():
    r = diagnose(cm.flatten_net())
    assert r.exact_group == "trivial"
    assert r.first_breaking_module == "flatten"
    assert [c.rule for c in r.causes] == ["flatten_map"]
    assert r.causes[0].module == "flatten"


def test_non_square_inputs_leave_rotations_undefined():
    r = diagnose(cm.iso_strided_net(), (1, 9, 11))
    undefined = {e.element for e in r.elements if e.exact is None}
    assert undefined == {"rot90", "rot270", "transpose", "antitranspose"}
    assert r.exact_group == "D2[flip_h,flip_v]"
    assert r.first_failing_element is None


# ------------------------------------------------------------------------------------------------------------
# field models: typed intermediates
# ------------------------------------------------------------------------------------------------------------
def _c4_types():
    from escnn import gspaces
    from escnn import nn as enn

    gs = gspaces.rot2dOnR2(4)
    return enn, enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, 3 * [gs.regular_repr])


def test_raw_escnn_module_takes_geometric_tensors_and_is_exact_under_c4():
    enn, ft_in, ft_out = _c4_types()
    torch.manual_seed(0)
    model = enn.SequentialModule(enn.R2Conv(ft_in, ft_out, 3, padding=1), enn.ReLU(ft_out),
                                 enn.R2Conv(ft_out, ft_out, 3, padding=1))
    r = diagnose(model)
    assert r.exact_group == "C4"
    assert r.output["compared"] == "field:regular"
    c4 = grid.SUBGROUPS["C4"]
    assert {m.name for m in r.modules} == {"0", "1", "2"}
    assert all(m.errors[e] < 1e-5 for m in r.modules for e in c4)
    assert all(m.compared.startswith("field") for m in r.modules)


def test_plain_batchnorm_on_regular_fields_is_named_as_the_break():
    """A plain-tensor field net (the zoo's TensorModule wrapping): a per-channel BatchNorm2d mixes nothing but
    scales the 4 channels of each regular field differently, which breaks rot90; the ReLU after the conv is
    compared as regular fields (its input's type), so it is not flagged."""
    from baselines.steerable import RegularGroupPooling, TensorModule

    enn, ft_in, ft_out = _c4_types()
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(ft_out.size)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
    model = torch.nn.Sequential(TensorModule(enn.R2Conv(ft_in, ft_out, 3, padding=1)), torch.nn.ReLU(inplace=True),
                                bn, RegularGroupPooling(3, 4))
    r = diagnose(model)
    assert r.exact_group == "trivial"
    assert r.first_failing_element == "rot90"
    assert r.first_breaking_module == "2"
    relu = next(m for m in r.modules if m.name == "1")
    assert relu.compared == "field:regular" and relu.exact
    assert next(m for m in r.modules if m.name == "0").exact


# ------------------------------------------------------------------------------------------------------------
# continuous angles
# ------------------------------------------------------------------------------------------------------------
def test_gaussian_blur_errs_exactly_its_floor_at_every_angle():
    r = bench.check(cm.GaussianBlurModel(), (1, 17, 17), angles="0:90:15")
    assert [a.angle_deg for a in r.angles] == [0, 15, 30, 45, 60, 75, 90]
    for a in r.angles:
        assert a.error == pytest.approx(a.blur_floor, rel=1e-9, abs=1e-15)
    assert r.angles[0].error == 0 and r.angles[-1].error < 1e-12 and r.angles[3].error > 1e-6
    assert r.exact_group == "D4" and r.output["compared"] == "scalar"
    assert r.lie_derivative_unit == "relative/rad" and 0 <= r.lie_derivative < 0.1


def test_default_angles_and_the_lie_derivative_of_a_network():
    r = bench.check(cm.plain_cnn(), SMALL)
    assert [a.angle_deg for a in r.angles] == list(range(0, 360, 10))
    assert r.angles[0].error == 0
    assert r.lie_derivative_unit == "1/rad" and r.lie_derivative > 0
    assert all(a.floor == a.input_floor for a in r.angles)  # invariant output: the input's round-trip floor


# ------------------------------------------------------------------------------------------------------------
# the library face
# ------------------------------------------------------------------------------------------------------------
def test_check_leaves_the_model_untouched_and_is_deterministic():
    model = cm.plain_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = diagnose(model)
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert a.to_json() == diagnose(model).to_json()
    assert a.to_json() != diagnose(model, seed=1).to_json()


def test_json_is_strict_and_has_the_documented_keys():
    d = json.loads(diagnose(cm.iso_strided_net(), (1, 10, 10), sizes="9:10").to_json())
    for key in ("target", "input_shape", "dtype", "elements", "exact_group", "first_breaking_module", "modules",
                "causes", "angles", "lie_derivative", "exact_sizes", "tolerance"):
        assert key in d
    assert d["input_shape"] == [1, 10, 10] and d["dtype"] == "float64"
    assert [set(e) >= {"element", "error", "exact"} for e in d["elements"]] == [True] * 7
    assert all(set(m) >= {"name", "error"} for m in d["modules"])
    assert d["exact_sizes"] == [9]
    assert "exact_sizes" not in json.loads(diagnose(cm.iso_strided_net()).to_json())


def test_a_model_stored_in_float64_gets_the_strict_tolerance():
    r = diagnose(cm.iso_strided_net().double())
    assert r.stored_dtype == "float64" and r.tolerance == 1e-9 and r.exact_group == "D4"
    assert diagnose(cm.iso_strided_net()).tolerance == 1e-5  # float32 parameters


def test_float32_uses_its_own_tolerance():
    r = diagnose(cm.iso_strided_net(), dtype="float32")
    assert r.dtype == "float32" and r.tolerance == 1e-4 and r.exact_group == "D4"


def test_a_model_that_raises_is_a_usage_error_with_its_message():
    with pytest.raises(UsageError, match="the model raised.*RuntimeError.*channels"):
        diagnose(cm.plain_cnn(), (3, 9, 9))


@pytest.mark.parametrize("kw,match", [({"input_shape": (1, 9)}, "three positive"),
                                      ({"input_shape": "1,0,9"}, "three positive"),
                                      ({"dtype": "float16"}, "float64, float32"),
                                      ({"rotation": "cubic"}, "valid"),
                                      ({"sizes": "9:3"}, "A:B"),
                                      ({"angles": "a:b"}, "angles")])
def test_bad_arguments_are_usage_errors(kw, match):
    args = {"input_shape": SMALL, **kw}
    with pytest.raises(UsageError, match=match):
        bench.check(cm.plain_cnn(), args.pop("input_shape"), **args)


def test_assert_equivariant_passes_and_fails_with_the_element_error_and_module():
    bench.assert_equivariant(cm.iso_strided_net(), "D4", input_shape=(1, 9, 9))
    bench.assert_equivariant(cm.iso_strided_net(), "D1[transpose]", input_shape=(1, 10, 10))
    with pytest.raises(AssertionError) as info:
        bench.assert_equivariant(cm.iso_strided_net(), "C4", input_shape=(1, 10, 10))
    msg = str(info.value)
    assert "rot90" in msg and "`down`" in msg and "likely cause" in msg and "not centred" in msg
    err = bench.check(cm.iso_strided_net(), (1, 10, 10), angles=None).element("rot90").error
    assert f"{err:.3g}" in msg
    with pytest.raises(AssertionError, match="rot180.*`features.0`"):
        bench.assert_equivariant(cm.plain_cnn(), "C2", input_shape=SMALL)
    with pytest.raises(AssertionError, match="undefined"):
        bench.assert_equivariant(cm.iso_strided_net(), "C4", input_shape=(1, 9, 11))
    with pytest.raises(UsageError):
        bench.assert_equivariant(cm.iso_strided_net(), "D3.5")


def test_assert_equivariant_atol_decides():
    model = cm.symmetrized("C2")
    err = bench.check(model, SMALL, angles=None).element("rot90").error
    bench.assert_equivariant(model, ["rot90"], input_shape=SMALL, atol=2 * err)
    with pytest.raises(AssertionError):
        bench.assert_equivariant(model, ["rot90"], input_shape=SMALL, atol=err / 2)
