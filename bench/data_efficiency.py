"""Pure helpers for measuring data efficiency: accuracy as a function of the number of training examples.

- `log_sizes`: log-spaced training-set sizes (examples per class), e.g. 5 ... 500.
- `stratified_indices` / `stratified_subset`: a seeded subset with the same number of examples of every
  class. For a fixed seed the subsets are *nested* (the 10-per-class set contains the 5-per-class set), so a
  curve over sizes measures more data, not different data.
- `feasible_sizes`: the requested sizes a dataset can supply (larger ones become its largest balanced size).
- `epochs_for`: epochs that give a small training set at least a minimum number of optimizer steps (8
  epochs of 5 examples per class are 8 steps: an untrained model, not a data-limited one).
- `examples_to_reach`: the number of examples per class at which an accuracy-vs-size curve first reaches a
  target accuracy, interpolated linearly in log size; None when the curve never gets there.

Sizes are counted per class throughout (a balanced subset of k per class has k * num_classes examples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from bench.errors import UsageError


def log_sizes(low: int = 5, high: int = 500, count: int = 5) -> list[int]:
    """`count` integers from `low` to `high` (both kept), evenly spaced in log, rounded; repeats dropped.

    log_sizes(5, 500, 5) == [5, 16, 50, 158, 500]."""
    if not (isinstance(low, int) and isinstance(high, int) and isinstance(count, int)):
        raise UsageError(f"low, high and count must be integers, got {low!r}, {high!r}, {count!r}")
    if low < 1 or high < low:
        raise UsageError(f"sizes need 1 <= low <= high, got low={low}, high={high}")
    if count < 1 or (count == 1 and high != low):
        raise UsageError(f"count must be >= 2 (or 1 when low == high), got {count}")
    if count == 1:
        return [low]
    sizes = np.rint(np.geomspace(low, high, count)).astype(int).tolist()
    return sorted(set(sizes))


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Integer labels of every example, in dataset order.

    Read without loading images where the dataset exposes them (`labels` as the suite's tensor datasets do,
    torchvision's `targets`, a `Subset` of either); any other dataset is iterated once."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.int64)]
    for attr in ("labels", "targets"):
        values = getattr(dataset, attr, None)
        if values is not None:
            return torch.as_tensor(values, dtype=torch.int64).reshape(-1)
    return torch.as_tensor([int(label) for _, label in dataset], dtype=torch.int64)  # type: ignore[attr-defined]


def stratified_indices(labels: torch.Tensor | Sequence[int], per_class: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of `per_class` examples of every class present in `labels`, chosen by `seed`.

    One seeded permutation of all examples is drawn and each class keeps its first `per_class` members in
    that order, so for a fixed seed the subset for k per class is contained in the subset for any larger k.
    Raises UsageError when a class has fewer than `per_class` examples."""
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise UsageError(f"per_class must be an integer >= 1, got {per_class!r}")
    if len(labels) == 0:
        raise UsageError("cannot draw a stratified subset of an empty dataset")
    classes, counts = torch.unique(labels, return_counts=True)
    short = [f"{int(c)} ({int(n)})" for c, n in zip(classes, counts) if n < per_class]
    if short:
        raise UsageError(f"per_class={per_class} exceeds the examples of class(es) {', '.join(short)}; "
                         f"valid: 1..{int(counts.min())}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picked = [order[labels[order] == c][:per_class] for c in classes]
    return torch.cat(picked).sort().values


def feasible_sizes(sizes: Sequence[int], labels: torch.Tensor | Sequence[int]) -> list[int]:
    """`sizes` (per class) that every class of `labels` can supply, sorted; sizes above the smallest class
    are replaced by that class's count, the largest balanced subset (so a 5 ... 500 sweep on a dataset with
    ~130 examples per class ends at ~130 instead of failing)."""
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if len(labels) == 0:
        raise UsageError("cannot draw a stratified subset of an empty dataset")
    largest = int(torch.unique(labels, return_counts=True)[1].min())
    if not sizes or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in sizes):
        raise UsageError(f"sizes must be a non-empty list of integers >= 1, got {list(sizes)!r}")
    return sorted({min(int(k), largest) for k in sizes})


def stratified_subset(dataset: Dataset, per_class: int, seed: int = 0) -> Subset:
    """`stratified_indices` applied to a dataset; the subset keeps the dataset's `info`."""
    sub = Subset(dataset, stratified_indices(dataset_labels(dataset), per_class, seed).tolist())
    sub.info = getattr(dataset, "info", None)  # type: ignore[attr-defined]
    return sub


def epochs_for(n_examples: int, batch_size: int, epochs: int, min_steps: int = 0) -> int:
    """At least `epochs`, and enough epochs that training takes at least `min_steps` optimizer steps.

    Steps per epoch as `bench.training.train_model` takes them: it drops the last partial batch unless the
    whole set fits in one batch, so n // batch_size steps (at least 1)."""
    if min(n_examples, batch_size, epochs) < 1 or min_steps < 0:
        raise UsageError(f"need n_examples, batch_size, epochs >= 1 and min_steps >= 0, got "
                         f"{n_examples}, {batch_size}, {epochs}, {min_steps}")
    per_epoch = max(1, n_examples // batch_size)
    return max(epochs, math.ceil(min_steps / per_epoch))


def examples_to_reach(sizes: Sequence[float], accuracies: Sequence[float], target: float) -> float | None:
    """Examples per class at which the curve (sizes, accuracies) first reaches `target`.

    Between two measured sizes the curve is linear in log(size). Returns None when no measured point reaches
    the target, and sizes[0] when the first point already does (the curve says nothing below its first size).
    Sizes must be positive and strictly increasing; accuracies finite; NaN points are a UsageError (drop them
    before, so a missing measurement is never read as a failure)."""
    n = np.asarray(sizes, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    if n.ndim != 1 or acc.shape != n.shape or len(n) == 0:
        raise UsageError(f"sizes and accuracies must be non-empty lists of one length, got {len(n)} and {len(acc)}")
    if not (np.all(np.isfinite(n)) and np.all(n > 0) and np.all(np.diff(n) > 0)):
        raise UsageError(f"sizes must be positive and strictly increasing, got {list(sizes)}")
    if not np.all(np.isfinite(acc)):
        raise UsageError(f"accuracies must be finite, got {list(accuracies)}")
    if not math.isfinite(target):
        raise UsageError(f"target must be a finite accuracy, got {target!r}")
    reached = np.nonzero(acc >= target)[0]
    if len(reached) == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(n[0])
    t = (target - acc[i - 1]) / (acc[i] - acc[i - 1])  # acc[i-1] < target <= acc[i]: t in (0, 1]
    return float(math.exp(math.log(n[i - 1]) + t * (math.log(n[i]) - math.log(n[i - 1]))))


def examples_needed(sizes: Sequence[float], accuracies: Sequence[float],
                    targets: Sequence[float]) -> dict[float, float | None]:
    """`examples_to_reach` for each target accuracy (the table the report shows per model)."""
    return {float(t): examples_to_reach(sizes, accuracies, t) for t in targets}


__all__ = ["log_sizes", "dataset_labels", "stratified_indices", "feasible_sizes", "stratified_subset", "epochs_for",
           "examples_to_reach", "examples_needed"]
