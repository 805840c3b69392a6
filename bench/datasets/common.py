"""Shared dataset plumbing: tensor datasets, odd-size padding, missing-data errors, atomic downloads."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from bench.errors import UsageError
from bench.rotation import disk_mask


class DataNotFoundError(UsageError):
    """The dataset's files are missing (and were not or could not be downloaded). CLI exit code 2."""


class TensorImageDataset(Dataset):
    """Images held in memory as one (N, C, H, W) float tensor; yields (image, int label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: Any) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"images must be (N, C, H, W) with N labels, got {tuple(images.shape)}, {len(labels)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.info = info

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class PadToOdd:
    """Zero-pad (C, H, W) images by one pixel at the bottom/right (before normalisation: 0 = background)."""

    def __init__(self, pad: int = 1) -> None:
        self.pad = pad

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, self.pad, 0, self.pad))

    def __repr__(self) -> str:
        return f"PadToOdd(pad={self.pad})"


class CropToOdd:
    """Drop the last row and column of (C, H, W) images (even -> odd size)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :-1, :-1]

    def __repr__(self) -> str:
        return "CropToOdd()"


def missing_message(name: str, where: Path, files: Iterable[str], extra: str = "", download_hint: bool = True) -> str:
    files = list(files)
    msg = (f"dataset {name!r} not found: put {', '.join(files)} into {where}{os.sep}"
           + (f" ({extra})" if extra else ""))
    if download_hint:
        msg += "; or enable downloading (download=True, CLI --download) to fetch them there"
    return msg


def existing(paths: Iterable[Path]) -> bool:
    return all(p.is_file() for p in paths)


def atomic_gunzip(src: Path, dst: Path) -> None:
    """Decompress src (.gz) to dst through a temp file in dst's folder + os.replace (no half-written dst)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def gunzip_missing(paths: Sequence[Path]) -> None:
    """For each wanted file that is absent but whose '<file>.gz' exists, decompress it in place."""
    for p in paths:
        gz = p.with_name(p.name + ".gz")
        if not p.is_file() and gz.is_file():
            atomic_gunzip(gz, p)


def download_atomically(root: Path, fetch: Callable[[Path], None], keep: Sequence[str], what: str) -> None:
    """Run fetch(tmp) into a fresh temp dir inside root, then move the relative paths `keep` into root.

    Nothing is written into root's real folders until fetch has succeeded; the temp dir is always removed,
    so a failed or interrupted download leaves no half-written files behind."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        try:
            fetch(tmp)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # network errors, md5 mismatch, missing gdown, ...
            raise DataNotFoundError(f"{what}; downloading failed: {type(exc).__name__}: {exc}") from exc
        for rel in keep:
            src = tmp / rel
            if not src.is_file():
                raise DataNotFoundError(f"{what}; the download did not produce {rel}")
        for rel in keep:
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def normalised_in_disk(images: torch.Tensor, info: Any) -> torch.Tensor:
    """Embedded images (N, 1, S, S) normalised with `info`'s mean/std, zero outside the inscribed disk (so the
    grid's rotations and flips act on them exactly)."""
    mask = disk_mask(images.shape[-1]).to(images.dtype)
    return (((images - info.mean[0]) / info.std[0]) * mask).contiguous()


def embedded_split(name: str, split: str, options: dict[str, Any],
                   tensors: Callable[[str], tuple[torch.Tensor, torch.Tensor]]) -> TensorImageDataset:
    """A split of an embedded dataset (no files, no options) from its cached `tensors(split)`."""
    from bench.datasets import DATASETS, check_split

    if options:
        raise UsageError(f"dataset {name!r} takes no options, got {', '.join(sorted(options))}")
    info = DATASETS.entry(name).meta["info"]
    check_split(name, split, info.splits)
    images, labels = tensors(split)
    return TensorImageDataset(images, labels, info)
