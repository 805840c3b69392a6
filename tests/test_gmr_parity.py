"""Parity of our GMR layers and GMR-ResNet with the official GMR-Conv 1.0.3 package (installed in CI)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from GMR_Conv import gmr_conv as official  # the reference package; CI installs it (no silent skip)
from GMR_Conv import gmr_resnet as official_resnet
from torch import nn

import gmr
from bench.errors import UsageError

TOL = 1e-5  # max abs difference, fp32


def _official_2d(**kw):
    # keywords only: the official GMR_Conv2d shifts its positional arguments (dw_fwd lands in clip_sigma)
    return official.GMR_Conv2d(**kw)


@pytest.mark.parametrize("k", [3, 5, 7, 9, 11])
@pytest.mark.parametrize("force_circular", [True, False])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_layer_matches_official(k, force_circular, stride, dilation):
    torch.manual_seed(k * 100 + stride * 10 + dilation)
    ref = _official_2d(in_channels=3, out_channels=5, kernel_size=k, stride=stride, dilation=dilation,
                       padding=dilation * (k // 2), force_circular=force_circular)
    with torch.no_grad():  # non-default sigmas so the mixture matters
        ref.log_sigmas.add_(0.3 * torch.randn_like(ref.log_sigmas))
    x = torch.randn(2, 3, 17, 17)
    for impl in ("dense", "two_stage"):
        ours = gmr.from_official(ref, impl=impl)
        assert ours.num_rings == ref.num_rings
        for training in (True, False):
            ref.train(training)
            ours.train(training)
            want = ref(x)
            got = ours(x)
            assert got.shape == want.shape
            diff = (got - want).abs().max().item()
            assert diff <= TOL, (impl, training, diff)


@pytest.mark.parametrize("impl", ["dense", "two_stage"])
def test_gradients_match_official(impl):
    torch.manual_seed(0)
    ref = _official_2d(in_channels=4, out_channels=3, kernel_size=7, padding=3)
    ours = gmr.from_official(ref, impl=impl)
    x = torch.randn(2, 4, 12, 12)
    g = torch.randn(2, 3, 12, 12)
    xr, xo = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ref(xr) * g).sum().backward()
    (ours(xo) * g).sum().backward()
    for a, b in [(ours.weight.grad, ref.weight.grad), (ours.log_sigmas.grad, ref.log_sigmas.grad),
                 (ours.bias.grad, ref.bias.grad), (xo.grad, xr.grad)]:
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()


def test_official_layer_without_mixture_and_fixed_sigma():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 11, 11)
    for kw in ({"gaussian_mixture_ring": False}, {"train_gaussian_sigma": False}, {"num_rings": 3}):
        ref = _official_2d(in_channels=2, out_channels=2, kernel_size=5, padding=2, **kw)
        ours = gmr.from_official(ref)
        assert (ours(x) - ref(x)).abs().max().item() <= TOL, kw
        assert isinstance(ours.log_sigmas, torch.nn.Parameter) == isinstance(
            getattr(ref, "log_sigmas", None), torch.nn.Parameter)


def test_conv3d_matches_official():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 9, 9, 9)
    for k, fc in [(3, True), (5, True), (5, False)]:
        ref = official.GMR_Conv3d(in_channels=2, out_channels=3, kernel_size=k, padding=k // 2,
                                  force_circular=fc)
        for impl in ("dense", "two_stage"):
            ours = gmr.from_official(ref, impl=impl)
            for training in (True, False):
                ref.train(training)
                ours.train(training)
                assert (ours(x) - ref(x)).abs().max().item() <= TOL, (k, fc, impl, training)


def test_parameter_count_matches_official_and_spec():
    ours = gmr.gmr_resnet18(10, kernel_sizes=[9, 9, 5, 5])
    ref = official_resnet.gmr_resnet18(num_classes=10, gmr_conv_size=[9, 9, 5, 5])
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in ref.parameters())
    assert n_ours == 3_996_685


@pytest.mark.parametrize("name", ["gmr_resnet34", "gmr_resnet50"])
def test_deeper_resnets_match_official_structure(name):
    ours = getattr(gmr, name)(10, kernel_sizes=[9, 9, 5, 5])
    ref = getattr(official_resnet, name)(num_classes=10, gmr_conv_size=[9, 9, 5, 5])
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    gmr.load_official_state_dict(ours, ref.state_dict())  # strict


def test_official_state_dict_loads_and_matches():
    torch.manual_seed(3)
    ref = official_resnet.gmr_resnet18(num_classes=10, gmr_conv_size=[9, 9, 5, 5])
    ours = gmr.gmr_resnet18(10, kernel_sizes=[9, 9, 5, 5])
    # give BN non-trivial statistics so the comparison is not dominated by exploding activations
    ref.train()
    with torch.no_grad():
        ref(torch.randn(2, 3, 32, 32))
    gmr.load_official_state_dict(ours, ref.state_dict())  # strict: every key accounted for
    ref.eval()
    ours.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())


def test_from_official_keeps_declared_padding_mode():
    # the official 2D forward ignores padding_mode (a defect); ours honours it, and can reproduce the official
    torch.manual_seed(4)
    ref = _official_2d(in_channels=2, out_channels=2, kernel_size=5, padding=2, padding_mode="reflect")
    x = torch.randn(1, 2, 10, 10)
    honest = gmr.from_official(ref)
    assert honest.padding_mode == "reflect"
    assert (honest(x) - honest.export()(x)).abs().max().item() <= TOL
    assert (honest(x) - ref(x)).abs().max().item() > 1e-3
    as_official = gmr.from_official(ref, padding_mode="zeros")
    assert (as_official(x) - ref(x)).abs().max().item() <= TOL


# ------------------------------------------------------------------------- checkpoints with learned ring masks
def _as_gmr_conv_102(model: nn.Module) -> nn.Module:
    """What GMR-Conv <= 1.0.2 builds by default: ring masks as trainable parameters (train_index_mat=True).

    The 1.0.2 wheel differs from 1.0.3 only in that default (diffed), so this is the 1.0.2 model."""
    for m in model.modules():
        if isinstance(m, (official.GMR_Conv2d, official.GMR_Conv3d)):
            m.train_index_mat = True
            m.weight_index_mat = nn.Parameter(m._buffers.pop("weight_index_mat").clone())
    return model


def _official_resnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return official_resnet.gmr_resnet18(num_classes=10, gmr_conv_size=[9, 9, 5, 5])


def _train_steps(model: nn.Module, steps: int = 2) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,))).backward()
        opt.step()


def test_checkpoint_with_learned_ring_masks_is_refused_naming_the_version():
    ref = _as_gmr_conv_102(_official_resnet(5))
    _train_steps(ref)
    sd = ref.state_dict()
    assert (sd["conv1.weight_index_mat"] != sd["conv1.default_weight_index_mat"]).any()  # the masks learned
    ours = gmr.gmr_resnet18(10, kernel_sizes=[9, 9, 5, 5], impl="dense")
    # what the old loader did: drop the masks, load the rest. Every key matches, the function does not.
    ours.load_state_dict({k: v for k, v in sd.items() if "index_mat" not in k and not k.endswith(".mus")})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = ref.eval()(x)
        delta = ((ours.eval()(x) - want).abs().max() / want.abs().max()).item()
    assert delta > 1e-3  # measured: 1-4 % of the largest logit after 1-10 steps
    for strict in (True, False):
        with pytest.raises(UsageError, match=r"conv1\.weight_index_mat: .*GMR-Conv <= 1\.0\.2"):
            gmr.load_official_state_dict(ours, sd, strict=strict)
    with pytest.raises(UsageError, match=r"train_index_mat=True.*1\.0\.2"):
        gmr.convert_official_state_dict(sd)
    # the check does not depend on the stored defaults: our own ring geometry is the reference
    stripped = {k: v for k, v in sd.items() if not k.endswith("default_weight_index_mat")}
    with pytest.raises(UsageError, match="1.0.2"):
        gmr.load_official_state_dict(ours, stripped, strict=False)
    with pytest.raises(UsageError, match="1.0.2"):
        gmr.from_official(ref.conv1)


def test_learned_masks_are_refused_for_single_layers_2d_and_3d():
    torch.manual_seed(6)
    for layer in (_official_2d(in_channels=2, out_channels=2, kernel_size=5, padding=2),
                  official.GMR_Conv3d(in_channels=2, out_channels=2, kernel_size=3, padding=1)):
        with torch.no_grad():
            layer.weight_index_mat[..., 0, 0] += 1e-3  # the smallest learned change still changes the kernel
        with pytest.raises(UsageError, match=r"max \|delta\| = 0\.001.*1\.0\.2"):
            gmr.from_official(layer)


def test_gmr_conv_102_checkpoint_with_untouched_masks_loads_and_matches():
    """The version alone is no reason to refuse: masks that never moved give the same function."""
    ref = _as_gmr_conv_102(_official_resnet(7))
    ref.train()
    with torch.no_grad():
        ref(torch.randn(2, 3, 32, 32))  # BN statistics
    ours = gmr.gmr_resnet18(10, kernel_sizes=[9, 9, 5, 5])
    gmr.load_official_state_dict(ours, ref.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, got = ref.eval()(x), ours.eval()(x)
    assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())


def test_masks_of_the_wrong_geometry_are_refused():
    ref = _official_2d(in_channels=2, out_channels=2, kernel_size=5, padding=2)
    sd = {"conv.weight_index_mat": ref.weight_index_mat, "conv.default_weight_index_mat": ref.weight_index_mat[..., :-1]}
    with pytest.raises(UsageError, match="do not fit"):
        gmr.convert_official_state_dict(sd)
