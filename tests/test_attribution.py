"""Per-stage attribution against each stage's own floor (bench.attribution) and the per-resolution floor."""

import pytest
import torch
from torch import nn

from bench.attribution import is_pointwise, stage_attribution, stage_error, stage_floor, stage_lie_derivative
from bench.equivariance_metrics import blur_floor, gaussian_blur, resize_about_centre, resolution_blur_floor
from bench.rotation import bandlimited_images


@pytest.fixture(scope="module")
def h():
    return bandlimited_images(6, 4, 33, seed=0, dtype=torch.float64)


def pointwise_stages():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4).double().eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
    return {"relu": nn.ReLU(), "bn": bn, "conv1x1": nn.Conv2d(4, 4, 1).double(), "gelu": nn.GELU()}


def test_pointwise_stages_come_out_at_their_floor(h):
    """A ReLU 'adds' ~4e-2 at 45 deg (what the old attribution reported); it is the interpolation of its
    kinks, which an exactly equivariant ReLU has too: excess 0, and its Lie derivative is 0."""
    for name, stage in pointwise_stages().items():
        assert is_pointwise(stage, h), name
        res = stage_attribution(stage, h, 45.0, "bspline")
        assert res["pointwise"] and res["excess"] == 0.0 and res["floor"] == res["error"]
        assert stage_lie_derivative(stage, h) == 0.0
    assert stage_error(nn.ReLU(), h, 45.0, "bspline") > 1e-2


def test_spatial_stages_are_measured_against_an_isotropic_blur_at_their_resolution(h):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 5, padding=2).double()
    blur = lambda t: gaussian_blur(t, 1.5)  # noqa: E731
    assert not is_pointwise(conv, h) and not is_pointwise(blur, h) and not is_pointwise(nn.AvgPool2d(2), h)
    blur_res = stage_attribution(blur, h, 45.0, "bspline")
    assert blur_res["excess"] == 0.0 and blur_res["error"] == pytest.approx(blur_res["floor"], rel=1e-12)
    conv_res = stage_attribution(conv, h, 45.0, "bspline")
    assert conv_res["floor"] == pytest.approx(blur_floor(h, [45.0], "bspline", 1.5).item(), rel=1e-12)
    assert conv_res["excess"] > 100 * conv_res["floor"]
    assert stage_lie_derivative(conv, h) > 100 * stage_lie_derivative(blur, h)
    pool = stage_attribution(nn.AvgPool2d(2), h, 45.0, "bspline")
    assert pool["floor"] == pytest.approx(stage_floor(nn.AvgPool2d(2), h, 45.0, "bspline"))
    assert pool["floor"] == pytest.approx(resolution_blur_floor(h, 16, [45.0], "bspline").item())
    with pytest.raises(ValueError, match="keeps the map size"):
        stage_lie_derivative(nn.AvgPool2d(2), h)


def test_resolution_floor_is_the_blur_floor_at_full_size_and_grows_on_small_maps(h):
    angles = [10.0, 45.0, 90.0]
    assert torch.allclose(resolution_blur_floor(h, 33, angles, "bspline"), blur_floor(h, angles, "bspline", 1.5),
                          rtol=1e-12, atol=0)
    floors = [resolution_blur_floor(h, s, angles, "bspline") for s in (33, 17, 9)]
    for f in floors:
        assert f[2] < 1e-12  # a quarter turn is exact at every size (the resampling is about the centre)
    assert floors[0][1] < floors[1][1] < floors[2][1]


def test_resize_about_centre_commutes_with_quarter_turns():
    x = torch.randn(2, 3, 33, 33, dtype=torch.float64)
    small = resize_about_centre(x, 9)
    assert small.shape == (2, 3, 9, 9)
    assert torch.allclose(resize_about_centre(torch.rot90(x, 1, (-2, -1)), 9), torch.rot90(small, 1, (-2, -1)))
