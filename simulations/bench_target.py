"""``archleak bench target``: the README's trained target, timed: one whole federation and its accuracy per round.

The recipes are the README's ("A trained target in minutes"): ``flwr run . --federation-config
"num-supernodes=4 client-resources-num-cpus=1" --run-config RECIPE``, run here as
``simulate(RECIPE, num_clients=4, engine="ray")``, which is what that command runs. The figures come from the run
itself: its ``rounds.jsonl`` (test accuracy on the server's test images after every round, their count, seconds
per round); the last round's accuracy carries its n and a Wilson 95 % interval. Wall time is measured
around the federation (Ray's start included, the interpreter's not), with the load average before and after,
because other work on the machine changes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from attacker.scoring.stats import wilson
from fednas.registry import Registry
from fednas.run_folder import RunFolder
from fednas.storage import read_jsonl
from simulations.reproduce.runner import provenance
from simulations.simulate import simulate

RECIPES: Registry[dict[str, Any]] = Registry("target recipe")
RECIPES.add("mnist", {
    "num-server-rounds": 3, "dataset": "mnist", "theta-epochs": 1, "theta-batch-size": 32, "theta-lr": 0.1,
    "alpha-steps": 10, "alpha-batch-size": 16, "interceptor": "off", "eval-samples": 0})
RECIPES.add("cifar10-subset", {
    "num-server-rounds": 5, "dataset": "cifar10-subset", "theta-epochs": 3, "theta-batch-size": 32,
    "theta-lr": 0.05, "alpha-steps": 10, "alpha-batch-size": 16, "interceptor": "off", "eval-samples": 0})


def recipe_text(name: str) -> str:
    """The recipe as the README's ``--run-config`` string."""
    return " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in RECIPES.get(name).items())


def time_target(recipe: str, overrides: Mapping[str, Any], clients: int = 4, engine: str = "ray"
                ) -> dict[str, Any]:
    """Run ``recipe`` (with ``overrides`` on top: data root, output folder, a smaller budget for a smoke run) on
    ``clients`` clients; return its figures."""
    run_config = {**RECIPES.get(recipe), **overrides}
    load_before = os.getloadavg()
    start = time.perf_counter()
    run = simulate(run_config, num_clients=clients, engine=engine)
    wall = time.perf_counter() - start
    folder = RunFolder(run)
    rounds = read_jsonl(folder.rounds_file)
    last = rounds[-1]
    n = int(last["test_samples"])
    correct = round(last["test_accuracy"] * n)
    low, high = wilson(correct, n)
    return {"recipe": recipe, "run_config": run_config, "clients": clients, "engine": engine, "run": str(run),
            "test_accuracy_by_round": [r["test_accuracy"] for r in rounds],
            "round_seconds": [round(r["seconds"], 1) for r in rounds],
            "final_test_accuracy": last["test_accuracy"], "test_n": n,
            "final_test_accuracy_ci95": [round(low, 4), round(high, 4)],
            "ci_method": f"Wilson 95% interval of the last round's {correct} correct of {n} test images",
            "wall_s": round(wall, 1), "wall_from": "around the federation: Ray's start included, the interpreter's not",
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()], "seed": folder.meta()["seed"],
            **provenance()}
