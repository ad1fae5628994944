"""The searched model behind an HTTP prediction API, as an MLaaS provider runs it (``archleak serve RUN``).

A served model answers posterior queries: raw uint8 images ``[N, C, H, W]`` in (what a client of a prediction API
uploads; normalisation is the service's business), float32 posteriors ``[N, K]`` out. :class:`ModelBlackBox`
answers them in process; :mod:`fednas.http_server` puts one on HTTP (FastAPI under uvicorn). A membership
attacker sees the same :class:`BlackBox` interface either way (``attacker.membership.blackbox.HttpBlackBox`` is
its HTTP client). The .npy codec here never unpickles and checks a body against its declared size before it
allocates anything.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

MAX_BODY = 64 * 1024 * 1024
NPY = "application/x-npy"
DEFAULT_BATCH = 256


class BlackBox(Protocol):
    """What a membership attacker may use: the service's public description and its answers."""

    def info(self) -> dict[str, Any]: ...

    def predict(self, images: np.ndarray) -> np.ndarray: ...


def check_images(images: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """A uint8 [N, C, H, W] batch of the shape the service takes, or ValueError saying what is wrong."""
    arr = np.asarray(images)
    shape = (info["channels"], info["height"], info["width"])
    if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
        raise ValueError(f"images must be uint8 [N, {shape[0]}, {shape[1]}, {shape[2]}]; "
                         f"got {arr.dtype} {list(arr.shape)}")
    return arr


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """An array from .npy bytes, or ValueError in one line: never unpickles (object dtypes are refused before any
    reading), and the header's declared size must match the bytes that follow, so a forged header cannot make it
    allocate more than the body holds."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version} is not supported (1.0 or 2.0)")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(stream)
    except (ValueError, EOFError, SyntaxError, TypeError, OverflowError) as exc:
        raise ValueError(f"body is not a .npy array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                         ) from None
    if dtype.hasobject:
        raise ValueError("a .npy array of Python objects is refused (send numbers, for example uint8)")
    if any(n < 0 for n in shape):
        raise ValueError(f"the .npy header declares a negative dimension {list(shape)}")
    declared, left = math.prod(shape) * dtype.itemsize, len(data) - stream.tell()
    if declared != left:
        raise ValueError(f"the .npy header declares {list(shape)} {dtype} ({declared} bytes) but the body holds "
                         f"{left} bytes of data")
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=stream.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


@dataclass
class ModelBlackBox:
    """A classifier answering posterior queries in this process (eval mode, no gradients)."""

    forward: Callable[[torch.Tensor], torch.Tensor]  # float images in [0, 1] -> logits
    description: dict[str, Any]
    device: torch.device
    batch_size: int = DEFAULT_BATCH

    def info(self) -> dict[str, Any]:
        return dict(self.description)

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> np.ndarray:
        arr = check_images(images, self.description)
        out = []
        for start in range(0, len(arr), self.batch_size):
            x = torch.from_numpy(arr[start:start + self.batch_size]).to(self.device, torch.float32) / 255.0
            out.append(torch.softmax(self.forward(x).double(), dim=1).float().cpu().numpy())
        k = int(self.description["num_classes"])
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)


def model_black_box(model: torch.nn.Module, description: dict[str, Any], device: torch.device,
                    batch_size: int = DEFAULT_BATCH) -> ModelBlackBox:
    model.eval()
    return ModelBlackBox(model, description, device, batch_size)
