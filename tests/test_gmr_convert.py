"""convert_to_gmr never changes an output shape; what it cannot make equivariant stays as it was and is reported."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from torch import nn

import gmr
from bench.errors import UsageError


def _output_shapes(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Output shape of each named submodule ("" = the model) in one forward."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape))) for n in names]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return shapes


def _assert_shapes_kept(original: nn.Module, sizes, in_channels: int = 3, **kwargs) -> gmr.Conversion:
    """Convert a copy; every module of the original (at its qualified name) must output the same shape as
    before for every input size, and the returned model must be the converted one."""
    names = [n for n, _ in original.named_modules()]
    conversion = gmr.convert_to_gmr(copy.deepcopy(original), impl="dense", **kwargs)  # impl: no autotuning
    kept = [n for n in names if _has(conversion.model, n)]
    for size in sizes:
        x = torch.randn(1, in_channels, size, size)
        assert _output_shapes(conversion.model, x, kept) == _output_shapes(original, x, kept), size
    return conversion


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def test_torchvision_resnet18_keeps_every_shape_and_leaves_nothing():
    torch.manual_seed(0)
    with _no_warning():
        conversion = _assert_shapes_kept(torchvision.models.resnet18(num_classes=10), sizes=(32, 33, 31, 45, 7))
    assert conversion.unchanged == []
    model = conversion.model
    assert sum(isinstance(m, gmr.GMRConv2d) for m in model.modules()) == 1 + 16  # stem + 16 block convs
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.maxpool.kernel_size == 2 and model.maxpool.ceil_mode


class _no_warning:
    """Fail if convert_to_gmr warns (pytest.warns(None) no longer exists)."""

    def __enter__(self):
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", gmr.NotEquivariantWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_patchify_stem_is_left_unchanged_and_reported():
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 16, 4, stride=4)
    net = nn.Sequential(stem, nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    with pytest.warns(gmr.NotEquivariantWarning, match=r"0 Conv2d\(3, 16, kernel_size=\(4, 4\), stride=\(4, 4\)\)"):
        conversion = gmr.convert_to_gmr(net)
    assert conversion.model is net
    assert net[0] is stem and stem.stride == (4, 4)  # untouched, not rewritten to pool + conv
    assert isinstance(net[2], gmr.GMRConv2d)
    assert [(u.name, u.module) for u in conversion.unchanged] == [("0", repr(stem))]
    assert "odd square" in conversion.unchanged[0].reason
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 16, 8, 8)  # the old converter gave 5 x 5


@pytest.mark.parametrize("size, expected", [(7, 4), (8, 4), (9, 5), (2, 1), (1, 1)])
def test_overlapping_max_pool_on_odd_and_even_sizes(size, expected):
    pool = nn.MaxPool2d(3, 2, 1)
    conversion = gmr.convert_to_gmr(nn.Sequential(pool))
    new = conversion.model[0]
    assert conversion.unchanged == []
    assert isinstance(new, nn.MaxPool2d) and new.kernel_size == 2 and new.stride == 2 and new.ceil_mode
    x = torch.randn(1, 2, size, size)
    assert pool(x).shape[-1] == new(x).shape[-1] == expected  # the old converter gave 3 for 7²


def test_rewritten_pool_is_exactly_equivariant_on_even_sizes():
    new = gmr.convert_to_gmr(nn.Sequential(nn.MaxPool2d(3, 2, 1))).model
    x = torch.randn(1, 2, 8, 8)
    assert torch.equal(new(torch.rot90(x, 1, (-2, -1))), torch.rot90(new(x), 1, (-2, -1)))


# Each module: whether it is converted (True), left alone because it is already equivariant (None) or left
# unchanged and reported (False). Shapes are checked on every input size 1..17 the original accepts.
CASES = [
    (nn.Conv2d(2, 2, 3, padding=1), True),
    (nn.Conv2d(2, 2, 3, padding=0), True),  # stride 1: any padding is fine
    (nn.Conv2d(2, 2, 5, padding=(1, 2)), True),
    (nn.Conv2d(2, 2, 3, stride=2, padding=1), True),
    (nn.Conv2d(2, 2, 3, stride=3, padding=1), True),
    (nn.Conv2d(2, 2, 3, stride=(1, 2), padding=(0, 1)), True),  # unstrided axis: any padding
    (nn.Conv2d(2, 2, 3, stride=2, padding=2, dilation=2), True),
    (nn.Conv2d(2, 2, 3, stride=2, padding=1, padding_mode="replicate"), True),
    (nn.Conv2d(2, 2, 3, stride=2, padding=1, padding_mode="reflect"), False),  # would fail on 1x1 after pooling
    (nn.Conv2d(2, 2, 3, stride=2, padding=0), False),  # 'valid' strided: no shape-preserving pool form
    (nn.Conv2d(2, 2, 5, stride=2, padding=1), False),
    (nn.Conv2d(2, 2, 1), None),
    (nn.Conv2d(2, 2, 1, stride=2), True),  # pool + 1x1
    (nn.Conv2d(2, 2, 1, stride=2, padding=1), False),
    (nn.Conv2d(2, 2, 2, stride=2), False),  # even kernel
    (nn.Conv2d(2, 2, (3, 5), padding=(1, 2)), False),  # non-square kernel
    (nn.ConvTranspose2d(2, 2, 3, stride=2), False),
    (nn.MaxPool2d(2, 2), None),  # already non-overlapping
    (nn.MaxPool2d(3, 2, 1), True),
    (nn.MaxPool2d(3, 2), False),  # no padding: floor((H - 3) / 2) + 1 is not ceil(H / 2)
    (nn.MaxPool2d(3, 2, 1, ceil_mode=True), False),
    (nn.MaxPool2d(3, 1, 1), None),
    (nn.AvgPool2d(3, 2, 1), True),
    (nn.AvgPool2d(2), None),
]


@pytest.mark.parametrize("module, converted", CASES, ids=[repr(m) for m, _ in CASES])
def test_every_module_kind_keeps_its_shape_on_every_size(module, converted):
    original = nn.Sequential(module)
    with pytest.warns(gmr.NotEquivariantWarning) if converted is False else _no_warning():
        conversion = gmr.convert_to_gmr(copy.deepcopy(original), impl="dense")  # impl: no autotuning per size
    new = conversion.model[0]
    if converted is None:
        assert conversion.unchanged == [] and repr(new) == repr(module)
    elif converted:
        assert conversion.unchanged == [] and repr(new) != repr(module)
    else:
        assert [u.name for u in conversion.unchanged] == ["0"] and repr(new) == repr(module)
    for size in range(1, 18):
        x = torch.randn(1, 2, size, size)
        try:
            want = module(x).shape
        except RuntimeError:
            continue  # input too small for the original
        assert new(x).shape == want, size


@pytest.mark.parametrize("padding, kernel_size, new_padding", [
    (1, 5, (2, 2)), (0, 5, (1, 1)), ("same", 7, "same"), ("valid", 5, (1, 1)), (2, 3, (1, 1))])
def test_kernel_size_override_keeps_the_output_size(padding, kernel_size, new_padding):
    conv = nn.Conv2d(2, 2, 3 if padding != 2 else 5, padding=padding)
    conversion = gmr.convert_to_gmr(nn.Sequential(conv), kernel_size=kernel_size)
    new = conversion.model[0]
    assert new.kernel_size[0] == kernel_size and new.padding == new_padding
    x = torch.randn(1, 2, 11, 11)
    assert new(x).shape == conv(x).shape


def test_kernel_size_override_that_needs_negative_padding_is_reported():
    conv = nn.Conv2d(2, 2, 7, padding=0)
    with pytest.warns(gmr.NotEquivariantWarning, match="negative padding"):
        conversion = gmr.convert_to_gmr(nn.Sequential(conv), kernel_size=3)
    assert conversion.model[0] is conv


def test_without_equivariant_downsampling_strided_leftovers_are_reported():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 1, stride=2), nn.MaxPool2d(3, 2, 1))
    with pytest.warns(gmr.NotEquivariantWarning):
        conversion = gmr.convert_to_gmr(net, equivariant_downsampling=False)
    assert isinstance(net[0][1], gmr.GMRConv2d)  # k x k convs are always converted
    assert [u.name for u in conversion.unchanged] == ["1", "2"]
    assert net(torch.randn(1, 3, 16, 16)).shape == (1, 8, 2, 2)


def test_a_bare_conv_is_replaced_and_returned():
    conversion = gmr.convert_to_gmr(nn.Conv2d(3, 4, 3, stride=2, padding=1), smoothing="radius")
    assert isinstance(conversion.model, nn.Sequential)
    assert isinstance(conversion.model[1], gmr.GMRConv2d) and conversion.model[1].smoothing == "radius"
    assert conversion.model(torch.randn(1, 3, 9, 9)).shape == (1, 4, 5, 5)


@pytest.mark.parametrize("bad", [4, 0, -3, 2.0, True, "3"])
def test_bad_kernel_size_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="odd int"):
        gmr.convert_to_gmr(nn.Conv2d(2, 2, 3), kernel_size=bad)


def test_converted_modules_follow_the_original_device_dtype_and_options():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False, groups=1, dilation=1).double())
    gmr.convert_to_gmr(net, smoothing="radius", impl="dense")
    layer = net[0]
    assert layer.weight.dtype == torch.float64 and layer.bias is None
    assert layer.smoothing == "radius" and layer.impl == "dense"
