"""How much accuracy rotation invariance itself costs on a dataset: the accuracy of an invariant classifier.

An invariant network must give a digit and its rotated copies one answer, so on data where orientation
carries information (a 6 is a 9 turned half way) its accuracy has a ceiling below 100 %. This module
measures what an invariant classifier can reach, with no network in the way: **orbit nearest neighbour**.
A test image is compared with every training image under every rotation of the test image on an angle
grid (and its mirror image, for rotation-and-reflection invariance), and takes the label of the nearest
training image. Its prediction is a function of the test image's orbit, so it is invariant: exactly
under the quarter turns (and flips) when the grid step divides 90 degrees, and to within the grid step and
the interpolation at other angles. The same rule without the orbit (plain nearest neighbour on the upright
image) is reported beside it: their difference is what invariance costs this classifier.

The result is an accuracy that an invariant classifier *reaches*, so it bounds the true ceiling from
below; a network with the same invariance that scores far less is limited by its capacity or training,
not by its symmetry. On `rotdigits` (test split, 10-degree grid) orbit nearest neighbour reaches 98.6 %
with rotations (plain nearest neighbour: 98.4 %) and 96.8 % with rotations and reflections (mirror
images of 2 and 5 meet): scikit-learn's 6s and 9s differ in more than a half turn. See docs/datasets.md.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from bench.errors import UsageError
from bench.rotation import check_method, rotate_many


@dataclass(frozen=True)
class Ceiling:
    """The accuracy of orbit nearest neighbour on a dataset's test split, and of plain nearest neighbour."""

    dataset: str
    group: str  # "SO2" (rotations) or "O2" (rotations and reflections)
    accuracy: float  # invariant rule
    plain_accuracy: float  # the same rule on the upright image only (not invariant)
    n_test: int
    step_deg: float
    confusions: tuple[tuple[int, int, int], ...]  # (true, predicted, count) of the invariant rule, most first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stack(dataset: Dataset, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """All (image, label) pairs of a dataset as one (N, C, H, W) tensor and an (N,) label tensor."""
    xs, ys = zip(*DataLoader(dataset, batch_size=batch_size, shuffle=False))
    return torch.cat(xs), torch.cat(ys).to(torch.int64)


def orbit_angles(step_deg: float) -> list[float]:
    if not 0 < step_deg <= 360:
        raise UsageError(f"step_deg must be in (0, 360], got {step_deg}")
    count = max(1, round(360.0 / step_deg))
    if abs(count * step_deg - 360.0) > 1e-9:
        raise UsageError(f"step_deg must divide 360 (e.g. 5, 10, 15, 30, 90), got {step_deg}")
    return [i * step_deg for i in range(count)]


def orbit_nearest_neighbour(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, *,
                            step_deg: float = 10.0, reflections: bool = False, rotation: str = "bicubic",
                            chunk: int = 64) -> torch.Tensor:
    """Labels of the training images nearest (Euclidean) to any rotation (and mirror image) of each test image.

    Cost: len(test) x orbit size x len(train) x pixels multiply-adds (rotdigits, 10 degrees: ~20 GFLOP)."""
    check_method(rotation)
    angles = orbit_angles(step_deg)
    train = train_x.flatten(1).to(torch.float32)
    train_sq = (train * train).sum(dim=1)
    labels = []
    for i in range(0, len(test_x), chunk):
        x = test_x[i:i + chunk].to(torch.float32)
        views = [x, torch.flip(x, (-1,))] if reflections else [x]
        orbit = torch.cat([rotate_many(v, angles, method=rotation) for v in views])  # (A, B, C, H, W)
        flat = orbit.reshape(-1, train.shape[1])
        dist = (flat * flat).sum(dim=1, keepdim=True) - 2.0 * flat @ train.T + train_sq[None]
        nearest = dist.view(orbit.shape[0], len(x), -1).amin(dim=0).argmin(dim=1)
        labels.append(train_y[nearest])
    return torch.cat(labels)


def nearest_neighbour(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor) -> torch.Tensor:
    """Plain nearest neighbour on the images as given (the non-invariant reference)."""
    return train_y[torch.cdist(test_x.flatten(1).float(), train_x.flatten(1).float()).argmin(dim=1)]


def confusions(true: torch.Tensor, pred: torch.Tensor) -> tuple[tuple[int, int, int], ...]:
    wrong = true != pred
    pairs, counts = torch.unique(torch.stack([true[wrong], pred[wrong]], dim=1), dim=0, return_counts=True)
    rows = [(int(a), int(b), int(c)) for (a, b), c in zip(pairs.tolist(), counts.tolist())]
    return tuple(sorted(rows, key=lambda r: (-r[2], r[0], r[1])))


def invariant_ceiling(dataset: str = "rotdigits", *, reflections: bool = False, step_deg: float = 10.0,
                      rotation: str = "bicubic", test_limit: int | None = None, data_dir: str | Path | None = None,
                      dataset_kwargs: Mapping[str, Any] | None = None) -> Ceiling:
    """Orbit nearest neighbour on `dataset` (train split as memory, test split scored; cached per process).

    ``test_limit`` scores the same fixed test subset as the accuracy protocol's ``test_limit``. Use
    ``reflections=True`` for models invariant to reflections too (D_N, O(2), GMR-Conv's isotropic kernels)."""
    return _invariant_ceiling(dataset, reflections, float(step_deg), rotation, test_limit,
                              None if data_dir is None else str(data_dir),
                              json.dumps(dict(dataset_kwargs or {}), sort_keys=True))


@functools.lru_cache(maxsize=8)
def _invariant_ceiling(dataset: str, reflections: bool, step_deg: float, rotation: str, test_limit: int | None,
                       data_dir: str | None, dataset_kwargs: str) -> Ceiling:
    from bench.datasets import create_dataset
    from bench.training import fixed_subset

    kwargs = json.loads(dataset_kwargs)
    train_x, train_y = stack(create_dataset(dataset, "train", data_dir=data_dir, **kwargs))
    test_x, test_y = stack(fixed_subset(create_dataset(dataset, "test", data_dir=data_dir, **kwargs), test_limit))
    pred = orbit_nearest_neighbour(train_x, train_y, test_x, step_deg=step_deg, reflections=reflections,
                                   rotation=rotation)
    plain = nearest_neighbour(train_x, train_y, test_x)
    return Ceiling(dataset=dataset, group="O2" if reflections else "SO2",
                   accuracy=float((pred == test_y).double().mean()),
                   plain_accuracy=float((plain == test_y).double().mean()), n_test=len(test_y),
                   step_deg=float(step_deg), confusions=confusions(test_y, pred))


def ceiling_rows(dataset: str, test_limit: int | None = None, data_dir: str | Path | None = None,
                 dataset_kwargs: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The accuracy protocol's ``ceiling`` rows for `dataset`: ``invariant_ceiling`` with ``group`` SO2 and O2
    (orbit nearest neighbour, rotations / rotations and reflections) and ``nearest_neighbour`` (the same rule
    on the upright image, not invariant), all as fractions of the same fixed test subset the models are
    scored on."""
    rows = []
    for reflections in (False, True):
        c = invariant_ceiling(dataset, reflections=reflections, test_limit=test_limit, data_dir=data_dir,
                              dataset_kwargs=dataset_kwargs)
        rows.append({"metric": "invariant_ceiling", "value": c.accuracy, "unit": "fraction", "group": c.group})
    rows.append({"metric": "nearest_neighbour", "value": c.plain_accuracy, "unit": "fraction"})
    return rows
