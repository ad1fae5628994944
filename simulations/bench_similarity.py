"""How image-specific is an update? Cosine similarity of single-image Δα (and Δθ) across images.

For pairs of MNIST test images of the same class and of different classes, each image goes through a
client's real local search (one α step, then one θ step, B = 1) and the two updates are compared. When
the Δα of two different images of one class are nearly parallel, Δα carries the label and little else,
and no attack can recover the image from it; Δθ is the contrast. Weights at round 0 or after
``train_steps`` θ steps on public data (:func:`simulations.bench_adra.bench_weights`). ``archleak bench
similarity`` prints JSON.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fednas.config import parse_run_config
from fednas.data import load_dataset
from fednas.state import split_state
from fednas.storage import package_versions
from simulations.bench_adra import alpha_size_knobs, bench_weights, capture_batch


def _updates(model: torch.nn.Module, data: Any, ids: list[int], cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened (Δα, Δθ) of single-image updates, one row per image."""
    alphas, thetas = [], []
    for i in ids:
        view, _, _ = capture_batch(model, data.test_images[i:i + 1], data.test_labels[i:i + 1], cfg, f"s{i}")
        a0, t0 = split_state(view.broadcast)
        a1, t1 = split_state(view.reply)
        alphas.append(torch.cat([(a1[k] - a0[k]).flatten() for k in sorted(a0)]))
        thetas.append(torch.cat([(t1[k] - t0[k]).flatten() for k in sorted(t0)]))
    return torch.stack(alphas), torch.stack(thetas)


def pair_stats(updates: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    unit = F.normalize(updates.double(), dim=1)
    cos = unit @ unit.T
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    diff = labels[:, None] != labels[None, :]
    return {"same_class_mean": float(cos[same].mean()), "same_class_max": float(cos[same].max()),
            "different_class_mean": float(cos[diff].mean())}


def similarity(data_root: str, per_class: int, train_steps: list[int], alpha_sizes: list[int],
               activation: str = "elu", seed: int = 0) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = load_dataset("mnist", data_root)
    labels = data.test_labels
    ids = [int(i) for c in range(10) for i in (labels == c).nonzero().squeeze(1)[:per_class]]
    out: dict[str, Any] = {"versions": package_versions(), "images": len(ids), "per_class": per_class, "cases": []}
    for size in alpha_sizes:
        cfg = parse_run_config({"dataset": "mnist", "data-root": data_root, "seed": seed, "activation": activation,
                                **alpha_size_knobs(size)})
        for steps in train_steps:
            model = bench_weights(cfg, data, steps)
            d_alpha, d_theta = _updates(model, data, ids, cfg)
            out["cases"].append({"alpha_entries": model.spec.alpha_count(), "train_steps": steps,
                                 "theta_entries": int(d_theta.shape[1]),
                                 "alpha": pair_stats(d_alpha, labels[ids]),
                                 "theta": pair_stats(d_theta, labels[ids])})
    return out
