"""Equivariance protocol: error at continuous angles and reflections, invariance, LEE, and the floor.

For every exposed feature f of a model and every group element g = (angle, reflect) of the sweep:
- maps:    ||f(g.x) - rho_out(g) g.f(x)|| / ||g.f(x)|| inside the map's comparison disk -> ``equivariance_error``
- vectors: ||f(g.x) - f(x)|| / ||f(x)||                                                 -> ``invariance_error``
- logits:  top-1 of f(g.x) equals top-1 of f(x)                                          -> ``prediction_agreement``
rho_out comes from the model's symmetry contract (bench.fields); an exposed feature the contract does not
declare is an error naming it. Regular fields at angles outside their group are measured after group pooling
(feature name suffixed ``:gpool``).

Comparison disk (``margin``, ``min_radius``): each map's rotation-safe disk shrunk by the margin its zero
padding reaches (`bench.margins.traced_margins`; padding is a square frame that does not rotate with the
content), never below ``min_radius`` of the disk. A map with no pixel centre in that disk (a 2x2 map) is not
compared: its rows say ``status='skipped'`` and why, instead of an error of 0/0.

Floors (``interpolation_floor`` rows, ``floor_kind``): what the rotation alone costs. On the inputs (feature
``input``): the round trip and the error of an isotropic Gaussian blur. On every exposed map (``blur``):
`bench.equivariance_metrics.resolution_blur_floor`, the error of an exactly equivariant operator that outputs
a map of that size, compared in the map's own region (``:gpool`` rows: see `feature_floor_rows`).

Per-stage attribution (``per_layer``, models exposing a sequential ``body``): for each stage in execution order
its error (fed the rotated input vs its rotated output), its floor (``pointwise`` stages are their own exactly
equivariant version; spatial stages get the blur floor at their output size) and the excess error
(``excess_error`` rows) - `bench.attribution.stage_attribution`.

Trained weights: a network job on a dataset depends on the accuracy job of the same model, dataset and seed
when that job is part of the sweep (`plan` declares it); its ``weights=trained`` rows name the checkpoint they
measured. Without such an accuracy job only ``init`` weights are measured (a warning says so).

The Lie derivative's input tangent is exact (`bench.rotation.rotation_generator`): it does not depend on
``rotation``. ``--dtype float64`` works for e2cnn models too: models are built under that default dtype.

Tables (`summarize`): ``equivariance_by_angle``, ``equivariance_summary``, ``equivariance_floor``,
``lie_derivative`` and ``equivariance_stages`` (see `TABLES`). Summaries "over non-grid angles" exclude the
multiples of 90° (`bench.schema.is_grid_angle`), where rotations are exact pixel permutations.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from bench import equivariance_metrics as em
from bench import settings as st
from bench.aggregate import MISSING, at_angle, non_grid, ok_rows, seed_stats, with_keys
from bench.attribution import stage_attribution
from bench.contract import FieldSpec, SymmetryContract, contract_of, exposed_features
from bench.errors import UsageError
from bench.fields import apply_rho, group_pool, in_group
from bench.jobs import Job, RunContext
from bench.margins import traced_margins
from bench.models import create_model
from bench.protocols import register_protocol
from bench.protocols.base import Protocol, TableSpec
from bench.rotation import DEFAULT_METHOD, bandlimited_images, disk_mask, parse_angles, rotate_many
from bench.schema import EquivarianceRow, model_level

if TYPE_CHECKING:
    from bench.profiles import Profile

WEIGHTS = ("init", "trained")
INPUTS = ("bandlimited", "dataset")
MARGINS = ("traced", "none")


@dataclasses.dataclass(frozen=True)
class EquivarianceSettings:
    """What to measure, on which inputs, with which rotation."""

    angles: Any = st.setting("0:360:5,22.5", st.angles, "'start:stop:step' ranges and numbers, comma-separated, "
                             "or a list (degrees)")
    reflections: bool = st.setting(True, st.boolean, "true or false",
                                   "also measure the horizontal flip composed with every angle")
    rotation: str = st.setting(DEFAULT_METHOD, st.rotation_method, "a rotation method")
    inputs: str = st.setting("bandlimited", st.one_of(*INPUTS), f"one of {', '.join(INPUTS)}",
                             "dataset = upright test images of the job's dataset (networks only)")
    num_images: int = st.setting(16, st.integer(1), "an integer >= 1")
    size: int = st.setting(33, st.integer(1), "an integer >= 1",
                           "input side when no dataset fixes it (odd keeps the centre on a pixel)")
    layer_channels: int = st.setting(8, st.integer(1), "an integer >= 1", "input channels of layer models")
    cutoff: float = st.setting(0.1, st.number(0, 0.5, strict_min=True), "a number in (0, 0.5] cycles/pixel",
                               "band limit of random inputs (std of a Gaussian spectrum)")
    lie_derivative: bool = st.setting(True, st.boolean, "true or false")
    floor: bool = st.setting(True, st.boolean, "true or false")
    blur_sigma: float = st.setting(1.5, st.number(0, strict_min=True), "a number > 0 (pixels)")
    margin: str = st.setting("traced", st.one_of(*MARGINS), f"one of {', '.join(MARGINS)}",
                             "traced = leave out the ring of each map its padding reaches (bench.margins); "
                             "none = the whole disk")
    min_radius: float = st.setting(0.5, st.number(0, 1), "a number in [0, 1]",
                                   "the comparison disk never shrinks below this fraction of the map's disk")
    weights: list = st.setting(list(WEIGHTS), st.subset_of(*WEIGHTS, nonempty=True),
                               f"a non-empty list drawn from {', '.join(WEIGHTS)}",
                               "trained = the checkpoint of the accuracy job of the same model/dataset/seed")
    per_layer: bool = st.setting(True, st.boolean, "true or false",
                                 "per-stage attribution for models exposing a sequential body")
    attribution_angle: float = st.setting(45.0, st.number(), "a number (degrees)")
    chunk: int = st.setting(512, st.integer(1), "an integer >= 1", "images per forward pass")
    model_kwargs: dict = st.setting({}, st.table, "a table of keyword arguments for create_model",
                                    "default: those of the trained checkpoint, if any")
    dataset_kwargs: dict = st.setting({}, st.table, "a table of keyword arguments for create_dataset",
                                      "default: those of the trained checkpoint, if any (e.g. {pad_to_odd = false})")


# --------------------------------------------------------------------------------------------------------
# inputs and models
# --------------------------------------------------------------------------------------------------------
def geometry(job: Job, s: EquivarianceSettings, ctx: RunContext | None = None,
             dataset_kwargs: Mapping[str, Any] | None = None) -> tuple[int, int, int]:
    """(in_channels, num_classes, size) of the job: from its dataset for networks, from settings otherwise.

    With dataset keywords (e.g. ``pad_to_odd = false``) the size is the built dataset's (`info` says it)."""
    if job.dataset is not None:
        from bench.datasets import create_dataset, dataset_info

        if dataset_kwargs:
            data_dir, download = (ctx.data_dir, ctx.download) if ctx is not None else (None, False)
            info = create_dataset(job.dataset, "test", data_dir=data_dir, download=download, **dataset_kwargs).info
        else:
            info = dataset_info(job.dataset)
        if info.num_classes is None or info.image_size is None:
            raise UsageError(f"dataset {job.dataset!r} fixes its classes/size only from the data; run the "
                             "accuracy protocol on it or use band-limited inputs")
        return info.in_channels, info.num_classes, info.image_size
    channels = s.layer_channels if model_level(job.model) == "layer" else 1
    return channels, 10, s.size


def make_inputs(job: Job, ctx: RunContext, s: EquivarianceSettings, channels: int, size: int,
                dataset_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Seeded inputs confined to the rotation-safe disk."""
    if s.inputs == "dataset":
        if job.dataset is None:
            raise UsageError("inputs='dataset' needs a dataset (layer-level models use band-limited inputs)")
        from bench.datasets import create_dataset

        data = create_dataset(job.dataset, "test", data_dir=ctx.data_dir, download=ctx.download,
                              **(dataset_kwargs or {}))
        gen = torch.Generator().manual_seed(job.seed)
        idx = torch.randperm(len(data), generator=gen)[: s.num_images].tolist()
        x = torch.stack([data[i][0] for i in idx]).to(ctx.dtype)
        x = x * disk_mask(size, device=x.device).to(x.dtype)
    else:
        x = bandlimited_images(s.num_images, channels, size, cutoff=s.cutoff, seed=job.seed, dtype=ctx.dtype)
    return x.to(ctx.device)


# --------------------------------------------------------------------------------------------------------
# what is compared: declared field types and each map's comparison disk
# --------------------------------------------------------------------------------------------------------
def feature_spec(contract: SymmetryContract, name: str) -> FieldSpec:
    """The declared field type of an exposed feature; an undeclared one is an error, never a guess (a guessed
    scalar field would count a regular field's channel permutation as model error)."""
    spec = contract.features.get(name)
    if spec is None:
        declared = ", ".join(sorted(contract.features)) or "none"
        raise UsageError(f"the model exposes feature {name!r} but its symmetry contract does not declare it "
                         f"(declared: {declared}); add {name!r} to `model.symmetry = SymmetryContract(group, "
                         "features={...})` with its field type (bench.contract)")
    return spec


@dataclasses.dataclass(frozen=True)
class Region:
    """Where a map is compared: its disk shrunk by the padding margin, never below the minimum radius."""

    mask: torch.Tensor          # (H, W) bool
    radius: float               # pixels
    margin: int | None          # traced margin (None: unknown op); 0 with margin='none'

    @property
    def empty(self) -> bool:
        return not bool(self.mask.any())

    def why_empty(self, shape: Sequence[int]) -> str:
        h, w = shape[-2:]
        return (f"a {h}x{w} map has no pixel centre within the comparison radius {self.radius:.2f} px (its disk "
                f"{(min(h, w) - 1) / 2:.2f} px, padding margin {self.margin}): nothing to compare")


def comparison_regions(model: torch.nn.Module | Callable[[torch.Tensor], dict[str, torch.Tensor]], x: torch.Tensor,
                       f0: Mapping[str, torch.Tensor], s: EquivarianceSettings) -> dict[str, Region]:
    """The comparison disk of every exposed map of `model` (or of a callable returning named maps) on inputs
    like x (see the module doc: ``margin``, ``min_radius``)."""
    margins = traced_margins(model, x[:1]) if s.margin == "traced" else {}
    regions = {}
    for name, ref in f0.items():
        if ref.dim() != 4:
            continue
        full = (min(ref.shape[-2:]) - 1) / 2.0
        margin = margins.get(name) if s.margin == "traced" else 0
        floor_radius = s.min_radius * full
        radius = floor_radius if margin is None else max(full - margin, floor_radius)
        regions[name] = Region(em.comparison_mask(ref, margin, min_radius=floor_radius), radius, margin)
    return regions


def skipped_rows(contract: SymmetryContract, f0: Mapping[str, torch.Tensor], regions: Mapping[str, Region],
                 angles: Sequence[float], reflections: bool) -> list[dict[str, Any]]:
    """One row per feature label that cannot be compared (empty region), with the reason."""
    rows = []
    for name, region in regions.items():
        if not region.empty:
            continue
        spec = feature_spec(contract, name)
        labels = {label for a in angles for r in ([False, True] if reflections else [False])
                  for label, _, _ in _feature_views(name, spec, a, r)}
        for label in sorted(labels):
            rows.append({"metric": "equivariance_error", "value": None, "unit": "relative", "angle_deg": None,
                         "reflect": "none", "feature": label, "status": "skipped",
                         "message": f"{label}: {region.why_empty(f0[name].shape)}"})
    return rows


# --------------------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------------------
def batched_features(model: torch.nn.Module, x: torch.Tensor, chunk: int) -> dict[str, torch.Tensor]:
    """exposed_features over a large batch in chunks (many angles x images in few forward passes)."""
    parts: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            parts.append(exposed_features(model, x[i:i + chunk]))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _feature_views(name: str, spec: FieldSpec, angle: float, reflect: bool) -> list[tuple[str, FieldSpec, bool]]:
    """(row feature name, spec to use, pool first?) for one feature at one element."""
    if spec.kind in ("regular", "irreps"):
        views = [(f"{name}:gpool", FieldSpec("scalar"), True)]
        if in_group(spec, angle, reflect):
            views.insert(0, (name, spec, False))
        return views
    return [(name, spec, False)]


def element_rows(contract: SymmetryContract, f0: dict[str, torch.Tensor], fg: dict[str, torch.Tensor],
                 angles: Sequence[float], reflect: bool, method: str,
                 regions: Mapping[str, Region] | None = None) -> list[dict[str, Any]]:
    """Rows for every feature at every angle of one reflection branch. fg[k] has shape (A*N, ...).

    Maps are compared inside `regions` (default: each map's full disk); maps with an empty region are left
    out (`skipped_rows` says so)."""
    rows: list[dict[str, Any]] = []
    n = next(iter(f0.values())).shape[0]
    for name, ref in f0.items():
        spec = feature_spec(contract, name)
        got = fg[name].reshape(len(angles), n, *ref.shape[1:])
        if not spec.spatial:
            errs = em.masked_relative_error(got, ref.expand_as(got)).mean(dim=-1)
            for a, e in zip(angles, errs.tolist()):
                rows.append(_row("invariance_error", e, a, reflect, name, contract))
            if name == "logits":
                agree = (got.argmax(-1) == ref.argmax(-1)).to(torch.float64).mean(dim=-1)
                for a, v in zip(angles, agree.tolist()):
                    rows.append(_row("prediction_agreement", v, a, reflect, name, contract, unit="fraction"))
            continue
        mask = regions[name].mask if regions is not None else em.map_mask(ref)
        if not bool(mask.any()):
            continue
        target_maps = rotate_many(ref, angles, method, reflect)  # (A, N, C, H, W)
        for i, a in enumerate(angles):
            for row_name, view_spec, pool in _feature_views(name, spec, a, reflect):
                if pool:
                    pred, target = group_pool(spec, got[i]), group_pool(spec, target_maps[i])
                else:
                    pred, target = got[i], apply_rho(view_spec, target_maps[i], a, reflect)
                err = em.masked_relative_error(pred, target, mask).mean().item()
                rows.append(_row("equivariance_error", err, a, reflect, row_name, contract))
    return rows


def _row(metric: str, value: float, angle: float | None, reflect: bool, feature: str,
         contract: SymmetryContract, unit: str = "relative") -> dict[str, Any]:
    row = {"metric": metric, "value": float(value), "unit": unit, "angle_deg": angle,
           "reflect": "h" if reflect else "none", "feature": feature}
    if angle is not None:
        row["claimed"] = contract.claims(angle, reflect)
    return row


def _floor_row(value: float, angle: float, feature: str, kind: str) -> dict[str, Any]:
    return {"metric": "interpolation_floor", "value": float(value), "unit": "relative", "angle_deg": angle,
            "reflect": "none", "feature": feature, "floor_kind": kind}


def floor_rows(x: torch.Tensor, angles: Sequence[float], method: str, sigma: float) -> list[dict[str, Any]]:
    """What the rotation alone costs on the inputs at each angle (flips are exact, so one set serves both
    branches): the round trip (two interpolations; not a bound of one) and an isotropic blur's error."""
    rows = []
    for kind, values in (("roundtrip", em.roundtrip_floor(x, angles, method)),
                         ("blur", em.blur_floor(x, angles, method, sigma))):
        rows += [_floor_row(v, a, "input", kind) for a, v in zip(angles, values.tolist())]
    return rows


def feature_floor_rows(contract: SymmetryContract, f0: dict[str, torch.Tensor], x: torch.Tensor,
                       angles: Sequence[float], method: str, sigma: float,
                       regions: Mapping[str, Region]) -> list[dict[str, Any]]:
    """The floor of each exposed map (``floor_kind='blur'``), in its own comparison region.

    `resolution_blur_floor`: an exactly equivariant operator turning the inputs into a map of this size (its
    left side rotates the large input, its right side the small map, like a network's late features). A map's
    round trip is no bound: on 8-px maps at 10 deg one rotation errs 1.2e-2, the round trip 5.5e-3. The floor
    depends on the map's size and region only, so a regular field's own rows and its ``:gpool`` rows get it
    too: the ``:gpool`` comparison pools both sides (pool f(g.x) vs pool g.f(x)), a scalar map of the same
    size in the same region, and the fibre permutation and the pooling add no interpolation of their own."""
    rows: list[dict[str, Any]] = []
    cache: dict[tuple[int, float], list[float]] = {}
    for name, ref in f0.items():
        region = regions.get(name)
        if ref.dim() != 4 or region is None or region.empty:
            continue
        spec = feature_spec(contract, name)
        key = (ref.shape[-1], region.radius)
        if key not in cache:
            cache[key] = em.resolution_blur_floor(x, ref.shape[-1], angles, method, sigma, region.mask).tolist()
        labels = [name] if spec.kind not in ("regular", "irreps") else [name, f"{name}:gpool"]
        for label in labels:
            rows += [_floor_row(v, a, label, "blur") for a, v in zip(angles, cache[key])]
    return rows


def lie_rows(model: torch.nn.Module, contract: SymmetryContract, x: torch.Tensor, method: str,
             regions: Mapping[str, Region] | None = None) -> list[dict[str, Any]]:
    """LEE on logits (Gruver et al.) and the relative Lie derivative of each exposed map (fields pooled to
    scalars, by the chain rule; inside its comparison region; maps with an empty region are left out)."""
    rows = []
    with torch.no_grad():
        names = exposed_features(model, x[:1])
    for name in names:
        spec = feature_spec(contract, name)
        if name == "logits":
            value = em.lie_derivative_logits(lambda inp: exposed_features(model, inp)["logits"], x, method)
            rows.append({"metric": "lie_derivative", "value": value.mean().item(), "unit": "1/rad",
                         "feature": name, "reflect": "none"})
        elif spec.spatial:
            region = regions.get(name) if regions is not None else None
            if region is not None and region.empty:
                continue

            def field(inp: torch.Tensor, n: str = name) -> torch.Tensor:
                return exposed_features(model, inp)[n]

            def pool(t: torch.Tensor, sp: FieldSpec = spec) -> torch.Tensor:
                return group_pool(sp, t)

            # the generator acts on the field before its (kinked) pooling: see `lie_derivative_map`
            value = em.lie_derivative_map(field, x, method, mask=None if region is None else region.mask,
                                          pool=None if spec.kind == "scalar" else pool)
            label = name if spec.kind == "scalar" else f"{name}:gpool"
            rows.append({"metric": "lie_derivative", "value": value.mean().item(), "unit": "relative/rad",
                         "feature": label, "reflect": "none"})
    return rows


def sequential_body(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]] | None:
    """The plain-tensor sequential stages of a model with scalar features, if it exposes them as `.body`."""
    body = getattr(model, "body", None)
    contract = contract_of(model)
    feat = contract.features.get("features") or contract.features.get("out")
    if not isinstance(body, torch.nn.Sequential) or feat is None or feat.kind != "scalar":
        return None
    return list(body.named_children())


def stage_region(stage: torch.nn.Module, h: torch.Tensor, s: EquivarianceSettings) -> Region:
    """The comparison region of one stage's output: its disk less the margin the stage's own padding reaches
    (its input is non-zero up to the border), never below ``min_radius`` of the disk."""
    def call(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": stage(t)}

    with torch.no_grad():
        out = stage(h[:1])
    return comparison_regions(call, h[:1], {"out": out}, s)["out"]


def attribution_rows(model: torch.nn.Module, x: torch.Tensor, angle: float, method: str,
                     s: EquivarianceSettings | None = None) -> list[dict[str, Any]]:
    """Per stage, in execution order: its error on its own (the stage fed R h vs R applied to its output),
    the floor of its kind and the excess (`bench.attribution.stage_attribution`), scalar maps only.

    Rows: ``equivariance_error``, ``interpolation_floor`` (``floor_kind`` pointwise | blur) and
    ``excess_error``; a stage whose region is empty gets one skipped row."""
    stages = sequential_body(model)
    if not stages:
        return []
    s = s or EquivarianceSettings()
    rows = []
    with torch.no_grad():
        h = model.stem(x) if hasattr(model, "stem") else x
        for index, (name, stage) in enumerate(stages):
            out = stage(h)
            if out.dim() != 4:
                break
            base = {"unit": "relative", "angle_deg": angle, "reflect": "none", "feature": "stage",
                    "stage": f"{name}:{type(stage).__name__}", "stage_index": index}
            region = stage_region(stage, h, s)
            if region.empty:
                rows.append({**base, "metric": "equivariance_error", "value": None, "status": "skipped",
                             "message": f"stage {base['stage']}: {region.why_empty(out.shape)}"})
            else:
                res = stage_attribution(stage, h, angle, method, s.blur_sigma, region.mask)
                rows += [{**base, "metric": "equivariance_error", "value": res["error"]},
                         {**base, "metric": "interpolation_floor", "value": res["floor"],
                          "floor_kind": "pointwise" if res["pointwise"] else "blur"},
                         {**base, "metric": "excess_error", "value": res["excess"]}]
            h = out
    return rows


def measure(model: torch.nn.Module, x: torch.Tensor, s: EquivarianceSettings) -> list[dict[str, Any]]:
    """All rows of one model state on inputs x (everything except the weights/rotation labels)."""
    contract = contract_of(model)
    angles, method = parse_angles(s.angles), s.rotation
    f0 = batched_features(model, x, s.chunk)
    for name in f0:
        feature_spec(contract, name)  # every exposed feature must be declared, before anything is measured
    regions = comparison_regions(model, x, f0, s)
    rows = skipped_rows(contract, f0, regions, angles, s.reflections)
    for reflect in ([False, True] if s.reflections else [False]):
        rotated = rotate_many(x, angles, method, reflect).flatten(0, 1)
        fg = batched_features(model, rotated, s.chunk)
        rows += element_rows(contract, f0, fg, angles, reflect, method, regions)
    if s.floor:
        rows += feature_floor_rows(contract, f0, x, angles, method, s.blur_sigma, regions)
    if s.lie_derivative:
        rows += lie_rows(model, contract, x, method, regions)
    if s.per_layer:
        rows += attribution_rows(model, x[:16], s.attribution_angle, method, s)  # a diagnostic: few images
    return rows


# --------------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------------
_CASE = {"model": "model", "weights": "init | trained (the accuracy job's checkpoint)",
         "dataset": "dataset of the inputs (empty: band-limited inputs of layer models)",
         "inputs": "bandlimited | dataset", "rotation": "interpolation method of the finite rotations"}
TABLE_ANGLES = (10.0, 22.5, 45.0, 90.0)


def angle_column(a: float) -> str:
    return f"at_{a:g}deg".replace(".", "_")


BY_ANGLE = TableSpec(
    "equivariance_by_angle", "Equivariance error vs angle",
    "Per feature and group element: the error (mean over images) averaged across seeds.",
    {**_CASE, "metric": "equivariance_error | invariance_error | prediction_agreement",
     "feature": "exposed feature (':gpool' = after group pooling)", "reflect": "none | h",
     "angle_deg": "rotation (degrees)", "claimed": "the model claims exactness at this element",
     "mean": "mean across seeds", "std": "std across seeds", "n_seeds": "seeds"})
SUMMARY = TableSpec(
    "equivariance_summary", "Equivariance error summary",
    "Per feature: mean and worst over the measured angles that are not multiples of 90° (worst = max error, "
    "min agreement), and the value at selected angles; each angle's value is first averaged across seeds. "
    "Maps also get their floor (equivariance_floor) over the same angles and at 45°.",
    {**_CASE, "metric": "metric", "feature": "feature", "reflect": "none | h",
     "mean_non_grid": "mean over non-grid angles", "worst_non_grid": "max error (min agreement) over non-grid "
     "angles", **{angle_column(a): f"value at {a:g}°" for a in TABLE_ANGLES},
     "floor_mean_non_grid": "the feature's floor, mean over the same non-grid angles",
     "floor_at_45deg": "the feature's floor at 45°", "n_seeds": "seeds"})
FLOOR = TableSpec(
    "equivariance_floor", "Interpolation floor",
    "What the rotation alone costs, per angle. Inputs (feature 'input'): the round trip ||R_-a R_a x - x|| / ||x|| "
    "(two interpolations, not a bound) and the error of an isotropic Gaussian blur. Each exposed map: 'blur' = "
    "the error of an exactly equivariant operator producing a map of that size, in the map's comparison disk.",
    {"level": "layer | network (their inputs differ)",
     "model": "model whose feature maps were used (empty for the inputs: the same for every model of the level)",
     "weights": "init | trained (none for the inputs)", "dataset": "dataset", "inputs": "inputs",
     "rotation": "rotation method", "feature": "input or feature", "floor_kind": "roundtrip | blur",
     "angle_deg": "rotation (degrees)", "mean": "mean across seeds", "n_seeds": "seeds"})
LIE = TableSpec(
    "lie_derivative", "Lie derivative (LEE)",
    "Logits: mean over classes of |d/dθ softmax f(R_θ x)| at θ = 0, per image (Gruver et al. 2023), 1/rad; maps: "
    "||d/dθ R_-θ f(R_θ x)|| / ||f(x)|| in the map's comparison disk. The rotation's derivative is exact, whatever "
    "the rotation method. Mean over images, then mean and std across seeds.",
    {**_CASE, "feature": "feature", "unit": "unit", "mean": "mean across seeds", "std": "std across seeds",
     "n_seeds": "seeds"})
STAGES = TableSpec(
    "equivariance_stages", "Per-stage attribution",
    "Per stage of a sequential body, in execution order, at `angle_deg`: its error on its own (the stage fed the "
    "rotated input vs its rotated output), the floor of its kind (pointwise stages - activations, eval-mode batch "
    "norm, 1x1 convs - are their own exactly equivariant version, so floor = error; spatial stages: an isotropic "
    "blur at their output size) and the excess = max(error - floor, 0), the part the stage itself breaks.",
    {"model": "model", "weights": "weights", "dataset": "dataset", "rotation": "rotation method",
     "stage_index": "execution order", "stage": "stage name and module type", "angle_deg": "rotation (degrees)",
     "error": "error, mean across seeds", "error_std": "std of the error across seeds",
     "floor": "floor, mean across seeds", "floor_kind": "pointwise | blur",
     "excess": "excess error, mean across seeds", "n_seeds": "seeds"})
CASE_KEYS = list(_CASE)


@register_protocol("equivariance")
class EquivarianceProtocol(Protocol):
    """Equivariance / invariance error at any angle and reflection, LEE, floors, per-stage attribution."""

    settings_type = EquivarianceSettings
    row_type = EquivarianceRow
    description = "equivariance error at continuous angles and reflections, Lie derivative, floors"
    after = ("accuracy",)  # trained-weight jobs depend on accuracy jobs
    tables = {t.name: t for t in (BY_ANGLE, SUMMARY, FLOOR, LIE, STAGES)}

    # -- planning -----------------------------------------------------------------------------------------
    def plan(self, profile: Profile, device: str, settings: EquivarianceSettings,
             planned: Sequence[Job]) -> list[Job]:
        trainers = {(j.model, j.dataset, j.seed): j for j in planned
                    if j.protocol == "accuracy" and j.settings.get("save_checkpoint", True)}
        untrained: list[str] = []
        jobs = []
        for model in profile.models_for(self.name):
            network = model_level(model) == "network"
            datasets: list[str | None] = list(profile.datasets) if network and profile.datasets else [None]
            for dataset in datasets:
                trainable = network and dataset is not None
                for seed in profile.seeds:
                    weights, deps = list(settings.weights), ()
                    trainer = trainers.get((model, dataset, seed)) if trainable else None
                    if "trained" in weights and trainer is not None:
                        deps = (trainer.job_id,)
                    elif "trained" in weights:
                        weights.remove("trained")
                        if not weights:
                            why = (f"the accuracy protocol for {model} on {dataset} (seed {seed}) in the same run"
                                   if trainable else "a network on a dataset (layers are never trained)")
                            raise UsageError(f"equivariance weights=['trained'] needs {why}")
                        if trainable:
                            untrained.append(f"{model}/{dataset}:seed{seed}")
                    job_settings = settings if weights == settings.weights else \
                        dataclasses.replace(settings, weights=weights)
                    jobs.append(self.job(model, dataset, seed, device, job_settings, deps))
        if untrained:
            warnings.warn(f"equivariance: trained weights not measured for {', '.join(untrained)} (no accuracy job "
                          "for them in this run; add the accuracy protocol to measure trained networks)",
                          stacklevel=2)
        return jobs

    def data_needed(self, job: Job) -> set[tuple[str, str]]:
        s = self.settings_of(job)
        return {(job.dataset, "test")} if job.dataset and (s.inputs == "dataset" or s.dataset_kwargs) else set()

    # -- running ------------------------------------------------------------------------------------------
    def run(self, job: Job, ctx: RunContext) -> list[dict[str, Any]]:
        from bench.diagnose.subject import default_dtype
        from bench.training import deterministic, load_trained, read_checkpoint

        s: EquivarianceSettings = self.settings_of(job)
        checkpoint = trained_checkpoint(job, ctx) if "trained" in s.weights else None
        saved = read_checkpoint(checkpoint) if checkpoint else {}
        # init weights of the same architecture, on the same images, as the accuracy protocol trained, unless told
        kwargs = s.model_kwargs or dict(saved.get("model_kwargs") or {})
        dataset_kwargs = s.dataset_kwargs or dict(saved.get("dataset_kwargs") or {})
        channels, classes, size = geometry(job, s, ctx, dataset_kwargs)
        x = make_inputs(job, ctx, s, channels, size, dataset_kwargs)
        rows: list[dict[str, Any]] = []
        # e2cnn allocates its filters with the default dtype: build and run every model in the job's dtype;
        # deterministic(): GMR's impl="auto" must not pick its path by timing here (the numbers would depend on load)
        with default_dtype(ctx.dtype), deterministic(job.seed, ctx.device):
            for weights in s.weights:
                extra: dict[str, Any] = {"weights": weights}
                if weights == "init":
                    torch.manual_seed(job.seed)
                    model = create_model(job.model, in_channels=channels, num_classes=classes, **kwargs)
                else:
                    assert checkpoint is not None
                    model = load_trained(job.model, checkpoint, channels, classes, **s.model_kwargs)
                    extra["checkpoint"] = checkpoint.name
                model = model.to(device=ctx.device, dtype=ctx.dtype).eval()
                rows += [{**r, **extra} for r in measure(model, x, s)]
        if s.floor:
            rows += [{**r, "weights": "none"} for r in floor_rows(x, parse_angles(s.angles), s.rotation, s.blur_sigma)]
        return [{**r, "rotation": s.rotation, "inputs": s.inputs} for r in rows]

    # -- summaries ----------------------------------------------------------------------------------------
    def summarize(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        d = ok_rows(frame, self.name)
        if d.empty:
            return {}
        for col in ("feature", "weights", "dataset", "inputs", "rotation", "stage", "floor_kind", "claimed",
                    "stage_index"):
            if col not in d.columns:
                d[col] = None
        staged = d["stage"].notna()
        main = d[~staged]
        curves = main[main["metric"].isin(("equivariance_error", "invariance_error", "prediction_agreement"))
                      & main["angle_deg"].notna()]
        by_angle = seed_stats(curves, [*CASE_KEYS, "metric", "feature", "reflect", "angle_deg"])
        if not by_angle.empty:
            claimed = curves.groupby(["model", "angle_deg", "reflect"])["claimed"].first()
            by_angle["claimed"] = [claimed.get((m, a, r)) for m, a, r in
                                   zip(by_angle["model"], by_angle["angle_deg"], by_angle["reflect"])]
        floor = main[main["metric"] == "interpolation_floor"]
        out = {BY_ANGLE.name: BY_ANGLE.frame(by_angle),
               SUMMARY.name: SUMMARY.frame(summary_rows(by_angle, feature_floors(floor)))}
        if not floor.empty:
            floor = floor.assign(level=floor["model"].map(model_level),
                                 model=floor["model"].where(floor["feature"] != "input", None))
            f = seed_stats(floor, ["level", "model", "weights", "dataset", "inputs", "rotation", "feature",
                                   "floor_kind", "angle_deg"])
            out[FLOOR.name] = FLOOR.frame(f.drop(columns="std"))
        lee = main[main["metric"] == "lie_derivative"]
        if not lee.empty:
            out[LIE.name] = LIE.frame(seed_stats(lee, [*CASE_KEYS, "feature", "unit"]))
        stages = d[staged]
        if not stages.empty:
            out[STAGES.name] = STAGES.frame(stage_table(stages))
        return out

    def headline(self, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
        summary = tables.get(SUMMARY.name)
        if summary is None or summary.empty:
            return None
        lie = tables.get(LIE.name)
        rows = []
        for model, m in summary[summary["reflect"] == "none"].groupby("model", sort=True):
            pick = main_output(m)
            if pick is None:
                continue
            row = {"model": model, "eq_weights": pick["weights"], "eq_feature": pick["feature"],
                   "eq_mean": pick["mean_non_grid"], "eq_worst": pick["worst_non_grid"],
                   "eq_45": pick[angle_column(45.0)]}
            if lie is not None and not lie.empty:
                hit = lie[(lie["model"] == model) & (lie["feature"] == pick["feature"])]
                hit = hit[(hit["weights"] == pick["weights"]) & same_case(hit, pick)]
                row["lee"] = hit["mean"].iloc[0] if not hit.empty else None
            rows.append(row)
        return pd.DataFrame(rows).set_index("model") if rows else None


# Which feature is "the output" in the headline: a network's logits are an invariant vector; a layer's output map
# is compared after group pooling when it is a regular field (`out:gpool` exists at every angle).
MAIN_OUTPUTS = (("invariance_error", "logits"), ("equivariance_error", "out:gpool"), ("equivariance_error", "out"))


def main_output(m: pd.DataFrame) -> dict[str, Any] | None:
    """The headline's summary row of one model: its output feature, trained weights when it has them, the most
    common dataset / inputs / rotation of its rows (ties: alphabetical)."""
    for metric, feature in MAIN_OUTPUTS:
        hit = m[(m["metric"] == metric) & (m["feature"] == feature)]
        if hit.empty:
            continue
        weights = "trained" if (hit["weights"] == "trained").any() else "init"
        hit = hit[hit["weights"] == weights]
        for col in ("dataset", "inputs", "rotation"):
            values = hit[col].fillna("").astype(str)
            counts = values.value_counts()
            top = sorted(counts[counts == counts.max()].index)[0]
            hit = hit[values == top]
        return hit.iloc[0].to_dict()
    return None


def same_case(df: pd.DataFrame, pick: Mapping[str, Any]) -> pd.Series:
    """Rows of `df` measured on the same dataset / inputs / rotation as `pick`."""
    keep = pd.Series(True, index=df.index)
    for col in ("dataset", "inputs", "rotation"):
        keep &= df[col].fillna("").astype(str) == ("" if pd.isna(pick.get(col)) else str(pick.get(col)))
    return keep


FEATURE_KEYS = [*CASE_KEYS, "feature"]


def feature_floors(floor: pd.DataFrame) -> pd.DataFrame:
    """Per (case, feature, angle): the feature's floor averaged across seeds (the larger of its kinds, should
    a feature ever get several)."""
    f = floor[floor["feature"] != "input"] if not floor.empty else floor
    if f.empty:
        return pd.DataFrame(columns=[*FEATURE_KEYS, "angle_deg", "mean"])
    stats = seed_stats(f, [*FEATURE_KEYS, "floor_kind", "angle_deg"])
    keyed = with_keys(stats, [*FEATURE_KEYS, "angle_deg"])
    return keyed.groupby([*FEATURE_KEYS, "angle_deg"], sort=True)["mean"].max().reset_index()


def summary_rows(by_angle: pd.DataFrame, floors: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One row per (case, metric, feature, reflect) of the by-angle table: non-grid mean / worst, selected angles,
    and the feature's floor over the same angles (`feature_floors`; flips are exact, so both branches share it)."""
    rows: list[dict[str, Any]] = []
    if by_angle.empty:
        return rows
    keys = [*CASE_KEYS, "metric", "feature", "reflect"]
    filled = with_keys(by_angle, keys)
    floor_of = {k: g for k, g in floors.groupby(FEATURE_KEYS, sort=False)} if floors is not None and \
        not floors.empty else {}
    for key, g in filled.groupby(keys, sort=True):
        row = {k: (None if v == MISSING else v) for k, v in zip(keys, key)}
        worst = min if row["metric"] == "prediction_agreement" else max
        ng = non_grid(g)
        row["mean_non_grid"] = ng["mean"].mean() if not ng.empty else None
        row["worst_non_grid"] = worst(ng["mean"]) if not ng.empty else None
        for a in TABLE_ANGLES:
            hit = at_angle(g, a)
            row[angle_column(a)] = hit["mean"].mean() if not hit.empty else None
        fl = floor_of.get(tuple(dict(zip(keys, key))[k] for k in FEATURE_KEYS))
        if fl is not None and row["metric"] == "equivariance_error":
            same = fl[fl["angle_deg"].isin(ng["angle_deg"].tolist())]
            row["floor_mean_non_grid"] = same["mean"].mean() if not same.empty else None
            at45 = at_angle(fl, 45.0)
            row["floor_at_45deg"] = at45["mean"].iloc[0] if not at45.empty else None
        row["n_seeds"] = int(g["n_seeds"].max())
        rows.append(row)
    return rows


STAGE_KEYS = ["model", "weights", "dataset", "rotation", "stage_index", "stage", "angle_deg"]
STAGE_METRICS = {"equivariance_error": "error", "interpolation_floor": "floor", "excess_error": "excess"}


def stage_table(stages: pd.DataFrame) -> pd.DataFrame:
    """One row per stage (execution order within each model / weights / case): error (± std), floor, excess."""
    stats = seed_stats(stages[stages["metric"].isin(list(STAGE_METRICS))], [*STAGE_KEYS, "metric"])
    stats = with_keys(stats, STAGE_KEYS)
    kinds = with_keys(stages[stages["metric"] == "interpolation_floor"], STAGE_KEYS)
    kind_of = kinds.groupby(STAGE_KEYS, sort=False)["floor_kind"].first().to_dict()
    rows = []
    for key, g in stats.groupby(STAGE_KEYS, sort=False):
        row = {k: (None if v == MISSING else v) for k, v in zip(STAGE_KEYS, key)}
        for metric, col in STAGE_METRICS.items():
            hit = g[g["metric"] == metric]
            row[col] = hit["mean"].iloc[0] if not hit.empty else None
            if col == "error":
                row["error_std"] = hit["std"].iloc[0] if not hit.empty else None
        row["floor_kind"] = kind_of.get(key)
        row["n_seeds"] = int(g["n_seeds"].max())
        rows.append(row)
    table = pd.DataFrame(rows)
    table["stage_index"] = table["stage_index"].astype(int)
    order = ["model", "weights", "dataset", "rotation", "angle_deg"]
    return table.sort_values([*order, "stage_index"], key=lambda c: c.astype(str) if c.name in
                             ("dataset",) else c, kind="stable").reset_index(drop=True)


def trained_checkpoint(job: Job, ctx: RunContext):
    """The checkpoint written by the accuracy job this job depends on (upright-trained when there is one)."""
    if not job.depends_on or job.dataset is None:
        raise UsageError(f"{job.label}: weights 'trained' need the accuracy job of the same model, dataset and seed "
                         "(plan the accuracy protocol in the same run)")
    producer = job.depends_on[0]
    for condition in ("upright", "rotation"):
        path = ctx.checkpoint_path(job.model, job.dataset, job.seed, condition, producer)
        if path.is_file():
            return path
    raise FileNotFoundError(f"the accuracy job {producer} finished but left no checkpoint for {job.model} on "
                            f"{job.dataset} (seed {job.seed}) under {ctx.checkpoint_dir}")
