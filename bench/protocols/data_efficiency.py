"""Data-efficiency protocol: test accuracy as a function of the number of training examples.

The benefit that built-in invariance promises is learning from fewer examples when orientation carries no
information. One job per network, dataset and seed trains a fresh model (the same seeded initialisation at
every size) on class-balanced subsets of the training split, ``sizes`` examples per class (default 5, 16,
50, 158, 500: log-spaced), and tests each on the test split (the fixed ``test_limit`` subset of
`bench.training.fixed_subset`, the same for every size and seed) at every angle in ``angles``.

**How the subsets are drawn** (`bench.data_efficiency.stratified_subset`): one permutation of the whole
training split, drawn from the job's seed; every class keeps its first k members in that order. For one seed
the subsets are therefore *nested* (the 16-per-class set contains the 5-per-class set), so the curve adds data
instead of swapping it; another seed draws other subsets and another initialisation, and the spread across
seeds (the std band) covers both. Sizes above the smallest class of a dataset become that class's count,
the largest balanced subset (`feasible_sizes`; rotdigits has 126-132 images per class, so 158 and 500 become
one size, 126).

**Equal steps, not equal epochs.** Every size trains for at least ``steps`` optimizer steps, rounded up to
whole epochs (`bench.data_efficiency.epochs_for`; default: the steps that ``epochs`` epochs of the largest
size take). With equal epochs a 5-per-class set gets a few steps and the curve measures training time, not
data (docs/datasets.md: at 8 epochs every model looked data-starved at 5 and 16 per class). The recipe is
otherwise the accuracy protocol's: optimizer, learning rate, schedule, batch size, ``model_kwargs`` (width
0.25 in the quick profile keeps every family parameter-matched), no augmentation.

Rows (every row has ``per_class``, ``train_examples`` = per_class x classes, ``rotation``, ``mask``):

- ``accuracy`` (fraction) per evaluated angle, and summaries (``summary`` column, no angle): ``upright``
  (angle 0), ``mean`` and ``worst`` over the distinct angles (as `bench.protocols.accuracy.summary_rows`);
- ``steps`` and ``epochs`` actually trained, ``train_time_s``, ``eval_time_s``, ``train_loss_final``;
- per job, one ``examples_needed`` row per target (``target_pct``; unit ``examples/class``): where this
  seed's curve of the ``mean`` accuracy first reaches the target (`examples_to_reach`: linear in log size
  between measured sizes); value empty with a message when no size reaches it.

Tables (`summarize`): ``data_efficiency_curve`` (accuracy vs size, mean and std across seeds) and
``data_efficiency_needed`` (examples per class each model needs to reach each target, read off the mean
curve across seeds). Headline: examples per class to reach the middle target on the dataset with most
models (ties: the alphabetically first).
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
from bench.protocols.accuracy import OPTIMIZERS, SCHEDULES, summary_rows
from bench.protocols.base import Protocol, TableSpec
from bench.rotation import parse_angles
from bench.schema import OK, DataEfficiencyRow, model_level, reference_model

if TYPE_CHECKING:
    from bench.profiles import Profile

DEFAULT_SIZES = [5, 16, 50, 158, 500]  # bench.data_efficiency.log_sizes(5, 500, 5)
CURVE_SUMMARIES = ("upright", "mean")  # in the curve table; "mean" is the curve the targets are read off
NEEDED_FROM = "mean"


def _sizes(v: Any) -> list[int]:
    """A non-empty list of distinct integers >= 1, returned sorted."""
    return sorted(st.list_of(st.integer(1), nonempty=True, unique=True)(v))


def _name(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    return v


def _targets(v: Any) -> list[float]:
    """Target accuracies in percent, (1, 100], distinct, sorted (0.9 is refused: it reads like a fraction)."""
    values = st.list_of(st.number(1, 100, strict_min=True), nonempty=True, unique=True)(v)
    return sorted(values)


@dataclasses.dataclass(frozen=True)
class DataEfficiencySettings:
    """Training-set sizes, the step budget, the training recipe and the evaluation."""

    sizes: list = st.setting(DEFAULT_SIZES, _sizes, "a non-empty list of distinct integers >= 1",
                             "training examples per class (sizes above a dataset's smallest class become it)")
    epochs: int = st.setting(10, st.integer(1), "an integer >= 1",
                             "with steps = null: the budget is the steps this many epochs of the largest size take")
    steps: int | None = st.setting(None, st.optional(st.integer(1), ()), "null or an integer >= 1",
                                   "optimizer steps at every size (rounded up to whole epochs)")
    batch_size: int = st.setting(64, st.integer(1), "an integer >= 1")
    optimizer: str = st.setting("adam", st.one_of(*OPTIMIZERS), f"one of {', '.join(OPTIMIZERS)}")
    lr: float = st.setting(3e-3, st.number(0, strict_min=True), "a number > 0")
    momentum: float = st.setting(0.9, st.number(0, 1, strict_max=True), "a number in [0, 1) (sgd only)")
    weight_decay: float = st.setting(0.0, st.number(0), "a number >= 0")
    schedule: str = st.setting("cosine", st.one_of(*SCHEDULES), f"one of {', '.join(SCHEDULES)}")
    targets: list = st.setting([60.0, 75.0, 90.0], _targets,
                               "a non-empty list of distinct accuracies in percent, each in (1, 100], e.g. [60, 75, 90]",
                               "accuracies (%) whose examples-needed the tables report")
    angles: Any = st.setting("0:360:45", st.angles, "'start:stop:step' (stop included), a number or a list",
                             "rotations of the test set; the curve is the mean over them (0 alone: upright)")
    rotation: str = st.setting("bilinear", st.rotation_method, "a rotation method")
    mask: bool = st.setting(False, st.boolean, "true or false")
    test_limit: int | None = st.setting(None, st.optional(st.integer(1), ()), "null or an integer >= 1",
                                        "evaluate on a fixed subset of this many test images")
    eval_batch_size: int = st.setting(256, st.integer(1), "an integer >= 1")
    num_workers: int = st.setting(0, st.integer(0), "an integer >= 0")
    datasets: list | None = st.setting(None, st.optional(st.list_of(_name, nonempty=True, unique=True), ()),
                                       "null (the profile's datasets) or a non-empty list of dataset names",
                                       "datasets of this protocol only (e.g. the cheap one of a quick profile)")
    model_kwargs: dict = st.setting({}, st.table, "a table of keyword arguments for create_model")
    dataset_kwargs: dict = st.setting({}, st.table, "a table of keyword arguments for create_dataset")


CURVE = TableSpec(
    "data_efficiency_curve", "Accuracy vs training-set size",
    "Test accuracy of a model trained on `per_class` examples of every class (nested, class-balanced subsets, "
    "the same number of optimizer steps at every size); mean and std across seeds (each seed draws its own "
    "subsets and initialisation), in %.",
    {"dataset": "dataset", "model": "model", "per_class": "training examples per class",
     "train_examples": "training examples in all (per_class x classes)",
     "upright_pct": "accuracy on the test set as is (%)", "upright_std": "std across seeds (%)",
     "mean_pct": "mean accuracy over the evaluated rotations of the test set (%): the curve",
     "mean_std": "std across seeds (%)", "steps": "optimizer steps trained (mean across seeds)",
     "train_time_s": "training time (s, mean across seeds)", "n_seeds": "seeds"})
NEEDED = TableSpec(
    "data_efficiency_needed", "Examples needed to reach an accuracy",
    "Training examples per class at which the mean curve across seeds (mean accuracy over the evaluated "
    "rotations) first reaches each target, linear in log size between measured sizes.",
    {"dataset": "dataset", "model": "model", "target_pct": "target accuracy (%)",
     "examples_per_class": "examples per class needed (empty: not reached at the largest size)",
     "train_examples": "examples in all (examples_per_class x classes)",
     "reached": "interpolated | at_smallest (the smallest size already reaches it: an upper bound) | "
                "not_reached (beyond the largest size)",
     "vs_reference": "examples_per_class / the plain baseline's (cnn) on the same dataset and target",
     "seeds_reached": "seeds whose own curve reaches the target", "n_seeds": "seeds"})


@register_protocol("data_efficiency")
class DataEfficiencyProtocol(Protocol):
    """Accuracy vs number of training examples (nested class-balanced subsets, equal optimizer steps)."""

    settings_type = DataEfficiencySettings
    row_type = DataEfficiencyRow
    description = "accuracy vs training-set size (examples per class), equal optimizer steps at every size"
    tables = {t.name: t for t in (CURVE, NEEDED)}

    # -- planning -----------------------------------------------------------------------------------------
    def plan(self, profile: Profile, device: str, settings: DataEfficiencySettings,
             planned: Sequence[Job]) -> list[Job]:
        datasets = settings.datasets if settings.datasets is not None else profile.datasets
        if not datasets:
            raise UsageError("the data_efficiency protocol needs at least one dataset (e.g. rotshapes)")
        check_dataset_names(datasets)
        networks = [m for m in profile.models_for(self.name) if model_level(m) == "network"]
        return [self.job(m, d, seed, device, settings)
                for m in networks for d in datasets for seed in profile.seeds]

    def data_needed(self, job: Job) -> set[tuple[str, str]]:
        return {(job.dataset, "train"), (job.dataset, "test")} if job.dataset else set()

    # -- running ------------------------------------------------------------------------------------------
    def run(self, job: Job, ctx: RunContext) -> list[dict[str, Any]]:
        from bench.data_efficiency import (
            dataset_labels,
            epochs_for,
            examples_to_reach,
            feasible_sizes,
            stratified_subset,
        )
        from bench.models import create_model
        from bench.training import (
            deterministic,
            evaluate_rotations,
            fixed_subset,
            load_splits,
            train_model,
            with_upright,
        )

        if job.dataset is None:
            raise UsageError("the data_efficiency protocol needs a dataset")
        s: DataEfficiencySettings = self.settings_of(job)
        angles = parse_angles(s.angles)
        eval_angles = with_upright(angles)
        train_set, test_set = load_splits(job.dataset, ctx, s.dataset_kwargs)
        test_set = fixed_subset(test_set, s.test_limit)
        labels = dataset_labels(train_set)
        info = getattr(train_set, "info", None)
        in_channels = info.in_channels if info is not None else int(train_set[0][0].shape[0])
        num_classes = info.num_classes if info is not None and info.num_classes else int(labels.max()) + 1
        classes = int(labels.unique().numel())
        sizes = feasible_sizes(s.sizes, labels)
        steps = s.steps if s.steps is not None else s.epochs * max(1, sizes[-1] * classes // s.batch_size)

        rows: list[dict[str, Any]] = []
        curve: list[float] = []
        for k in sizes:
            subset = stratified_subset(train_set, k, job.seed)
            epochs = epochs_for(len(subset), s.batch_size, 1, steps)
            key = {"per_class": k, "train_examples": len(subset), "rotation": s.rotation, "mask": s.mask}
            tag = f"{job.model}/{job.dataset}/{k}per-class/seed{job.seed}"
            with deterministic(job.seed, ctx.device):
                model = create_model(job.model, in_channels, num_classes, **s.model_kwargs)
                trained = train_model(
                    model, subset, seed=job.seed, epochs=epochs, batch_size=s.batch_size, optimizer=s.optimizer,
                    lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum, schedule=s.schedule,
                    rotation=s.rotation, mask=s.mask, device=ctx.device, dtype=ctx.dtype,
                    num_workers=s.num_workers, progress=ctx.progress, desc=f"train {tag}")
                result = evaluate_rotations(
                    model, test_set, eval_angles, flips=False, rotation=s.rotation, mask=s.mask,
                    batch_size=s.eval_batch_size, device=ctx.device, dtype=ctx.dtype, num_workers=s.num_workers,
                    progress=ctx.progress, desc=f"eval {tag}")
            rows += [{"metric": "accuracy", "value": result["angles"][a], "unit": "fraction", "angle_deg": a,
                      "reflect": "none", **key} for a in angles]
            summaries = summary_rows(result, angles)
            rows += [{**r, **key} for r in summaries]
            curve.append(next(r["value"] for r in summaries if r["summary"] == NEEDED_FROM))
            for metric, value, unit in (("steps", trained["steps"], "steps"), ("epochs", epochs, "epochs"),
                                        ("train_time_s", trained["train_time_s"], "s"),
                                        ("eval_time_s", result["eval_time_s"], "s"),
                                        ("train_loss_final", trained["train_loss_final"], "nats")):
                rows.append({"metric": metric, "value": value, "unit": unit, "reflect": "none", **key})
            del model
        for target in s.targets:
            needed = examples_to_reach(sizes, curve, target / 100.0)
            row = {"metric": "examples_needed", "value": needed, "unit": "examples/class", "reflect": "none",
                   "target_pct": target, "summary": NEEDED_FROM}
            if needed is None:
                row["message"] = f"not reached at the largest size ({sizes[-1]} per class)"
            rows.append(row)
        return rows

    # -- summaries ----------------------------------------------------------------------------------------
    def summarize(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        d = ok_rows(frame, self.name)
        if d.empty or "per_class" not in d.columns:
            return {}
        keys = ["dataset", "model", "per_class", "train_examples"]
        d = d.dropna(subset=["per_class"]).astype({"per_class": int, "train_examples": int})
        acc = d[(d["metric"] == "accuracy") & d["summary"].isin(CURVE_SUMMARIES)]
        stats = seed_stats(acc.assign(value=acc["value"].astype(float) * 100.0), [*keys, "summary"])
        if stats.empty:
            return {}
        parts: dict[str, pd.Series] = {}
        for s in CURVE_SUMMARIES:
            g = stats[stats["summary"] == s].set_index(keys)
            parts[f"{s}_pct"], parts[f"{s}_std"] = g["mean"], g["std"]
        curve = pd.DataFrame(parts)
        for metric in ("steps", "train_time_s"):
            m = seed_stats(d[d["metric"] == metric], keys).set_index(keys)["mean"]
            curve[metric] = m.reindex(curve.index)
        n = seed_stats(acc[acc["summary"] == NEEDED_FROM], keys).set_index(keys)["n_seeds"]
        curve["n_seeds"] = n.reindex(curve.index)
        curve = curve.reset_index().sort_values(["dataset", "model", "per_class"], kind="stable")
        curve = CURVE.frame(curve)
        return {CURVE.name: curve, NEEDED.name: NEEDED.frame(needed_rows(curve, per_seed_needed(frame, self.name)))}

    def headline(self, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
        needed = tables.get(NEEDED.name)
        if needed is None or needed.empty:
            return None
        counts = needed.groupby("dataset")["model"].nunique()
        dataset = sorted(counts[counts == counts.max()].index)[0]
        targets = sorted(needed["target_pct"].unique())
        target = targets[len(targets) // 2]
        rows = needed[(needed["dataset"] == dataset) & (needed["target_pct"] == target)]
        out = pd.DataFrame({"de_dataset": dataset, "de_target_pct": target},
                           index=pd.Index(rows["model"], name="model"))
        out["de_examples"] = rows["examples_per_class"].to_numpy(float)
        return out


def check_dataset_names(names: Sequence[str]) -> None:
    from bench.datasets import list_datasets
    from bench.registry import unknown_name_error

    valid = list_datasets()
    for name in names:
        if name not in valid:
            raise unknown_name_error("dataset", name, valid)


def per_seed_needed(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The jobs' `examples_needed` rows, including those whose value is empty (the seed never got there)."""
    if frame is None or frame.empty or "target_pct" not in frame.columns:
        return pd.DataFrame(columns=["dataset", "model", "seed", "target_pct", "value"])
    d = frame[(frame["protocol"] == protocol) & (frame["metric"] == "examples_needed")]
    d = d[d["status"].fillna(OK) == OK] if "status" in d.columns else d
    return d.assign(value=pd.to_numeric(d["value"], errors="coerce"))


def needed_rows(curve: pd.DataFrame, per_seed: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per dataset, model and target: examples per class read off the mean curve across seeds."""
    from bench.data_efficiency import examples_to_reach

    targets = sorted(per_seed["target_pct"].dropna().astype(float).unique())
    rows: list[dict[str, Any]] = []
    for (dataset, model), c in curve.groupby(["dataset", "model"], sort=True):
        c = c.dropna(subset=["mean_pct"]).sort_values("per_class")
        if c.empty:
            continue
        sizes, acc = c["per_class"].astype(float).tolist(), c["mean_pct"].astype(float).tolist()
        classes = float(c["train_examples"].iloc[0]) / sizes[0]
        seeds = per_seed[(per_seed["dataset"] == dataset) & (per_seed["model"] == model)]
        for target in targets:
            needed = examples_to_reach(sizes, acc, target)
            reached = ("not_reached" if needed is None else "at_smallest" if acc[0] >= target else "interpolated")
            own = seeds[seeds["target_pct"].astype(float) == target]
            rows.append({"dataset": dataset, "model": model, "target_pct": target, "examples_per_class": needed,
                         "train_examples": None if needed is None else needed * classes, "reached": reached,
                         "seeds_reached": int(own["value"].notna().sum()), "n_seeds": int(own["seed"].nunique())})
    by_key = {(r["dataset"], r["model"], r["target_pct"]): r["examples_per_class"] for r in rows}
    for r in rows:
        ref = by_key.get((r["dataset"], reference_model(r["model"]), r["target_pct"]))
        mine = r["examples_per_class"]
        r["vs_reference"] = None if ref is None or mine is None else mine / ref
    return rows
