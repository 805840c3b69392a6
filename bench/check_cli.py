"""`equibench check TARGET`: diagnose one model's equivariance (bench.diagnose) from the command line.

bench/cli.py wires it with two lines: ``check_cli.add_parser(sub)`` in `build_parser` and
``if args.command == "check": return check_cli.run(args)`` in `main`.

TARGET is a registry name, ``pkg.mod:factory`` (called as ``factory(in_channels=C, num_classes=10)``, like
``--models`` plugins) or ``pkg.mod:attr`` naming an ``nn.Module`` instance. Exit status 0 after a completed
diagnosis whatever it found; 2 on bad input (unknown target, bad shape, a model that fails to build or raises),
and then nothing is written.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import MissingDependencyError, UsageError
from bench.rotation import DEFAULT_METHOD, METHODS

NUM_CLASSES = 10
LAYER_SIZE = 33  # the equivariance protocol's input side for layers (odd: the rotation centre is a pixel)
SMALL_NETWORK_DATASET = "rotdigits"  # the suite's default dataset: 1x29x29
RESNET_DATASET = "cifar10"  # ResNet-18-scale networks: 3x33x33
# gmr_resnet18's four 2x2 average pools need a side divisible by 16 (gmr.resnet); at 33 it is (correctly)
# diagnosed as not exact, so its default is the nearest size at which its contract holds.
SIZE_OVERRIDES = {"gmr_resnet18": 32}


def add_parser(subparsers: Any) -> None:
    """Add the `check` subcommand to an argparse subparsers object."""
    from bench.diagnose.check import DEFAULT_ANGLES, DTYPES

    p = subparsers.add_parser(
        "check", help="diagnose one model's equivariance: exact symmetries, where they break, causes, angles",
        description=__doc__.split("\n\n")[0] + " Reports, in order: the error under the 7 pixel-grid symmetries and "
        "the largest exact subgroup of D4; the first module whose output is no longer exact; likely causes; the "
        "error at continuous angles with its floor, and the Lie derivative. See docs/check.md.")
    p.add_argument("target", help="registry name, pkg.mod:factory (factory(in_channels, num_classes)) or "
                                  "pkg.mod:attr (an nn.Module instance)")
    p.add_argument("--input-shape", help="C,H,W of one input (default: from the registry / dataset where known; "
                                         "required for plugins)")
    p.add_argument("--sizes", help="A:B: also scan square input sides A..B (inclusive) and list those at which the "
                                   "model is exact")
    p.add_argument("--angles", default=DEFAULT_ANGLES,
                   help=f"continuous angles in degrees, 'start:stop:step' and/or comma list (default {DEFAULT_ANGLES}"
                        "); 'none' skips them")
    p.add_argument("--rotation", default=DEFAULT_METHOD, help=f"interpolation for those angles: {' | '.join(METHODS)}")
    p.add_argument("--dtype", default="float64", choices=tuple(DTYPES), help="computation dtype (default float64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation and the inputs")
    p.add_argument("--json", type=Path, help="write the diagnosis as JSON (schema in docs/check.md)")
    p.add_argument("--html", type=Path, help="write a one-page HTML report")


def _in_channels_default(factory: Any) -> int | None:
    try:
        param = inspect.signature(factory).parameters.get("in_channels")
    except (TypeError, ValueError):
        return None
    return param.default if param is not None and isinstance(param.default, int) else None


def default_input_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) for a registry model: layers take their factory's default channels at the protocol's side;
    networks the geometry of their dataset (rotdigits 1x29x29; CIFAR-10 3x33x33 at ResNet-18 scale)."""
    from bench.datasets import dataset_info
    from bench.models import MODELS, model_info

    if model_info(name)["level"] == "layer":
        channels = _in_channels_default(MODELS.get(name)) or 16
        return channels, LAYER_SIZE, LAYER_SIZE
    info = dataset_info(RESNET_DATASET if "resnet18" in name else SMALL_NETWORK_DATASET)
    size = SIZE_OVERRIDES.get(name, info.image_size)
    return info.in_channels, size, size


def _build(what: str, factory: Any, channels: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    try:
        model = factory(in_channels=channels, num_classes=NUM_CLASSES)
    except (UsageError, MissingDependencyError):
        raise
    except Exception as exc:  # the factory's own error is the user's to see
        raise UsageError(f"building {what} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UsageError(f"{what} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def resolve_target(target: str, input_shape: str | None, seed: int) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model and input shape for a CLI TARGET (see the module docstring)."""
    from bench.diagnose.check import parse_shape
    from bench.models import MODELS, create_model
    from bench.registry import load_object

    if ":" not in target:
        MODELS.entry(target)  # unknown names: UsageError with the valid names and "did you mean"
        shape = parse_shape(input_shape) if input_shape else default_input_shape(target)
        return _build(f"model {target!r}", lambda **kw: create_model(target, **kw), shape[0], seed), shape
    obj = load_object(target)
    if input_shape is None:
        raise UsageError(f"--input-shape C,H,W is required for {target!r} (not a registry model)")
    shape = parse_shape(input_shape)
    if isinstance(obj, nn.Module):
        return obj, shape
    if callable(obj):
        return _build(f"factory {target!r}", obj, shape[0], seed), shape
    raise UsageError(f"{target!r} is a {type(obj).__name__}, neither an nn.Module nor a factory returning one")


def _check_writable(path: Path | None, flag: str) -> None:
    if path is not None and not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist")


def run(args: argparse.Namespace) -> int:
    """Run the diagnosis for parsed `check` arguments; print the report; 0 when done, 2 on bad input."""
    from bench.diagnose import check
    from bench.diagnose.text import format_text

    try:
        _check_writable(args.json, "--json")
        _check_writable(args.html, "--html")
        model, shape = resolve_target(args.target, args.input_shape, args.seed)
        angles = None if str(args.angles).strip().lower() in ("none", "") else args.angles
        result = check(model, shape, angles=angles, rotation=args.rotation, dtype=args.dtype, seed=args.seed,
                       sizes=args.sizes, target=args.target)
        json_text = result.to_json() if args.json else None
        html = None
        if args.html:
            from bench.diagnose_html import render_html

            html = render_html(result)
    except (UsageError, MissingDependencyError) as exc:
        print(f"equibench: error: {exc}", file=sys.stderr)
        return 2
    if json_text is not None:
        args.json.write_text(json_text + "\n")
    if html is not None:
        args.html.write_text(html)
    print(format_text(result))
    for flag, path in (("json", args.json), ("html", args.html)):
        if path is not None:
            print(f"{flag}: {path}")
    return 0
