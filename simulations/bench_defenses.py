"""``archleak bench defenses``: what each client-side defense adds to a client's round, measured in one process.

Each case runs the same client round (default config, partition 0 of ``clients``, same seed, same broadcast):
the plain local search, then the local search with the defense's α step. Reported: seconds per round (median of
``repeats``), seconds per α step, and the ratio against no defense.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from app.config import parse_app
from defenses.config import DefenseConfig
from fednas.data import load_dataset
from fednas.federation import choose_data, client_data, make_model, resolve_device
from fednas.search import local_search
from fednas.seeds import CLIENT_STREAM, DEFENSE_STREAM, generator
from fednas.state import export_state, import_state

CASES: dict[str, dict[str, Any]] = {
    "none": {},
    "dp-sgd-alpha": {"defenses": "dp-sgd-alpha"},
    "l2-alpha": {"defenses": "l2-alpha"},
    "input-noise": {"defenses": "input-noise"},
}


def time_round(overrides: Mapping[str, Any], clients: int, repeats: int) -> dict[str, float]:
    app = parse_app(overrides)
    cfg, defense = app.federation, app.section("defense", DefenseConfig)
    choice = choose_data(cfg)
    data = load_dataset(choice.dataset, str(choice.root))
    model = make_model(cfg, data, resolve_device(cfg.device))
    start_state = export_state(model)
    theta_set, alpha_set = client_data(cfg, choice.dataset, choice.root, 0, clients)
    seconds, alpha_steps = [], 0
    for _ in range(repeats):
        import_state(model, start_state)
        step = defense.alpha_step(generator(cfg.seed, DEFENSE_STREAM, 1, 0))
        begin = time.perf_counter()
        result = local_search(model, theta_set, alpha_set, cfg.local_search(), generator(cfg.seed, CLIENT_STREAM, 1, 0),
                              alpha_step=step)
        seconds.append(time.perf_counter() - begin)
        alpha_steps = result.alpha_steps
    return {"round_s": statistics.median(seconds), "alpha_steps": alpha_steps}


def run_defense_bench(base: Mapping[str, Any], cases: Sequence[str], clients: int = 4,
                      repeats: int = 3) -> dict[str, Any]:
    rows = {name: time_round({**base, **CASES[name]}, clients, repeats) for name in ("none", *cases)
            if name in CASES}
    ref = rows["none"]["round_s"]
    for row in rows.values():
        row["ratio"] = row["round_s"] / ref
    return {"rows": rows, "threads": torch.get_num_threads(), "clients": clients, "repeats": repeats,
            "config": dict(base)}
