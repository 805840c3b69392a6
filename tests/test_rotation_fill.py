"""Rotated images get the background their dataset's training images have, not a grey 0 (issue 11, item 5)."""

import math

import pytest
import torch
from torch import nn

from bench.datasets import DatasetInfo, dataset_info
from bench.datasets.common import TensorImageDataset
from bench.rotation import DEFAULT_METHOD, rotate, rotate_interpolated
from bench.training import dataset_fill, evaluate_rotations, train_model

MEAN, STD, SIZE = 0.3, 0.2, 21
BACKGROUND = -MEAN / STD  # -1.5: a black pixel after normalisation


def disks(radii: list[float]) -> torch.Tensor:
    """Raw images in [0, 1]: a white disk of the given radius on black, centred (rotation invariant)."""
    c = (SIZE - 1) / 2
    r2 = (torch.arange(SIZE)[:, None] - c) ** 2 + (torch.arange(SIZE)[None, :] - c) ** 2
    return torch.stack([(r2 <= r * r).float()[None] for r in radii])


def fake_dataset() -> TensorImageDataset:
    """Small disks (area ~29 px) are class 0, large ones (~113 px) class 1; normalised with mean 0.3."""
    radii = [3.0, 3.2, 2.9, 3.1, 6.0, 6.1, 5.9, 6.2]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    info = DatasetInfo(name="fake", in_channels=1, num_classes=2, image_size=SIZE, mean=(MEAN,), std=(STD,))
    return TensorImageDataset((disks(radii) - MEAN) / STD, labels, info)


class BrightArea(nn.Module):
    """Perfectly rotation-invariant in the continuum: counts the pixels brighter than a dark grey (raw 0.25)
    over the whole image and compares the area with 70 px (between the two classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        area = (x > (0.25 - MEAN) / STD).flatten(1).sum(dim=1).to(x.dtype)
        return torch.stack([70 - area, area - 70], dim=1)


def test_the_fake_dataset_has_a_non_zero_background():
    info = fake_dataset().info
    assert info.fill == pytest.approx((BACKGROUND,))
    assert dataset_fill(fake_dataset()) == pytest.approx((BACKGROUND,))
    assert fake_dataset().images.min().item() == pytest.approx(BACKGROUND)


@pytest.mark.parametrize("method", [DEFAULT_METHOD, "bilinear", "bicubic", "fourier"])
def test_an_invariant_classifier_keeps_its_accuracy_at_45_degrees(method):
    """A 45 degree rotation of a 21 px image brings in ~75 px of corners: with the old fill (0, a grey: raw
    0.3) they count as bright and every small disk becomes 'large'."""
    ds = fake_dataset()
    res = evaluate_rotations(BrightArea(), ds, [0.0, 45.0, 90.0], flips=True, rotation=method)
    assert res["angles"] == {0.0: 1.0, 45.0: 1.0, 90.0: 1.0} and res["flip_h"] == res["flip_v"] == 1.0
    assert evaluate_rotations(BrightArea(), ds, [45.0], flips=False, rotation=method, mask=True)["angles"][45.0] == 1.0
    old = evaluate_rotations(BrightArea(), ds, [45.0], flips=False, rotation=method, fill=0.0)
    assert old["angles"][45.0] == 0.5  # the official evaluation's fill, kept available as fill=0


def test_rotation_with_fill_is_rotation_before_normalisation():
    raw = torch.rand(2, 3, 11, 11, dtype=torch.float64)
    mean = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64).reshape(3, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.3], dtype=torch.float64).reshape(3, 1, 1)
    fill = (-mean / std).reshape(-1).tolist()
    for method in ("bilinear", "bicubic", "bspline", "fourier"):
        after = rotate((raw - mean) / std, 30.0, method, fill=fill)
        before = (rotate(raw, 30.0, method) - mean) / std
        assert torch.allclose(after, before, atol=1e-10)
    constant = torch.full((1, 3, 9, 9), 0.7, dtype=torch.float64)
    theta = torch.tensor(math.radians(20), dtype=torch.float64)
    assert torch.allclose(rotate_interpolated(constant, theta, "bspline", fill=0.7), constant, atol=1e-12)
    with pytest.raises(ValueError, match="one value per channel"):
        rotate(constant, 20.0, fill=[0.1, 0.2])


def test_builtin_backgrounds():
    assert dataset_info("mnist").fill == pytest.approx((-0.1307 / 0.3081,))
    assert dataset_info("cifar10").fill == pytest.approx(tuple(-m / s for m, s in zip((0.4914, 0.4822, 0.4465),
                                                                                        (0.2470, 0.2435, 0.2616))))
    # rotdigits images are exactly 0 outside their disk (not the normalised black inside it): that is the fill
    from bench.datasets import create_dataset
    from bench.rotation import disk_mask

    x = create_dataset("rotdigits", "test").images
    assert dataset_info("rotdigits").fill == (0.0,)
    assert x[..., ~disk_mask(29)].abs().max() == 0


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 2)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.head(x.mean(dim=(1, 2, 3))[:, None])


def test_rotation_augmentation_fills_with_the_background():
    ds = fake_dataset()
    ds.images = torch.full_like(ds.images, BACKGROUND)  # empty images: any rotation must leave them empty
    model = Recorder()
    train_model(model, ds, seed=0, epochs=1, batch_size=8, augment="rotation", mask=True)
    assert torch.allclose(model.seen[0], torch.full_like(model.seen[0], BACKGROUND), atol=1e-5)
