"""What the eavesdropper costs the federation: the tap, a live attacker, an after-run attacker.

The same seeded federation runs with ``interceptor`` = off, capture (tap only), live and after-run, each
mode ``repeats`` times, interleaved. The figures are per-round training seconds (from rounds.jsonl, round 1
excluded: it pays for start-up), the tap's own timers (the share of training time it spent on the
ServerApp's thread: the direct measure of its overhead, immune to the machine's drift), and the wall time of
the whole run including the attack. Prints JSON
(``archleak bench interceptor``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fednas.data import resolve_data_root
from fednas.storage import package_versions, read_jsonl
from simulations.simulate import simulate

MODES = ("off", "capture", "live", "after-run")


def one_run(base: dict[str, Any], mode: str, clients: int, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    run = simulate({**base, "interceptor": mode, "output-dir": str(out)}, num_clients=clients)
    wall = time.perf_counter() - start
    rounds = read_jsonl(run / "rounds.jsonl")
    later = [r["seconds"] for r in rounds[1:]] or [rounds[0]["seconds"]]
    figures: dict[str, Any] = {"mode": mode, "wall_s": wall, "round_s": sum(later) / len(later),
                               "rounds": len(rounds), "training_s": sum(r["seconds"] for r in rounds)}
    tap = json.loads((run / "summary.json").read_text()).get("tap")
    if tap:   # the tap's own timers: on the ServerApp's thread, and in its writer thread
        figures.update(tap_hot_path_s=tap["hot_path_s"], tap_writer_s=tap["writer_s"],
                       tap_hot_path_share=tap["hot_path_s"] / figures["training_s"])
    service = run / "reconstructions" / base.get("threat-model", "wire") / "service.json"
    if service.exists():
        counts = json.loads(service.read_text())
        figures.update(attacked=counts.get("attacked"), dropped=counts.get("dropped"))
    captures = run / "captures" / "index.jsonl"
    figures["captures"] = len(read_jsonl(captures)) if captures.exists() else 0
    return figures


def check_modes(modes: list[str]) -> list[str]:
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes: unknown {unknown or 'empty list'}; known: {', '.join(MODES)}")
    return modes


def run_interceptor_bench(data_root: str = "", clients: int = 4, rounds: int = 3, modes: tuple[str, ...] = MODES,
                          repeats: int = 1) -> dict[str, Any]:
    """Every mode ``repeats`` times, interleaved (off, capture, ..., off, capture, ...) so that the machine's
    drift hits every mode alike; ratios use each mode's median round time."""
    check_modes(list(modes))
    root, _ = resolve_data_root(data_root)
    base = {"dataset": "mnist", "data-root": str(root), "num-server-rounds": rounds, "min-nodes": clients}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for mode in modes:
                runs[mode].append(one_run(base, mode, clients, Path(tmp) / f"{mode}-{rep}"))
    round_s = {m: float(np.median([r["round_s"] for r in rs])) for m, rs in runs.items()}
    out: dict[str, Any] = {"versions": package_versions(), "cpus": os.cpu_count(), "clients": clients,
                           "rounds": rounds, "repeats": repeats, "runs": runs, "median_round_s": round_s}
    if "capture" in runs:
        out["tap_hot_path_share"] = max(r["tap_hot_path_share"] for r in runs["capture"])
    if {"off", "capture"} <= set(round_s):
        out["tap_overhead_per_round"] = round_s["capture"] / round_s["off"] - 1
        out["goal_tap_overhead_le_2pct"] = out["tap_overhead_per_round"] <= 0.02
    if {"off", "live"} <= set(round_s):
        out["live_overhead_per_round"] = round_s["live"] / round_s["off"] - 1
    if "after-run" in runs and "capture" in runs:
        out["after_run_extra_wall_s"] = (float(np.median([r["wall_s"] for r in runs["after-run"]]))
                                         - float(np.median([r["wall_s"] for r in runs["capture"]])))
    return out
