"""Seeded, deterministic supervised training and rotated/flipped evaluation (used by the accuracy protocol).

Nothing here knows about jobs or result rows: `bench.protocols.accuracy` turns these numbers into rows.
Checkpoints are plain dicts (``state_dict`` + how to rebuild the model) written atomically; `load_trained`
rebuilds the network for the equivariance protocol or for users.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from bench import augment as aug
from bench.errors import UsageError
from bench.rotation import (
    DEFAULT_METHOD,
    Fill,
    disk_mask,
    fill_tensor,
    rotate,
    rotate_interpolated,
    rotate_many,
    split_angle,
)

CHECKPOINT_FORMAT = 1


# -- determinism ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def deterministic(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch and make the numbers reproducible for the duration: GMR's measured implementation choice
    (`gmr.autotune`, which may pick another path in another process) is switched off, so `impl="auto"` uses the
    deterministic cost model; on CUDA deterministic kernels (cuDNN, cuBLAS) are switched on too.

    CPU kernels are deterministic for a fixed thread count already, and `torch.use_deterministic_algorithms`
    imports torch._inductor (seconds), so the global flag is only touched on accelerators. Everything is restored
    afterwards (latency measurements keep autotuning on)."""
    from gmr.autotune import autotune_enabled, set_autotune

    torch.manual_seed(seed)
    tuned = autotune_enabled()
    if tuned:
        set_autotune(False)
    try:
        with _deterministic_kernels(device):
            yield
    finally:
        if tuned:
            set_autotune(True)


@contextlib.contextmanager
def _deterministic_kernels(device: torch.device | str) -> Iterator[None]:
    if torch.device(device).type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    prev_algos = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_algos, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


def with_upright(angles: list[float]) -> list[float]:
    """The angles to evaluate: `angles`, plus 0 when none of them is upright (the upright accuracy is always
    reported)."""
    return angles if any(round(a % 360.0, 9) == 0.0 for a in angles) else [0.0, *angles]


def load_splits(name: str, ctx: Any, dataset_kwargs: dict[str, Any]) -> tuple[Dataset, Dataset]:
    """The train and test splits of dataset `name` as a job of run context `ctx` loads them."""
    from bench.datasets import create_dataset

    return tuple(create_dataset(name, split, data_dir=ctx.data_dir, download=ctx.download, **dataset_kwargs)
                 for split in ("train", "test"))  # type: ignore[return-value]


def fixed_subset(dataset: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """The same `limit` examples every run (a fixed permutation, independent of the run seed)."""
    n = len(dataset)  # type: ignore[arg-type]
    if limit is None or limit >= n:
        return dataset
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    sub = Subset(dataset, idx.tolist())
    sub.info = getattr(dataset, "info", None)  # type: ignore[attr-defined]
    return sub


def dataset_fill(dataset: Dataset) -> tuple[float, ...] | float:
    """What rotated-in corners (and masked-out pixels) get for this dataset: ``dataset.info.fill`` (the
    normalised value of an empty pixel, see `bench.datasets.DatasetInfo`), or 0 without info."""
    info = getattr(dataset, "info", None)
    return tuple(info.fill) if info is not None else 0.0


def _confine(x: torch.Tensor, keep: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
    """Pixels outside the disk `keep` become the background `fill` (0 when None)."""
    return x * keep if fill is None else x * keep + fill * (1 - keep)


# -- training ------------------------------------------------------------------------------------------------
SCHEDULE_UNITS = ("step", "epoch")


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                   nesterov: bool = True, no_decay: Sequence[str] = ()) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over the trainable parameters.

    ``nesterov`` (SGD with momentum only): Nesterov momentum, our default; the official GMR-Conv recipe uses
    plain momentum. ``no_decay``: parameters whose name contains one of these strings get no weight decay
    (the official recipe exempts its ring widths, ``["sigmas"]``: ``log_sigmas`` here)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise UsageError(f"{type(model).__name__} has no trainable parameters")
    exempt = [p for n, p in named if any(s in n for s in no_decay)]
    decayed = [p for n, p in named if not any(s in n for s in no_decay)]
    groups = [{"params": g, "weight_decay": wd} for g, wd in ((decayed, weight_decay), (exempt, 0.0)) if g]
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    raise UsageError(f"unknown optimizer {name!r}; valid: adam, adamw, sgd")


def make_schedule(opt: torch.optim.Optimizer, schedule: str, epochs: int, steps_per_epoch: int,
                  unit: str = "step", eta_min: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Cosine annealing to `eta_min` over the whole run, advanced every optimiser step (``unit='step'``) or
    once per epoch (``'epoch'``, the official GMR-Conv recipe); None for ``schedule='none'``."""
    if unit not in SCHEDULE_UNITS:
        raise UsageError(f"unknown schedule unit {unit!r}; valid: {', '.join(SCHEDULE_UNITS)}")
    if schedule == "none":
        return None
    if schedule != "cosine":
        raise UsageError(f"unknown schedule {schedule!r}; valid: cosine, none")
    total = epochs * steps_per_epoch if unit == "step" else epochs
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1), eta_min=eta_min)


def train_model(model: nn.Module, dataset: Dataset, *, seed: int, epochs: int, batch_size: int,
                optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9,
                nesterov: bool = True, no_decay: Sequence[str] = (), schedule: str = "cosine",
                schedule_unit: str = "step", eta_min: float = 0.0, augment: str | Sequence[str] | None = None,
                rotation: str = DEFAULT_METHOD, mask: bool = False, fill: Fill | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                num_workers: int = 0, progress: bool = False, desc: str = "train") -> dict[str, float]:
    """Train `model` in place with cross-entropy on `dataset`; returns final epoch's mean loss and the time.

    Deterministic for a given seed: the caller seeds the model's initialisation (see `deterministic`), the
    loader shuffles with its own generator seeded from `seed`, image augmentations are seeded per image and
    epoch (`bench.augment`) and rotation augmentation draws its angles from another generator.
    ``augment`` is a recipe name (``'rotation'``, ``'gmr_cifar'``) or a list of ops (`bench.augment`); the
    image ops run before normalisation, ``rotation`` rotates every training image by an angle uniform in
    [0, 360) with `bench.rotation`, corners filled with `fill` (None: the dataset's background,
    `dataset_fill`). ``mask`` sets the pixels outside the disk to that background too. The optimiser and the
    schedule: `make_optimizer`, `make_schedule`. Raises FloatingPointError when the loss stops being finite.
    """
    device = torch.device(device)
    ops = aug.resolve(augment)
    fill = dataset_fill(dataset) if fill is None else fill
    loader_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 7919)
    n = len(dataset)  # type: ignore[arg-type]
    source: Dataset = aug.Augmented(dataset, aug.image_ops(ops), seed) if aug.image_ops(ops) else dataset
    loader = DataLoader(source, batch_size=batch_size, shuffle=True, generator=loader_gen,
                        num_workers=num_workers, drop_last=n > batch_size,
                        pin_memory=device.type == "cuda")
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum, nesterov, no_decay)
    total = epochs * len(loader)
    sched = make_schedule(opt, schedule, epochs, len(loader), schedule_unit, eta_min)
    keep = None
    model.to(device=device, dtype=dtype).train()
    final_loss = math.nan
    start = time.perf_counter()
    with tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step") as bar:
        for epoch in range(epochs):
            if isinstance(source, aug.Augmented):
                source.set_epoch(epoch)
            loss_sum, count = 0.0, 0
            for x, y in loader:
                x = x.to(device=device, dtype=dtype, non_blocking=True)
                y = y.to(device=device, non_blocking=True)
                if aug.ROTATION in ops:
                    theta = torch.rand(len(x), generator=aug_gen, dtype=torch.float64) * (2 * math.pi)
                    x = rotate_interpolated(x, theta.to(device=device, dtype=dtype), rotation, fill)
                if mask:
                    if keep is None:
                        keep = disk_mask(x.shape[-2], x.shape[-1], device=device).to(dtype)
                    x = _confine(x, keep, fill_tensor(fill, x))
                loss = F.cross_entropy(model(x), y)
                if not torch.isfinite(loss):
                    raise FloatingPointError("training diverged (NaN loss)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None and schedule_unit == "step":
                    sched.step()
                value = float(loss.detach())
                loss_sum += value * len(y)
                count += len(y)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            final_loss = loss_sum / max(count, 1)
            if sched is not None and schedule_unit == "epoch":
                sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"train_loss_final": final_loss, "train_time_s": time.perf_counter() - start,
            "steps": float(total)}


# -- evaluation ----------------------------------------------------------------------------------------------
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])


@torch.inference_mode()
def evaluate_rotations(model: nn.Module, dataset: Dataset, angles: Sequence[float], *, flips: bool = True,
                       rotation: str = DEFAULT_METHOD, mask: bool = False, fill: Fill | None = None,
                       batch_size: int = 256, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32, num_workers: int = 0, progress: bool = False,
                       desc: str = "eval", max_elements: int = 1 << 24) -> dict[str, Any]:
    """Accuracy of `model` on `dataset` rotated by each angle, and (optionally) flipped left-right / up-down.

    Images are rotated with `bench.rotation.rotate_many`, the corners they bring in filled with `fill`
    (None: the dataset's background, `dataset_fill`: MNIST's normalised black is -0.42, CIFAR's -1.7..-2.0;
    filling with 0 would show even a perfectly invariant classifier grey corners no training image had; 0
    reproduces the official GMR-Conv evaluation). Angles equal modulo 360 are computed once. With ``mask``
    every evaluated input (upright included) has the pixels outside the disk set to that background. The
    vertical flip is the group element (180, reflect) of `bench.rotation`.
    Returns ``{"angles": {angle: acc}, "flip_h": acc, "flip_v": acc, "n": N, "eval_time_s": s}``.
    """
    device = torch.device(device)
    fill = dataset_fill(dataset) if fill is None else fill
    model.to(device=device, dtype=dtype).eval()
    distinct: list[float] = []
    key_of: dict[float, float] = {}
    for a in angles:
        k, r = split_angle(float(a))
        key = round((90.0 * k + r) % 360.0, 9)
        key_of[float(a)] = key
        if key not in distinct:
            distinct.append(key)
    correct = {a: 0 for a in distinct}
    correct_h = correct_v = 0
    n = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    keep = None
    start = time.perf_counter()
    for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        x = x.to(device=device, dtype=dtype)
        y = y.to(device=device)
        if mask and keep is None:
            keep = disk_mask(x.shape[-2], x.shape[-1], device=device).to(dtype)
        background = fill_tensor(fill, x)
        per = max(1, max_elements // max(x.numel(), 1))  # angles per rotate_many call
        for i in range(0, len(distinct), per):
            chunk = distinct[i:i + per]
            rotated = rotate_many(x, chunk, method=rotation, fill=fill)  # (A, B, C, H, W)
            if keep is not None:
                rotated = _confine(rotated, keep, background)
            pred = _predict(model, rotated.reshape(-1, *x.shape[1:]), batch_size).reshape(len(chunk), -1)
            hits = (pred == y[None]).sum(dim=1).tolist()
            for a, h in zip(chunk, hits):
                correct[a] += int(h)
        if flips:
            for which, element in (("h", (0.0, True)), ("v", (180.0, True))):
                xf = rotate(x, element[0], method=rotation, reflect=element[1], fill=fill)
                if keep is not None:
                    xf = _confine(xf, keep, background)
                h = int((_predict(model, xf, batch_size) == y).sum())
                if which == "h":
                    correct_h += h
                else:
                    correct_v += h
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if n == 0:
        raise UsageError("the test split is empty")
    out: dict[str, Any] = {"angles": {float(a): correct[key_of[float(a)]] / n for a in angles}, "n": n,
                           "eval_time_s": time.perf_counter() - start}
    if flips:
        out["flip_h"] = correct_h / n
        out["flip_v"] = correct_v / n
    return out


# -- checkpoints ---------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike[str], network: nn.Module, **meta: Any) -> Path:
    """Write {'state_dict', 'format', **meta} to `path` atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = network.training
    network.train()  # the canonical state: escnn keeps extra expanded-filter buffers only in eval mode
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    network.train(was_training)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, **meta}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no trained checkpoint at {path}: run the accuracy protocol for this model first")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UsageError(f"{path} is not an equibench checkpoint (no 'state_dict')")
    return ckpt


def _derived_key(key: str) -> bool:
    """State entries an escnn/e2cnn model derives from its architecture (see `baselines.escnn_compat`)."""
    from baselines.escnn_compat import derived_state_key

    return derived_state_key(key)


def load_trained(model_name: str, path: str | os.PathLike[str], in_channels: int, num_classes: int,
                 map_location: Any = "cpu", **kw: Any) -> nn.Module:
    """Rebuild `model_name` (create_model with the checkpoint's model kwargs, overridden by **kw) and load the
    trained weights from `path`; returns the model in eval mode."""
    from bench.models import create_model

    ckpt = read_checkpoint(path, map_location)
    saved = ckpt.get("model")
    if saved is not None and saved != model_name:
        raise UsageError(f"{path} holds a trained {saved!r}, not {model_name!r}")
    for key, want in (("in_channels", in_channels), ("num_classes", num_classes)):
        if ckpt.get(key) is not None and ckpt[key] != want:
            raise UsageError(f"{path} was trained with {key}={ckpt[key]}, not {want}")
    kwargs = {**dict(ckpt.get("model_kwargs") or {}), **kw}
    model = create_model(model_name, in_channels, num_classes, **kwargs)
    model.train()  # load in train mode: escnn's eval-mode filter caches are rebuilt by .eval() below
    state = {k: v for k, v in ckpt["state_dict"].items() if not _derived_key(k)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = [k for k in missing if not _derived_key(k)] + list(unexpected)
    if wrong:
        raise UsageError(f"{path} does not fit {model_name!r} (missing or unexpected keys: {wrong[:5]})")
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
