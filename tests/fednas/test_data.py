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
