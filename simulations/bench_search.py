"""``archleak bench search``: the local search step on its fast path against the plain supernet, in one process.

One step is one θ step of ``theta-batch-size`` images plus one α step of ``alpha-batch-size`` (the paper's B = 1),
on the default supernet and MNIST unless told otherwise, single-threaded. The two paths are timed in alternation
(rounds of a few steps each, one path then the other) and compared as medians, because absolute times drift by
±20 % within minutes on a shared machine. Both paths compute the same function (``tests/fednas/test_fastnet.py``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fednas.config import parse_run_config
from fednas.data import load_dataset
from fednas.fastnet import FastSearchNet, frozen_weights
from fednas.federation import make_model
from fednas.storage import package_versions


def _timed(fn: Callable[[], None], steps: int) -> float:
    start = time.process_time()
    for _ in range(steps):
        fn()
    return (time.process_time() - start) / steps * 1e3


def step_ratio(overrides: dict[str, Any], rounds: int = 5, steps: int = 3, threads: int = 1) -> dict[str, Any]:
    """Milliseconds (process time) of a θ step, an α step and both, on each path; ratios fast / plain."""
    torch.set_num_threads(threads)
    cfg = parse_run_config(overrides)
    data = load_dataset(cfg.dataset, cfg.data_root)
    model = make_model(cfg, data, torch.device("cpu"))
    fast = FastSearchNet(model)
    b_theta, b_alpha = cfg.theta_batch_size, cfg.alpha_batch_size
    x, y = data.train_images[:b_theta].float() / 255, data.train_labels[:b_theta]
    xa, ya = x[:b_alpha], y[:b_alpha]
    theta, alpha = model.weight_parameters(), model.alpha_parameters()

    def theta_step(net: torch.nn.Module) -> None:
        torch.autograd.grad(F.cross_entropy(net(x), y), theta)

    def alpha_step(net: torch.nn.Module) -> None:
        with frozen_weights(net):
            torch.autograd.grad(F.cross_entropy(net(xa), ya), alpha)

    times: dict[str, list[float]] = {f"{k}_{p}_ms": [] for k in ("theta", "alpha") for p in ("plain", "fast")}
    for net in (model, fast):    # warm-up: oneDNN primitive caches
        theta_step(net)
        alpha_step(net)
    for _ in range(rounds):
        for path, net in (("plain", model), ("fast", fast)):
            times[f"theta_{path}_ms"].append(_timed(lambda net=net: theta_step(net), steps))
            times[f"alpha_{path}_ms"].append(_timed(lambda net=net: alpha_step(net), steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    step = {p: med[f"theta_{p}_ms"] + med[f"alpha_{p}_ms"] for p in ("plain", "fast")}
    return {"config": {"theta_batch_size": b_theta, "alpha_batch_size": b_alpha, "alpha_entries":
                       model.spec.alpha_count(), "threads": threads, "rounds": rounds, "steps_per_round": steps},
            **{k: round(v, 2) for k, v in med.items()},
            "step_plain_ms": round(step["plain"], 2), "step_fast_ms": round(step["fast"], 2),
            "theta_ratio": round(med["theta_fast_ms"] / med["theta_plain_ms"], 3),
            "alpha_ratio": round(med["alpha_fast_ms"] / med["alpha_plain_ms"], 3),
            "step_ratio": round(step["fast"] / step["plain"], 3), "speedup": round(step["plain"] / step["fast"], 2),
            "per_round": times, "versions": package_versions()}
