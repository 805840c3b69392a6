"""Accuracy protocol: train on upright images, test rotated (the GMR-Conv paper's protocol).

For each condition in ``conditions`` one model is trained from scratch with a fixed, seeded recipe:

- ``upright``: no rotation or flip augmentation at all;
- ``rotation``: every training image rotated by a random angle in [0, 360) (`bench.rotation`), to show what
  augmentation buys compared with built-in equivariance.

It is then evaluated on the test split rotated by every angle in ``angles`` (default 0, 10, ..., 360) and
flipped left-right (``reflect='h'``) and up-down (``reflect='v'``, the group element (180, reflect)).
Rotation happens after normalisation with `bench.rotation` (method ``rotation``, default bilinear as in the
paper; corners filled with 0); ``mask`` multiplies every input (train and test, upright included) by the
rotation-safe disk.

Rows (all ``metric='accuracy'``, ``unit='fraction'`` unless noted; every row has ``condition``, ``rotation``,
``mask``):

- one per angle: ``angle_deg``, ``reflect='none'``; one per flip: ``angle_deg=0``, ``reflect='h'|'v'``;
- summaries (``summary`` column, ``angle_deg`` empty): ``upright`` (angle 0), ``mean`` (over the distinct
  angles modulo 360, so 0 and 360 count once), ``worst`` (minimum over angles), ``flip_h``, ``flip_v``;
- ``train_loss_final`` (mean cross-entropy of the last epoch, unit ``nats``), ``train_time_s`` and
  ``eval_time_s`` (unit ``s``).

The trained weights are kept at ``ctx.checkpoint_path(model, dataset, seed, condition)`` (see `load_trained`).
A diverging run raises FloatingPointError (the runner records status ``nan``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.errors import UsageError
from bench.jobs import Job, RunContext
from bench.rotation import METHODS, parse_angles

CONDITIONS = ("upright", "rotation")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "none")

DEFAULTS: dict[str, Any] = {
    # training recipe (the same for every model)
    "epochs": 10,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 3e-3,
    "momentum": 0.9,  # sgd only
    "weight_decay": 0.0,
    "schedule": "cosine",
    "conditions": ["upright"],
    "train_limit": None,  # use a fixed subset of this many training images (None = all)
    # evaluation
    "angles": "0:360:10",
    "flips": True,
    "mask": False,
    "rotation": "bilinear",
    "eval_batch_size": 256,
    "test_limit": None,  # evaluate on a fixed subset of this many test images (None = all)
    # plumbing
    "num_workers": 0,
    "save_checkpoint": True,
    "model_kwargs": {},
    "dataset_kwargs": {},
}

_HELP = {
    "epochs": "an integer >= 1",
    "batch_size": "an integer >= 1",
    "optimizer": f"one of {', '.join(OPTIMIZERS)}",
    "lr": "a number > 0",
    "momentum": "a number in [0, 1)",
    "weight_decay": "a number >= 0",
    "schedule": f"one of {', '.join(SCHEDULES)}",
    "conditions": f"a non-empty list drawn from {', '.join(CONDITIONS)}",
    "train_limit": "null or an integer >= 1",
    "angles": "a list of degrees, one number, or a 'start:stop:step' string (stop included when it lands)",
    "flips": "true or false",
    "mask": "true or false",
    "rotation": f"one of {', '.join(METHODS)}",
    "eval_batch_size": "an integer >= 1",
    "test_limit": "null or an integer >= 1",
    "num_workers": "an integer >= 0",
    "save_checkpoint": "true or false",
    "model_kwargs": "a table of keyword arguments for create_model",
    "dataset_kwargs": "a table of keyword arguments for create_dataset",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)



def validate_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """DEFAULTS overridden by `settings`; UsageError naming the valid keys/values on anything unknown or bad."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        from bench.registry import did_you_mean

        hints = "".join(did_you_mean(k, DEFAULTS) for k in unknown)
        raise UsageError(f"unknown accuracy setting(s) {', '.join(map(repr, unknown))}.{hints} "
                         f"Valid settings: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **settings}

    def check(key: str, ok: bool) -> None:
        if not ok:
            raise UsageError(f"accuracy setting {key!r} must be {_HELP[key]}, got {out[key]!r}")

    check("epochs", _is_int(out["epochs"]) and out["epochs"] >= 1)
    check("batch_size", _is_int(out["batch_size"]) and out["batch_size"] >= 1)
    check("eval_batch_size", _is_int(out["eval_batch_size"]) and out["eval_batch_size"] >= 1)
    check("optimizer", out["optimizer"] in OPTIMIZERS)
    check("lr", _is_num(out["lr"]) and out["lr"] > 0)
    check("momentum", _is_num(out["momentum"]) and 0 <= out["momentum"] < 1)
    check("weight_decay", _is_num(out["weight_decay"]) and out["weight_decay"] >= 0)
    check("schedule", out["schedule"] in SCHEDULES)
    conds = out["conditions"]
    if isinstance(conds, str):
        conds = out["conditions"] = [conds]
    check("conditions", isinstance(conds, (list, tuple)) and len(conds) > 0
          and all(c in CONDITIONS for c in conds) and len(set(conds)) == len(conds))
    out["conditions"] = list(conds)
    for key in ("train_limit", "test_limit"):
        check(key, out[key] is None or (_is_int(out[key]) and out[key] >= 1))
    parse_angles(out["angles"], "accuracy setting 'angles'")
    for key in ("flips", "mask", "save_checkpoint"):
        check(key, isinstance(out[key], bool))
    check("rotation", out["rotation"] in METHODS)
    check("num_workers", _is_int(out["num_workers"]) and out["num_workers"] >= 0)
    for key in ("model_kwargs", "dataset_kwargs"):
        check(key, isinstance(out[key], dict))
    return out


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


def run(job: Job, ctx: RunContext) -> list[dict[str, Any]]:
    import torch

    from bench.datasets import create_dataset
    from bench.models import create_model
    from bench.training import deterministic, evaluate_rotations, fixed_subset, save_checkpoint, train_model

    if job.dataset is None:
        raise UsageError("the accuracy protocol needs a dataset")
    s = validate_settings(job.settings)
    angles = parse_angles(s["angles"])
    eval_angles = angles if any(round(a % 360.0, 9) == 0.0 for a in angles) else [0.0, *angles]
    train_set = create_dataset(job.dataset, "train", data_dir=ctx.data_dir, download=ctx.download,
                               **s["dataset_kwargs"])
    test_set = create_dataset(job.dataset, "test", data_dir=ctx.data_dir, download=ctx.download,
                              **s["dataset_kwargs"])
    info = getattr(train_set, "info", None)
    in_channels = info.in_channels if info is not None else int(train_set[0][0].shape[0])
    num_classes = info.num_classes if info is not None and info.num_classes else None
    if num_classes is None:
        classes = getattr(train_set, "classes", None)
        if not classes:
            raise UsageError(f"cannot tell the number of classes of dataset {job.dataset!r}")
        num_classes = len(classes)
    train_set = fixed_subset(train_set, s["train_limit"])
    test_set = fixed_subset(test_set, s["test_limit"])

    rows: list[dict[str, Any]] = []
    for condition in s["conditions"]:
        tag = f"{job.model}/{job.dataset}/{condition}/seed{job.seed}"
        with deterministic(job.seed, ctx.device):
            model = create_model(job.model, in_channels, num_classes, **s["model_kwargs"])
            trained = train_model(
                model, train_set, seed=job.seed, epochs=s["epochs"], batch_size=s["batch_size"],
                optimizer=s["optimizer"], lr=float(s["lr"]), weight_decay=float(s["weight_decay"]),
                momentum=float(s["momentum"]), schedule=s["schedule"],
                augment="rotation" if condition == "rotation" else None, rotation=s["rotation"], mask=s["mask"],
                device=ctx.device, dtype=ctx.dtype, num_workers=s["num_workers"], progress=ctx.progress,
                desc=f"train {tag}")
            if s["save_checkpoint"]:
                save_checkpoint(
                    ctx.checkpoint_path(job.model, job.dataset, job.seed, condition), model,
                    model=job.model, model_kwargs=dict(s["model_kwargs"]), in_channels=in_channels,
                    num_classes=num_classes, dataset=job.dataset, seed=job.seed, condition=condition,
                    dtype=str(ctx.dtype).replace("torch.", ""), settings=dict(s), job_id=job.job_id)
            result = evaluate_rotations(
                model, test_set, eval_angles, flips=s["flips"], rotation=s["rotation"], mask=s["mask"],
                batch_size=s["eval_batch_size"], device=ctx.device, dtype=ctx.dtype,
                num_workers=s["num_workers"], progress=ctx.progress, desc=f"eval {tag}")
        extra = {"condition": condition, "rotation": s["rotation"], "mask": s["mask"]}
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
    return rows


def load_trained(model_name: str, path: Any, in_channels: int, num_classes: int, **kw: Any) -> Any:
    """Rebuild a model trained by this protocol from its checkpoint (see `bench.training.load_trained`)."""
    from bench.training import load_trained as _load

    return _load(model_name, path, in_channels, num_classes, **kw)
