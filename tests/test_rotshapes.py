"""rotshapes: metadata, normalisation, determinism, analytic rendering and orientation-freedom."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from bench.datasets import create_dataset, dataset_info
from bench.datasets import rotshapes as rs
from bench.errors import UsageError
from bench.rotation import disk_mask

REPO = Path(__file__).resolve().parents[1]
SIZE = rs.IMAGE_SIZE


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def nuisance(n: int, **values: float | bool) -> rs.Nuisance:
    """Fixed nuisance parameters (one value each, repeated n times); angle may be given per image."""
    base = dict(angle=0.0, scale=7.0, offset=(0.0, 0.0), outlined=False, stroke=2.0, brightness=1.0,
                softness=1.0, noise=0.0)
    base.update(values)
    full = {k: torch.as_tensor(v, dtype=torch.float64).expand(n, *torch.as_tensor(v).shape).clone()
            if k != "angle" or torch.as_tensor(v).ndim == 0 else torch.as_tensor(v, dtype=torch.float64)
            for k, v in base.items()}
    full["outlined"] = full["outlined"].bool()
    return rs.Nuisance(**full)


def draw(label: str, **values: float | bool) -> torch.Tensor:
    angle = torch.as_tensor(values.pop("angle", 0.0), dtype=torch.float64).reshape(-1)
    return rs.draw_objects(rs.CLASSES.index(label), nuisance(len(angle), angle=angle, **values),
                           torch.Generator().manual_seed(0))


# -- metadata, normalisation -----------------------------------------------------------------------------------
def test_shapes_and_metadata():
    info = dataset_info("rotshapes")
    assert (info.in_channels, info.num_classes, info.image_size, info.splits) == (1, 10, 29, ("train", "test"))
    assert info.offline and info.num_classes == len(rs.CLASSES)
    train, test = create_dataset("rotshapes", "train"), create_dataset("rotshapes", "test")
    assert (len(train), len(test)) == (5000, 1000) and train.info is info
    x, y = test[0]
    assert x.shape == (1, 29, 29) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.bincount(train.labels).tolist() == [500] * 10 and torch.bincount(test.labels).tolist() == [100] * 10
    assert train.labels[:20].unique().numel() > 5  # classes interleaved, not in blocks
    assert create_dataset("rotshapes", "test").images is test.images  # cached in-process
    with pytest.raises(UsageError, match="takes no options"):
        create_dataset("rotshapes", "train", seed=1)
    with pytest.raises(UsageError, match="valid splits: train, test"):
        create_dataset("rotshapes", "valid")


def test_zero_outside_disk_and_declared_stats():
    train, test = create_dataset("rotshapes", "train"), create_dataset("rotshapes", "test")
    outside = ~disk_mask(SIZE)
    assert train.images[:, :, outside].abs().max() == 0 and test.images[:, :, outside].abs().max() == 0
    inside = train.images[:, :, disk_mask(SIZE)].double()
    assert abs(float(inside.mean())) < 1e-4 and abs(float(inside.std()) - 1) < 1e-4
    mean, std = rs.disk_stats()
    info = dataset_info("rotshapes")
    assert info.mean[0] == pytest.approx(mean, abs=1e-5) and info.std[0] == pytest.approx(std, abs=1e-5)


def test_no_ink_beyond_the_disk():
    """Every class at the largest size, offset, stroke and softness stays inside the rotation-safe disk."""
    assert rs.OBJECT_RADIUS + math.sqrt(0.5) * (1 - 1 / rs.SUPERSAMPLE) < (SIZE - 1) / 2
    outside = ~disk_mask(SIZE)
    angles = torch.linspace(0, 2 * math.pi, 73, dtype=torch.float64)[:-1]
    for offset in ((rs.OFFSET, 0.0), (0.0, -rs.OFFSET), (rs.OFFSET / math.sqrt(2), rs.OFFSET / math.sqrt(2))):
        for label in rs.CLASSES:
            img = draw(label, angle=angles, scale=rs.SIZE[1], offset=offset, outlined=True,
                       stroke=rs.STROKE[1], softness=rs.SOFTNESS[1])
            assert img[:, outside].abs().max() == 0, label
            assert img.amax(dim=(1, 2)).min() > 0.5, label  # and something was drawn


# -- determinism -----------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_in_a_fresh_process():
    here = rs.generate("test")
    fresh = rs.generate.__wrapped__("test")  # not the cache
    assert digest(fresh.images, fresh.labels, fresh.angles) == digest(here.images, here.labels, here.angles)
    other = rs.generate.__wrapped__("test", seed=1)
    assert not torch.equal(other.images, here.images)
    code = ("import hashlib, torch; torch.set_num_threads(2); from bench.datasets import rotshapes as rs; "
            "g = rs.generate('test'); h = hashlib.sha256(); "
            "[h.update(t.contiguous().numpy().tobytes()) for t in (g.images, g.labels, g.angles)]; "
            "print(h.hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest(here.images, here.labels, here.angles)


# -- analytic rendering ------------------------------------------------------------------------------------------
def test_rendered_area_is_the_shapes_area_at_any_angle():
    """Coverage sums to the analytic value at every angle: the shape's area plus the edge ramp's share.

    With coverage clamp(1/2 - d/w) of the exact signed distance d, the sum is the integral over level sets,
    A + (k_out + k_in) w^2 / 48, where a level set at distance t outside (inside) is longer than the outline
    by k_out t (shorter by k_in t): k_out = 2 pi for every convex shape, k_in = 2 pi for a disk and
    2 n tan(pi / n) for a regular n-gon."""
    angles = torch.tensor([0.0, 0.1, 0.3, math.pi / 4, 1.0, 2.0, 3.3, 5.9], dtype=torch.float64)
    s, w = 8.0, 1.0
    for label, area, k_in in (("disk", math.pi * s**2, 2 * math.pi),
                              ("triangle", 3 * math.sqrt(3) / 4 * s**2, 6 * math.tan(math.pi / 3)),
                              ("square", 2 * s**2, 8.0)):
        expected = area + (2 * math.pi + k_in) * w**2 / 48
        sums = draw(label, angle=angles, scale=s, softness=w).sum(dim=(1, 2)).double()
        assert torch.allclose(sums, torch.full_like(sums, expected), rtol=1.5e-3), (label, sums, expected)


def test_rendering_does_not_rotate_pixels():
    """A disk looks the same at any angle (a rotated pixel image would blur at 45 degrees), and a quarter turn
    of the object is exactly torch.rot90 of its image."""
    angles = torch.tensor([0.0, math.pi / 4, 0.7, 2.5], dtype=torch.float64)
    disks = draw("disk", angle=angles, offset=(1.2, -0.7))
    assert (disks - disks[0]).abs().max() < 1e-5
    for label in ("square", "star", "crescent", "tri_arm"):
        base = draw(label, angle=torch.tensor([0.3], dtype=torch.float64), offset=(1.0, 0.5))
        turned = draw(label, angle=torch.tensor([0.3 + math.pi / 2], dtype=torch.float64), offset=(-0.5, 1.0))
        assert (turned - torch.rot90(base, 1, (-2, -1))).abs().max() < 1e-5, label


# -- orientation-free by construction ------------------------------------------------------------------------------
def d4_accuracies(train_x, train_y, test_x, test_y) -> list[float]:
    """A linear pixel classifier's accuracy on the test set under each of the 8 grid symmetries (identity first)."""
    from sklearn.linear_model import RidgeClassifier

    clf = RidgeClassifier(alpha=10.0).fit(train_x.flatten(1).numpy(), train_y.numpy())
    out = []
    for flip in (False, True):
        for k in range(4):
            x = torch.rot90(torch.flip(test_x, (-1,)) if flip else test_x, k, (-2, -1))
            out.append(float((torch.as_tensor(clf.predict(x.flatten(1).numpy())) == test_y).double().mean()))
    return out


def small_split(n: int, seed: int, max_angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    xs = [rs.draw_class(k, n, torch.Generator().manual_seed(seed * 100 + k), max_angle)[0] for k in range(10)]
    return torch.cat(xs), torch.arange(10).repeat_interleave(n)


def test_angles_are_uniform_for_every_class():
    for split in ("train", "test"):
        g = rs.generate(split)
        for k in range(10):
            u = (g.angles[g.labels == k] / (2 * math.pi)).numpy()
            assert stats.kstest(u, "uniform").pvalue > 1e-3, (split, rs.CLASSES[k])


def test_accuracy_does_not_depend_on_orientation():
    """The class-conditional distribution is rotation/reflection invariant, so a classifier that is *not*
    invariant (linear on pixels) scores the same on the test set turned by any grid symmetry, and the same on
    test images whatever angle they were drawn at. A deliberately oriented variant (angles in [0, 90)) fails."""
    train, test = create_dataset("rotshapes", "train"), create_dataset("rotshapes", "test")
    accs = d4_accuracies(train.images, train.labels, test.images, test.labels)
    assert accs[0] > 0.15  # it learnt something (chance: 0.1)
    assert max(abs(a - accs[0]) for a in accs) < 0.06, accs
    # accuracy per drawn angle (8 bins of 45 degrees): homogeneous
    from sklearn.linear_model import RidgeClassifier

    clf = RidgeClassifier(alpha=10.0).fit(train.images.flatten(1).numpy(), train.labels.numpy())
    hit = torch.as_tensor(clf.predict(test.images.flatten(1).numpy())) == test.labels
    bins = (rs.generate("test").angles / (2 * math.pi) * 8).long().clamp(max=7)
    table = np.array([[int((hit & (bins == b)).sum()), int((~hit & (bins == b)).sum())] for b in range(8)])
    assert stats.chi2_contingency(table).pvalue > 1e-3, table
    # negative control: the same check sees orientation when there is some
    with rs.fixed_threads(1):
        tx, ty = small_split(300, 1, math.pi / 2)
        vx, vy = small_split(100, 2, math.pi / 2)
    oriented = d4_accuracies(tx, ty, vx, vy)
    assert max(abs(a - oriented[0]) for a in oriented) > 0.15, oriented
