"""The baseline zoo: every model builds, runs, exposes consistent features, and keeps its declared symmetry.

Builds are cached per module (escnn construction is the slow part), inputs are batch 2 at 29x29 / 33x33.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from bench.contract import FieldSpec, SymmetryContract
from bench.errors import UsageError
from bench.fields import apply_rho
from bench.models import create_model, list_models, missing_requirements
from bench.rotation import rotate

warnings.filterwarnings("ignore", category=UserWarning)
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

NETWORKS = list_models(level="network")
LAYERS = list_models(level="layer")
RESNETS = ["resnet18", "gmr_resnet18", "c8_resnet18"]
SMALL = [n for n in NETWORKS if n not in RESNETS]
PLAIN = {"cnn", "resnet18"}
EXACT_TOL = 1e-4
INPUTS = [(1, 29), (3, 33)]
# ResNet-18-scale models: the forward checks use match='channels' builds for the 1-channel 29x29 input (and for
# c8_resnet18 also for 3x33x33: its 11.5M-parameter default needs several CPU seconds to expand and run); the
# default (match='params') builds are built and counted in test_resnet_scale_match_params, and gmr_resnet18's
# default runs forward on the 3-channel 33x33 input.
LIGHT_KW = {"c8_resnet18": {"match": "channels"}, "gmr_resnet18": {"match": "channels"}}
LIGHT_BOTH = {"c8_resnet18"}
# input size at which a model's claims are exact (downsampling inputs must be odd / divisible by 16); the
# ResNet-18-scale claims are structural, checked on the lighter match='channels' builds (gmr_resnet18 with the
# dense GMR path: the two-stage path is much slower on CPU; both are exact, see tests/test_gmr_*).
EXACT_INPUT = {"c8_resnet18": (3, 33), "gmr_resnet18": (3, 32)}
EXACT_KW = {"c8_resnet18": {"match": "channels"}, "gmr_resnet18": {"match": "channels", "impl": "dense"}}

FEATURE_KIND = {"cnn": "scalar", "resnet18": "scalar", "gmr": "scalar", "gmr_radius": "scalar",
                "gmr_official": "scalar", "gmr_resnet18": "scalar", "c4": "regular", "c8": "regular",
                "c16": "regular", "d4": "regular", "d8": "regular", "e2cnn_c8": "regular", "e2cnn_d8": "regular",
                "c8_resnet18": "regular", "so2": "irreps", "o2": "irreps", "so2_fourier": "irreps",
                "e2cnn_so2": "irreps"}
GROUP = {"cnn": "trivial", "resnet18": "trivial", "gmr": "D4-grid", "gmr_radius": "D4-grid",
         "gmr_official": "D4-grid", "gmr_resnet18": "D4-grid", "c4": "C4", "c8": "C8", "c16": "C16", "d4": "D4",
         "d8": "D8", "e2cnn_c8": "C8", "e2cnn_d8": "D8", "c8_resnet18": "C8", "so2": "SO2", "o2": "O2",
         "so2_fourier": "SO2", "e2cnn_so2": "SO2"}
GRID_ELEMENTS = [(90, False), (180, False), (270, False), (0, True), (90, True), (180, True), (270, True)]
# the generators of the grid symmetries (rot90 and the horizontal flip) plus one composite
CHECKED_ELEMENTS = [(90, False), (0, True), (270, True)]


def _skip_missing(name: str) -> None:
    missing = missing_requirements(name)
    if missing:
        pytest.skip(f"{name} needs {missing}")


@pytest.fixture(scope="module")
def zoo():
    """build(name, in_channels, **kw) -> model in eval mode, cached for this module."""
    cache: dict = {}

    def build(name: str, in_channels: int, **kw) -> nn.Module:
        key = (name, in_channels, tuple(sorted(kw.items())))
        if key not in cache:
            _skip_missing(name)
            torch.manual_seed(0)
            cache[key] = create_model(name, in_channels, 10, **kw).eval()
        return cache[key]

    yield build
    cache.clear()


def _x(in_channels: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, in_channels, size, size, generator=g)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_every_declared_model_is_tested():
    assert set(FEATURE_KIND) == set(NETWORKS)
    assert len(LAYERS) == 8


# ---------------------------------------------------------------------------------------------------------------
# networks: build, forward, features
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_channels,size", INPUTS)
@pytest.mark.parametrize("name", NETWORKS)
def test_network_forward_and_features(zoo, name, in_channels, size):
    kw = LIGHT_KW.get(name, {}) if (in_channels == 1 or name in LIGHT_BOTH) else {}
    model = zoo(name, in_channels, **kw)
    contract = model.symmetry
    assert isinstance(contract, SymmetryContract)
    assert contract.group == GROUP[name]
    assert set(contract.features) == {"features", "pooled", "logits"}
    assert contract.features["pooled"].kind == "invariant" and contract.features["logits"].kind == "invariant"
    spec = contract.features["features"]
    assert spec.kind == FEATURE_KIND[name]
    x = _x(in_channels, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x[:1])  # eval mode: batch independent, so one image is enough to compare
    assert set(feats) >= set(contract.features)
    f, pooled = feats["features"], feats["pooled"]
    assert f.dim() == 4 and f.shape[0] == 2
    assert pooled.dim() == 2 and pooled.shape[0] == 2
    assert feats["logits"].shape == (2, 10) and logits.shape == (1, 10)
    torch.testing.assert_close(feats["logits"][:1], logits, rtol=1e-4, atol=1e-5)
    if spec.field_type is not None:
        assert f.shape[1] == spec.field_type.size
    assert torch.isfinite(logits).all() and logits.abs().max() > 0


@pytest.mark.parametrize("name", NETWORKS)
def test_network_exact_claims(zoo, name):
    """Logits and pooled invariants are invariant (<= 1e-4) under every grid symmetry the model claims, and the
    feature map transforms by its declared field type (rho_out from bench.fields)."""
    in_channels, size = EXACT_INPUT.get(name, (1, 29))
    model = zoo(name, in_channels, **EXACT_KW.get(name, {}))
    contract = model.symmetry
    claimed = [(a, r) for a, r in GRID_ELEMENTS if contract.claims(a, r)]
    if name in PLAIN:
        assert claimed == []
        return
    assert (90, False) in claimed
    assert ((0, True) in claimed) == (name.startswith(("d", "e2cnn_d", "o2", "gmr")))
    checked = [e for e in CHECKED_ELEMENTS if e in claimed]
    spec = contract.features["features"]
    x = _x(in_channels, size, seed=1)
    batch = torch.cat([x] + [rotate(x, a, reflect=r) for a, r in checked])  # one forward for all elements
    with torch.no_grad():
        out = model.forward_features(batch)
    ref = {k: v[:2] for k, v in out.items()}
    for i, (angle, reflect) in enumerate(checked, start=1):
        got = {k: v[2 * i : 2 * i + 2] for k, v in out.items()}
        for key in ("logits", "pooled"):
            err = _rel(got[key], ref[key])
            assert err <= EXACT_TOL, f"{name} {key} at ({angle}, {reflect}): {err:.2e}"
        expected = apply_rho(spec, rotate(ref["features"], angle, reflect=reflect), angle, reflect)
        err = _rel(got["features"], expected)
        assert err <= EXACT_TOL, f"{name} features at ({angle}, {reflect}): {err:.2e}"


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_models_are_not_invariant(zoo, name):
    model = zoo(name, 1, **LIGHT_KW.get(name, {}))
    x = _x(1, 29, seed=2)
    with torch.no_grad():
        out = model.forward_features(torch.cat([x, torch.rot90(x, 1, (-2, -1)), torch.flip(x, (-1,))]))
    ref, rot, flip = ({k: v[i : i + 2] for k, v in out.items()} for i in (0, 2, 4))
    assert _rel(rot["pooled"], ref["pooled"]) > 1e-2
    assert _rel(rot["logits"], ref["logits"]) > 1e-2
    assert _rel(flip["pooled"], ref["pooled"]) > 1e-2


def test_forward_does_not_build_the_feature_dict():
    """`forward` is the plain path: exposing features lives in a separate method."""
    from baselines.common import SmallNet

    assert SmallNet.forward is not SmallNet.forward_features
    assert "forward_features" not in SmallNet.forward.__code__.co_names


# ---------------------------------------------------------------------------------------------------------------
# fair widths
# ---------------------------------------------------------------------------------------------------------------
def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("in_channels,size", INPUTS)
@pytest.mark.parametrize("name", SMALL)
def test_match_params_within_5_percent(zoo, name, in_channels, size):
    ref = _params(zoo("cnn", in_channels))
    n = _params(zoo(name, in_channels))
    assert abs(n / ref - 1) <= 0.05, f"{name}: {n} params vs cnn {ref}"
    fam = getattr(zoo(name, in_channels), "field_family", None)
    if fam is not None:  # the analytic count used by the width search is exact
        assert fam.count(in_channels, 10, zoo(name, in_channels).widths) == n


@pytest.mark.parametrize("name", ["gmr_resnet18", "c8_resnet18"])
def test_resnet_scale_match_params(zoo, name):
    ref = _params(zoo("resnet18", 3))
    n = _params(zoo(name, 3))
    assert abs(n / ref - 1) <= 0.05, f"{name}: {n} params vs resnet18 {ref}"


def test_resnet18_param_formula():
    from baselines.gmr_family import resnet18_params

    for cin, nc in [(1, 10), (3, 100)]:
        assert _params(create_model("resnet18", cin, nc)) == resnet18_params(cin, nc)


def test_gmr_resnet18_match_channels_is_the_paper_model(zoo):
    assert _params(zoo("gmr_resnet18", 3, match="channels")) == 3_996_685


@pytest.mark.parametrize("name", SMALL)
def test_match_channels_keeps_the_channel_widths(zoo, name):
    from baselines.common import BASE_WIDTHS

    model = zoo(name, 1, match="channels")
    fam = getattr(model, "field_family", None)
    if fam is None:
        assert model.widths == BASE_WIDTHS
        return
    for units, c in zip(model.widths, BASE_WIDTHS):
        assert abs(units * fam.unit_channels - c) <= max(fam.unit_channels / 2, 0.5 * c), (name, model.widths)


def test_bad_match_and_unknown_keywords_are_usage_errors():
    with pytest.raises(UsageError, match="match"):
        create_model("cnn", 1, 10, match="flops")
    with pytest.raises(UsageError, match="unexpected keyword"):
        create_model("cnn", 1, 10, kernel_size=3)
    with pytest.raises(UsageError, match="widths"):
        create_model("gmr", 1, 10, widths=(1, 2))


def test_escnn_and_e2cnn_twins_agree(zoo):
    """Same widths -> parameter counts in the same range (the libraries' default bases differ slightly)."""
    for ours, twin in [("c8", "e2cnn_c8"), ("d8", "e2cnn_d8"), ("so2", "e2cnn_so2")]:
        a, b = zoo(ours, 1, match="channels"), zoo(twin, 1, match="channels")
        assert a.widths == b.widths
        assert 0.8 <= _params(a) / _params(b) <= 1.25, (ours, _params(a), twin, _params(b))


# ---------------------------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------------------------
LAYER_OUT = {"layer_conv2d": 16, "layer_gmr": 16, "layer_gmr_radius": 16, "layer_gmr_official": 16,
             "layer_c8": 16, "layer_d8": 16, "layer_so2": 16, "layer_e2cnn_c8": 16}
LAYER_GROUP = {"layer_conv2d": "trivial", "layer_gmr": "D4-grid", "layer_gmr_radius": "D4-grid",
               "layer_gmr_official": "D4-grid", "layer_c8": "C8", "layer_d8": "D8", "layer_so2": "SO2",
               "layer_e2cnn_c8": "C8"}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_forward_contract_and_claims(zoo, name):
    layer = zoo(name, 16, channels=16, kernel_size=9)
    contract = layer.symmetry
    assert contract.group == LAYER_GROUP[name]
    assert set(contract.features) == {"out"}
    spec: FieldSpec = contract.features["out"]
    x = _x(16, 29, seed=3)
    with torch.no_grad():
        y = layer(x)
        assert y.shape == (2, LAYER_OUT[name], 29, 29)
        if spec.field_type is not None:
            assert y.shape[1] == spec.field_type.size
        claimed = [(a, r) for a, r in GRID_ELEMENTS if contract.claims(a, r)]
        if name == "layer_conv2d":
            assert claimed == []
            assert _rel(layer(torch.rot90(x, 1, (-2, -1))), torch.rot90(y, 1, (-2, -1))) > 1e-2
            return
        checked = [e for e in CHECKED_ELEMENTS if e in claimed]
        out = layer(torch.cat([rotate(x, a, reflect=r) for a, r in checked]))
    for i, (angle, reflect) in enumerate(checked):
        expected = apply_rho(spec, rotate(y, angle, reflect=reflect), angle, reflect)
        err = _rel(out[2 * i : 2 * i + 2], expected)
        assert err <= EXACT_TOL, f"{name} at ({angle}, {reflect}): {err:.2e}"


def test_layer_default_channels_and_field_mapping(zoo):
    assert zoo("layer_conv2d", 8)(_x(8, 11)).shape[1] == 8
    assert zoo("layer_c8", 8)(_x(8, 11)).shape[1] == 8  # 1 regular C8 field
    assert zoo("layer_d8", 8)(_x(8, 11)).shape[1] == 16  # rounded up to one D8 field
    so2 = zoo("layer_so2", 8)
    assert so2(_x(8, 11)).shape[1] == 8
    sizes = [r.size for r in so2.symmetry.features["out"].field_type.representations]
    assert sizes == [1, 2, 2, 2, 1]


@pytest.mark.parametrize("name", ["layer_c8", "layer_d8", "layer_so2", "layer_e2cnn_c8"])
def test_field_layer_export_and_train_mode(name):
    _skip_missing(name)
    torch.manual_seed(0)
    layer = create_model(name, 16, 10, channels=16, kernel_size=7)
    x = _x(16, 15, seed=4)
    with torch.no_grad():
        y_train = layer(x)  # train mode: the basis is expanded in the forward
        layer.eval()
        y_eval = layer(x)
        exported = layer.export()
        y_exp = exported(x)
    assert isinstance(exported.conv, nn.Conv2d)
    assert exported.symmetry == layer.symmetry
    torch.testing.assert_close(y_train, y_eval, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_exp, y_eval, rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    direct = create_model(name, 16, 10, channels=16, kernel_size=7, exported=True)
    assert isinstance(direct.conv, nn.Conv2d)
    assert direct.symmetry.features["out"].kind == layer.symmetry.features["out"].kind


def test_field_layer_hidden_input_types():
    _skip_missing("layer_c8")
    layer = create_model("layer_c8", 16, 10, channels=16, in_type="regular").eval()
    assert layer.input_spec.kind == "regular" and layer.input_spec.field_type.size == 16
    with torch.no_grad():
        assert layer(_x(16, 9)).shape == (2, 16, 9, 9)
    with pytest.raises(UsageError, match="divisible"):
        create_model("layer_c8", 12, 10, in_type="regular")
    so2 = create_model("layer_so2", 16, 10, in_type="irreps")
    assert so2.input_spec.kind == "irreps"


@pytest.mark.parametrize("name", ["c8", "so2", "e2cnn_c8"])
def test_models_of_one_process_do_not_share_converted_bases(name):
    """escnn/e2cnn cache sampled bases process-wide; converting one model must not convert another."""
    _skip_missing(name)
    create_model(name, 1, 10, match="channels").double()
    other = create_model(name, 1, 10, match="channels").eval()
    with torch.no_grad():
        assert other(_x(1, 9)).dtype == torch.float32
    with torch.no_grad():
        assert other.double()(_x(1, 9).double()).dtype == torch.float64
