"""Training augmentations: named, seeded, applied to the un-normalised image (torchvision.transforms.v2).

``augment`` of `bench.training.train_model` is a recipe name or a list of op names:

- recipes: ``rotation`` (a uniform random angle, done batched by `bench.rotation` in the training loop) and
  ``gmr_cifar``, the official GMR-Conv CIFAR-10 recipe (XYPB/GMR-Conv ``--moco-aug --translation``):
  random resized crop (scale 0.5-1) -> colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8 -> grayscale with p 0.2
  -> Gaussian blur (3x3, sigma in [0.1, 2]) with p 0.2 -> random translation up to 0.2 of the side; no flips.
- ops: the keys of `OPS` and ``rotation``, applied in the order given (``rotation`` always last).

Datasets yield normalised images, so `Augmented` un-normalises each image with its ``info.mean``/``info.std``,
applies the ops (colour jitter needs [0, 1] values; translation and crops then bring in black, as in the raw
image) and normalises again. One deviation from the official code: it translates after normalising (filling
with 0 in normalised units, a grey), we translate before (filling with black), like every rotation of the
suite. The crop keeps each image's own size (the official code crops to 32 from 32x32 CIFAR images).

Determinism: the ops draw their parameters from torch's global generator, so each image is transformed
inside ``torch.random.fork_rng`` seeded with a hash of (seed, epoch, index): the same run seed gives the same
augmented images whatever the number of loader workers, and the caller's random state is left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from bench.errors import UsageError

ROTATION = "rotation"  # done batched in the training loop, not per image here
OPS: dict[str, Callable[[tuple[int, int]], Any]] = {
    "random_resized_crop": lambda size: v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
    "color_jitter": lambda size: v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
    "grayscale": lambda size: v2.RandomGrayscale(p=0.2),
    "blur": lambda size: v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 2.0))], p=0.2),
    "translate": lambda size: v2.RandomAffine(degrees=0.0, translate=(0.2, 0.2)),
}
RECIPES: dict[str, tuple[str, ...]] = {
    "rotation": (ROTATION,),
    "gmr_cifar": ("random_resized_crop", "color_jitter", "grayscale", "blur", "translate"),
}


def resolve(augment: str | Sequence[str] | None) -> tuple[str, ...]:
    """The op names of a recipe name or op list (None / '' / 'none': no augmentation)."""
    if augment is None or augment in ("", "none"):
        return ()
    if isinstance(augment, str):
        if augment in RECIPES:
            return RECIPES[augment]
        if augment in OPS or augment == ROTATION:
            return (augment,)
        raise UsageError(f"unknown augmentation {augment!r}; valid recipes: {', '.join(RECIPES)}; "
                         f"or a list of ops from: {', '.join([*OPS, ROTATION])}")
    ops = tuple(augment)
    bad = [op for op in ops if not isinstance(op, str) or (op not in OPS and op != ROTATION)]
    if bad or len(set(ops)) != len(ops):
        raise UsageError(f"augmentation ops must be distinct names from {', '.join([*OPS, ROTATION])}; "
                         f"got {list(augment)!r}")
    return ops


def image_ops(ops: Sequence[str]) -> tuple[str, ...]:
    """The per-image ops (everything but the batched rotation), in the given order."""
    return tuple(op for op in ops if op != ROTATION)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one image of one epoch (a fixed mixing of the three integers)."""
    h = 0x9E3779B97F4A7C15
    for v in (seed, epoch, index):
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class Augmented(Dataset):
    """A normalised dataset with per-image augmentations applied before normalisation; call `set_epoch`
    before each epoch so the draws change between epochs but not between runs."""

    def __init__(self, dataset: Dataset, ops: Sequence[str], seed: int) -> None:
        info = getattr(dataset, "info", None)
        if info is None:
            raise UsageError("image augmentations need the dataset's normalisation (a dataset with `.info`)")
        self.dataset = dataset
        self.info = info
        self.ops = tuple(ops)
        self.seed = seed
        self.epoch = 0
        self.mean = torch.tensor(info.mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.tensor(info.std, dtype=torch.float32).reshape(-1, 1, 1)
        self._pipeline: Any = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        x, y = self.dataset[index]
        if self._pipeline is None:
            self._pipeline = v2.Compose([OPS[op](tuple(x.shape[-2:])) for op in self.ops])
        raw = (x.float() * self.std + self.mean).clamp(0.0, 1.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.epoch, index))
            raw = self._pipeline(raw)
        return ((raw - self.mean) / self.std).to(x.dtype), y
