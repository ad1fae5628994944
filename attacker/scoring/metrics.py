"""Honest reconstruction metrics: pixel error, structure, recognisability, identity beyond the label.

Per image: MSE (pixels in [0, 1]), PSNR, SSIM; ``recognised`` (an oracle classifier, trained once on the
train split and cached, predicts the true label); ``identified`` (the true image is the SSIM-nearest
among itself and 99 other images of its class: leakage beyond the label); label accuracy. Every figure
is also computed for the label-only baseline (the public class mean of the recovered label), the control
that tells image leakage from label leakage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from attacker.cache import cache_dir, cached_module, images_hash
from fednas.seeds import kaiming_init_

ORACLE_VERSION = 2
ORACLE_IMAGES = 20000
CANDIDATES = 100
CRITERIA = ("recognised", "identified", "ssim>=0.5")


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / mse(a, b).clamp_min(1e-10))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, data range 1). torchmetrics is imported here, when images are
    first scored: importing it pulls in torchvision and matplotlib (about 3 s in every server process)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(a.float(), b.float(), data_range=1.0, reduction="none")


class Oracle(nn.Module):
    """A small CNN judge; it only scores, it never helps an attack."""

    def __init__(self, channels: int, size: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_oracle(images: torch.Tensor, labels: torch.Tensor, classes: int, seed: int = 0, epochs: int = 2,
                 batch_size: int = 128) -> Oracle:
    """Fit on float images in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    model = Oracle(images.shape[1], images.shape[-1], classes)
    kaiming_init_(model, gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            F.cross_entropy(model(images[idx]), labels[idx]).backward()
            opt.step()
    model.eval()
    return model


def cached_oracle(dataset: str, images: torch.Tensor, labels: torch.Tensor, classes: int) -> Oracle:
    """The oracle for this dataset's train split (its first ORACLE_IMAGES images, 2 epochs: 97% on MNIST's
    test split), trained on first use and cached as safetensors."""
    images, labels = images[:ORACLE_IMAGES], labels[:ORACLE_IMAGES]
    key = images_hash(images[:2000], dataset, ORACLE_VERSION, len(images), classes)
    module = cached_module(cache_dir() / f"oracle-{dataset}-{key}.safetensors",
                           lambda: Oracle(images.shape[1], images.shape[-1], classes),
                           lambda: train_oracle(images, labels, classes),
                           {"kind": "oracle", "dataset": dataset, "version": ORACLE_VERSION})
    assert isinstance(module, Oracle)
    return module


@dataclass(frozen=True)
class Truth:
    """Ground truth of one capture (scoring only): the true images and labels, and the class pools."""

    images: torch.Tensor            # float [n, C, H, W]
    labels: torch.Tensor
    candidates: Sequence[torch.Tensor]   # per true image: [CANDIDATES, C, H, W], the true image first


def build_truth(images: torch.Tensor, labels: torch.Tensor, ids: Sequence[int], seed: int) -> Truth:
    """Truth for samples ``ids`` of a uint8 image pool, with 99 same-class decoys each (seeded)."""
    chosen = images[list(ids)].float() / 255
    chosen_labels = labels[list(ids)]
    pools = []
    for n, (i, y) in enumerate(zip(ids, chosen_labels.tolist(), strict=True)):
        same = (labels == y).nonzero().squeeze(1).numpy()
        others = np.random.default_rng([seed, int(i), n]).choice(same[same != i], CANDIDATES - 1, replace=False)
        pools.append(torch.cat([chosen[n:n + 1], images[torch.as_tensor(others)].float() / 255]))
    return Truth(chosen, chosen_labels, pools)


def score_images(images: torch.Tensor, labels: torch.Tensor, baseline: torch.Tensor, truth: Truth,
                 oracle: Oracle) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """Per-image rows (attack and label-only baseline) and the image rows to show, in truth's order."""
    order = assign(images, truth.images)
    images, labels, baseline = images[order], labels[order], baseline[order]
    attack_scores = image_scores(images, truth, oracle)
    base_scores = image_scores(baseline, truth, oracle)
    rows = [{"label": int(lbl), "true_label": int(t), "label_correct": int(lbl) == int(t), **a, "baseline": b}
            for lbl, t, a, b in zip(labels, truth.labels, attack_scores, base_scores, strict=True)]
    return rows, [images, truth.images, baseline]


def assign(recon: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Order of ``recon`` that best matches ``truth`` (B > 1: the attack does not know the order)."""
    if len(recon) == 1:
        return np.zeros(1, dtype=int)
    cost = -ssim(recon.repeat_interleave(len(truth), 0), truth.repeat(len(recon), 1, 1, 1)).view(len(recon), -1)
    rows, cols = linear_sum_assignment(cost.numpy())
    order = np.empty(len(truth), dtype=int)
    order[cols] = rows
    return order


@torch.no_grad()
def image_scores(images: torch.Tensor, truth: Truth, oracle: Oracle) -> list[dict[str, float | bool | int]]:
    """Per-image metrics of ``images`` (already in truth's order)."""
    pred = oracle(images).argmax(1)
    out = []
    s = ssim(images, truth.images)
    for i in range(len(images)):
        pool = truth.candidates[i]
        nearest = int(ssim(images[i:i + 1].expand_as(pool), pool).argmax())
        out.append({"mse": float(mse(images[i:i + 1], truth.images[i:i + 1])),
                    "psnr": float(psnr(images[i:i + 1], truth.images[i:i + 1])), "ssim": float(s[i]),
                    "recognised": bool(pred[i] == truth.labels[i]), "identified": nearest == 0,
                    "ssim>=0.5": bool(s[i] >= 0.5)})
    return out


def success_rates(rows: Sequence[dict[str, float | bool | int]]) -> dict[str, float]:
    """Mean of every boolean criterion and of PSNR/SSIM/MSE over images."""
    if not rows:
        return {}
    out = {c: float(np.mean([bool(r[c]) for r in rows])) for c in CRITERIA}
    for k in ("mse", "psnr", "ssim"):
        vals = [float(r[k]) for r in rows if math.isfinite(float(r[k]))]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def chance(classes: int) -> dict[str, float]:
    return {"recognised": 1 / classes, "identified": 1 / CANDIDATES, "label": 1 / classes}
