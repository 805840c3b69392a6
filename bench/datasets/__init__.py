"""Dataset registry: `create_dataset`, `list_datasets`, `dataset_info` (same pattern as `bench.models`).

Built-in names are *declared* here with the module that implements them and their static metadata, so
`list_datasets()` / `dataset_info()` import neither torchvision nor scikit-learn. The implementing module
registers the real factory with `@register_dataset(name)` when it is first used.

A factory has the signature ``factory(split: str, data_dir: Path | None, download: bool, **kw) -> Dataset``;
the dataset yields ``(image, label)`` with ``image`` a float tensor ``(C, H, W)`` already normalised
(``(x - mean) / std``) and ``label`` an ``int``. Every built-in image size is odd, so the rotation centre
((W-1)/2, (H-1)/2) is a pixel centre. Datasets carry their metadata as ``dataset.info`` (a `DatasetInfo`).

Data location: ``data_dir`` argument, else ``$EQUIBENCH_DATA_DIR``, else ``~/.cache/equibench/data``. Missing
data that cannot be fetched raises `bench.errors.UsageError` naming exactly which files to put where.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.registry import Registry

DATASETS: Registry[Any] = Registry("dataset")

DATA_DIR_ENV = "EQUIBENCH_DATA_DIR"


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (what a model needs to be built for it, and how it was normalised)."""

    name: str
    in_channels: int
    num_classes: int | None  # None: only known from the data (the `folder` dataset)
    image_size: int | None  # side of the (square, odd) images; None: set by a keyword (`folder`)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...] = ("train", "test")
    offline: bool = False  # needs no files at all
    description: str = ""
    # normalised value of an empty pixel, one per channel; None: a black pixel, -mean/std. Rotations fill the
    # corners they bring in with it, so a rotated test image has the background the training images had.
    background: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def fill(self) -> tuple[float, ...]:
        """What rotated-in corners are filled with (`background`, else the normalised black -mean/std)."""
        if self.background is not None:
            return tuple(float(v) for v in self.background)
        return tuple(-m / s for m, s in zip(self.mean, self.std))


# name: (module, DatasetInfo fields)
_BUILTIN: dict[str, tuple[str, dict[str, Any]]] = {
    "rotdigits": ("bench.datasets.rotdigits", dict(
        in_channels=1, num_classes=10, image_size=29,
        # mean/std of the training split inside the disk (checked against the data by the tests); the images
        # are exactly 0 outside the disk, so that is their empty pixel (not the normalised black inside it)
        mean=(0.22446,), std=(0.33295,), offline=True, background=(0.0,),
        description="scikit-learn's bundled 8x8 digits, bicubic-upsampled, on a 29x29 disk; 1297 train / 500 test",
    )),
    "rotshapes": ("bench.datasets.rotshapes", dict(
        in_channels=1, num_classes=10, image_size=29,
        # mean/std of the training split inside the disk (checked against the data by the tests)
        mean=(0.11048,), std=(0.30635,), offline=True,
        description="procedural shapes at uniformly random angles (orientation-free), 29x29 disk; 5000 train / 1000 test",
    )),
    "mnist": ("bench.datasets.vision", dict(
        in_channels=1, num_classes=10, image_size=29, mean=(0.1307,), std=(0.3081,),
        description="MNIST (torchvision), 28x28 zero-padded to 29x29",
    )),
    "mnist_rot": ("bench.datasets.mnist_rot", dict(
        in_channels=1, num_classes=10, image_size=29, mean=(0.1307,), std=(0.3081,),
        splits=("train", "valid", "trainval", "test"),
        description="MNIST-rot (ICML 2007 .amat release): 10k train / 2k valid / 50k test, padded to 29x29",
    )),
    "cifar10": ("bench.datasets.vision", dict(
        in_channels=3, num_classes=10, image_size=33,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        description="CIFAR-10 (torchvision), 32x32 zero-padded to 33x33",
    )),
    "pcam": ("bench.datasets.vision", dict(
        in_channels=3, num_classes=2, image_size=95,
        mean=(0.7008, 0.5384, 0.6916), std=(0.2350, 0.2774, 0.2129),
        splits=("train", "val", "test"),
        description="PatchCamelyon (torchvision, HDF5), 96x96 cropped to 95x95",
    )),
    "folder": ("bench.datasets.vision", dict(
        in_channels=3, num_classes=None, image_size=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        description="your own images: torchvision ImageFolder at data_dir/{train,test}/<class>/*, resized to an odd size",
    )),
}
for _name, (_module, _meta) in _BUILTIN.items():
    DATASETS.declare(_name, _module, info=DatasetInfo(name=_name, **_meta))


def register_dataset(name: str | None = None, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a dataset factory ``factory(split, data_dir, download, **kw)``."""
    return DATASETS.register(name, **meta)


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "equibench" / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def list_datasets(offline_only: bool = False) -> list[str]:
    """Registered dataset names (no heavy imports)."""
    names = DATASETS.names()
    if offline_only:
        names = [n for n in names if getattr(DATASETS.entry(n).meta.get("info"), "offline", False)]
    return names


def dataset_info(name: str, data_dir: str | os.PathLike[str] | None = None, **kw: Any) -> DatasetInfo:
    """Static metadata of a dataset. For `folder`, ``data_dir``/``image_size``/``channels`` fill in the gaps."""
    if ":" in name:
        raise UsageError(f"dataset plugin {name!r} has no static info: create it and read `dataset.info`")
    info = DATASETS.entry(name).meta.get("info")
    if info is None:
        raise UsageError(f"dataset {name!r} was registered without `info=DatasetInfo(...)`")
    if name == "folder":
        from bench.datasets.folder_info import folder_info  # light: os only

        info = folder_info(info, data_dir, **kw)
    return info


def check_split(name: str, split: str, splits: tuple[str, ...]) -> str:
    if split not in splits:
        raise UsageError(f"dataset {name!r} has no split {split!r}; valid splits: {', '.join(splits)}")
    return split


def create_dataset(name: str, split: str, data_dir: str | os.PathLike[str] | None = None,
                   download: bool = False, **kw: Any) -> Any:
    """Build dataset `name` for `split` ('train' | 'test' | ...). Returns a torch Dataset of (C,H,W) float, int."""
    if ":" not in name:
        info = DATASETS.entry(name).meta.get("info")
        if info is not None:
            check_split(name, split, info.splits)
    factory = DATASETS.get(name)
    return factory(split=split, data_dir=resolve_data_dir(data_dir), download=download, **kw)


__all__ = [
    "DATASETS", "DatasetInfo", "register_dataset", "create_dataset", "list_datasets", "dataset_info",
    "default_data_dir", "resolve_data_dir", "check_split",
]
