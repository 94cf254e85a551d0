"""Datasets: the read-only archive folder, splits, subsets, errors, CIFAR's on-disk format, batching."""

from __future__ import annotations

import pickle
import shutil
import stat
import tarfile

import numpy as np
import pytest
import torch
from cifar_files import md5, point_torchvision_md5s_at, write_cifar10

from tune_div import data
from tune_div.compat import import_torchvision
from tune_div.data import readers
from tune_div.errors import DataError


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(readers, "MEMO", {})


def test_mnist_reads_from_read_only_archives(real_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path / "cache"))
    x, y = data.load("mnist", "test", root=real_data)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and set(y.unique().tolist()) == set(range(10))
    assert (tmp_path / "cache" / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    # The source folder was not written to.
    assert not (real_data / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists()


def test_fashion_mnist_via_env_variable(real_data, monkeypatch):
    monkeypatch.setenv("TUNE_DIV_DATA", str(real_data))
    x, y = data.load("fashion_mnist", "val", subset=50)
    assert x.shape == (50, 1, 28, 28) and len(y) == 50


def test_train_and_val_partition_the_official_training_set():
    train, val = data.split_indices(60000, 5000, seed=0)
    assert len(train) == 55000 and len(val) == 5000
    assert len(set(train.tolist()) | set(val.tolist())) == 60000
    again_train, again_val = data.split_indices(60000, 5000, seed=0)
    assert torch.equal(val, again_val)
    _, other_val = data.split_indices(60000, 5000, seed=1)
    assert not torch.equal(val, other_val)


def test_subset_is_seeded_and_inside_the_split(real_data):
    a = data.load("mnist", "val", root=real_data, subset=100, seed=3)
    b = data.load("mnist", "val", root=real_data, subset=100, seed=3)
    full_x, _ = data.load("mnist", "val", root=real_data, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    flat = {bytes(img.numpy()) for img in full_x}
    assert all(bytes(img.numpy()) in flat for img in a[0])


def test_missing_dataset_error_names_dataset_paths_and_fix(tmp_path):
    with pytest.raises(DataError) as exc:
        data.load("mnist", "train", root=tmp_path)
    msg = str(exc.value)
    assert "mnist" in msg and str(tmp_path) in msg and "TUNE_DIV_DATA" in msg and "\n" not in msg


def test_nonexistent_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load("fashion_mnist", "test", root=tmp_path / "nope")


def test_corrupt_archive_is_reported(real_data, tmp_path):
    raw = tmp_path / "src" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (real_data / "MNIST" / "raw").iterdir():
        shutil.copyfile(f, raw / f.name)
    with open(raw / "t10k-labels-idx1-ubyte.gz", "ab") as fh:
        fh.write(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        data.load("mnist", "test", root=tmp_path / "src")


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="cifar10"):
        data.load("imagenet", "train")
    with pytest.raises(ValueError, match="train, val, test"):
        data.load("mnist", "dev")


# --- CIFAR on small generated files in the real on-disk format -----------------------------------


def test_cifar10_extracted_folder(tmp_path, monkeypatch):
    rows, labels = write_cifar10(tmp_path / "cifar-10-batches-py")
    point_torchvision_md5s_at(monkeypatch, import_torchvision().datasets.CIFAR10, tmp_path / "cifar-10-batches-py")
    x, y = data.load("cifar10", "train", root=tmp_path, val_size=5)
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8 and len(y) == 15
    xv, yv = data.load("cifar10", "val", root=tmp_path, val_size=5)
    full = torch.cat([x, xv])
    expected = {bytes(r) for r in rows.reshape(-1, 3, 32, 32)}
    assert {bytes(img.numpy()) for img in full} == expected  # [N, C, H, W], channel-major as on disk
    xt, _ = data.load("cifar10", "test", root=tmp_path)
    assert xt.shape == (4, 3, 32, 32)


def test_cifar10_from_read_only_tar_archive(tmp_path, monkeypatch):
    build = tmp_path / "build"
    write_cifar10(build / "cifar-10-batches-py")
    cls = import_torchvision().datasets.CIFAR10
    point_torchvision_md5s_at(monkeypatch, cls, build / "cifar-10-batches-py")
    src = tmp_path / "readonly"
    src.mkdir()
    with tarfile.open(src / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(build / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(cls, "tgz_md5", md5(src / "cifar-10-python.tar.gz"))
    src.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path / "cache"))
    try:
        x, y = data.load("cifar10", "test", root=src)
    finally:
        src.chmod(stat.S_IRWXU)
    assert x.shape == (4, 3, 32, 32)
    assert (tmp_path / "cache" / "data" / "cifar-10-batches-py" / "test_batch").is_file()


def test_cifar100_extracted_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 12), ("test", 6)):
        with open(folder / name, "wb") as fh:
            pickle.dump(
                {
                    "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    "fine_labels": rng.integers(0, 100, n).tolist(),
                    "coarse_labels": rng.integers(0, 20, n).tolist(),
                },
                fh,
            )
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, fh)
    point_torchvision_md5s_at(monkeypatch, import_torchvision().datasets.CIFAR100, folder)
    x, y = data.load("cifar100", "test", root=tmp_path)
    assert x.shape == (6, 3, 32, 32) and int(y.max()) < 100


# --- batching and augmentation -------------------------------------------------------------------


def test_crop_flip_output_is_a_crop_or_flipped_crop_of_each_input():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 2, 5, 5)
    out = data.augment_crop_flip(x, g, padding=2)
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for b in range(6):
        candidates = [padded[b, :, i : i + 5, j : j + 5] for i in range(5) for j in range(5)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[b], c) for c in candidates)


def test_tensor_loader_visits_each_sample_once_and_is_seeded():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    y = torch.arange(10)
    loader = data.TensorLoader(x, y, batch_size=4, shuffle=True)
    loader.set_epoch(7)
    first = torch.cat([b for _, b in loader])
    assert sorted(first.tolist()) == list(range(10)) and len(loader) == 3
    loader.set_epoch(7)
    assert torch.equal(torch.cat([b for _, b in loader]), first)
    xb, _ = next(iter(loader))
    assert xb.dtype == torch.float32 and float(xb.max()) <= 9 / 255 + 1e-6
