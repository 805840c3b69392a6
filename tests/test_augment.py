"""Named, seeded training augmentations applied before normalisation (bench.augment, issue 11 item 6)."""

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from bench import augment as aug
from bench.datasets import DatasetInfo
from bench.datasets.common import TensorImageDataset
from bench.errors import UsageError
from bench.training import train_model

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def rgb_dataset(n: int = 12, size: int = 15) -> TensorImageDataset:
    raw = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    m, s = torch.tensor(MEAN).reshape(3, 1, 1), torch.tensor(STD).reshape(3, 1, 1)
    info = DatasetInfo(name="fake_rgb", in_channels=3, num_classes=3, image_size=size, mean=MEAN, std=STD)
    return TensorImageDataset((raw - m) / s, torch.arange(n) % 3, info)


def test_recipes_and_ops_resolve_and_bad_names_list_the_valid_ones():
    assert aug.resolve(None) == () and aug.resolve("none") == ()
    assert aug.resolve("rotation") == ("rotation",)
    assert aug.resolve("gmr_cifar") == ("random_resized_crop", "color_jitter", "grayscale", "blur", "translate")
    assert aug.resolve(["blur", "rotation"]) == ("blur", "rotation")
    with pytest.raises(UsageError, match="gmr_cifar"):
        aug.resolve("autoaugment")
    with pytest.raises(UsageError, match="random_resized_crop"):
        aug.resolve(["blur", "hflip"])
    with pytest.raises(UsageError):
        aug.resolve(["blur", "blur"])


def test_gmr_cifar_is_the_official_recipe_without_flips():
    """XYPB/GMR-Conv --moco-aug --translation: RandomResizedCrop(32, (0.5, 1)), ColorJitter(.4, .4, .4, .1)
    p .8, RandomGrayscale p .2, GaussianBlur(3, (0.1, 2)) p .2, RandomAffine(0, translate (.2, .2))."""
    crop, jitter, gray, blur, shift = (aug.OPS[op]((32, 32)) for op in aug.RECIPES["gmr_cifar"])
    assert isinstance(crop, v2.RandomResizedCrop) and crop.size == (32, 32) and crop.scale == (0.5, 1.0)
    assert isinstance(jitter, v2.RandomApply) and jitter.p == 0.8
    cj = jitter.transforms[0]
    assert (cj.brightness, cj.contrast, cj.saturation, cj.hue) == ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    assert isinstance(gray, v2.RandomGrayscale) and gray.p == 0.2
    gb = blur.transforms[0]
    assert blur.p == 0.2 and isinstance(gb, v2.GaussianBlur) and gb.kernel_size == (3, 3) and gb.sigma == [0.1, 2.0]
    assert isinstance(shift, v2.RandomAffine) and shift.translate == (0.2, 0.2) and shift.degrees == [0.0, 0.0]
    names = [type(t).__name__ for t in (crop, jitter, gray, blur, shift)]
    assert not any("Flip" in n for n in names)


def test_augmented_images_are_seeded_per_image_and_epoch_and_leave_the_global_rng_alone():
    ds = rgb_dataset()
    a, b = aug.Augmented(ds, aug.RECIPES["gmr_cifar"], seed=3), aug.Augmented(ds, aug.RECIPES["gmr_cifar"], seed=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = torch.stack([a[i][0] for i in range(len(a))])
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # the global state does not matter
    assert torch.equal(torch.stack([b[i][0] for i in reversed(range(len(b)))]).flip(0), first)
    b.set_epoch(1)
    assert not torch.equal(torch.stack([b[i][0] for i in range(len(b))]), first)
    c = aug.Augmented(ds, aug.RECIPES["gmr_cifar"], seed=4)
    assert not torch.equal(torch.stack([c[i][0] for i in range(len(c))]), first)
    assert first.shape == ds.images.shape and not torch.equal(first, ds.images)


def test_ops_run_before_normalisation_so_translation_brings_in_black():
    ds = rgb_dataset()
    ds.images = torch.stack([(torch.ones(3, 15, 15) - torch.tensor(MEAN).reshape(3, 1, 1))
                             / torch.tensor(STD).reshape(3, 1, 1)] * len(ds))  # white images
    shifted = torch.stack([aug.Augmented(ds, ["translate"], seed=0)[i][0] for i in range(len(ds))])
    black = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).reshape(3, 1, 1)
    white = ds.images[0]
    is_black = torch.isclose(shifted, black.expand_as(shifted), atol=1e-5).all(dim=1)
    is_white = torch.isclose(shifted, white.expand_as(shifted), atol=1e-5).all(dim=1)
    assert is_black.any() and (is_black | is_white).float().mean() > 0.9  # no grey (normalised 0) borders


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(-2, -1)))


def trained_weights(seed: int, augment) -> tuple[float, torch.Tensor]:
    torch.manual_seed(0)
    model = Tiny()
    out = train_model(model, rgb_dataset(), seed=seed, epochs=2, batch_size=4, augment=augment)
    return out["train_loss_final"], model.conv.weight.detach().clone()


def test_train_model_with_the_recipe_is_deterministic_for_a_seed():
    loss_a, w_a = trained_weights(1, "gmr_cifar")
    loss_b, w_b = trained_weights(1, "gmr_cifar")
    assert loss_a == loss_b and torch.equal(w_a, w_b)
    assert not torch.equal(w_a, trained_weights(2, "gmr_cifar")[1])
    assert not torch.equal(w_a, trained_weights(1, None)[1])
