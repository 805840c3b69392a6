"""Model registry: `register_model`, `create_model`, `list_models` (after timm).

Built-in names are *declared* here with the module that implements them and the optional libraries they need,
so `list_models()` and the CLI never import escnn/e2cnn/GMR-Conv. The implementing module registers the real
factory with `@register_model(name)` when it is imported. Users can pass 'package.module:callable' anywhere a
registered name is accepted; the callable gets the same arguments as a registered factory.

A factory has the signature ``factory(in_channels: int, num_classes: int, **kw) -> nn.Module`` and the module
it returns must carry a `bench.contract.SymmetryContract` as ``.symmetry``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from torch import nn

from bench.contract import contract_of
from bench.errors import MissingDependencyError, UsageError
from bench.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")

# How to install each optional library (escnn must skip its py3nj dependency, which needs Fortran).
INSTALL_HINT = {
    "escnn": "pip install --no-deps escnn && pip install lie_learn joblib pymanopt autograd requests 'numpy<2'",
    "e2cnn": "pip install --no-deps e2cnn",
    "GMR_Conv": "pip install GMR-Conv==1.0.3 torchio",
}

# name: (module, family, level, requires)
_BUILTIN: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    # network level: one common small backbone, only the convolution changes
    "cnn": ("baselines.cnn", "plain", "network", ()),
    "gmr": ("baselines.gmr_family", "gmr", "network", ()),
    "gmr_radius": ("baselines.gmr_family", "gmr", "network", ()),
    "gmr_official": ("baselines.gmr_official", "gmr", "network", ("GMR_Conv",)),
    "c4": ("baselines.escnn_models", "group", "network", ("escnn",)),
    "c8": ("baselines.escnn_models", "group", "network", ("escnn",)),
    "c16": ("baselines.escnn_models", "group", "network", ("escnn",)),
    "d4": ("baselines.escnn_models", "group", "network", ("escnn",)),
    "d8": ("baselines.escnn_models", "group", "network", ("escnn",)),
    "so2": ("baselines.escnn_models", "steerable", "network", ("escnn",)),
    "o2": ("baselines.escnn_models", "steerable", "network", ("escnn",)),
    "so2_fourier": ("baselines.escnn_models", "steerable", "network", ("escnn",)),
    "e2cnn_c8": ("baselines.e2cnn_models", "group", "network", ("e2cnn",)),
    "e2cnn_d8": ("baselines.e2cnn_models", "group", "network", ("e2cnn",)),
    "e2cnn_so2": ("baselines.e2cnn_models", "steerable", "network", ("e2cnn",)),
    # ResNet-18 scale
    "resnet18": ("baselines.cnn", "plain", "network", ()),
    "gmr_resnet18": ("baselines.gmr_family", "gmr", "network", ()),
    "c8_resnet18": ("baselines.escnn_models", "group", "network", ("escnn",)),
    # layer level: one conv layer, same in/out channels (implemented in baselines.layers; the layers needing an
    # optional library are declared in the module that imports it, so build time never includes that import)
    "layer_conv2d": ("baselines.layers", "plain", "layer", ()),
    "layer_gmr": ("baselines.layers", "gmr", "layer", ()),
    "layer_gmr_radius": ("baselines.layers", "gmr", "layer", ()),
    "layer_gmr_official": ("baselines.gmr_official", "gmr", "layer", ("GMR_Conv",)),
    "layer_c8": ("baselines.escnn_models", "group", "layer", ("escnn",)),
    "layer_d8": ("baselines.escnn_models", "group", "layer", ("escnn",)),
    "layer_so2": ("baselines.escnn_models", "steerable", "layer", ("escnn",)),
    "layer_e2cnn_c8": ("baselines.e2cnn_models", "group", "layer", ("e2cnn",)),
}
for _name, (_module, _family, _level, _requires) in _BUILTIN.items():
    MODELS.declare(_name, _module, family=_family, level=_level, requires=_requires)


def register_model(name: str | None = None, **meta: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model factory under `name` (default: the function's name)."""
    return MODELS.register(name, **meta)


def missing_requirements(name: str) -> list[str]:
    """Optional libraries a registered model needs that are not importable here."""
    if ":" in name:
        return []
    requires = MODELS.entry(name).meta.get("requires", ())
    return [lib for lib in requires if importlib.util.find_spec(lib) is None]


def create_model(name: str, in_channels: int = 1, num_classes: int = 10, **kw: Any) -> nn.Module:
    """Build model `name` (or a 'pkg.mod:fn' plugin) and check that it declares a symmetry contract."""
    missing = missing_requirements(name)
    if missing:
        hints = "; ".join(INSTALL_HINT.get(lib, f"pip install {lib}") for lib in missing)
        raise MissingDependencyError(f"model {name!r} needs {', '.join(missing)}: {hints}")
    factory = MODELS.get(name)
    model = factory(in_channels=in_channels, num_classes=num_classes, **kw)
    if not isinstance(model, nn.Module):
        raise UsageError(f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    contract_of(model)
    return model


def list_models(level: str | None = None, family: str | None = None, available_only: bool = False) -> list[str]:
    """Registered model names, optionally filtered by level ('network'|'layer') and family."""
    out = []
    for name in MODELS.names():
        meta = MODELS.entry(name).meta
        if level and meta.get("level") != level:
            continue
        if family and meta.get("family") != family:
            continue
        if available_only and missing_requirements(name):
            continue
        out.append(name)
    return out


def model_info(name: str) -> dict[str, Any]:
    """Metadata of a model name (family, level, requires); plugins report family 'plugin'."""
    if ":" in name:
        return {"family": "plugin", "level": "network", "requires": ()}
    return dict(MODELS.entry(name).meta)
