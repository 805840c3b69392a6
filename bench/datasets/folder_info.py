"""Static info for the `folder` dataset (kept free of torch/torchvision imports: `dataset_info` uses it)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.errors import UsageError

DEFAULT_IMAGE_SIZE = 65
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def check_image_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 3 or image_size % 2 == 0:
        raise UsageError(
            f"folder dataset: image_size must be an odd integer >= 3 (odd keeps the rotation centre on a "
            f"pixel), got {image_size!r}"
        )
    return image_size


def check_channels(channels: Any) -> int:
    if channels not in (1, 3):
        raise UsageError(f"folder dataset: channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return int(channels)


def class_names(split_dir: Path) -> list[str]:
    """ImageFolder's classes: the sorted sub-directory names."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())


def folder_info(base: Any, data_dir: str | os.PathLike[str] | None, image_size: int = DEFAULT_IMAGE_SIZE,
                channels: int = 3, mean: Any = None, std: Any = None, **_: Any) -> Any:
    """Fill the `folder` DatasetInfo from keywords and (when data_dir holds a train/ folder) its classes."""
    channels = check_channels(channels)
    num_classes = None
    if data_dir is not None:
        train_dir = Path(data_dir).expanduser() / "train"
        if train_dir.is_dir():
            num_classes = len(class_names(train_dir)) or None
    mean = tuple(float(v) for v in mean) if mean is not None else (0.5,) * channels
    std = tuple(float(v) for v in std) if std is not None else (0.5,) * channels
    if len(mean) != channels or len(std) != channels:
        raise UsageError(f"folder dataset: mean/std need {channels} values (one per channel)")
    return replace(base, in_channels=channels, num_classes=num_classes, image_size=check_image_size(image_size),
                   mean=mean, std=std)
