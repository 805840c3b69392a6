"""Accuracy protocol: train on upright images, test rotated (the GMR-Conv paper's protocol).

For each condition in ``conditions`` one model is trained from scratch with a fixed, seeded recipe:

- ``upright``: no rotation or flip augmentation at all;
- ``rotation``: every training image rotated by a random angle in [0, 360) (`bench.rotation`), to show what
  augmentation buys compared with built-in equivariance.

Both conditions apply the image augmentations ``augment`` first (`bench.augment`: a recipe such as
``gmr_cifar``, the official CIFAR-10 one, or a list of ops; default none), so ``rotation`` trains with
``[*augment, "rotation"]``.

It is then evaluated on the test split rotated by every angle in ``angles`` (default 0, 10, ..., 360) and
flipped left-right (``reflect='h'``) and up-down (``reflect='v'``, the group element (180, reflect)).
Rotations use `bench.rotation` (method ``rotation``, default `bench.rotation.DEFAULT_METHOD`, the same for
every protocol); the corners they bring in get ``fill``: ``"dataset"`` (default) = the dataset's normalised
background (`DatasetInfo.fill`, what rotating before normalising gives), or a number / one per channel (0 =
the official GMR-Conv evaluation). ``mask`` sets every input's pixels outside the rotation-safe disk (train and
test, upright included) to that background.

Rows (all ``metric='accuracy'``, ``unit='fraction'`` unless noted; every row has ``condition``, ``rotation``,
``mask``):

- one per angle: ``angle_deg``, ``reflect='none'``; one per flip: ``angle_deg=0``, ``reflect='h'|'v'``;
- summaries (``summary`` column, ``angle_deg`` empty): ``upright`` (angle 0), ``mean`` (over the distinct
  angles modulo 360, so 0 and 360 count once), ``worst`` (minimum over angles), ``flip_h``, ``flip_v``;
- ``train_loss_final`` (mean cross-entropy of the last epoch, unit ``nats``), ``train_time_s`` and
  ``eval_time_s`` (unit ``s``).

The trained weights are kept at ``ctx.checkpoint_path(model, dataset, seed, condition, job_id)`` (the job id
keys the file by every setting that produced it; see `bench.training.load_trained`); rows carry the file name in
``checkpoint``. A diverging run raises FloatingPointError (the runner records status ``nan``).

Tables (`summarize`): ``accuracy_by_angle`` (mean/std across seeds per angle, in %) and ``accuracy_summary``
(upright / mean / worst / flips per dataset, condition and model, in %). Headline: upright, mean and worst
rotated accuracy of the upright-trained models on the run's main dataset (the one with most accuracy jobs;
ties go to the alphabetically first).

With ``ceiling = true`` each job also adds ``invariant_ceiling`` rows (``group`` SO2 / O2) and a
``nearest_neighbour`` row (`bench.invariant_ceiling.ceiling_rows`: what an exactly invariant classifier reaches
on the same test images), summarised in the ``accuracy_ceiling`` table.
"""


from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench import settings as st
from bench.aggregate import ok_rows, seed_stats
from bench.errors import UsageError
from bench.jobs import Job, RunContext
from bench.protocols import register_protocol
from bench.protocols.base import Protocol, TableSpec
from bench.rotation import DEFAULT_METHOD, parse_angles
from bench.schema import AccuracyRow, model_level
from bench.training import SCHEDULE_UNITS

if TYPE_CHECKING:
    from bench.profiles import Profile

CONDITIONS = ("upright", "rotation")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "none")
SUMMARIES = ("upright", "mean", "worst", "flip_h", "flip_v")
DATASET_FILL = "dataset"


def augmentation(v: Any) -> Any:
    """None, a recipe name or a list of op names (`bench.augment.resolve`); the batched ``rotation`` op is what
    the ``rotation`` condition adds, so it cannot be part of ``augment``."""
    from bench import augment as aug

    try:
        ops = aug.resolve(v)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    if aug.ROTATION in ops:
        raise ValueError("rotation augmentation is the 'rotation' condition (conditions = ['rotation'])")
    return None if not ops else list(v) if isinstance(v, (list, tuple)) else v


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    return v


def fill_value(v: Any) -> Any:
    """'dataset', one number or one number per channel."""
    if v == DATASET_FILL:
        return v
    if isinstance(v, (list, tuple)):
        return st.list_of(st.number(), nonempty=True)(list(v))
    return st.number()(v)


@dataclasses.dataclass(frozen=True)
class AccuracySettings:
    """The training recipe (the same for every model) and the rotated evaluation."""

    epochs: int = st.setting(10, st.integer(1), "an integer >= 1")
    batch_size: int = st.setting(64, st.integer(1), "an integer >= 1")
    optimizer: str = st.setting("adam", st.one_of(*OPTIMIZERS), f"one of {', '.join(OPTIMIZERS)}")
    lr: float = st.setting(3e-3, st.number(0, strict_min=True), "a number > 0")
    momentum: float = st.setting(0.9, st.number(0, 1, strict_max=True), "a number in [0, 1) (sgd only)")
    nesterov: bool = st.setting(True, st.boolean, "true or false",
                                "sgd with momentum: Nesterov momentum (the official GMR-Conv recipe: false)")
    weight_decay: float = st.setting(0.0, st.number(0), "a number >= 0")
    no_decay: list = st.setting([], st.list_of(_text, unique=True),
                                "a list of parameter-name substrings",
                                "parameters whose name contains one get no weight decay (official: ['sigmas'])")
    schedule: str = st.setting("cosine", st.one_of(*SCHEDULES), f"one of {', '.join(SCHEDULES)}")
    schedule_unit: str = st.setting("step", st.one_of(*SCHEDULE_UNITS), f"one of {', '.join(SCHEDULE_UNITS)}",
                                    "advance the cosine schedule every step or every epoch (official: epoch)")
    eta_min: float = st.setting(0.0, st.number(0), "a number >= 0", "final learning rate of the cosine schedule")
    augment: Any = st.setting(None, augmentation, "null, a recipe (gmr_cifar) or a list of augmentation ops "
                              "(bench.augment)", "image augmentations of every condition, before normalisation")
    conditions: list = st.setting(["upright"], st.subset_of(*CONDITIONS, nonempty=True),
                                  f"a non-empty list drawn from {', '.join(CONDITIONS)}")
    train_limit: int | None = st.setting(None, st.optional(st.integer(1), ()), "null or an integer >= 1",
                                         "train on a fixed subset of this many images")
    angles: Any = st.setting("0:360:10", st.angles, "'start:stop:step' (stop included), a number or a list")
    flips: bool = st.setting(True, st.boolean, "true or false")
    mask: bool = st.setting(False, st.boolean, "true or false")
    rotation: str = st.setting(DEFAULT_METHOD, st.rotation_method, "a rotation method")
    fill: Any = st.setting(DATASET_FILL, fill_value, "'dataset', a number or a list of numbers (one per channel)",
                           "what rotated-in corners get: dataset = its normalised background; 0 = the official "
                           "GMR-Conv evaluation")
    eval_batch_size: int = st.setting(256, st.integer(1), "an integer >= 1")
    test_limit: int | None = st.setting(None, st.optional(st.integer(1), ()), "null or an integer >= 1",
                                        "evaluate on a fixed subset of this many test images")
    num_workers: int = st.setting(0, st.integer(0), "an integer >= 0")
    save_checkpoint: bool = st.setting(True, st.boolean, "true or false")
    model_kwargs: dict = st.setting({}, st.table, "a table of keyword arguments for create_model")
    per_model_kwargs: dict = st.setting({}, st.table_of_tables, "a table {model name: {keyword: value}}",
                                        "keyword arguments of one model, on top of model_kwargs")
    dataset_kwargs: dict = st.setting({}, st.table, "a table of keyword arguments for create_dataset",
                                      "e.g. {pad_to_odd = false}: CIFAR-10 at 32x32")
    ceiling: bool = st.setting(False, st.boolean, "true or false",
                               "also measure what an exactly rotation-invariant classifier reaches on the same test "
                               "images (bench.invariant_ceiling; cost ~ train x test x 36 images, cached per dataset)")

    def model_kwargs_for(self, model: str) -> dict[str, Any]:
        return {**self.model_kwargs, **self.per_model_kwargs.get(model, {})}

    def fill_for(self) -> Any:
        """The `fill` argument of `bench.training`: None = the dataset's background."""
        return None if self.fill == DATASET_FILL else self.fill

    def augment_for(self, condition: str) -> list[str]:
        from bench import augment as aug

        return [*aug.resolve(self.augment), *([aug.ROTATION] if condition == "rotation" else [])]


def summary_rows(result: dict[str, Any], angles: Sequence[float]) -> list[dict[str, Any]]:
    """upright / mean / worst (+ flip_h / flip_v) rows from `evaluate_rotations`' result.

    upright: the angle-0 accuracy (evaluated even when `angles` lacks it); mean and worst: over `angles`,
    angles equal modulo 360 counted once."""
    acc = result["angles"]
    distinct: dict[float, float] = {}
    for a in angles:
        distinct.setdefault(round(float(a) % 360.0, 9), acc[float(a)])
    upright = next(v for a, v in acc.items() if round(a % 360.0, 9) == 0.0)
    rows = [
        {"summary": "upright", "value": upright, "reflect": "none"},
        {"summary": "mean", "value": sum(distinct.values()) / len(distinct), "reflect": "none"},
        {"summary": "worst", "value": min(distinct.values()), "reflect": "none"},
    ]
    for which in ("h", "v"):
        if f"flip_{which}" in result:
            rows.append({"summary": f"flip_{which}", "value": result[f"flip_{which}"], "reflect": which})
    return [{"metric": "accuracy", "unit": "fraction", "angle_deg": None, **r} for r in rows]


BY_ANGLE = TableSpec(
    "accuracy_by_angle", "Accuracy vs rotation angle",
    "Test accuracy on rotated (and flipped) inputs per angle; mean and std across seeds.",
    {"dataset": "dataset", "condition": "training condition (upright | rotation augmentation)",
     "model": "model", "reflect": "none | h | v (flip applied before the rotation)",
     "angle_deg": "rotation of the test set (degrees)", "accuracy_pct": "mean accuracy across seeds (%)",
     "std_pct": "standard deviation across seeds (%)", "n_seeds": "seeds"})
SUMMARY = TableSpec(
    "accuracy_summary", "Accuracy summary",
    "upright: the test set as is; mean / worst: over the distinct rotation angles (0 and 360 counted once); "
    "flip_h / flip_v: mirrored test set. Mean and std across seeds, in %.",
    {"dataset": "dataset", "condition": "training condition", "model": "model",
     **{f"{s}_pct": f"{s} accuracy (%)" for s in SUMMARIES},
     **{f"{s}_std": f"std of {s} across seeds (%)" for s in SUMMARIES},
     "n_seeds": "seeds"})

CEILING = TableSpec(
    "accuracy_ceiling", "Invariant ceiling",
    "What an exactly rotation-invariant classifier reaches on the same test images (setting ceiling = true): "
    "orbit nearest neighbour, each test image turned by every multiple of 10° (and mirrored for O2) and given "
    "the label of the nearest training image (bench.invariant_ceiling). A lower bound on the best accuracy any "
    "classifier with that invariance can reach.",
    {"dataset": "dataset", "group": "SO2: invariant to rotations | O2: to rotations and reflections",
     "ceiling_pct": "accuracy of orbit nearest neighbour (%)",
     "nearest_neighbour_pct": "the same rule on the upright image only, not invariant (%)"})


def ceiling_table(d: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{accuracy_ceiling: table} from the ceiling rows (every job of a dataset wrote the same values)."""
    if d.empty or "group" not in d.columns:
        return {}
    inv = d[d["metric"] == "invariant_ceiling"]
    if inv.empty:
        return {}
    plain = d[d["metric"] == "nearest_neighbour"].groupby("dataset")["value"].mean() * 100.0
    out = (inv.groupby(["dataset", "group"], sort=True)["value"].mean() * 100.0).rename("ceiling_pct").reset_index()
    out["nearest_neighbour_pct"] = out["dataset"].map(plain)
    out = out.sort_values(["dataset", "group"], key=lambda c: c.map({"SO2": 0, "O2": 1}) if c.name == "group" else c)
    return {CEILING.name: CEILING.frame(out)}


@register_protocol("accuracy")
class AccuracyProtocol(Protocol):
    """Train upright (or with rotation augmentation), test at every angle and both flips."""

    settings_type = AccuracySettings
    row_type = AccuracyRow
    description = "train upright, test rotated and flipped (the GMR-Conv paper's protocol)"
    tables = {t.name: t for t in (BY_ANGLE, SUMMARY, CEILING)}

    # -- planning -----------------------------------------------------------------------------------------
    def plan(self, profile: Profile, device: str, settings: AccuracySettings, planned: Sequence[Job]) -> list[Job]:
        if not profile.datasets:
            raise UsageError("the accuracy protocol needs at least one dataset (e.g. rotdigits)")
        networks = [m for m in profile.models_for(self.name) if model_level(m) == "network"]
        return [self.job(m, d, seed, device, settings)
                for m in networks for d in profile.datasets for seed in profile.seeds]

    def data_needed(self, job: Job) -> set[tuple[str, str]]:
        return {(job.dataset, "train"), (job.dataset, "test")} if job.dataset else set()

    # -- running ------------------------------------------------------------------------------------------
    def run(self, job: Job, ctx: RunContext) -> list[dict[str, Any]]:
        import torch

        from bench.models import create_model
        from bench.training import (
            deterministic,
            evaluate_rotations,
            fixed_subset,
            load_splits,
            save_checkpoint,
            train_model,
            with_upright,
        )

        if job.dataset is None:
            raise UsageError("the accuracy protocol needs a dataset")
        s: AccuracySettings = self.settings_of(job)
        angles = parse_angles(s.angles)
        eval_angles = with_upright(angles)
        train_set, test_set = load_splits(job.dataset, ctx, s.dataset_kwargs)
        info = getattr(train_set, "info", None)
        in_channels = info.in_channels if info is not None else int(train_set[0][0].shape[0])
        num_classes = info.num_classes if info is not None and info.num_classes else None
        if num_classes is None:
            classes = getattr(train_set, "classes", None)
            if not classes:
                raise UsageError(f"cannot tell the number of classes of dataset {job.dataset!r}")
            num_classes = len(classes)
        train_set = fixed_subset(train_set, s.train_limit)
        test_set = fixed_subset(test_set, s.test_limit)

        rows: list[dict[str, Any]] = []
        model_kwargs = s.model_kwargs_for(job.model)
        for condition in s.conditions:
            tag = f"{job.model}/{job.dataset}/{condition}/seed{job.seed}"
            extra: dict[str, Any] = {"condition": condition, "rotation": s.rotation, "mask": s.mask}
            with deterministic(job.seed, ctx.device):
                model = create_model(job.model, in_channels, num_classes, **model_kwargs)
                trained = train_model(
                    model, train_set, seed=job.seed, epochs=s.epochs, batch_size=s.batch_size,
                    optimizer=s.optimizer, lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum,
                    nesterov=s.nesterov, no_decay=s.no_decay, schedule=s.schedule, schedule_unit=s.schedule_unit,
                    eta_min=s.eta_min, augment=s.augment_for(condition), rotation=s.rotation, mask=s.mask,
                    fill=s.fill_for(), device=ctx.device, dtype=ctx.dtype, num_workers=s.num_workers,
                    progress=ctx.progress, desc=f"train {tag}")
                if s.save_checkpoint:
                    path = save_checkpoint(
                        ctx.checkpoint_path(job.model, job.dataset, job.seed, condition, job.job_id), model,
                        model=job.model, model_kwargs=model_kwargs, in_channels=in_channels,
                        num_classes=num_classes, dataset=job.dataset, dataset_kwargs=dict(s.dataset_kwargs),
                        seed=job.seed, condition=condition, dtype=str(ctx.dtype).replace("torch.", ""),
                        settings=dict(job.settings), job_id=job.job_id)
                    extra["checkpoint"] = path.name
                result = evaluate_rotations(
                    model, test_set, eval_angles, flips=s.flips, rotation=s.rotation, mask=s.mask,
                    fill=s.fill_for(), batch_size=s.eval_batch_size, device=ctx.device, dtype=ctx.dtype,
                    num_workers=s.num_workers, progress=ctx.progress, desc=f"eval {tag}")
            for a in angles:
                rows.append({"metric": "accuracy", "value": result["angles"][a], "unit": "fraction",
                             "angle_deg": a, "reflect": "none", **extra})
            for which in ("h", "v"):
                if f"flip_{which}" in result:
                    rows.append({"metric": "accuracy", "value": result[f"flip_{which}"], "unit": "fraction",
                                 "angle_deg": 0.0, "reflect": which, **extra})
            rows.extend({**r, **extra} for r in summary_rows(result, angles))
            for metric, value, unit in (("train_loss_final", trained["train_loss_final"], "nats"),
                                        ("train_time_s", trained["train_time_s"], "s"),
                                        ("eval_time_s", result["eval_time_s"], "s")):
                rows.append({"metric": metric, "value": value, "unit": unit, "reflect": "none", **extra})
            del model
            if torch.cuda.is_available() and torch.device(ctx.device).type == "cuda":
                torch.cuda.empty_cache()
        if s.ceiling:
            from bench.invariant_ceiling import ceiling_rows

            rows += ceiling_rows(job.dataset, s.test_limit, ctx.data_dir, s.dataset_kwargs)
        return rows

    # -- summaries ----------------------------------------------------------------------------------------
    def summarize(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        d = ok_rows(frame, self.name)
        ceiling = ceiling_table(d)
        d = d[d["metric"] == "accuracy"] if not d.empty else d
        if d.empty:
            return ceiling
        d = d.assign(value=d["value"].astype(float) * 100.0)  # fractions -> %
        has_summary = d["summary"].notna() if "summary" in d.columns else pd.Series(False, index=d.index)
        curve = d[~has_summary & d["angle_deg"].notna()]
        by_angle = seed_stats(curve, ["dataset", "condition", "model", "reflect", "angle_deg"])
        by_angle = by_angle.rename(columns={"mean": "accuracy_pct", "std": "std_pct"})
        stats = seed_stats(d[has_summary], ["dataset", "condition", "model", "summary"])
        rows = []
        for (dataset, condition, model), g in stats.groupby(["dataset", "condition", "model"], sort=True,
                                                             dropna=False):
            row: dict[str, Any] = {"dataset": dataset, "condition": condition, "model": model}
            for rec in g.to_dict("records"):
                row[f"{rec['summary']}_pct"] = rec["mean"]
                row[f"{rec['summary']}_std"] = rec["std"]
            row["n_seeds"] = int(g["n_seeds"].max())
            rows.append(row)
        return {BY_ANGLE.name: BY_ANGLE.frame(by_angle), SUMMARY.name: SUMMARY.frame(rows), **ceiling}

    def headline(self, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
        summary = tables.get(SUMMARY.name)
        if summary is None or summary.empty:
            return None
        dataset = main_dataset(summary)
        s = summary[(summary["dataset"] == dataset) & (summary["condition"] == "upright")]
        if s.empty:
            return None
        out = pd.DataFrame({"acc_dataset": dataset}, index=pd.Index(s["model"], name="model"))
        for key in ("upright", "mean", "worst"):
            out[f"acc_{key}_pct"] = s[f"{key}_pct"].to_numpy()
            out[f"acc_{key}_std"] = s[f"{key}_std"].to_numpy()
        return out


def main_dataset(summary: pd.DataFrame) -> str:
    """The dataset with the most upright-trained models (ties: alphabetically first)."""
    up = summary[summary["condition"] == "upright"]
    src = up if not up.empty else summary
    counts = src.groupby("dataset")["model"].nunique()
    return str(sorted(counts[counts == counts.max()].index)[0])
