"""``archleak bench inversion``: one evaluation of the Δθ inversion's objective on both replay paths, in one process.

One evaluation is what L-BFGS pays per function call: the clients' local searches replayed on R rows of dummy
images (one capture and restart each), the cosine match of the replayed Δθ against the observed one, and the
gradient of that match with respect to the images (a double backward through the supernet). The capture is the
Δθ inversion's default (``bench adra``'s: one θ step of B = 1, the run config's θ rule, the default supernet,
MNIST test images as the dummy start). The paths (``inversion-fast``: row weights through the edge-batched
supernet; ``fast_channels_last``: the same before single samples kept their NCHW layout
(:func:`fednas.rows.channels_last_throughout`); the plain supernet under ``vmap``) are timed in alternation and
compared as medians, single-threaded, because absolute times drift by ±20 % within minutes on a shared machine.

The JSON also carries the largest difference between the fast and plain paths' image gradients, relative to their
scale, at the dummy images moved off exact ties by uniform noise of at most ``TIE_JITTER`` (MNIST's backgrounds are
exactly zero, and at equal values, such as a max pool over them, two layouts may round differently and so pick
different, equally valid, subgradients; the inversion itself evaluates sigmoid-boxed pixels); the difference at the
raw images is reported beside it.
"""

from __future__ import annotations

import contextlib
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
from fednas import heap
from fednas.config import parse_run_config
from fednas.data import load_dataset
from fednas.fastnet import FastSearchNet
from fednas.federation import make_model
from fednas.rows import channels_last_throughout
from fednas.seeds import generator
from fednas.state import THETA_PREFIX, export_state
from fednas.storage import package_versions

BENCH_STREAM = 71   # the generator stream of the observed update's dummy target
JITTER_STREAM = 72  # the dummy images' shift off exact ties
TIE_JITTER = 0.01   # the largest shift of a pixel off MNIST's exact ties, for the gradient agreement


def _schedule(overrides: dict[str, Any]) -> Schedule:
    search = parse_run_config(overrides).local_search()
    theta = ThetaRule(1, 1, search.theta_lr, search.theta_momentum, search.theta_weight_decay, search.grad_clip)
    alpha = UpdateRule(search.alpha_optimizer, search.resolved_alpha_lr(), search.resolved_alpha_weight_decay(),
                       1, 1)
    return Schedule(theta, alpha, "alpha-first")


def _evaluation(overrides: dict[str, Any], rows: int, seed: int
                ) -> tuple[dict[str, Callable[[torch.Tensor], torch.Tensor]], dict[str, torch.Tensor]]:
    """Per path, a function that runs one evaluation from the given dummy images and returns their gradient; and
    the dummy images: ``raw`` (MNIST test images) and ``off_ties`` (plus uniform noise in [0, TIE_JITTER))."""
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
    starts = {"raw": images, "off_ties": images + TIE_JITTER * torch.rand(images.shape,
                                                                          generator=generator(seed, JITTER_STREAM))}
    soft = F.one_hot(data.test_labels[:rows], spec.num_classes).float().view(rows, 1, -1)
    observed = torch.randn(rows, sum(v.numel() for v in theta.values()), generator=gen)
    objective = OBJECTIVES.get("cosine")
    plain = theta_model(spec, mean, std)
    fast = FastSearchNet(theta_model(spec, mean, std))
    paths = {"fast": (fast, replay_rows_flat, contextlib.nullcontext),
             "fast_channels_last": (fast, replay_rows_flat, channels_last_throughout),
             "plain": (plain, replay_local_search_flat, contextlib.nullcontext)}

    def run(net: Any, replay: Callable[..., Any], layout: Callable[[], Any], start: torch.Tensor) -> torch.Tensor:
        x = start.clone().requires_grad_()
        with layout():
            _, d_theta = replay(net, sched, theta, alpha0, x, soft, x, soft, known)
            match = objective(d_theta, observed, None)
            return torch.autograd.grad(match.sum(), [x])[0]

    return {name: functools.partial(run, *path) for name, path in paths.items()}, starts


def _difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30)


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
        evaluate, starts = _evaluation(overrides, r, seed)
        paths = {name: functools.partial(fn, starts["off_ties"]) for name, fn in evaluate.items()}
        grads = {name: fn() for name, fn in paths.items()}    # warm-up (oneDNN primitive caches) and agreement
        at_ties = {name: evaluate[name](starts["raw"]) for name in ("fast", "plain")}
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(rounds):
            for name, fn in paths.items():
                times[name].append(_median_seconds(fn, repeats))
        med = {name: statistics.median(v) for name, v in times.items()}
        cases.append({"rows": r, **{f"{n}_s_per_evaluation": round(v, 4) for n, v in med.items()},
                      **{f"{n}_s_per_image": round(v * iterations / r, 2) for n, v in med.items()},
                      "speedup": round(med["plain"] / med["fast"], 2),
                      "speedup_over_channels_last": round(med["fast_channels_last"] / med["fast"], 3),
                      "max_gradient_difference": _difference(grads["fast"], grads["plain"]),
                      "max_gradient_difference_channels_last": _difference(grads["fast_channels_last"],
                                                                           grads["plain"]),
                      "max_gradient_difference_at_ties": _difference(at_ties["fast"], at_ties["plain"]),
                      "per_round": times})
    return {"config": {"threads": threads, "rounds": rounds, "repeats": repeats, "iterations": iterations,
                       "tie_jitter": TIE_JITTER, "heap_retained": heap.retained(),
                       "capture": "one θ step of B = 1 (alpha-first), the run config's θ rule", **overrides},
            "cases": cases, "versions": package_versions()}
