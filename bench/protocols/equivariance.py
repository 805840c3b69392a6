"""Equivariance protocol: error at continuous angles and reflections, invariance, LEE, and the floor.

For every exposed feature f of a model and every group element g = (angle, reflect) of the sweep:
- maps:    ||f(g.x) - rho_out(g) g.f(x)|| / ||g.f(x)|| inside a disk  -> metric ``equivariance_error``
- vectors: ||f(g.x) - f(x)|| / ||f(x)||                               -> metric ``invariance_error``
- logits:  top-1 of f(g.x) equals top-1 of f(x)                        -> metric ``prediction_agreement``
rho_out comes from the model's symmetry contract (bench.fields). Regular fields at angles outside their group
are measured after group pooling (feature name suffixed ``:gpool``). Every curve comes with the floor that the
rotation alone causes (``interpolation_floor`` rows: round trip and an isotropic Gaussian blur).

Trained weights: a network job on a dataset depends on the accuracy job of the same model, dataset and seed
when that job is part of the sweep (`plan` declares it); its ``weights=trained`` rows name the checkpoint they
measured. Without such an accuracy job only ``init`` weights are measured (a warning says so).

Tables (`summarize`): ``equivariance_by_angle``, ``equivariance_summary``, ``equivariance_floor``,
``lie_derivative`` and ``equivariance_stages`` (see `TABLES`). Summaries "over non-grid angles" exclude the
multiples of 90° (`bench.schema.is_grid_angle`), where rotations are exact pixel permutations.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from bench import equivariance_metrics as em
from bench import settings as st
from bench.aggregate import MISSING, at_angle, non_grid, ok_rows, seed_stats, with_keys
from bench.contract import FieldSpec, SymmetryContract, contract_of, exposed_features
from bench.errors import UsageError
from bench.fields import apply_rho, group_pool, in_group
from bench.jobs import Job, RunContext
from bench.models import create_model
from bench.protocols import register_protocol
from bench.protocols.base import Protocol, TableSpec
from bench.rotation import bandlimited_images, disk_mask, parse_angles, rotate_many
from bench.schema import EquivarianceRow, model_level

if TYPE_CHECKING:
    from bench.profiles import Profile

WEIGHTS = ("init", "trained")
INPUTS = ("bandlimited", "dataset")


@dataclasses.dataclass(frozen=True)
class EquivarianceSettings:
    """What to measure, on which inputs, with which rotation."""

    angles: Any = st.setting("0:360:5,22.5", st.angles, "'start:stop:step' ranges and numbers, comma-separated, "
                             "or a list (degrees)")
    reflections: bool = st.setting(True, st.boolean, "true or false",
                                   "also measure the horizontal flip composed with every angle")
    rotation: str = st.setting("bicubic", st.rotation_method, "a rotation method")
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
    weights: list = st.setting(list(WEIGHTS), st.subset_of(*WEIGHTS, nonempty=True),
                               f"a non-empty list drawn from {', '.join(WEIGHTS)}",
                               "trained = the checkpoint of the accuracy job of the same model/dataset/seed")
    per_layer: bool = st.setting(True, st.boolean, "true or false",
                                 "per-stage attribution for models exposing a sequential body")
    attribution_angle: float = st.setting(45.0, st.number(), "a number (degrees)")
    chunk: int = st.setting(512, st.integer(1), "an integer >= 1", "images per forward pass")
    model_kwargs: dict = st.setting({}, st.table, "a table of keyword arguments for create_model",
                                    "default: those of the trained checkpoint, if any")


# --------------------------------------------------------------------------------------------------------
# inputs and models
# --------------------------------------------------------------------------------------------------------
def geometry(job: Job, s: EquivarianceSettings) -> tuple[int, int, int]:
    """(in_channels, num_classes, size) of the job: from its dataset for networks, from settings otherwise."""
    if job.dataset is not None:
        from bench.datasets import dataset_info

        info = dataset_info(job.dataset)
        if info.num_classes is None or info.image_size is None:
            raise UsageError(f"dataset {job.dataset!r} fixes its classes/size only from the data; run the "
                             "accuracy protocol on it or use band-limited inputs")
        return info.in_channels, info.num_classes, info.image_size
    channels = s.layer_channels if model_level(job.model) == "layer" else 1
    return channels, 10, s.size


def make_inputs(job: Job, ctx: RunContext, s: EquivarianceSettings, channels: int, size: int) -> torch.Tensor:
    """Seeded inputs confined to the rotation-safe disk."""
    if s.inputs == "dataset":
        if job.dataset is None:
            raise UsageError("inputs='dataset' needs a dataset (layer-level models use band-limited inputs)")
        from bench.datasets import create_dataset

        data = create_dataset(job.dataset, "test", data_dir=ctx.data_dir, download=ctx.download)
        gen = torch.Generator().manual_seed(job.seed)
        idx = torch.randperm(len(data), generator=gen)[: s.num_images].tolist()
        x = torch.stack([data[i][0] for i in idx]).to(ctx.dtype)
        x = x * disk_mask(size, device=x.device).to(x.dtype)
    else:
        x = bandlimited_images(s.num_images, channels, size, cutoff=s.cutoff, seed=job.seed, dtype=ctx.dtype)
    return x.to(ctx.device)


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
                 angles: Sequence[float], reflect: bool, method: str) -> list[dict[str, Any]]:
    """Rows for every feature at every angle of one reflection branch. fg[k] has shape (A*N, ...)."""
    rows: list[dict[str, Any]] = []
    n = next(iter(f0.values())).shape[0]
    for name, ref in f0.items():
        spec = contract.features.get(name, FieldSpec("invariant" if ref.dim() == 2 else "scalar"))
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
        target_maps = rotate_many(ref, angles, method, reflect)  # (A, N, C, H, W)
        mask = em.map_mask(ref)
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


def floor_rows(x: torch.Tensor, angles: Sequence[float], method: str, sigma: float) -> list[dict[str, Any]]:
    """What the rotation alone costs at each angle (flips are exact, so one set serves both branches)."""
    rows = []
    for kind, values in (("roundtrip", em.roundtrip_floor(x, angles, method)),
                         ("blur", em.blur_floor(x, angles, method, sigma))):
        for a, v in zip(angles, values.tolist()):
            rows.append({"metric": "interpolation_floor", "value": v, "unit": "relative", "angle_deg": a,
                         "reflect": "none", "feature": "input", "floor_kind": kind})
    return rows


def feature_floor_rows(contract: SymmetryContract, f0: dict[str, torch.Tensor], angles: Sequence[float],
                       method: str) -> list[dict[str, Any]]:
    """Round-trip floor of each exposed map at its own resolution: small late maps interpolate far worse than
    the input, so their errors must be read against this, not against the input's floor."""
    rows = []
    for name, ref in f0.items():
        if ref.dim() != 4:
            continue
        spec = contract.features.get(name, FieldSpec("scalar"))
        values = em.roundtrip_floor(ref, angles, method).tolist()
        labels = [name] if spec.kind == "scalar" else [name, f"{name}:gpool"]  # fibre permutations are exact
        for label in labels:
            rows += [{"metric": "interpolation_floor", "value": v, "unit": "relative", "angle_deg": a,
                      "reflect": "none", "feature": label, "floor_kind": "roundtrip"} for a, v in zip(angles, values)]
    return rows


def lie_rows(model: torch.nn.Module, contract: SymmetryContract, x: torch.Tensor, method: str) -> list[dict[str, Any]]:
    """LEE on logits (Gruver et al.) and the relative Lie derivative of each exposed map (pooled to scalars)."""
    rows = []
    with torch.no_grad():
        names = exposed_features(model, x[:1])
    for name, sample in names.items():
        spec = contract.features.get(name, FieldSpec("invariant" if sample.dim() == 2 else "scalar"))
        if name == "logits":
            value = em.lie_derivative_logits(lambda inp: exposed_features(model, inp)["logits"], x, method)
            rows.append({"metric": "lie_derivative", "value": value.mean().item(), "unit": "1/rad",
                         "feature": name, "reflect": "none"})
        elif spec.spatial:
            def pooled_map(inp: torch.Tensor, n: str = name, sp: FieldSpec = spec) -> torch.Tensor:
                return group_pool(sp, exposed_features(model, inp)[n])

            value = em.lie_derivative_map(pooled_map, x, method)
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


def attribution_rows(model: torch.nn.Module, x: torch.Tensor, angle: float, method: str) -> list[dict[str, Any]]:
    """Error each stage adds on its own: stage i fed g.h_{i-1} vs g applied to its output, scalar maps only."""
    stages = sequential_body(model)
    if not stages:
        return []
    rows = []
    h = getattr(model, "stem", torch.nn.Identity())(x) if hasattr(model, "stem") else x
    with torch.no_grad():
        for index, (name, stage) in enumerate(stages):
            out = stage(h)
            if out.dim() != 4:
                break
            lhs = stage(rotate_many(h, [angle], method)[0])
            rhs = rotate_many(out, [angle], method)[0]
            err = em.masked_relative_error(lhs, rhs, em.map_mask(out)).mean().item()
            rows.append({"metric": "equivariance_error", "value": err, "unit": "relative", "angle_deg": angle,
                         "reflect": "none", "feature": "stage", "stage": f"{name}:{type(stage).__name__}",
                         "stage_index": index})
            h = out
    return rows


def measure(model: torch.nn.Module, x: torch.Tensor, s: EquivarianceSettings) -> list[dict[str, Any]]:
    """All rows of one model state on inputs x (everything except the weights/rotation labels)."""
    contract = contract_of(model)
    angles, method = parse_angles(s.angles), s.rotation
    f0 = batched_features(model, x, s.chunk)
    rows: list[dict[str, Any]] = []
    for reflect in ([False, True] if s.reflections else [False]):
        rotated = rotate_many(x, angles, method, reflect).flatten(0, 1)
        fg = batched_features(model, rotated, s.chunk)
        rows += element_rows(contract, f0, fg, angles, reflect, method)
    if s.floor:
        rows += feature_floor_rows(contract, f0, angles, method)
    if s.lie_derivative:
        rows += lie_rows(model, contract, x, method)
    if s.per_layer:
        rows += attribution_rows(model, x[:16], s.attribution_angle, method)  # a diagnostic: few images suffice
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
    "min agreement), and the value at selected angles; each angle's value is first averaged across seeds.",
    {**_CASE, "metric": "metric", "feature": "feature", "reflect": "none | h",
     "mean_non_grid": "mean over non-grid angles", "worst_non_grid": "max error (min agreement) over non-grid "
     "angles", **{angle_column(a): f"value at {a:g}°" for a in TABLE_ANGLES}, "n_seeds": "seeds"})
FLOOR = TableSpec(
    "equivariance_floor", "Interpolation floor",
    "What the rotation alone costs: round trip ||R_-a R_a x - x|| / ||x|| and the error of an isotropic Gaussian "
    "blur, per angle, on the inputs (feature 'input') and on each feature map at its own resolution.",
    {"level": "layer | network (their inputs differ)",
     "model": "model whose feature maps were used (empty for the inputs: the same for every model of the level)",
     "dataset": "dataset", "inputs": "inputs",
     "rotation": "rotation method", "feature": "input or feature map", "floor_kind": "roundtrip | blur",
     "angle_deg": "rotation (degrees)", "mean": "mean across seeds", "n_seeds": "seeds"})
LIE = TableSpec(
    "lie_derivative", "Lie derivative (LEE)",
    "Logits: mean over classes of |d/dθ softmax f(R_θ x)| at θ = 0, per image (Gruver et al. 2023), 1/rad; maps: "
    "||d/dθ R_-θ f(R_θ x)|| / ||f(x)||. Mean over images, then mean and std across seeds.",
    {**_CASE, "feature": "feature", "unit": "unit", "mean": "mean across seeds", "std": "std across seeds",
     "n_seeds": "seeds"})
STAGES = TableSpec(
    "equivariance_stages", "Per-stage attribution",
    "Error each stage adds on its own at `angle_deg`: the stage fed the rotated input vs the rotated stage output.",
    {"model": "model", "weights": "weights", "dataset": "dataset", "rotation": "rotation method",
     "stage_index": "execution order", "stage": "stage name and module type", "angle_deg": "rotation (degrees)",
     "mean": "mean across seeds", "std": "std across seeds", "n_seeds": "seeds"})
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
        return {(job.dataset, "test")} if job.dataset and s.inputs == "dataset" else set()

    # -- running ------------------------------------------------------------------------------------------
    def run(self, job: Job, ctx: RunContext) -> list[dict[str, Any]]:
        from bench.training import load_trained, read_checkpoint

        s: EquivarianceSettings = self.settings_of(job)
        channels, classes, size = geometry(job, s)
        x = make_inputs(job, ctx, s, channels, size)
        checkpoint = trained_checkpoint(job, ctx) if "trained" in s.weights else None
        # init weights of the same architecture the accuracy protocol trained, unless told otherwise
        kwargs = s.model_kwargs or (dict(read_checkpoint(checkpoint).get("model_kwargs") or {}) if checkpoint else {})
        rows: list[dict[str, Any]] = []
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
        out = {BY_ANGLE.name: BY_ANGLE.frame(by_angle), SUMMARY.name: SUMMARY.frame(summary_rows(by_angle))}
        floor = main[main["metric"] == "interpolation_floor"]
        if not floor.empty:
            floor = floor.assign(level=floor["model"].map(model_level),
                                 model=floor["model"].where(floor["feature"] != "input", None))
            f = seed_stats(floor, ["level", "model", "dataset", "inputs", "rotation", "feature", "floor_kind",
                                   "angle_deg"])
            out[FLOOR.name] = FLOOR.frame(f.drop(columns="std"))
        lee = main[main["metric"] == "lie_derivative"]
        if not lee.empty:
            out[LIE.name] = LIE.frame(seed_stats(lee, [*CASE_KEYS, "feature", "unit"]))
        stages = d[staged & (d["metric"] == "equivariance_error")]
        if not stages.empty:
            t = seed_stats(stages, ["model", "weights", "dataset", "rotation", "stage_index", "stage", "angle_deg"])
            out[STAGES.name] = STAGES.frame(t)
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


def summary_rows(by_angle: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per (case, metric, feature, reflect) of the by-angle table: non-grid mean / worst, selected angles."""
    rows: list[dict[str, Any]] = []
    if by_angle.empty:
        return rows
    keys = [*CASE_KEYS, "metric", "feature", "reflect"]
    filled = with_keys(by_angle, keys)
    for key, g in filled.groupby(keys, sort=True):
        row = {k: (None if v == MISSING else v) for k, v in zip(keys, key)}
        worst = min if row["metric"] == "prediction_agreement" else max
        ng = non_grid(g)
        row["mean_non_grid"] = ng["mean"].mean() if not ng.empty else None
        row["worst_non_grid"] = worst(ng["mean"]) if not ng.empty else None
        for a in TABLE_ANGLES:
            hit = at_angle(g, a)
            row[angle_column(a)] = hit["mean"].mean() if not hit.empty else None
        row["n_seeds"] = int(g["n_seeds"].max())
        rows.append(row)
    return rows


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
