"""Models the attacker and the scorer train once and reuse (the learned prior, the oracle, benchmark weights):
cached as safetensors under ``$XDG_CACHE_HOME/archleak/models`` (never pickled), keyed by a hash of what trained
them, and locked so that parallel workers train each one once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from fednas.storage import CorruptFile, load_tensors, save_tensors


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "archleak" / "models"


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Exclusive lock beside a cache file, so parallel workers train a model once and the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_module(path: Path, build: Callable[[], nn.Module], train: Callable[[], nn.Module],
                  meta: dict[str, object]) -> nn.Module:
    """Load ``path`` (safetensors) into ``build()``, or ``train()`` and save; damaged files are retrained."""
    with cache_lock(path):
        if path.exists():
            try:
                tensors, _ = load_tensors(path)
                module = build()
                module.load_state_dict(tensors)
                return module.eval().requires_grad_(False)
            except (CorruptFile, RuntimeError):
                path.unlink(missing_ok=True)
        module = train()
        save_tensors(path, module.state_dict(), meta)
        return module.eval().requires_grad_(False)


def images_hash(images: torch.Tensor, *extra: object) -> str:
    h = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(extra).encode())
    return h.hexdigest()[:24]
