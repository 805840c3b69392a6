"""The model registry end to end: listing, lazy imports, did-you-mean, missing-dependency hints, plugins, CLI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench.errors import MissingDependencyError, UsageError
from bench.models import INSTALL_HINT, create_model, list_models, missing_requirements, model_info

ROOT = Path(__file__).resolve().parents[1]

NETWORKS = {"cnn", "gmr", "gmr_radius", "gmr_official", "c4", "c8", "c16", "d4", "d8", "so2", "o2", "so2_fourier",
            "e2cnn_c8", "e2cnn_d8", "e2cnn_so2", "resnet18", "gmr_resnet18", "c8_resnet18"}
LAYERS = {"layer_conv2d", "layer_gmr", "layer_gmr_radius", "layer_gmr_official", "layer_c8", "layer_d8",
          "layer_so2", "layer_e2cnn_c8"}
NEEDS = {"escnn": {"c4", "c8", "c16", "d4", "d8", "so2", "o2", "so2_fourier", "c8_resnet18", "layer_c8", "layer_d8",
                   "layer_so2"},
         "e2cnn": {"e2cnn_c8", "e2cnn_d8", "e2cnn_so2", "layer_e2cnn_c8"},
         "GMR_Conv": {"gmr_official", "layer_gmr_official"}}


def test_list_models_and_filters():
    assert set(list_models()) >= NETWORKS | LAYERS
    assert set(list_models(level="network")) >= NETWORKS
    assert set(list_models(level="layer")) == LAYERS
    assert set(list_models(family="steerable")) == {"so2", "o2", "so2_fourier", "e2cnn_so2", "layer_so2"}
    assert set(list_models(family="plain")) == {"cnn", "resnet18", "layer_conv2d"}
    for lib, names in NEEDS.items():
        for name in names:
            assert lib in model_info(name)["requires"], name


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_registry_is_lazy_and_works_without_the_optional_libraries():
    """Listing never imports escnn/e2cnn/GMR_Conv; with them blocked, plain models still build and the
    equivariant ones say which package to install."""
    proc = _python("""
        import sys
        from bench.models import list_models, create_model
        names = list_models()
        assert not {"escnn", "e2cnn", "GMR_Conv", "baselines.escnn_models"} & set(sys.modules), sorted(sys.modules)
        for lib in ("escnn", "e2cnn", "GMR_Conv"):
            sys.modules[lib] = None  # import fails, find_spec returns None
        from bench.errors import MissingDependencyError
        assert set(list_models(available_only=True)) < set(names)
        assert "cnn" in list_models(available_only=True) and "c8" not in list_models(available_only=True)
        m = create_model("cnn", 1, 10)
        assert m.symmetry.group == "trivial"
        try:
            create_model("c8", 1, 10)
        except MissingDependencyError as e:
            print("MSG", e)
        else:
            raise SystemExit("no MissingDependencyError")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pip install --no-deps escnn" in proc.stdout


@pytest.mark.parametrize("lib,name", [("escnn", "d8"), ("escnn", "layer_so2"), ("e2cnn", "e2cnn_c8"),
                                      ("GMR_Conv", "gmr_official")])
def test_missing_dependency_message_names_the_package(monkeypatch, lib, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, **k: None if n == lib else real(n, *a, **k))
    assert missing_requirements(name) == [lib]
    with pytest.raises(MissingDependencyError) as info:
        create_model(name, 1, 10)
    msg = str(info.value)
    assert name in msg and lib in msg and INSTALL_HINT[lib] in msg
    assert name not in list_models(available_only=True)
    assert "cnn" in list_models(available_only=True)


@pytest.mark.parametrize("wrong,right", [("c88", "c8"), ("resnet", "resnet18"), ("gmr_radus", "gmr_radius"),
                                         ("layer_so3", "layer_so2"), ("e2cnn-d8", "e2cnn_d8")])
def test_did_you_mean(wrong, right):
    with pytest.raises(UsageError) as info:
        create_model(wrong, 1, 10)
    msg = str(info.value)
    assert "Did you mean" in msg and repr(right) in msg
    with pytest.raises(UsageError, match="Did you mean"):
        model_info(wrong)


def test_nothing_close_lists_valid_names():
    with pytest.raises(UsageError) as info:
        create_model("transformer_xl", 1, 10)
    assert "Did you mean" not in str(info.value) and "cnn" in str(info.value)


@pytest.fixture
def plugin_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "zoo_plugin_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent("""
        import torch
        from bench.contract import INVARIANT, SCALAR, SymmetryContract

        class Net(torch.nn.Module):
            def __init__(self, c, n, width):
                super().__init__()
                self.conv = torch.nn.Conv2d(c, width, 3, padding=1)
                self.head = torch.nn.Linear(width, n)
                self.symmetry = SymmetryContract("trivial", {"features": SCALAR, "pooled": INVARIANT,
                                                             "logits": INVARIANT})

            def forward_features(self, x):
                f = self.conv(x)
                p = f.mean((-2, -1))
                return {"features": f, "pooled": p, "logits": self.head(p)}

            def forward(self, x):
                return self.forward_features(x)["logits"]

        def build(in_channels, num_classes, width=4, **kw):
            return Net(in_channels, num_classes, width)

        def no_contract(in_channels, num_classes, **kw):
            return torch.nn.Conv2d(in_channels, 1, 1)

        def not_a_module(in_channels, num_classes, **kw):
            return "nope"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "zoo_plugin_pkg.models"
    for mod in ("zoo_plugin_pkg.models", "zoo_plugin_pkg"):
        sys.modules.pop(mod, None)


def test_plugin_model_works_like_a_registered_name(plugin_pkg):
    model = create_model(f"{plugin_pkg}:build", 3, 5, width=6)
    assert model_info(f"{plugin_pkg}:build")["family"] == "plugin"
    assert missing_requirements(f"{plugin_pkg}:build") == []
    out = model.forward_features(torch.randn(2, 3, 9, 9))
    assert out["features"].shape == (2, 6, 9, 9) and out["logits"].shape == (2, 5)


def test_bad_plugins_are_clear_errors(plugin_pkg):
    with pytest.raises(UsageError, match="no attribute"):
        create_model(f"{plugin_pkg}:missing", 1, 10)
    with pytest.raises(UsageError, match="cannot import"):
        create_model("no_such_pkg_xyz.models:build", 1, 10)
    with pytest.raises(UsageError, match="not a torch.nn.Module"):
        create_model(f"{plugin_pkg}:not_a_module", 1, 10)
    with pytest.raises(TypeError, match="symmetry contract"):
        create_model(f"{plugin_pkg}:no_contract", 1, 10)


def test_cli_lists_the_zoo(run_cli):
    if not (ROOT / "bench" / "cli.py").exists():
        pytest.skip("no CLI yet")
    proc = run_cli("list", "models", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in NETWORKS | LAYERS:
        assert name in proc.stdout
