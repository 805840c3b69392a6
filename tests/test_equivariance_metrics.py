"""Known answers for the equivariance protocol's numerical kernels and its measurement loop."""

import pytest
import torch

from bench.contract import INVARIANT, SCALAR, SymmetryContract
from bench.equivariance_metrics import (
    blur_floor,
    gaussian_blur,
    lie_derivative_logits,
    lie_derivative_map,
    masked_relative_error,
    roundtrip_floor,
)
from bench.errors import UsageError
from bench.protocols import get_protocol
from bench.protocols.equivariance import measure
from bench.rotation import bandlimited_images, parse_angles


class Identity(torch.nn.Module):
    symmetry = SymmetryContract("SO2", {"out": SCALAR})

    def forward(self, x):
        return x


class Blur(torch.nn.Module):
    symmetry = SymmetryContract("SO2", {"out": SCALAR})

    def forward(self, x):
        return gaussian_blur(x, 1.5)


class PlainConv(torch.nn.Module):
    symmetry = SymmetryContract("trivial", {"out": SCALAR})

    def __init__(self, c=4, k=5):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(c, c, k, padding=k // 2)

    def forward(self, x):
        return self.conv(x)


class InvariantNet(torch.nn.Module):
    """Blur then global mean: continuous-rotation invariant logits up to interpolation."""

    symmetry = SymmetryContract("SO2", {"logits": INVARIANT})

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(gaussian_blur(x, 1.0).mean(dim=(-2, -1)))

    def forward_features(self, x):
        return {"logits": self.forward(x)}


def errors(rows, metric="equivariance_error", reflect="none", feature=None):
    return {r["angle_deg"]: r["value"] for r in rows
            if r["metric"] == metric and r["reflect"] == reflect and (feature is None or r["feature"] == feature)}


@pytest.fixture(scope="module")
def x():
    return bandlimited_images(8, 4, 33, seed=0, dtype=torch.float64)


@pytest.fixture(scope="module")
def settings():
    return get_protocol("equivariance").settings({"angles": "0:360:15", "rotation": "bicubic", "per_layer": False})


def test_identity_model_has_zero_error_everywhere(x, settings):
    rows = measure(Identity().double(), x, settings)
    assert max(errors(rows).values()) == 0.0
    assert max(errors(rows, reflect="h").values()) == 0.0
    assert [r["value"] for r in rows if r["metric"] == "lie_derivative"] == [0.0]


def test_blur_sits_exactly_on_the_blur_floor_and_is_exact_on_the_grid(x, settings):
    rows = measure(Blur().double(), x, settings)
    err = errors(rows)
    floor = dict(zip(parse_angles(settings.angles), blur_floor(x, parse_angles(settings.angles), "bicubic", 1.5).tolist()))
    for a, e in err.items():
        assert e == pytest.approx(floor[a], rel=1e-9, abs=1e-15)
    assert err[90] < 1e-12 and err[180] < 1e-12
    assert 1e-4 < err[45] < 0.05


def test_plain_conv_is_clearly_not_equivariant(x, settings):
    rows = measure(PlainConv().double(), x, settings)
    err = errors(rows)
    assert err[0] == 0.0
    assert err[45] > 0.3 and err[90] > 0.3
    assert errors(rows, reflect="h")[0] > 0.3


def test_roundtrip_floor_is_zero_on_grid_and_shrinks_with_better_interpolation(x):
    angles = [0.0, 30.0, 90.0]
    bil = roundtrip_floor(x, angles, "bilinear")
    fou = roundtrip_floor(x, angles, "fourier")
    assert bil[0] == 0 and bil[2] == 0
    assert fou[1] * 10 < bil[1]


def test_invariance_and_agreement_of_an_invariant_net(x, settings):
    torch.manual_seed(0)
    rows = measure(InvariantNet().double(), x, settings)
    inv = errors(rows, "invariance_error")
    assert inv[90] < 1e-12 and inv[45] < 0.02
    agree = errors(rows, "prediction_agreement")
    assert agree[0] == 1.0 and agree[90] == 1.0


def test_lie_derivative_separates_invariant_from_plain(x):
    torch.manual_seed(0)
    inv = InvariantNet().double()
    lee_inv = lie_derivative_logits(inv, x, "bicubic").mean()
    plain = torch.nn.Sequential(torch.nn.Conv2d(4, 3, 5), torch.nn.Flatten(), torch.nn.LazyLinear(3)).double()
    plain(x)
    lee_plain = lie_derivative_logits(plain, x, "bicubic").mean()
    assert lee_inv < 0.1 * lee_plain
    assert lie_derivative_map(lambda t: t, x, "bicubic").abs().max() == 0.0


def test_lie_derivative_matches_finite_difference(x):
    """d/dtheta at 0 via jvp equals a central difference of the same differentiable rotation."""
    from bench.rotation import rotate_interpolated

    torch.manual_seed(0)
    net = InvariantNet().double()
    eps = 1e-4
    t = torch.tensor(eps, dtype=torch.float64)
    fd = (torch.softmax(net(rotate_interpolated(x, t, "fourier")), -1)
          - torch.softmax(net(rotate_interpolated(x, -t, "fourier")), -1)) / (2 * eps)
    assert torch.allclose(lie_derivative_logits(net, x, "fourier"), fd.abs().mean(-1), rtol=1e-3, atol=1e-8)


def test_same_seed_same_numbers(settings):
    a = measure(PlainConv(), bandlimited_images(4, 4, 29, seed=7), settings)
    b = measure(PlainConv(), bandlimited_images(4, 4, 29, seed=7), settings)
    assert a == b


def test_masked_relative_error_ignores_outside_of_mask():
    t = torch.ones(1, 1, 5, 5)
    p = t.clone()
    p[..., 0, 0] = 100.0
    from bench.rotation import disk_mask

    assert masked_relative_error(p, t, disk_mask(5)).item() == 0.0
    assert masked_relative_error(p, t).item() > 1


def test_angle_parsing_and_validation():
    assert parse_angles("0:360:90") == [0, 90, 180, 270, 360]  # inclusive: the stop is kept when it lands
    assert parse_angles("0:355:5")[-1] == 355 and len(parse_angles("0:355:5")) == 72
    assert parse_angles("10,22.5") == [10, 22.5]
    assert parse_angles("0:20:10,15,10") == [0, 10, 15, 20]  # ranges and points combine, sorted, no repeats
    for bad in ("0:360:0", "a:b:c", "360:0:5"):
        with pytest.raises(UsageError):
            parse_angles(bad)
    with pytest.raises(UsageError, match="(?i)valid"):
        get_protocol("equivariance").settings({"angle": "0:90:10"})
    with pytest.raises(UsageError, match="fourier"):
        get_protocol("equivariance").settings({"rotation": "lanczos"})


def test_feature_maps_get_their_own_floor(x, settings):
    rows = measure(Blur().double(), x, settings)
    floors = {r["angle_deg"]: r["value"] for r in rows if r["metric"] == "interpolation_floor" and r["feature"] == "out"}
    assert floors[90] == 0.0 and floors[45] > 0
    assert floors[45] == pytest.approx(roundtrip_floor(gaussian_blur(x, 1.5), [45.0], "bicubic").item(), rel=1e-9)
