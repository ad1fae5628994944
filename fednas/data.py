"""Datasets: a registry of loaders that return whole splits as uint8 tensors in memory.

The data root is resolved as: the run config's ``data-root``, else ``$FEDNAS_DATA_ROOT``, else a
per-user cache folder (``$XDG_CACHE_HOME/archleak/data`` or ``~/.cache/archleak/data``).
Relative paths are taken relative to the current directory. torchvision datasets are downloaded only
when they are missing.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fednas.registry import Registry

DATA_ROOT_ENV = "FEDNAS_DATA_ROOT"
AUTO = "auto"


@dataclass(frozen=True)
class ImageData:
    """A dataset held in memory: images uint8 [N, C, H, W] and labels int64 [N]."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])


@dataclass(frozen=True)
class DatasetInfo:
    """How to find and load one dataset."""

    name: str
    description: str
    present: Callable[[Path], bool]
    load: Callable[[Path, bool], ImageData]


DATASETS: Registry[DatasetInfo] = Registry("dataset")


class DatasetUnavailable(RuntimeError):
    """The dataset is not on disk and could not be downloaded."""


def resolve_data_root(configured: str = "") -> tuple[Path, str]:
    """Return the data root and where it came from (``run-config``, ``env`` or ``default``)."""
    if configured:
        return Path(configured).expanduser().resolve(), "run-config"
    env = os.environ.get(DATA_ROOT_ENV, "")
    if env:
        return Path(env).expanduser().resolve(), "env"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "archleak" / "data", "default"


def _nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images), dtype=torch.uint8)
    if t.ndim == 3:
        return t.unsqueeze(1).contiguous()
    return t.permute(0, 3, 1, 2).contiguous()


def _torchvision_loader(cls_name: str, mean: tuple[float, ...], std: tuple[float, ...],
                        num_classes: int) -> Callable[[Path, bool], ImageData]:
    def load(root: Path, download: bool) -> ImageData:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        splits = []
        for train in (True, False):
            try:
                ds = cls(str(root), train=train, download=False)
            except RuntimeError:
                if not download:
                    raise DatasetUnavailable(f"{cls_name} not found under {root}") from None
                try:
                    ds = cls(str(root), train=train, download=True)
                except Exception as exc:  # network errors come in many types
                    raise DatasetUnavailable(f"{cls_name} is not under {root} and could not "
                                             f"be downloaded: {exc}") from exc
            splits.append((_nchw(ds.data), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)))
        (xtr, ytr), (xte, yte) = splits
        return ImageData(cls_name.lower(), xtr, ytr, xte, yte, mean, std, num_classes)

    return load


def _torchvision_present(folder: str, files: tuple[str, ...]) -> Callable[[Path], bool]:
    return lambda root: all((root / folder / f).exists() for f in files)


_MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (MNIST's raw format: zero, zero, type 0x08, rank, big-endian sizes, data)."""
    raw = path.read_bytes()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 4:
        raise DatasetUnavailable(f"{path} is not an unsigned-byte IDX file")
    rank = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", rank, 4))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(shape)):
        raise DatasetUnavailable(f"{path} is truncated or damaged: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def _mnist_loader(cls_name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[Path, bool], ImageData]:
    """MNIST-format datasets: raw IDX files read directly when on disk (no torchvision import, which costs
    about 2 s per process), torchvision's download otherwise."""
    via_torchvision = _torchvision_loader(cls_name, mean, std, 10)
    present = _torchvision_present(f"{cls_name}/raw", _MNIST_RAW)

    def load(root: Path, download: bool) -> ImageData:
        if not present(root):
            return via_torchvision(root, download)
        xtr, ytr, xte, yte = (torch.from_numpy(read_idx(root / cls_name / "raw" / f).copy()) for f in _MNIST_RAW)
        return ImageData(cls_name.lower(), xtr.unsqueeze(1), ytr.long(), xte.unsqueeze(1), yte.long(), mean, std, 10)

    return load


DATASETS.add("mnist", DatasetInfo(
    "mnist", "MNIST 28x28 grey digits (torchvision)",
    _torchvision_present("MNIST/raw", _MNIST_RAW), _mnist_loader("MNIST", (0.1307,), (0.3081,))))
DATASETS.add("fashion-mnist", DatasetInfo(
    "fashion-mnist", "Fashion-MNIST 28x28 grey clothing (torchvision)",
    _torchvision_present("FashionMNIST/raw", _MNIST_RAW), _mnist_loader("FashionMNIST", (0.2860,), (0.3530,))))
DATASETS.add("cifar10", DatasetInfo(
    "cifar10", "CIFAR-10 32x32 colour, 10 classes (torchvision)",
    _torchvision_present("cifar-10-batches-py", ("data_batch_1", "test_batch")),
    _torchvision_loader("CIFAR10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10)))
DATASETS.add("cifar100", DatasetInfo(
    "cifar100", "CIFAR-100 32x32 colour, 100 classes (torchvision)",
    _torchvision_present("cifar-100-python", ("train", "test")),
    _torchvision_loader("CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100)))

_SUBSET = Path("cifar10-subset") / "cifar10_subset.npz"


def _load_cifar10_subset(root: Path, download: bool) -> ImageData:
    path = root / _SUBSET
    if not path.exists():
        raise DatasetUnavailable(f"cifar10-subset needs {path} (it cannot be downloaded)")
    with np.load(path, allow_pickle=False) as z:
        return ImageData(
            "cifar10-subset", _nchw(z["x_train"]), torch.as_tensor(z["y_train"], dtype=torch.int64),
            _nchw(z["x_test"]), torch.as_tensor(z["y_test"], dtype=torch.int64),
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10)


DATASETS.add("cifar10-subset", DatasetInfo(
    "cifar10-subset", "4,000 + 1,000 CIFAR-10 images from an npz (offline)",
    lambda root: (root / _SUBSET).exists(), _load_cifar10_subset))


def _load_digits(root: Path, download: bool) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = torch.nn.functional.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    cut = int(0.8 * len(labels))
    x = images[:cut].float() / 255
    return ImageData("digits", images[:cut], labels[:cut], images[cut:], labels[cut:],
                     (float(x.mean()),), (float(x.std()),), 10)


DATASETS.add("digits", DatasetInfo(
    "digits", "scikit-learn's bundled 8x8 digits resized to 28x28 (offline, 1,797 images)",
    lambda root: True, _load_digits))


def _mnist_downloadable(timeout: float = 3.0) -> bool:
    """Whether torchvision's MNIST mirror answers (a fast probe, so offline machines don't hang)."""
    try:
        with socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_dataset(name: str, root: Path) -> tuple[str, str | None]:
    """Map ``auto`` to a concrete dataset; return (name, warning line or None)."""
    if name != AUTO:
        DATASETS.get(name)
        return name, None
    if DATASETS.get("mnist").present(root) or _mnist_downloadable():
        return "mnist", None
    return "digits", (f"archleak: MNIST is not under {root} and cannot be downloaded; "
                      "using scikit-learn's bundled digits resized to 28x28 instead")


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, root: str, download: bool = True) -> ImageData:
    """Load a registered dataset (cached per process)."""
    return DATASETS.get(name).load(Path(root), download)


def available_datasets(root: Path) -> dict[str, bool]:
    """Which registered datasets are already on disk under ``root``."""
    return {name: DATASETS.get(name).present(root) for name in DATASETS}
