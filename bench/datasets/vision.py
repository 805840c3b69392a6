"""Real datasets loaded with torchvision: `mnist`, `cifar10`, `pcam` and `folder` (your own ImageFolder).

Every image is brought to an odd size *before* normalisation (zero padding = black background) so the rotation
centre is a pixel centre: MNIST 28 -> 29, CIFAR-10 32 -> 33 (one zero row/column at the bottom/right), PCam
96 -> 95 (last row/column cropped), `folder` resized to an odd `image_size` (default 65).

``pad_to_odd=False`` (MNIST, CIFAR-10) keeps the native even size instead, and the dataset's ``info`` says so
(``image_size`` 28 / 32). The GMR-Conv paper trains at 32x32: `gmr_resnet18`'s four 2x2 average pools are
exactly rot90/flip invariant only when the side divides by 16, so at 33 its 90-degree logit error is 4.3e-3
instead of 3.7e-7 (the odd padding also shifts the image off the centre its pooling grid turns about).

`data_dir` holds torchvision's usual layout (``MNIST/raw/``, ``cifar-10-batches-py/``, ``pcam/``). With
``download=True`` torchvision fetches into a temp folder inside data_dir and the files are moved into place
only once complete. Missing data raises `DataNotFoundError` (a `UsageError`) naming the files and folder.
"""

from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path
from typing import Any

from torchvision import datasets as tvd
from torchvision import transforms as T

from bench.datasets import DATASETS, check_split, dataset_info, register_dataset
from bench.datasets.common import (
    CropToOdd,
    DataNotFoundError,
    PadToOdd,
    download_atomically,
    existing,
    gunzip_missing,
    missing_message,
)
from bench.datasets.folder_info import DEFAULT_IMAGE_SIZE, IMAGE_EXTENSIONS, class_names
from bench.errors import UsageError


def _info(name: str) -> Any:
    return DATASETS.entry(name).meta["info"]


def _no_options(name: str, kw: dict[str, Any], valid: tuple[str, ...] = ()) -> None:
    if kw:
        takes = f"valid: {', '.join(valid)}" if valid else "it takes none"
        raise UsageError(f"dataset {name!r} got unknown option(s) {', '.join(sorted(kw))}; {takes}")


def _sized(name: str, pad_to_odd: bool, native: int) -> tuple[Any, list[Any]]:
    """(info, size transforms) of a dataset whose native side `native` is even: padded to odd by default."""
    if not isinstance(pad_to_odd, bool):
        raise UsageError(f"dataset {name!r}: pad_to_odd must be true or false, got {pad_to_odd!r}")
    info = _info(name)
    if pad_to_odd:
        return info, [PadToOdd(1)]
    return dataclasses.replace(info, image_size=native,
                               description=f"{info.description.split(',')[0]}, {native}x{native} (not padded)"), []


def _attach(ds: Any, info: Any, split: str) -> Any:
    ds.info = info
    ds.split = split
    return ds


# -- MNIST ---------------------------------------------------------------------------------------------------
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@register_dataset("mnist")
def mnist(split: str, data_dir: Path, download: bool = False, pad_to_odd: bool = True, **kw: Any) -> Any:
    _no_options("mnist", kw, ("pad_to_odd",))
    info, sizing = _sized("mnist", pad_to_odd, 28)
    check_split("mnist", split, info.splits)
    raw = data_dir / "MNIST" / "raw"
    wanted = [raw / f for f in MNIST_FILES]
    gunzip_missing(wanted)  # accept the .gz files as distributed
    what = missing_message("mnist", raw, MNIST_FILES, extra="IDX files, raw or .gz-compressed")
    if not existing(wanted):
        if not download:
            raise DataNotFoundError(what)
        download_atomically(
            data_dir, lambda tmp: tvd.MNIST(str(tmp), train=True, download=True),
            keep=[f"MNIST/raw/{f}" for f in MNIST_FILES], what=what)
    transform = T.Compose([T.ToTensor(), *sizing, T.Normalize(info.mean, info.std)])
    try:
        ds = tvd.MNIST(str(data_dir), train=(split == "train"), transform=transform, download=False)
    except RuntimeError as exc:
        raise DataNotFoundError(f"{what}; torchvision could not read them: {exc}") from exc
    return _attach(ds, info, split)


# -- CIFAR-10 ------------------------------------------------------------------------------------------------
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
               "batches.meta")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"


def _extract_cifar_archive(data_dir: Path) -> None:
    """A user-supplied cifar-10-python.tar.gz in data_dir is unpacked (atomically) when the batches are absent."""
    archive = data_dir / CIFAR_ARCHIVE

    def fetch(tmp: Path) -> None:
        with tarfile.open(archive, "r:gz") as tar:
            try:
                tar.extractall(tmp, filter="data")
            except TypeError:  # Python without extraction filters
                tar.extractall(tmp)

    download_atomically(data_dir, fetch, keep=[f"{CIFAR_FOLDER}/{f}" for f in CIFAR_FILES],
                        what=f"cannot unpack {archive}")


@register_dataset("cifar10")
def cifar10(split: str, data_dir: Path, download: bool = False, pad_to_odd: bool = True, **kw: Any) -> Any:
    _no_options("cifar10", kw, ("pad_to_odd",))
    info, sizing = _sized("cifar10", pad_to_odd, 32)
    check_split("cifar10", split, info.splits)
    folder = data_dir / CIFAR_FOLDER
    wanted = [folder / f for f in CIFAR_FILES]
    what = missing_message("cifar10", folder, CIFAR_FILES,
                           extra=f"the python-pickle batches, or {CIFAR_ARCHIVE} into {data_dir}")
    if not existing(wanted) and (data_dir / CIFAR_ARCHIVE).is_file():
        _extract_cifar_archive(data_dir)
    if not existing(wanted):
        if not download:
            raise DataNotFoundError(what)
        download_atomically(data_dir, lambda tmp: tvd.CIFAR10(str(tmp), train=True, download=True),
                            keep=[f"{CIFAR_FOLDER}/{f}" for f in CIFAR_FILES], what=what)
    transform = T.Compose([T.ToTensor(), *sizing, T.Normalize(info.mean, info.std)])
    try:
        ds = tvd.CIFAR10(str(data_dir), train=(split == "train"), transform=transform, download=False)
    except RuntimeError as exc:  # torchvision checks every batch's md5
        raise DataNotFoundError(
            f"dataset 'cifar10': the files in {folder} failed torchvision's check ({exc}); replace them with the "
            f"original {', '.join(CIFAR_FILES)} (or delete them and enable downloading)") from exc
    return _attach(ds, info, split)


# -- PatchCamelyon -------------------------------------------------------------------------------------------
def pcam_files(split: str) -> tuple[str, str]:
    part = {"train": "train", "val": "valid", "test": "test"}[split]
    return (f"camelyonpatch_level_2_split_{part}_x.h5", f"camelyonpatch_level_2_split_{part}_y.h5")


@register_dataset("pcam")
def pcam(split: str, data_dir: Path, download: bool = False, **kw: Any) -> Any:
    _no_options("pcam", kw)
    info = _info("pcam")
    check_split("pcam", split, info.splits)
    folder = data_dir / "pcam"
    files = pcam_files(split)
    wanted = [folder / f for f in files]
    gunzip_missing(wanted)
    what = missing_message("pcam", folder, files, extra="HDF5, or their .h5.gz archives; downloading needs gdown")
    if not existing(wanted):
        if not download:
            raise DataNotFoundError(what)
        download_atomically(data_dir, lambda tmp: tvd.PCAM(str(tmp), split=split, download=True),
                            keep=[f"pcam/{f}" for f in files], what=what)
    transform = T.Compose([T.ToTensor(), CropToOdd(), T.Normalize(info.mean, info.std)])
    try:
        ds = tvd.PCAM(str(data_dir), split=split, transform=transform, download=False)
    except RuntimeError as exc:
        raise DataNotFoundError(f"{what}; torchvision could not read them: {exc}") from exc
    return _attach(ds, info, split)


# -- your own images -----------------------------------------------------------------------------------------
class _ToRGB:
    def __call__(self, image: Any) -> Any:
        return image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


@register_dataset("folder")
def folder(split: str, data_dir: Path, download: bool = False, image_size: int = DEFAULT_IMAGE_SIZE,
           channels: int = 3, mean: Any = None, std: Any = None, **kw: Any) -> Any:
    _no_options("folder", kw)
    info = dataset_info("folder", data_dir, image_size=image_size, channels=channels, mean=mean, std=std)
    check_split("folder", split, info.splits)
    root = data_dir / split
    layout = (f"dataset 'folder' not found: put your images into {data_dir}/train/<class>/<image> and "
              f"{data_dir}/test/<class>/<image> (one sub-folder per class, same class names in both; "
              f"extensions {', '.join(IMAGE_EXTENSIONS)})")
    if download:
        raise UsageError("dataset 'folder' is your own data and cannot be downloaded; " + layout.split(": ", 1)[1])
    if not root.is_dir() or not class_names(root):
        raise DataNotFoundError(layout)
    size = info.image_size
    transform = T.Compose([
        T.Grayscale(1) if channels == 1 else _ToRGB(),
        T.Resize((size, size), antialias=True),
        T.ToTensor(),
        T.Normalize(info.mean, info.std),
    ])
    try:
        ds = tvd.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataNotFoundError(f"{layout}; {exc}") from exc
    train_classes = class_names(data_dir / "train") if (data_dir / "train").is_dir() else ds.classes
    if ds.classes != train_classes:
        raise UsageError(f"dataset 'folder': {root} has classes {ds.classes} but {data_dir / 'train'} has "
                         f"{train_classes}; both splits need the same class sub-folders")
    return _attach(ds, info, split)


__all__ = ["mnist", "cifar10", "pcam", "folder", "pcam_files", "MNIST_FILES", "CIFAR_FILES"]
