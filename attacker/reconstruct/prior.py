"""A learned image prior: a small VAE trained once on public auxiliary images, cached by content hash.

The attacker optimises the VAE's latent code instead of pixels, so every candidate is an image the
prior finds plausible. Weights are cached as safetensors under ``$XDG_CACHE_HOME/archleak/models``
(never pickled), keyed by a hash of the training images and settings.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from attacker.cache import cache_dir, cached_module, images_hash
from fednas.seeds import kaiming_init_

PRIOR_VERSION = 1


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


def train_vae(images: torch.Tensor, generator: torch.Generator, latent: int = 32, epochs: int = 15,
              batch_size: int = 128, lr: float = 2e-3) -> ImageVAE:
    """Fit the VAE (ELBO with a Bernoulli likelihood) on ``images`` in [0, 1]."""
    vae = ImageVAE(images.shape[1], images.shape[-1], latent)
    kaiming_init_(vae, generator)
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
