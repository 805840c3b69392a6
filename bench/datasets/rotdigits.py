"""`rotdigits`: the embedded, offline default dataset.

scikit-learn's bundled `load_digits` (1,797 handwritten digits, 8x8, grey levels 0..16; no download) is
upsampled with bicubic interpolation to 21x21, zero-padded to 29x29 and masked to the rotation-safe disk of
radius 14 (`bench.rotation.disk_mask`). 21 rather than 29: the 8x8 digits touch their box's corners, so a full
29x29 upsample would lose stroke ends to the disk mask; the 21x21 box's content lies (almost) entirely inside
the disk, so every rotation keeps the whole digit. 29 is odd, so the rotation centre is a pixel centre.

Pixels inside the disk are normalised with the training split's mean/std inside the disk; pixels outside
the disk are exactly 0 (the value `bench.rotation` fills rotated-in corners with), so rotating a test image
never brings in anything that is not a rotated copy of the disk.

Split: fixed, stratified 1,297 train / 500 test with seed 0 (independent of the run seed). The tensors are
built once per process (functools.lru_cache).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.datasets import DATASETS, register_dataset
from bench.datasets.common import TensorImageDataset, embedded_split, normalised_in_disk
from bench.rotation import disk_mask

IMAGE_SIZE = 29
DIGIT_SIZE = 21
TEST_SIZE = 500
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _raw_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, 29, 29) floats in [0, 1] (zero outside the disk) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    pad = (IMAGE_SIZE - DIGIT_SIZE) // 2
    x = F.pad(x, (pad, pad, pad, pad))
    x = x * disk_mask(IMAGE_SIZE).to(x.dtype)
    y = torch.as_tensor(digits.target, dtype=torch.int64)
    return x, y


@functools.lru_cache(maxsize=1)
def split_indices() -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed stratified train/test indices (seed 0, 500 test images)."""
    from sklearn.model_selection import train_test_split

    _, y = _raw_images()
    idx = torch.arange(len(y)).numpy()
    train_idx, test_idx = train_test_split(idx, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y.numpy())
    return torch.as_tensor(sorted(train_idx)), torch.as_tensor(sorted(test_idx))


def disk_stats() -> tuple[float, float]:
    """Mean and std of the training images over the pixels inside the disk."""
    x, _ = _raw_images()
    train_idx, _ = split_indices()
    inside = x[train_idx][:, :, disk_mask(IMAGE_SIZE)]
    return float(inside.mean()), float(inside.std())


@functools.lru_cache(maxsize=4)
def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (N, 1, 29, 29) images and labels of a split (cached; treat as read-only)."""
    x, y = _raw_images()
    train_idx, test_idx = split_indices()
    idx = train_idx if split == "train" else test_idx
    return normalised_in_disk(x[idx], DATASETS.entry("rotdigits").meta["info"]), y[idx].clone()


@register_dataset("rotdigits")
def rotdigits(split: str, data_dir: Path | None = None, download: bool = False, **kw: Any) -> TensorImageDataset:
    return embedded_split("rotdigits", split, kw, tensors)
