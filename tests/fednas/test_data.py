from pathlib import Path

import pytest

from fednas import data as data_mod
from fednas.data import load_dataset, resolve_data_root, resolve_dataset


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDNAS_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "cfg")) == ((tmp_path / "cfg").resolve(), "run-config")
    assert resolve_data_root("") == ((tmp_path / "env").resolve(), "env")
    monkeypatch.delenv("FEDNAS_DATA_ROOT")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_root("") == ((tmp_path / "cache" / "archleak" / "data").resolve(), "default")


def test_auto_prefers_mnist_on_disk(data_root, mnist_or_digits):
    if mnist_or_digits != "mnist":
        pytest.skip("MNIST is not on this machine")
    assert resolve_dataset("auto", data_root) == ("mnist", None)
    mnist = load_dataset("mnist", str(data_root), False)
    assert mnist.train_images.shape == (60000, 1, 28, 28) and mnist.test_labels.shape == (10000,)


def test_auto_falls_back_to_digits_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "_mnist_downloadable", lambda timeout=3.0: False)
    name, warning = resolve_dataset("auto", tmp_path)
    assert name == "digits" and "digits" in warning and "\n" not in warning
    digits = load_dataset("digits", str(tmp_path))
    assert digits.train_images.shape[1:] == (1, 28, 28)
    assert digits.train_images.dtype.is_floating_point is False and int(digits.train_images.max()) > 200
    assert len(digits.train_labels) + len(digits.test_labels) == 1797


def test_cifar10_subset(data_root):
    if not (data_root / "cifar10-subset").exists():
        pytest.skip("the CIFAR-10 subset is not on this machine")
    ds = load_dataset("cifar10-subset", str(data_root))
    assert ds.train_images.shape == (4000, 3, 32, 32) and ds.test_images.shape == (1000, 3, 32, 32)


def test_missing_offline_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(data_mod.DatasetUnavailable, match="cannot be downloaded"):
        load_dataset("cifar10-subset", str(tmp_path))
    with pytest.raises(ValueError, match="known: mnist, fashion-mnist"):
        resolve_dataset("svhn", Path("."))


def _write_idx(path: Path, array) -> None:
    import numpy as np

    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def test_mnist_raw_files_read_directly_equal_torchvision(tmp_path):
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = [rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6), rng.integers(0, 256, (3, 28, 28)),
              rng.integers(0, 10, 3)]
    for name, array in zip(data_mod._MNIST_RAW, arrays, strict=True):
        _write_idx(raw / name, array)
    fast = data_mod.DATASETS.get("mnist").load(tmp_path, False)
    reference = data_mod._torchvision_loader("MNIST", (0.1307,), (0.3081,), 10)(tmp_path, False)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        a, b = getattr(fast, field), getattr(reference, field)
        assert a.dtype == b.dtype and torch.equal(a, b), field
    assert fast.train_images.shape == (6, 1, 28, 28) and fast.name == reference.name == "mnist"
    (raw / data_mod._MNIST_RAW[2]).write_bytes((raw / data_mod._MNIST_RAW[2]).read_bytes()[:-5])
    with pytest.raises(data_mod.DatasetUnavailable, match="t10k-images-idx3-ubyte is truncated"):
        data_mod.DATASETS.get("mnist").load(tmp_path, False)
