"""Equivariance of GMR layers and networks: exact on the pixel grid's symmetries, approximate at 45 degrees."""

from __future__ import annotations

import pytest
import torch
import torchvision  # a declared suite dependency
from torch import nn

import gmr
from bench.rotation import bandlimited_images, disk_mask, rotate

# the 7 non-trivial symmetries of the square grid, acting on the last two axes
GRID_OPS = {
    "rot90": lambda t: torch.rot90(t, 1, (-2, -1)),
    "rot180": lambda t: torch.rot90(t, 2, (-2, -1)),
    "rot270": lambda t: torch.rot90(t, 3, (-2, -1)),
    "flip_h": lambda t: torch.flip(t, (-1,)),
    "flip_v": lambda t: torch.flip(t, (-2,)),
    "transpose": lambda t: t.transpose(-2, -1),
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _max_equivariance_error(f, x, op):
    """max |f(g x) - g f(x)| relative to max |f(x)| (channels are scalar fields: no permutation)."""
    with torch.no_grad():
        y = f(x)
        return ((f(op(x)) - op(y)).abs().max() / y.abs().max()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("impl", ["dense", "two_stage"])
@pytest.mark.parametrize("smoothing", ["ring", "radius"])
def test_layer_exactly_equivariant_on_grid(dtype, impl, smoothing):
    torch.manual_seed(0)
    layer = gmr.GMRConv2d(3, 4, 9, padding=4, smoothing=smoothing, impl=impl).to(dtype)
    with torch.no_grad():
        layer.log_sigmas.add_(0.5 * torch.randn_like(layer.log_sigmas))
    x = torch.randn(2, 3, 20, 20, dtype=dtype)
    for name, op in GRID_OPS.items():
        for training in (True, False):
            layer.train(training)
            assert _max_equivariance_error(layer, x, op) <= TOL[dtype], (name, training)


def test_plain_conv_fails_the_same_check():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 9, padding=4)
    x = torch.randn(2, 3, 20, 20)
    errors = [_max_equivariance_error(conv, x, op) for op in GRID_OPS.values()]
    assert min(errors) > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gmr_resnet18_logits_invariant_on_grid(dtype):
    torch.manual_seed(0)
    model = gmr.gmr_resnet18(10, kernel_sizes=[9, 9, 5, 5]).to(dtype)
    model.train()
    with torch.no_grad():  # realistic BN statistics (eval mode then uses them)
        model(torch.randn(4, 3, 32, 32, dtype=dtype))
    model.eval()
    x = torch.randn(1, 3, 32, 32, dtype=dtype)
    batch = torch.cat([x] + [op(x) for op in GRID_OPS.values()])
    with torch.no_grad():
        logits = model(batch)
    err = ((logits[1:] - logits[:1]).abs().max() / logits[0].abs().max()).item()
    assert err <= TOL[dtype]


def test_plain_resnet_is_not_invariant():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), model(torch.rot90(x, 1, (-2, -1)))
    assert ((a - b).abs().max() / a.abs().max()).item() > 1e-2


def _rot45_error(layer, x):
    """Relative L2 equivariance error at 45 degrees inside a disk away from the border."""
    with torch.no_grad():
        a = layer(rotate(x, 45.0, method="bicubic"))
        b = rotate(layer(x), 45.0, method="bicubic")
    mask = disk_mask(x.shape[-1], radius=(x.shape[-1] - 1) / 2 - 6)
    return ((a - b)[..., mask].norm() / b[..., mask].norm()).item()


def test_45_degrees_gmr_far_better_than_conv_and_radius_better_than_ring():
    x = bandlimited_images(2, 4, 41, cutoff=0.15, seed=0, dtype=torch.float64)
    errors: dict[str, list[float]] = {"conv2d": [], "ring": [], "radius": []}
    for seed in range(3):
        torch.manual_seed(seed)
        errors["conv2d"].append(_rot45_error(nn.Conv2d(4, 8, 9, padding=4).double(), x))
        for smoothing in ("ring", "radius"):
            torch.manual_seed(seed)
            layer = gmr.GMRConv2d(4, 8, 9, padding=4, smoothing=smoothing).double()
            errors[smoothing].append(_rot45_error(layer, x))
    mean = {k: sum(v) / len(v) for k, v in errors.items()}
    # measured (41x41, k=9, initial sigma): conv2d ~1.2, ring ~0.09, radius ~0.02
    assert mean["ring"] < 0.2 * mean["conv2d"], mean
    assert mean["radius"] < 0.5 * mean["ring"], mean


@pytest.mark.parametrize("impl", ["dense", "two_stage"])
@pytest.mark.parametrize("smoothing", ["ring", "radius"])
def test_conv3d_equivariant_to_90_degree_volume_rotations(impl, smoothing):
    torch.manual_seed(0)
    layer = gmr.GMRConv3d(2, 3, 5, padding=2, impl=impl, smoothing=smoothing).double()
    x = torch.randn(1, 2, 10, 10, 10, dtype=torch.float64)
    ops = [lambda t, p=p: torch.rot90(t, 1, p) for p in [(-3, -2), (-3, -1), (-2, -1)]]
    ops += [lambda t: torch.flip(t, (-3,)), lambda t: t.permute(0, 1, 4, 2, 3)]
    with torch.no_grad():
        y = layer(x)
        for op in ops:
            assert ((layer(op(x)) - op(y)).abs().max() / y.abs().max()).item() <= 1e-10


def test_convert_torchvision_resnet18_runs_and_is_invariant():
    torch.manual_seed(0)
    model, unchanged = gmr.convert_to_gmr(torchvision.models.resnet18(num_classes=10))
    assert unchanged == []
    leftover = [m for m in model.modules() if type(m) is nn.Conv2d and max(m.kernel_size) > 1]
    assert not leftover
    assert any(isinstance(m, gmr.GMRConv2d) for m in model.modules())
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    batch = torch.cat([x] + [op(x) for op in GRID_OPS.values()])
    with torch.no_grad():
        logits = model(batch)
    assert logits.shape == (7, 10)
    assert ((logits[1:] - logits[:1]).abs().max() / logits[0].abs().max()).item() <= 1e-5
