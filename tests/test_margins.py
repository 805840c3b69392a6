"""How far the padding reaches into each map (bench.margins) and the comparison mask built from it."""

import pytest
import torch
from torch import nn

from bench.equivariance_metrics import comparison_mask
from bench.margins import layer_margin, padding_effect_margins, stack_margin, traced_margins
from bench.rotation import disk_mask


def test_same_padded_convs_add_k_over_2_per_layer_and_pools_halve_rounding_up():
    assert stack_margin(33, [(5, 1, 2), (3, 1, 1), (7, 1, 3)]) == (2 + 1 + 3, 33)
    assert layer_margin(3, 33, 2, 2) == (2, 16)  # AvgPool2d(2): ceil(3 / 2); the far row 32 is dropped
    assert layer_margin(0, 33, 2, 2) == (0, 16)
    assert layer_margin(4, 32, 3, 2, 1) == (3, 16)  # strided 3x3 conv: ceil((4 + 1) / 2)
    assert layer_margin(0, 9, 1) == (0, 9)  # a 1x1 conv reaches nothing
    assert layer_margin(0, 9, 9, 1, 0) == (0, 1)  # a 'valid' conv reads no padding


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


def test_traced_margins_follow_the_layers_actually_run():
    net = nn.Sequential(nn.Conv2d(1, 3, 7, padding=3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1),
                        nn.AvgPool2d(2), Residual(), nn.Conv2d(3, 3, 1)).eval()
    x = torch.randn(1, 1, 33, 33)
    expected, size = stack_margin(33, [(7, 1, 3), (3, 1, 1), (2, 2, 0), (5, 1, 2)])
    assert traced_margins(net, x) == {"out": expected} and (expected, size) == (4, 16)  # ceil((3 + 1) / 2) + 2
    pooled = {"map": lambda t: t, "vector": lambda t: t.mean(dim=(-2, -1))}
    assert traced_margins(lambda t: {k: f(net(t)) for k, f in pooled.items()}, x) == {"map": 4, "vector": 0}
    resample = lambda t: {"up": nn.functional.interpolate(net(t), scale_factor=2.0)}  # noqa: E731
    assert traced_margins(resample, x) == {"up": None}


@pytest.mark.parametrize("kernels", [(3, 3, 3), (5, 7), (9,)])
def test_measured_margin_equals_the_bound_when_every_padding_matters(kernels):
    """A first 1x1 layer (which reads no padding) with a bias makes every later layer's zero padding differ
    from what lies beyond the border, so on an odd map the measured disk margin is exactly sum(k // 2)."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 4, 1)] + [nn.Conv2d(4, 4, k, padding=k // 2) for k in kernels]
    net = nn.Sequential(*layers).double()
    x = torch.randn(2, 2, 31, 31, dtype=torch.float64)
    bound = sum(k // 2 for k in kernels)
    assert traced_margins(net, x) == {"out": bound}
    assert padding_effect_margins(net, x, tol=1e-12) == {"out": bound}
    # inside that disk the map is unchanged by the canvas, just outside it is not
    f, g = net(x), net(nn.functional.pad(x, (32,) * 4))[..., 32:63, 32:63]
    inside = comparison_mask(f, bound)
    assert (f - g)[..., inside].abs().max() < 1e-12
    assert (f - g)[..., comparison_mask(f, bound - 1) & ~inside].abs().max() > 1e-6


def test_disk_masked_inputs_make_the_first_layers_padding_harmless():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.Conv2d(4, 4, 3, padding=1)).double()
    x = torch.randn(2, 1, 31, 31, dtype=torch.float64) * disk_mask(31)
    assert traced_margins(net, x) == {"out": 3}
    assert padding_effect_margins(net, x, tol=1e-12)["out"] <= 1


def test_comparison_mask_shrinks_the_disk_and_falls_back_to_a_minimum_radius():
    t = torch.zeros(1, 1, 9, 9)
    assert torch.equal(comparison_mask(t, 0), disk_mask(9))
    assert torch.equal(comparison_mask(t, 2), disk_mask(9, radius=2.0))
    assert torch.equal(comparison_mask(t, 9, min_radius=2.0), disk_mask(9, radius=2.0))
    assert torch.equal(comparison_mask(t, None, min_radius=2.0), disk_mask(9, radius=2.0))
    assert comparison_mask(t, 4).sum() == 1  # only the centre pixel is left
    assert not comparison_mask(torch.zeros(1, 1, 2, 2), 0).any()  # a 2x2 map has no pixel in its disk
