"""Benchmark of the federated search: step cost, round cost against clients, memory at 100 clients.

Run ``archleak bench fednas`` (or ``python -m simulations.bench_fednas``); prints JSON.
Figures:
  * seconds per θ step and per α step at the default size and at 2x cells and 2x channels;
  * seconds per round with N clients, next to the clients' local search alone (the sum of their
    search times; clients run one after another with all cores), and the ratio of the two;
  * peak memory (PSS) of the whole process tree (Ray included) for 100 virtual clients with 10
    sampled per round.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fednas.config import parse_run_config
from fednas.data import load_dataset, resolve_data_root
from fednas.federation import client_data, make_model
from fednas.search import LocalSearchConfig, local_search
from fednas.seeds import BENCH_TIMED_STREAM, BENCH_WARMUP_STREAM, generator
from fednas.storage import package_versions, read_jsonl
from simulations.memory import PeakTreeMemory
from simulations.simulate import simulate


def step_seconds(overrides: dict[str, Any], steps: int) -> dict[str, float]:
    """Mean seconds of one θ step and of one α step (after one warm-up step each)."""
    cfg = parse_run_config(overrides)
    data = load_dataset(cfg.dataset, cfg.data_root)
    model = make_model(cfg, data, torch.device("cpu"))
    theta_set, alpha_set = client_data(cfg, cfg.dataset, Path(cfg.data_root), 0, 4)
    out = {}
    for kind in ("theta", "alpha"):
        counts = {"theta_steps": 0, "alpha_steps": 0}
        warm = LocalSearchConfig(**{**cfg.local_search().model_dump(), **counts, f"{kind}_steps": 1})
        local_search(model, theta_set, alpha_set, warm, generator(0, BENCH_WARMUP_STREAM))
        timed = LocalSearchConfig(**{**warm.model_dump(), f"{kind}_steps": steps})
        start = time.perf_counter()
        local_search(model, theta_set, alpha_set, timed, generator(0, BENCH_TIMED_STREAM))
        out[f"{kind}_step_s"] = (time.perf_counter() - start) / steps
    out["alpha_entries"] = model.spec.alpha_count()
    out["weights"] = sum(p.numel() for p in model.weight_parameters())
    return out


def round_seconds(base: dict[str, Any], clients: int, out_dir: Path) -> dict[str, float]:
    """Wall seconds of round 2 (round 1 pays for loading) against the clients' search time in it."""
    cpus = float(os.cpu_count() or 1)
    run_dir = simulate({**base, "num-server-rounds": 2, "output-dir": str(out_dir), "min-nodes": clients},
                       num_clients=clients, cpus_per_client=cpus)
    second = read_jsonl(run_dir / "rounds.jsonl")[-1]
    search = second["client_metrics"]["search-seconds"] * second["clients"]
    return {"clients": clients, "round_s": second["seconds"], "clients_search_s": search,
            "ratio": second["seconds"] / search}


def memory_100_clients(base: dict[str, Any], out_dir: Path) -> dict[str, float]:
    overrides = {**base, "num-server-rounds": 1, "output-dir": str(out_dir), "fraction-train": 0.1,
                 "min-nodes": 10, "theta-steps": 1}
    with PeakTreeMemory() as peak:
        start = time.perf_counter()
        simulate(overrides, num_clients=100, cpus_per_client=1.0)
    return {"virtual_clients": 100, "sampled_per_round": 10, "peak_pss_mib": peak.mib,
            "wall_s": time.perf_counter() - start}


def run_benchmark(data_root: str = "", quick: bool = False) -> dict[str, Any]:
    root, _ = resolve_data_root(data_root)
    base = {"dataset": "mnist", "data-root": str(root), "eval-samples": 500}
    steps = 2 if quick else 5
    sizes = {"default": {}, "2x-cells": {"cells": 6}, "2x-channels": {"channels": 16}}
    figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
                               "versions": package_versions(), "quick": quick}
    figures["steps"] = {name: step_seconds({**base, **kw}, steps) for name, kw in sizes.items()}
    with tempfile.TemporaryDirectory() as tmp:
        counts = (1, 2) if quick else (1, 2, 4)
        round_base = {**base, "theta-steps": 2 if quick else 10}
        figures["rounds"] = [round_seconds(round_base, n, Path(tmp) / f"r{n}") for n in counts]
        figures["memory"] = memory_100_clients(base, Path(tmp) / "m100")
    four = [r for r in figures["rounds"] if r["clients"] == 4]
    figures["goal_round_4_clients_le_1.3x_search"] = four[0]["ratio"] <= 1.3 if four else None
    return figures


if __name__ == "__main__":
    print(json.dumps(run_benchmark(), indent=2))
