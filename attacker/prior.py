"""A learned image prior: a small VAE trained once on public auxiliary images, cached by content hash.

The attacker optimises the VAE's latent code instead of pixels, so every candidate is an image the
prior finds plausible. Weights are cached as safetensors under ``$XDG_CACHE_HOME/archleak/models``
(never pickled), keyed by a hash of the training images and settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fednas.storage import CorruptFile, load_tensors, save_tensors

PRIOR_VERSION = 1


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


class ImageVAE(nn.Module):
    """Convolutional VAE for images of side ``size`` (a multiple of 4) in [0, 1]."""

    def __init__(self, channels: int, size: int, latent: int = 32) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"ImageVAE needs an image side divisible by 4, got {size}")
        self.channels, self.size, self.latent = channels, size, latent
        side = size // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * side * side, 2 * latent))
        self.decoder = nn.Sequential(
            nn.Linear(latent, 64 * side * side), nn.ReLU(), nn.Unflatten(1, (64, side, side)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, channels, 4, 2, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))


def seeded_init(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every weight (Kaiming-uniform) and zero every bias, from ``generator``."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim > 1:
                nn.init.kaiming_uniform_(p, a=5 ** 0.5, generator=generator)
            else:
                nn.init.zeros_(p)


def train_vae(images: torch.Tensor, generator: torch.Generator, latent: int = 32, epochs: int = 15,
              batch_size: int = 128, lr: float = 2e-3) -> ImageVAE:
    """Fit the VAE (ELBO with a Bernoulli likelihood) on ``images`` in [0, 1]."""
    vae = ImageVAE(images.shape[1], images.shape[-1], latent)
    seeded_init(vae, generator)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            x = images[order[start:start + batch_size]]
            mu, logvar = vae.encode(x)
            z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
            recon = F.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="sum")
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
            opt.zero_grad()
            ((recon + kl) / len(x)).backward()
            opt.step()
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def learned_prior(images: torch.Tensor, seed: int, latent: int = 32, epochs: int = 15,
                  folder: Path | None = None) -> ImageVAE:
    """The cached VAE for these public images, trained on first use."""
    key = images_hash(images, PRIOR_VERSION, latent, epochs, seed)
    path = (folder or cache_dir()) / f"prior-{key}.safetensors"
    module = cached_module(
        path, lambda: ImageVAE(images.shape[1], images.shape[-1], latent),
        lambda: train_vae(images, torch.Generator().manual_seed(seed), latent, epochs),
        {"kind": "image-vae", "version": PRIOR_VERSION, "latent": latent, "epochs": epochs, "seed": seed,
         "images": len(images)})
    assert isinstance(module, ImageVAE)
    return module
