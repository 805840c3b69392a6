"""GMRConv2d/3d behaviour: dense == two_stage everywhere, padding semantics, eval cache, validation, fuzzing."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gmr
from gmr import rings


def _both(layer, x):
    outs = []
    for impl in ("dense", "two_stage"):
        layer.impl = impl
        outs.append(layer(x))
    return outs


# ------------------------------------------------------------------------------------------ dense == two_stage
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_impls_agree_and_match_plain_conv_semantics(groups, padding_mode):
    torch.manual_seed(groups)
    layer = gmr.GMRConv2d(4, 8, 5, stride=(1, 2), padding=(2, 1), dilation=(1, 2), groups=groups,
                          padding_mode=padding_mode, smoothing="radius")
    x = torch.randn(2, 4, 13, 15)
    dense, two = _both(layer, x)
    ref = layer.export()(x)  # nn.Conv2d with the assembled kernel: torch's own padding/stride semantics
    assert dense.shape == two.shape == ref.shape
    assert (dense - two).abs().max().item() <= 1e-5
    assert (dense - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("padding", ["same", "valid", 0, 3, (1, 3)])
@pytest.mark.parametrize("dilation", [1, 2])
def test_padding_forms(padding, dilation):
    torch.manual_seed(0)
    layer = gmr.GMRConv2d(3, 2, 5, padding=padding, dilation=dilation)
    x = torch.randn(1, 3, 14, 12)
    dense, two = _both(layer, x)
    ref = layer.export()(x)
    assert dense.shape == ref.shape
    if padding == "same":
        assert dense.shape[-2:] == x.shape[-2:]
    assert torch.allclose(dense, two, atol=1e-5) and torch.allclose(dense, ref, atol=1e-5)


def test_unbatched_input_and_3d_impls_agree():
    torch.manual_seed(0)
    layer = gmr.GMRConv2d(2, 3, 3, padding=1)
    x = torch.randn(2, 7, 7)
    assert torch.allclose(layer(x), layer(x[None])[0])
    vol = gmr.GMRConv3d(4, 4, 3, stride=2, padding=1, groups=2, padding_mode="replicate")
    v = torch.randn(1, 4, 7, 8, 9)
    dense, two = _both(vol, v)
    assert torch.allclose(dense, two, atol=1e-5)
    assert torch.allclose(dense, vol.export()(v), atol=1e-5)


def test_two_stage_returns_the_input_memory_format():
    layer = gmr.GMRConv2d(4, 4, 3, padding=1, impl="two_stage")
    x = torch.randn(2, 4, 8, 8)
    assert layer(x).is_contiguous()
    assert layer(x.contiguous(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------------------- kernels
def test_kernel_is_isotropic_and_ring_structure_matches_spec():
    layer = gmr.GMRConv2d(1, 1, 9, bias=False, gaussian_mixture=False)
    assert layer.num_rings == 5
    masks = rings.ring_masks(9, 2, 5, True)
    assert masks.sum(1).tolist() == [1, 8, 12, 16, 32]
    assert 81 - masks.sum().item() == 12  # corners cut
    for smoothing in ("ring", "radius"):
        b = gmr.GMRConv2d(2, 2, 7, smoothing=smoothing).basis()
        for t in (b.flip(-1), b.flip(-2), b.transpose(-1, -2), torch.rot90(b, 1, (-2, -1))):
            assert torch.equal(t, b)  # exactly symmetric, bit for bit


def test_radius_smoothing_is_smooth_in_radius():
    """Radius mode profiles vary with each pixel's radius inside a ring; ring mode is constant per ring."""
    ring = gmr.GMRConv2d(1, 1, 9, smoothing="ring").basis()[2]
    rad = gmr.GMRConv2d(1, 1, 9, smoothing="radius").basis()[2]
    # pixels (0, 2) and (1, 2) (radii 2 and 2.24) share ring 2
    assert ring[4, 6] == ring[5, 6]
    assert rad[4, 6] != rad[5, 6]
    # sigma is in ring units == pixels for the default geometry: a wide component is a smooth bump around r = 2
    layer = gmr.GMRConv2d(1, 1, 9, smoothing="radius")
    with torch.no_grad():
        layer.log_sigmas.fill_(math.log(1.0))
    profile = layer.basis()[2][4, 4:]  # radii 0..4 along an axis
    assert int(profile.argmax()) == 2


def test_initialisation_like_official():
    torch.manual_seed(0)
    layer = gmr.GMRConv2d(16, 32, 5)
    bound = 1 / math.sqrt(16 * 25)
    assert layer.weight.shape == (32, 16, 3)
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert torch.allclose(layer.sigmas(), torch.full((3,), (5 / 4) / 2.355))
    fixed = gmr.GMRConv2d(2, 2, 5, train_sigma=False)
    assert "log_sigmas" in dict(fixed.named_buffers()) and "log_sigmas" not in dict(fixed.named_parameters())
    assert set(fixed.state_dict()) == {"weight", "bias", "log_sigmas"}


def test_choose_impl_cost_model():
    # huge channel counts with a big kernel: the two-stage path is far cheaper; tiny channels: dense
    assert gmr.choose_impl(256, 256, 11, 6) == "two_stage"
    assert gmr.choose_impl(4, 4, 3, 2) == "dense"
    costs = gmr.impl_costs(64, 64, 9, 5, device_type="cpu")
    assert costs["dense"] == 64 * 64 * 81
    layer = gmr.GMRConv2d(4, 4, 3)
    assert layer.resolve_impl() in ("dense", "two_stage")


# ----------------------------------------------------------------------------------------------- eval cache
def _uncached_output(layer, x):
    """What the layer must output: the same path computed from scratch by a copy (copies carry no cache)."""
    fresh = copy.deepcopy(layer)
    assert not fresh._kernel_cache
    with torch.no_grad():
        return fresh(x)


def _assert_fresh(layer, x):
    """Cached output == uncached output of the same path, bit for bit (a stale kernel cannot pass), and both
    match torch's own conv with the assembled kernel to float rounding *relative to the output's size*."""
    with torch.no_grad():
        got = layer(x)
        ref = layer.export()(x)
    assert torch.equal(got, _uncached_output(layer, x))
    eps = torch.finfo(x.dtype).eps
    assert (got - ref).abs().max() <= 64 * eps * ref.abs().max()


@pytest.mark.parametrize("impl", ["dense", "two_stage"])
def test_eval_cache_is_used_and_never_stale(impl):
    torch.manual_seed(0)
    layer = gmr.GMRConv2d(3, 4, 5, padding=2, impl=impl).eval()
    x = torch.randn(1, 3, 9, 9)
    calls = {"n": 0}
    original = layer.basis

    def counting_basis():
        calls["n"] += 1
        return original()

    layer.basis = counting_basis
    with torch.no_grad():
        layer(x)
        layer(x)
    assert calls["n"] == 1  # second forward reused the cached kernel
    del layer.basis

    with torch.no_grad():
        layer.weight.mul_(-2.0)  # in-place (bumps the version counter)
    _assert_fresh(layer, x)
    with torch.no_grad():
        layer.log_sigmas.add_(0.7)  # change sigma after .eval()
    _assert_fresh(layer, x)
    other = gmr.GMRConv2d(3, 4, 5, padding=2)
    layer.load_state_dict(other.state_dict())
    _assert_fresh(layer, x)
    with torch.no_grad():
        want = other.eval()(x)
        assert (layer(x) - want).abs().max() <= 1e-6 * want.abs().max()
    layer.weight = nn.Parameter(torch.randn_like(layer.weight))  # re-assigned parameter (outputs ~25, not ~1)
    _assert_fresh(layer, x)
    layer.weight.data = torch.randn_like(layer.weight)  # new storage behind the same Parameter object
    _assert_fresh(layer, x)
    layer.verify_cache_values = True
    layer(x)
    layer.weight.data.add_(0.5)  # .data edit: invisible to the version counter, caught by the value check
    _assert_fresh(layer, x)
    layer.verify_cache_values = False
    layer.double()
    _assert_fresh(layer, x.double())


def test_eval_cache_with_a_parametrized_weight():
    """A weight behind torch.nn.utils.parametrize is recomputed on every access: the cache must follow it."""
    from torch.nn.utils import parametrize

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.tensor(2.0))

        def forward(self, w):
            return w * self.s

    torch.manual_seed(0)
    layer = gmr.GMRConv2d(2, 3, 3, padding=1, impl="dense", bias=False)
    parametrize.register_parametrization(layer, "weight", Scale())
    layer.eval()
    x = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        before = layer(x)
        layer.parametrizations.weight[0].s.fill_(-1.0)
        after = layer(x)
    assert torch.allclose(after, -0.5 * before, atol=1e-6)


def test_train_mode_has_no_cache_and_gradients_flow():
    for impl in ("dense", "two_stage"):
        for smoothing in ("ring", "radius"):
            layer = gmr.GMRConv2d(2, 3, 5, padding=2, impl=impl, smoothing=smoothing)
            layer(torch.randn(1, 2, 8, 8)).square().sum().backward()
            assert layer.weight.grad.abs().sum() > 0
            assert layer.log_sigmas.grad.abs().sum() > 0
            assert not layer._kernel_cache
    # eval mode with autograd enabled still gives parameter gradients (no detached cache)
    layer = gmr.GMRConv2d(2, 3, 5, padding=2).eval()
    layer(torch.randn(1, 2, 8, 8)).sum().backward()
    assert layer.weight.grad is not None


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"kernel_size": 4}, "odd"),
        ({"kernel_size": (3, 5)}, "odd"),
        ({"kernel_size": 0}, ">= 1"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": -1}, "out_channels"),
        ({"stride": 0}, "stride"),
        ({"dilation": (1, 0)}, "dilation"),
        ({"padding": -1}, "padding"),
        ({"padding": "full"}, "'same', 'valid'"),
        ({"padding": "same", "stride": 2}, "stride 1"),
        ({"groups": 3}, "divisible"),
        ({"impl": "fast"}, "'auto', 'dense', 'two_stage'"),
        ({"smoothing": "pixel"}, "'ring', 'radius'"),
        ({"padding_mode": "mirror"}, "'zeros', 'reflect', 'replicate', 'circular'"),
        ({"num_rings": 0}, "num_rings"),
        ({"sigma_scale": 0.0}, "sigma_scale"),
    ],
)
def test_bad_arguments_raise_value_error_naming_valid_values(kwargs, fragment):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3} | kwargs
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        gmr.GMRConv2d(**args)


def test_impl_setter_validates():
    layer = gmr.GMRConv2d(2, 2, 3)
    with pytest.raises(ValueError, match="two_stage"):
        layer.impl = "fft"


_ints = st.one_of(st.integers(-2, 5), st.just(1.5), st.just("3"), st.none(), st.booleans())
_sizes = st.one_of(_ints, st.tuples(st.integers(-1, 5), st.integers(-1, 5)), st.tuples(st.integers(1, 3)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    in_channels=_ints, out_channels=_ints, kernel_size=_sizes, stride=_sizes, dilation=_sizes,
    padding=st.one_of(_sizes, st.sampled_from(["same", "valid", "bogus"])), groups=_ints,
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular", "nope"]),
    num_rings=st.one_of(st.none(), st.integers(-1, 6)), smoothing=st.sampled_from(["ring", "radius", "x"]),
    impl=st.sampled_from(["auto", "dense", "two_stage", "y"]), force_circular=st.booleans(),
    gaussian_mixture=st.booleans(), sigma_scale=st.one_of(st.floats(-1, 5), st.just(float("nan"))),
)
def test_constructor_fuzz_only_value_or_type_errors(in_channels, out_channels, kernel_size, stride, dilation,
                                                    padding, groups, padding_mode, num_rings, smoothing, impl,
                                                    force_circular, gaussian_mixture, sigma_scale):
    try:
        layer = gmr.GMRConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, padding_mode=padding_mode, num_rings=num_rings,
                              smoothing=smoothing, impl=impl, force_circular=force_circular,
                              gaussian_mixture=gaussian_mixture, sigma_scale=sigma_scale)
    except (ValueError, TypeError):
        return
    _run_both(layer)


def _run_both(layer):
    """A valid layer must run on an input large enough for it, and both implementations must agree."""
    k, d = layer.kernel_size[0], max(layer.dilation)
    pad = max(layer._padding_numbers())
    side = d * (k - 1) + 1 + 2 * pad + 2
    x = torch.randn(1, layer.in_channels, side, side)
    dense, two = _both(layer, x)
    assert torch.isfinite(dense).all()
    assert torch.allclose(dense, two, atol=1e-5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=st.integers(1, 3), cin_mult=st.integers(1, 2), cout_mult=st.integers(1, 2),
    kernel_size=st.sampled_from([1, 3, 5, 7]), stride=st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 2),
                                                                                            st.integers(1, 2))),
    dilation=st.integers(1, 2), padding=st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                                   st.just("valid")),
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    num_rings=st.one_of(st.none(), st.integers(1, 5)), smoothing=st.sampled_from(["ring", "radius"]),
    force_circular=st.booleans(), gaussian_mixture=st.booleans(), train_sigma=st.booleans(),
    clip_sigma=st.booleans(), bias=st.booleans(),
)
def test_valid_configs_fuzz_impls_agree(groups, cin_mult, cout_mult, kernel_size, stride, dilation, padding,
                                        padding_mode, num_rings, smoothing, force_circular, gaussian_mixture,
                                        train_sigma, clip_sigma, bias):
    layer = gmr.GMRConv2d(groups * cin_mult, groups * cout_mult, kernel_size, stride=stride, padding=padding,
                          dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
                          num_rings=num_rings, force_circular=force_circular, gaussian_mixture=gaussian_mixture,
                          train_sigma=train_sigma, clip_sigma=clip_sigma, smoothing=smoothing)
    _run_both(layer)
