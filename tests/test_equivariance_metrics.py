"""Known answers for the equivariance protocol's numerical kernels and its measurement loop."""

import dataclasses

import pytest
import torch

from bench.contract import INVARIANT, SCALAR, SymmetryContract
from bench.equivariance_metrics import (
    blur_floor,
    gaussian_blur,
    lie_derivative_logits,
    lie_derivative_map,
    masked_relative_error,
    rotation_tangent,
    roundtrip_floor,
)
from bench.errors import UsageError
from bench.protocols import get_protocol
from bench.protocols.equivariance import measure
from bench.rotation import METHODS, bandlimited_images, parse_angles


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


def floors(rows, feature="out", kind="blur"):
    return {r["angle_deg"]: r["value"] for r in rows if r["metric"] == "interpolation_floor"
            and r["feature"] == feature and r.get("floor_kind") == kind}


def test_blur_sits_exactly_on_its_feature_floor_and_is_exact_on_the_grid(x, settings):
    """A Gaussian blur is the floor's own operator: its error equals its map's floor at every angle, in the
    comparison disk (shrunk by its 5-px padding margin) and on the whole disk (margin='none', where the map's
    floor is the input's blur floor). Before, a map's floor was its round trip, which the blur does not meet."""
    rows = measure(Blur().double(), x, settings)
    err, floor = errors(rows), floors(rows)
    assert set(err) == set(floor)
    for a, e in err.items():
        assert e == pytest.approx(floor[a], rel=1e-9, abs=1e-15)
    assert err[90] < 1e-12 and err[180] < 1e-12
    assert 1e-4 < err[45] < 0.05
    whole = measure(Blur().double(), x, dataclasses.replace(settings, margin="none"))
    angles = parse_angles(settings.angles)
    input_floor = dict(zip(angles, blur_floor(x, angles, "bicubic", 1.5).tolist()))
    for a, e in errors(whole).items():
        assert e == pytest.approx(input_floor[a], rel=1e-9, abs=1e-15)
        assert floors(whole)[a] == pytest.approx(input_floor[a], rel=1e-9, abs=1e-15)


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


def blob(size: int, x0: float, y0: float, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian blob at display position (x0, y0) from the centre, and its analytic rotation derivative:
    R_t g (p) = g(R_-t p), so d/dt at 0 = grad g . (y, -x)."""
    c = (size - 1) / 2
    xs = torch.arange(size, dtype=torch.float64)[None, :] - c
    ys = c - torch.arange(size, dtype=torch.float64)[:, None]
    g = torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * sigma**2))
    dgx, dgy = -(xs - x0) / sigma**2 * g, -(ys - y0) / sigma**2 * g
    return g[None, None], (ys * dgx - xs * dgy)[None, None]


def blob_images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Sums of 6 signed Gaussian blobs (sigma 2.5 px) within 9 px of the centre: smooth and compact, so
    Fourier rotation and the spectral tangent are exact on them to ~1e-5."""
    gen = torch.Generator().manual_seed(seed)
    pos = (torch.rand(n, channels, 6, 2, generator=gen, dtype=torch.float64) * 2 - 1) * 9 / 2**0.5
    sign = torch.randn(n, channels, 6, generator=gen, dtype=torch.float64)
    out = torch.zeros(n, channels, size, size, dtype=torch.float64)
    for i in range(n):
        for c in range(channels):
            for j in range(6):
                out[i, c] += sign[i, c, j] * blob(size, *pos[i, c, j].tolist(), 2.5)[0][0, 0]
    return out


def test_lie_derivative_matches_a_central_difference_of_fourier_rotation():
    """LEE of a non-invariant net = |d/dtheta softmax| by a central difference of Fourier rotation."""
    from bench.rotation import rotate_interpolated

    x = blob_images(6, 4, 33)
    torch.manual_seed(0)
    net = torch.nn.Sequential(PlainConv(), torch.nn.Flatten(), torch.nn.LazyLinear(3)).double()
    net(x)
    eps = 1e-4
    t = torch.tensor(eps, dtype=torch.float64)
    fd = (torch.softmax(net(rotate_interpolated(x, t, "fourier")), -1)
          - torch.softmax(net(rotate_interpolated(x, -t, "fourier")), -1)) / (2 * eps)
    assert torch.allclose(lie_derivative_logits(net, x, "bicubic"), fd.abs().mean(-1), rtol=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_rotation_tangent_is_the_analytic_derivative_whatever_the_method(method):
    """Through torch's bicubic kernel it was 1.44x the truth (its slope at the grid is 1.5x a central
    difference), through bilinear a one-sided difference, through nearest 0."""
    g, expected = blob(33, 6.0, 3.0, 2.5)
    tangent = rotation_tangent(g, method)
    assert ((tangent - expected).norm() / expected.norm()).item() < 0.01


def test_lie_derivative_does_not_depend_on_the_rotation_method():
    """LEE of layer_conv2d's map (was 1.81 with bicubic, 1.34 with fourier) and of a small CNN's logits."""
    from bench.contract import exposed_features
    from bench.models import create_model

    torch.manual_seed(0)
    layer = create_model("layer_conv2d", in_channels=8, num_classes=10).double().eval()
    x8 = bandlimited_images(8, 8, 33, seed=0, dtype=torch.float64)
    maps = [lie_derivative_map(lambda t: exposed_features(layer, t)["out"], x8, m).mean().item() for m in METHODS]
    torch.manual_seed(0)
    net = create_model("cnn", in_channels=1, num_classes=10).double().eval()
    x1 = bandlimited_images(8, 1, 29, seed=0, dtype=torch.float64)
    logits = [lie_derivative_logits(net, x1, m).mean().item() for m in METHODS]
    for values in (maps, logits):
        assert min(values) > 0 and max(values) / min(values) < 1.02


def test_lie_derivative_of_a_pooled_field_is_the_derivative_of_the_pooled_comparison():
    """`:gpool` rows compare pool f(R x) with pool R f(x); their Lie derivative is J_pool (J_f Lx - L f) by the
    chain rule. Taken through the pooled map, the spectral generator rang at the max's kinks: an exactly
    equivariant field (b, -b), b a blur, pooled to |b|, scored 0.35/rad instead of ~0."""
    from bench.rotation import disk_mask, rotate_interpolated

    x = blob_images(4, 1, 33)

    def pool(t):
        return t.amax(dim=1, keepdim=True)

    def exact(t):
        return torch.cat([gaussian_blur(t, 1.5), -gaussian_blur(t, 1.5)], dim=1)

    assert lie_derivative_map(exact, x, pool=pool).max() < 1e-3
    assert lie_derivative_map(lambda t: pool(exact(t)), x).min() > 0.1  # the old way
    conv = PlainConv(c=1, k=5).double()

    def plain(t):
        return torch.cat([conv(t), -conv(t)], dim=1)

    eps, m = 1e-3, disk_mask(33).to(torch.float64)  # the default region: the disk

    def gap(theta):
        th = torch.tensor(theta, dtype=torch.float64)
        return pool(plain(rotate_interpolated(x, th, "fourier"))) - pool(rotate_interpolated(plain(x), th, "fourier"))

    fd = (m * (gap(eps) - gap(-eps)) / (2 * eps)).flatten(1).norm(dim=1) / (m * pool(plain(x))).flatten(1).norm(dim=1)
    assert torch.allclose(lie_derivative_map(plain, x, pool=pool), fd, rtol=0.02)  # measured: within 0.7 %


def test_lie_derivative_of_a_bias_is_zero():
    """A constant map (a conv's bias) has a zero rotation derivative, also at the map's border."""
    const = torch.full((1, 2, 9, 9), 3.0, dtype=torch.float64)
    assert rotation_tangent(const).abs().max() < 1e-12
    assert lie_derivative_map(lambda t: t.sum(dim=1, keepdim=True) * 0 + 1.0, const).abs().max() < 1e-12


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


class Downsample(torch.nn.Module):
    """Blur, then a 3x3 average pool with stride 4 (33 -> 9, sampling pixels 0, 4, ..., 32: a grid symmetric
    about the centre): a continuously equivariant operator with a small late map."""

    symmetry = SymmetryContract("SO2", {"out": SCALAR})

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(gaussian_blur(x, 1.5), 3, stride=4, padding=1)


def test_feature_maps_get_the_blur_floor_at_their_own_resolution(x, settings):
    """The floor of a 9x9 map is an exactly equivariant operator's error at 9x9 in the map's comparison disk
    (`resolution_blur_floor`), not its round trip (which is not a bound of one rotation)."""
    from bench.equivariance_metrics import comparison_mask, resolution_blur_floor
    from bench.margins import traced_margins

    model = Downsample().double()
    rows = measure(model, x, settings)
    out = model(x)
    margin = traced_margins(model, x[:1])["out"]
    assert out.shape[-1] == 9 and margin == 2
    mask = comparison_mask(out, margin, min_radius=0.5 * 4)
    floor = floors(rows)
    assert floor[90] < 1e-15 and errors(rows)[90] < 1e-12 and floor[45] > 0
    assert floor[45] == pytest.approx(resolution_blur_floor(x, 9, [45.0], "bicubic", 1.5, mask).item(), rel=1e-9)
    assert floor[45] != pytest.approx(roundtrip_floor(out, [45.0], "bicubic").item(), rel=1e-3)
    assert {r.get("floor_kind") for r in rows if r["feature"] == "out" and r["metric"] == "interpolation_floor"} \
        == {"blur"}


class BiasedBlurs(torch.nn.Module):
    """Two zero-padded blurs with a bias between them: continuously equivariant except where the second blur
    reads its zero padding around a map that is non-zero up to its border (a square frame that does not turn)."""

    symmetry = SymmetryContract("SO2", {"out": SCALAR})

    def forward(self, x):
        return gaussian_blur(gaussian_blur(x, 1.5) + 1.0, 1.5)


def test_the_padding_ring_is_left_out_of_the_comparison(x, settings):
    """margin='traced' shrinks the disk by the 10 px the two 11x11 paddings reach (to the minimum, half the
    disk): the border error is gone and the model sits near its floor; on the whole disk it is far above it."""
    model = BiasedBlurs().double()
    traced = measure(model, x, dataclasses.replace(settings, rotation="bspline"))
    whole = measure(model, x, dataclasses.replace(settings, rotation="bspline", margin="none"))
    for a in (15.0, 45.0):  # measured: 1.0e-4 / 1.8e-4 in the comparison disk, 3.0e-2 / 5.4e-2 on the whole disk
        assert errors(whole)[a] > 100 * errors(traced)[a]
        assert errors(traced)[a] < floors(traced)[a]
    assert errors(traced)[90] < 1e-12


class TwoByTwo(torch.nn.Module):
    """A 33x33 input pooled to a 2x2 map (like gmr_resnet18's last map at 32x32): its disk holds no pixel."""

    symmetry = SymmetryContract("SO2", {"out": SCALAR, "pooled": INVARIANT})

    def forward(self, x):
        return self.forward_features(x)["out"]

    def forward_features(self, x):
        out = torch.nn.functional.avg_pool2d(x[..., :32, :32], 16)
        return {"out": out, "pooled": out.mean(dim=(-2, -1))}


@pytest.mark.parametrize("margin", ["traced", "none"])
def test_a_map_with_an_empty_comparison_disk_is_skipped_not_reported_as_zero(x, settings, margin):
    """A 2x2 map has no pixel centre within its disk, so every masked error was 0/0 clamped to 0: a perfect
    score it never earned. It now gets one row with status 'skipped' and the reason, and no number."""
    rows = measure(TwoByTwo().double(), x, dataclasses.replace(settings, margin=margin))
    out = [r for r in rows if r["feature"] == "out"]
    assert [(r["metric"], r["value"], r["status"]) for r in out] == [("equivariance_error", None, "skipped")]
    assert "2x2 map has no pixel centre" in out[0]["message"]
    assert errors(rows, "invariance_error", feature="pooled")[45] > 0  # the rest is measured as usual


class Undeclared(torch.nn.Module):
    symmetry = SymmetryContract("SO2", {"out": SCALAR})

    def forward(self, x):
        return x

    def forward_features(self, x):
        return {"out": x, "hidden": torch.cat([x, x], dim=1)}


def test_an_exposed_feature_missing_from_the_contract_is_an_error(x, settings):
    """It used to be taken for a scalar field, so a regular field's channel permutation counted as error."""
    with pytest.raises(UsageError, match=r"'hidden'.*declared: out"):
        measure(Undeclared().double(), x, settings)


def test_default_rotation_is_the_suite_default():
    from bench.rotation import DEFAULT_METHOD

    assert get_protocol("equivariance").settings({}).rotation == DEFAULT_METHOD == "bspline"
    assert get_protocol("accuracy").settings({}).rotation == DEFAULT_METHOD
    with pytest.raises(UsageError, match="traced, none"):
        get_protocol("equivariance").settings({"margin": "auto"})
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        get_protocol("equivariance").settings({"min_radius": 2})
