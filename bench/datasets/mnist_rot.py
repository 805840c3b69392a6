"""`mnist_rot`: the MNIST-rot benchmark (Larochelle et al., ICML 2007; `mnist_rotation_new.zip`).

The release holds two whitespace-separated text files; each line is 784 floats in [0, 1] and then the label:

- ``mnist_all_rotation_normalized_float_train_valid.amat``: 12,000 lines; the standard split uses the first
  10,000 as `train` and the last 2,000 as `valid` (`trainval` = all 12,000)
- ``mnist_all_rotation_normalized_float_test.amat``: 50,000 lines (`test`)

Orientation: the 784 values of a line are stored column by column (the images are transposed with respect
to MNIST's row-major IDX files), so ``values.reshape(28, 28)`` is the transposed digit and the loader
transposes it back (``transpose=False`` keeps the file's orientation). QUVA-Lab/e2cnn_experiments (its
`datasets/mnist_rot/convert.py`) does a plain row-major reshape and never transposes: harmless there, since the
digits are rotated uniformly at random and a transpose is a reflection, but it matters when MNIST-rot is
compared with upright MNIST or flips are evaluated, so we restore MNIST's orientation.

Images are zero-padded to 29x29 (bottom/right) and normalised with MNIST's mean/std.
"""

from __future__ import annotations

import functools
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets import DATASETS, check_split, register_dataset
from bench.datasets.common import DataNotFoundError, TensorImageDataset, download_atomically, missing_message
from bench.errors import UsageError

TRAIN_FILE = "mnist_all_rotation_normalized_float_train_valid.amat"
TEST_FILE = "mnist_all_rotation_normalized_float_test.amat"
FOLDER = "mnist_rot"
ARCHIVE = "mnist_rotation_new.zip"
URL = "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"
N_TRAIN = 10_000  # first 10k of train_valid; the last 2k are `valid`


def read_amat(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Parse an .amat file: returns (N, 784) float32 pixel rows and (N,) int64 labels."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.float32, engine="c").to_numpy()
    except (ValueError, pd.errors.ParserError) as exc:
        raise UsageError(f"{path}: not an .amat file of 784 pixel values + label per line ({exc})") from exc
    if table.ndim != 2 or table.shape[1] != 785:
        raise UsageError(f"{path}: expected 785 numbers per line (784 pixels + label), got {table.shape[1]}")
    labels = table[:, -1]
    if not np.all((labels == np.round(labels)) & (labels >= 0) & (labels <= 9)):
        raise UsageError(f"{path}: the last column must hold the labels 0..9")
    return np.ascontiguousarray(table[:, :-1]), labels.astype(np.int64)


def _candidates(data_dir: Path) -> list[Path]:
    return [data_dir / FOLDER, data_dir / "mnist_rotation_new", data_dir]


def find_files(data_dir: Path) -> Path | None:
    """The folder holding both .amat files (data_dir/mnist_rot, data_dir/mnist_rotation_new or data_dir)."""
    for folder in _candidates(data_dir):
        if (folder / TRAIN_FILE).is_file() and (folder / TEST_FILE).is_file():
            return folder
    return None


def _unpack(archive: Path, tmp: Path) -> None:
    """Extract the release zip into tmp and put its two .amat files at tmp/mnist_rot/."""
    unpacked = tmp / "unpacked"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(unpacked)
    (tmp / FOLDER).mkdir(exist_ok=True)
    for name in (TRAIN_FILE, TEST_FILE):
        found = next(iter(sorted(unpacked.rglob(name))), None)
        if found is None:
            raise FileNotFoundError(f"{archive.name} holds no {name}")
        shutil.move(str(found), tmp / FOLDER / name)


def _fetch(tmp: Path, url: str | None = None) -> None:
    from torchvision.datasets.utils import download_url

    download_url(url or URL, str(tmp), filename=ARCHIVE)
    _unpack(tmp / ARCHIVE, tmp)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float, transpose: bool) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels = read_amat(path)
    images = torch.from_numpy(pixels).reshape(-1, 1, 28, 28)
    if transpose:
        images = images.transpose(-1, -2)
    return images.contiguous(), torch.from_numpy(labels)


@register_dataset("mnist_rot")
def mnist_rot(split: str, data_dir: Path, download: bool = False, transpose: bool = True, **kw: Any) -> Any:
    if kw:
        raise UsageError(f"dataset 'mnist_rot' takes only the option 'transpose', got {', '.join(sorted(kw))}")
    info = DATASETS.entry("mnist_rot").meta["info"]
    check_split("mnist_rot", split, info.splits)
    what = missing_message("mnist_rot", data_dir / FOLDER, (TRAIN_FILE, TEST_FILE),
                           extra=f"from {ARCHIVE} of the ICML 2007 release, {URL}; or put that zip into {data_dir}")
    folder = find_files(data_dir)
    if folder is None and (data_dir / ARCHIVE).is_file():
        download_atomically(data_dir, lambda tmp: _unpack(data_dir / ARCHIVE, tmp),
                            keep=[f"{FOLDER}/{TRAIN_FILE}", f"{FOLDER}/{TEST_FILE}"], what=what)
        folder = find_files(data_dir)
    if folder is None:
        if not download:
            raise DataNotFoundError(what)
        download_atomically(data_dir, _fetch, keep=[f"{FOLDER}/{TRAIN_FILE}", f"{FOLDER}/{TEST_FILE}"], what=what)
        folder = find_files(data_dir)
        assert folder is not None
    path = folder / (TEST_FILE if split == "test" else TRAIN_FILE)
    images, labels = _load(str(path), path.stat().st_mtime, bool(transpose))
    if split == "train":
        images, labels = images[:N_TRAIN], labels[:N_TRAIN]
    elif split == "valid":
        images, labels = images[N_TRAIN:], labels[N_TRAIN:]
    images = (F.pad(images, (0, 1, 0, 1)) - info.mean[0]) / info.std[0]
    return TensorImageDataset(images, labels, info)
