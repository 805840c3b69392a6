"""resnet18's stems: the default small-input stem and the official GMR-Conv baseline's --res-keep-conv1."""

import pytest
import torch

from bench.errors import UsageError
from bench.models import create_model


@pytest.mark.parametrize("stem,conv,pool,side,params", [
    ("cifar", (3, 1), False, 4, 11_173_962),
    ("keep_conv1", (5, 1), True, 2, 11_173_962 - 3 * 64 * 9 + 3 * 64 * 25),
    ("imagenet", (7, 2), True, 1, 11_181_642),
])
def test_resnet18_stems(stem, conv, pool, side, params):
    net = create_model("resnet18", 3, 10, stem=stem).eval()
    c1 = net.net.conv1
    assert (c1.kernel_size[0], c1.stride[0], c1.padding[0]) == (conv[0], conv[1], conv[0] // 2)
    assert isinstance(net.net.maxpool, torch.nn.MaxPool2d) == pool
    assert sum(p.numel() for p in net.parameters()) == params
    with torch.no_grad():
        assert net.forward_features(torch.randn(2, 3, 32, 32))["features"].shape == (2, 512, side, side)


def test_keep_conv1_runs_its_stages_at_gmr_resnet18s_resolutions():
    x = torch.randn(2, 3, 32, 32)
    plain = create_model("resnet18", 3, 10, stem="keep_conv1").eval()
    gmr = create_model("gmr_resnet18", 3, 10, match="channels").eval()
    with torch.no_grad():
        assert plain.forward_features(x)["features"].shape == gmr.forward_features(x)["features"].shape


def test_unknown_stem_is_a_usage_error_naming_the_valid_ones():
    with pytest.raises(UsageError, match="keep_conv1"):
        create_model("resnet18", 3, 10, stem="5x5")
