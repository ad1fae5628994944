"""``archleak bench inversion``: one evaluation of the Δθ inversion's objective on both replay paths, in one process.

One evaluation is what L-BFGS pays per function call: the clients' local searches replayed on R rows of dummy
images (one capture and restart each), the cosine match of the replayed Δθ against the observed one, and the
gradient of that match with respect to the images (a double backward through the supernet). The capture is the
Δθ inversion's default (``bench adra``'s: one θ step of B = 1, the run config's θ rule, the default supernet,
MNIST test images as the dummy start). The two paths (``inversion-fast``: row weights through the edge-batched
supernet; the plain supernet under ``vmap``) are timed in alternation and compared as medians, single-threaded,
because absolute times drift by ±20 % within minutes on a shared machine. The JSON also carries the largest
difference between the two paths' image gradients, relative to their scale.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from attacker.reconstruct.model import theta_model
from attacker.reconstruct.objectives import OBJECTIVES
from attacker.reconstruct.row_replay import replay_rows_flat
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import Schedule, ThetaRule, UpdateRule
from attacker.reconstruct.trajectory import interpolated_alphas, replay_local_search_flat
from fednas.config import parse_run_config
from fednas.data import load_dataset
from fednas.fastnet import FastSearchNet
from fednas.federation import make_model
from fednas.seeds import generator
from fednas.state import THETA_PREFIX, export_state
from fednas.storage import package_versions

BENCH_STREAM = 71   # the generator stream of the observed update's dummy target


def _schedule(overrides: dict[str, Any]) -> Schedule:
    search = parse_run_config(overrides).local_search()
    theta = ThetaRule(1, 1, search.theta_lr, search.theta_momentum, search.theta_weight_decay, search.grad_clip)
    alpha = UpdateRule(search.alpha_optimizer, search.resolved_alpha_lr(), search.resolved_alpha_weight_decay(),
                       1, 1)
    return Schedule(theta, alpha, "alpha-first")


def _evaluation(overrides: dict[str, Any], rows: int, seed: int) -> dict[str, Callable[[], torch.Tensor]]:
    """Per path, a function that runs one evaluation and returns the images' gradient."""
    cfg = parse_run_config(overrides)
    data = load_dataset(cfg.dataset, cfg.data_root)
    model = make_model(cfg, data, torch.device("cpu"))
    spec, mean, std = model.spec, data.mean, data.std
    theta = {k[len(THETA_PREFIX):]: v for k, v in export_state(model, weights=True).items()
             if k.startswith(THETA_PREFIX)}
    sched = _schedule(overrides)
    gen = generator(seed, BENCH_STREAM)
    alpha0 = {g: 1e-3 * torch.randn(rows, *spec.alpha_shape(), generator=gen) for g in spec.alpha_groups()}
    known = interpolated_alphas(sched, alpha0, alpha0)
    images = (data.test_images[:rows].float() / 255).unsqueeze(1)                # [R, 1 image, C, H, W]
    soft = F.one_hot(data.test_labels[:rows], spec.num_classes).float().view(rows, 1, -1)
    observed = torch.randn(rows, sum(v.numel() for v in theta.values()), generator=gen)
    objective = OBJECTIVES.get("cosine")
    plain = theta_model(spec, mean, std)
    paths = {"fast": (FastSearchNet(theta_model(spec, mean, std)), replay_rows_flat),
             "plain": (plain, replay_local_search_flat)}

    def run(net: Any, replay: Callable[..., Any]) -> torch.Tensor:
        x = images.clone().requires_grad_()
        _, d_theta = replay(net, sched, theta, alpha0, x, soft, x, soft, known)
        match = objective(d_theta, observed, None)
        return torch.autograd.grad(match.sum(), [x])[0]

    return {name: functools.partial(run, net, replay) for name, (net, replay) in paths.items()}


def _median_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def inversion_ratio(overrides: dict[str, Any], rows: Sequence[int] = (1, 8, 16, 32), rounds: int = 3,
                    repeats: int = 2, threads: int = 1, seed: int = 0) -> dict[str, Any]:
    """Seconds per evaluation on each path for each row count; seconds per image at ``inversion-iterations``."""
    if not rows or min(rows) < 1:
        raise ValueError(f"rows must be positive counts of rows, got {list(rows)}")
    torch.set_num_threads(threads)
    iterations = AttackSettings().inversion_iterations   # its default (L-BFGS evaluations)
    cases = []
    for r in rows:
        paths = _evaluation(overrides, r, seed)
        grads = {name: fn() for name, fn in paths.items()}    # warm-up (oneDNN primitive caches) and agreement
        scale = float(grads["plain"].abs().max())
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(rounds):
            for name, fn in paths.items():
                times[name].append(_median_seconds(fn, repeats))
        med = {name: statistics.median(v) for name, v in times.items()}
        cases.append({"rows": r, **{f"{n}_s_per_evaluation": round(v, 4) for n, v in med.items()},
                      **{f"{n}_s_per_image": round(v * iterations / r, 2) for n, v in med.items()},
                      "speedup": round(med["plain"] / med["fast"], 2),
                      "max_gradient_difference": float((grads["fast"] - grads["plain"]).abs().max())
                      / max(scale, 1e-30),
                      "per_round": times})
    return {"config": {"threads": threads, "rounds": rounds, "repeats": repeats, "iterations": iterations,
                       "capture": "one θ step of B = 1 (alpha-first), the run config's θ rule", **overrides},
            "cases": cases, "versions": package_versions()}
