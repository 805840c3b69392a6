"""Datasets: the embedded rotdigits default and the real loaders, fed tiny files in each real on-disk format."""

from __future__ import annotations

import gzip
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.datasets import create_dataset, dataset_info, list_datasets
from bench.datasets.common import DataNotFoundError, download_atomically
from bench.errors import UsageError
from bench.rotation import disk_mask

REPO = Path(__file__).resolve().parents[1]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- registry ------------------------------------------------------------------------------------------------
def test_listing_is_lazy():
    code = ("import sys; from bench.datasets import list_datasets, dataset_info; names = list_datasets(); "
            "info = [dataset_info(n) for n in names]; "
            "print(names, [m for m in ('torch', 'torchvision', 'sklearn', 'h5py') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['cifar10', 'folder', 'mnist', 'mnist_rot', 'pcam', 'rotdigits', 'rotshapes'] []"


def test_info_and_errors():
    info = dataset_info("rotdigits")
    assert (info.in_channels, info.num_classes, info.image_size) == (1, 10, 29) and info.offline
    assert dataset_info("cifar10").image_size == 33 and dataset_info("pcam").num_classes == 2
    assert all(dataset_info(n).image_size in (None,) or dataset_info(n).image_size % 2 == 1 for n in list_datasets())
    assert list_datasets(offline_only=True) == ["rotdigits", "rotshapes"]
    with pytest.raises(UsageError, match="Did you mean 'mnist'"):
        create_dataset("mnits", "train")
    with pytest.raises(UsageError, match="valid splits: train, test"):
        create_dataset("rotdigits", "valid")


# -- rotdigits -----------------------------------------------------------------------------------------------
def test_rotdigits():
    from bench.datasets import rotdigits as rd

    train, test = create_dataset("rotdigits", "train"), create_dataset("rotdigits", "test")
    assert (len(train), len(test)) == (1297, 500)
    x, y = train[0]
    assert x.shape == (1, 29, 29) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.bincount(test.labels).tolist() == [50, 51, 49, 51, 50, 51, 50, 50, 48, 50]  # stratified, fixed
    # outside the disk exactly 0 (what rotation fills corners with); inside standardised with the train stats
    outside = ~disk_mask(29)
    assert train.images[:, :, outside].abs().max() == 0 and test.images[:, :, outside].abs().max() == 0
    inside = train.images[:, :, disk_mask(29)]
    assert abs(float(inside.mean())) < 1e-3 and abs(float(inside.std()) - 1) < 1e-3
    mean, std = rd.disk_stats()
    assert dataset_info("rotdigits").mean[0] == pytest.approx(mean, abs=1e-4)
    assert dataset_info("rotdigits").std[0] == pytest.approx(std, abs=1e-4)
    # train/test disjoint, cached in-process (the same tensors come back)
    tr, te = rd.split_indices()
    assert not set(tr.tolist()) & set(te.tolist())
    assert create_dataset("rotdigits", "test").images is test.images
    with pytest.raises(UsageError, match="takes no options"):
        create_dataset("rotdigits", "train", size=31)


# -- MNIST (IDX files, gz or raw) ----------------------------------------------------------------------------
def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist(root: Path, compress: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    data = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 3, 20] = 255  # an off-centre marker: orientation must survive loading
        labels = rng.integers(0, 10, n)
        data[prefix] = labels
        for name, blob in ((f"{prefix}-images-idx3-ubyte", idx_images(images)),
                           (f"{prefix}-labels-idx1-ubyte", idx_labels(labels))):
            if compress:
                (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (raw / name).write_bytes(blob)
    return data


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx(tmp_path, compress):
    labels = write_mnist(tmp_path, compress)
    train = create_dataset("mnist", "train", data_dir=tmp_path)
    test = create_dataset("mnist", "test", data_dir=tmp_path)
    assert (len(train), len(test)) == (6, 4)
    assert train.info.name == "mnist"
    x, y = test[1]
    assert x.shape == (1, 29, 29) and y == labels["t10k"][1]
    mean, std = dataset_info("mnist").mean[0], dataset_info("mnist").std[0]
    background = -mean / std
    assert x[0, 3, 20] == pytest.approx((1 - mean) / std)
    assert x[0, 0, 0] == pytest.approx(background)
    assert torch.allclose(x[0, 28, :], torch.full((29,), background))  # the pad row is background too
    assert [train[i][1] for i in range(6)] == labels["train"].tolist()


def test_mnist_missing(tmp_path):
    with pytest.raises(UsageError) as err:
        create_dataset("mnist", "train", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte", "--download"):
        assert name in msg
    assert files_under(tmp_path) == []


def test_mnist_download_failure_leaves_nothing(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    missing = (tmp_path / "nowhere").as_uri() + "/"
    monkeypatch.setattr(MNIST, "mirrors", [missing])  # a URL that fails at once, without any network
    with pytest.raises(DataNotFoundError, match="downloading failed"):
        create_dataset("mnist", "train", data_dir=tmp_path / "data", download=True)
    assert files_under(tmp_path) == []


def test_download_atomically_cleans_up(tmp_path):
    def half_written(tmp: Path) -> None:
        (tmp / "MNIST" / "raw").mkdir(parents=True)
        (tmp / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00" * 10)
        raise ConnectionError("connection reset")

    with pytest.raises(DataNotFoundError, match="ConnectionError: connection reset"):
        download_atomically(tmp_path, half_written, keep=["MNIST/raw/train-images-idx3-ubyte"], what="x")
    assert list(tmp_path.iterdir()) == []

    def good(tmp: Path) -> None:
        (tmp / "a").mkdir()
        (tmp / "a" / "f").write_text("done")
        (tmp / "junk").write_text("not kept")

    download_atomically(tmp_path, good, keep=["a/f"], what="x")
    assert [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path)] == ["a/f"]


# -- CIFAR-10 (python pickle batches) ------------------------------------------------------------------------
def write_cifar(root: Path) -> dict[str, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    labels = {}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        data[:, 0] = 255  # red channel, pixel (0, 0)
        data[:, 1024] = 0  # green channel, pixel (0, 0)
        lab = rng.integers(0, 10, 2).tolist()
        labels[name] = lab
        with open(folder / name, "wb") as fh:
            pickle.dump({"batch_label": name, "labels": lab, "data": data, "filenames": ["a.png", "b.png"]}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": 2, "num_vis": 3072}, fh)
    return labels


def test_cifar10_batches(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    labels = write_cifar(tmp_path)
    with pytest.raises(UsageError, match="failed torchvision's check"):  # md5 of the real files is enforced
        create_dataset("cifar10", "train", data_dir=tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())
    train = create_dataset("cifar10", "train", data_dir=tmp_path)
    test = create_dataset("cifar10", "test", data_dir=tmp_path)
    assert (len(train), len(test)) == (10, 2)
    x, y = test[0]
    assert x.shape == (3, 33, 33) and y == labels["test_batch"][0]
    info = dataset_info("cifar10")
    assert x[0, 0, 0] == pytest.approx((1 - info.mean[0]) / info.std[0], abs=1e-5)
    assert x[1, 0, 0] == pytest.approx(-info.mean[1] / info.std[1], abs=1e-5)
    assert x[2, 32, 32] == pytest.approx(-info.mean[2] / info.std[2], abs=1e-5)  # padded corner = black


def test_cifar10_at_its_native_32_pixels(tmp_path, monkeypatch):
    """pad_to_odd=False (the GMR-Conv paper's geometry): 32x32 images, nothing padded, and `info` says 32."""
    import torchvision.datasets.cifar as tv_cifar

    write_cifar(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())
    test = create_dataset("cifar10", "test", data_dir=tmp_path, pad_to_odd=False)
    padded = create_dataset("cifar10", "test", data_dir=tmp_path)
    x = test[0][0]
    assert x.shape == (3, 32, 32) and test.info.image_size == 32 and padded.info.image_size == 33
    assert torch.equal(x, padded[0][0][:, :32, :32])  # the same pixels, without the black row and column
    assert test.info.mean == padded.info.mean and test.info.fill == padded.info.fill
    with pytest.raises(UsageError, match="pad_to_odd"):
        create_dataset("cifar10", "test", data_dir=tmp_path, pad_to_odd="no")
    with pytest.raises(UsageError, match="valid: pad_to_odd"):
        create_dataset("cifar10", "test", data_dir=tmp_path, size=32)


def test_mnist_at_its_native_28_pixels(tmp_path):
    write_mnist(tmp_path, compress=False)
    test = create_dataset("mnist", "test", data_dir=tmp_path, pad_to_odd=False)
    assert test[0][0].shape == (1, 28, 28) and test.info.image_size == 28


def test_cifar10_missing(tmp_path):
    with pytest.raises(UsageError) as err:
        create_dataset("cifar10", "test", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_5" in msg and "batches.meta" in msg
    assert "cifar-10-python.tar.gz" in msg
    assert files_under(tmp_path) == []


# -- PatchCamelyon (HDF5) ------------------------------------------------------------------------------------
def test_pcam_hdf5(tmp_path):
    import h5py

    folder = tmp_path / "pcam"
    folder.mkdir()
    images = np.zeros((3, 96, 96, 3), np.uint8)
    images[:, 10, 80, 1] = 255
    with h5py.File(folder / "camelyonpatch_level_2_split_valid_x.h5", "w") as f:
        f.create_dataset("x", data=images)
    with h5py.File(folder / "camelyonpatch_level_2_split_valid_y.h5", "w") as f:
        f.create_dataset("y", data=np.array([0, 1, 1], np.uint8).reshape(3, 1, 1, 1))
    ds = create_dataset("pcam", "val", data_dir=tmp_path)
    assert len(ds) == 3 and ds.info.num_classes == 2
    x, y = ds[1]
    info = dataset_info("pcam")
    assert x.shape == (3, 95, 95) and y == 1
    assert x[1, 10, 80] == pytest.approx((1 - info.mean[1]) / info.std[1], abs=1e-5)
    with pytest.raises(UsageError) as err:
        create_dataset("pcam", "train", data_dir=tmp_path)
    assert "camelyonpatch_level_2_split_train_x.h5" in str(err.value)
    assert "camelyonpatch_level_2_split_train_y.h5" in str(err.value) and str(folder) in str(err.value)


# -- MNIST-rot (.amat text) ----------------------------------------------------------------------------------
def write_amat(path: Path, n: int, seed: int) -> np.ndarray:
    """n lines of 784 column-major pixels + label; returns the (n, 28, 28) images in true orientation."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.float32)
    images[:, 2, 5] = 1.0  # row 2, column 5
    images[:, 20, 9] = rng.uniform(0.2, 0.9, n)
    labels = rng.integers(0, 10, n)
    rows = np.concatenate([images.transpose(0, 2, 1).reshape(n, 784), labels[:, None]], axis=1)
    np.savetxt(path, rows, fmt="%.10g")
    return images


def test_mnist_rot_amat(tmp_path, monkeypatch):
    from bench.datasets import mnist_rot

    folder = tmp_path / "mnist_rot"
    folder.mkdir()
    trainval = write_amat(folder / mnist_rot.TRAIN_FILE, 12, seed=0)
    test_images = write_amat(folder / mnist_rot.TEST_FILE, 5, seed=1)
    monkeypatch.setattr(mnist_rot, "N_TRAIN", 10)  # the real file: 10,000 train + 2,000 valid lines
    train = create_dataset("mnist_rot", "train", data_dir=tmp_path)
    valid = create_dataset("mnist_rot", "valid", data_dir=tmp_path)
    test = create_dataset("mnist_rot", "test", data_dir=tmp_path)
    assert (len(train), len(valid), len(test)) == (10, 2, 5)
    assert len(create_dataset("mnist_rot", "trainval", data_dir=tmp_path)) == 12
    mean, std = dataset_info("mnist_rot").mean[0], dataset_info("mnist_rot").std[0]
    x, y = valid[1]
    assert x.shape == (1, 29, 29) and isinstance(y, int)
    assert x[0, 2, 5] == pytest.approx((1 - mean) / std)  # transposed back to MNIST's orientation
    assert x[0, 5, 2] == pytest.approx(-mean / std)
    assert x[0, 20, 9] == pytest.approx((trainval[11, 20, 9] - mean) / std, abs=1e-5)
    assert test[4][0][0, 20, 9] == pytest.approx((test_images[4, 20, 9] - mean) / std, abs=1e-5)
    raw = create_dataset("mnist_rot", "test", data_dir=tmp_path, transpose=False)
    assert raw[0][0][0, 5, 2] == pytest.approx((1 - mean) / std)


def test_mnist_rot_zip_and_missing(tmp_path, monkeypatch):
    from bench.datasets import mnist_rot

    with pytest.raises(UsageError) as err:
        create_dataset("mnist_rot", "test", data_dir=tmp_path)
    msg = str(err.value)
    assert mnist_rot.TRAIN_FILE in msg and mnist_rot.TEST_FILE in msg and str(tmp_path / "mnist_rot") in msg
    # a failed download leaves nothing behind
    monkeypatch.setattr(mnist_rot, "URL", (tmp_path / "nowhere.zip").as_uri())
    with pytest.raises(DataNotFoundError, match="downloading failed"):
        create_dataset("mnist_rot", "test", data_dir=tmp_path / "d", download=True)
    assert files_under(tmp_path) == []
    # the release zip dropped into data_dir is unpacked in place
    src = tmp_path / "src"
    src.mkdir()
    write_amat(src / mnist_rot.TRAIN_FILE, 3, seed=2)
    write_amat(src / mnist_rot.TEST_FILE, 2, seed=3)
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / mnist_rot.ARCHIVE, "w") as zf:
        for f in (mnist_rot.TRAIN_FILE, mnist_rot.TEST_FILE):
            zf.write(src / f, f"mnist_rotation_new/{f}")
    assert len(create_dataset("mnist_rot", "test", data_dir=data)) == 2
    assert sorted(p.name for p in (data / "mnist_rot").iterdir()) == [mnist_rot.TEST_FILE, mnist_rot.TRAIN_FILE]


# -- your own images (ImageFolder) ---------------------------------------------------------------------------
def test_folder(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("test", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40 + i, 30), colour).save(d / f"{i}.png")
    info = dataset_info("folder", tmp_path, image_size=15)
    assert (info.num_classes, info.in_channels, info.image_size) == (2, 3, 15)
    train = create_dataset("folder", "train", data_dir=tmp_path, image_size=15)
    assert len(train) == 6 and train.classes == ["cat", "dog"]
    x, y = train[5]
    assert x.shape == (3, 15, 15) and y == 1
    assert x[2, 7, 7] == pytest.approx(1.0) and x[0, 7, 7] == pytest.approx(-1.0)  # blue, mean/std 0.5
    gray = create_dataset("folder", "test", data_dir=tmp_path, image_size=9, channels=1)
    assert gray[0][0].shape == (1, 9, 9) and len(gray) == 4
    with pytest.raises(UsageError, match="odd integer"):
        create_dataset("folder", "train", data_dir=tmp_path, image_size=16)
    with pytest.raises(UsageError) as err:
        create_dataset("folder", "train", data_dir=tmp_path / "empty")
    assert str(tmp_path / "empty" / "train") in str(err.value) and "<class>" in str(err.value)
