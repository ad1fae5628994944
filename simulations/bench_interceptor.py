"""What the eavesdropper costs the federation: the tap, a live attacker, an after-run attacker.

The same seeded federation runs with ``interceptor`` = off, capture (tap only), live and after-run. The
figures are per-round training seconds (from rounds.jsonl, round 1 excluded: it pays for start-up), the
tap's own seconds, and the wall time of the whole run including the attack. Prints JSON
(``archleak bench interceptor``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from fednas.data import resolve_data_root
from fednas.storage import package_versions, read_jsonl
from simulations.simulate import simulate

MODES = ("off", "capture", "live", "after-run")


def one_run(base: dict[str, Any], mode: str, clients: int, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    run = simulate({**base, "interceptor": mode, "output-dir": str(out / mode)}, num_clients=clients)
    wall = time.perf_counter() - start
    rounds = read_jsonl(run / "rounds.jsonl")
    later = [r["seconds"] for r in rounds[1:]] or [rounds[0]["seconds"]]
    figures: dict[str, Any] = {"mode": mode, "wall_s": wall, "round_s": sum(later) / len(later),
                               "rounds": len(rounds)}
    service = run / "reconstructions" / base.get("threat-model", "wire") / "service.json"
    if service.exists():
        figures["attacked"] = json.loads(service.read_text()).get("attacked")
        figures["dropped"] = json.loads(service.read_text()).get("dropped")
    captures = run / "captures" / "index.jsonl"
    figures["captures"] = len(read_jsonl(captures)) if captures.exists() else 0
    return figures


def run_interceptor_bench(data_root: str = "", clients: int = 4, rounds: int = 3) -> dict[str, Any]:
    root, _ = resolve_data_root(data_root)
    base = {"dataset": "mnist", "data-root": str(root), "num-server-rounds": rounds, "min-nodes": clients}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {mode: one_run(base, mode, clients, Path(tmp)) for mode in MODES}
    off = runs["off"]["round_s"]
    return {"versions": package_versions(), "cpus": os.cpu_count(), "clients": clients, "rounds": rounds,
            "runs": runs,
            "tap_overhead_per_round": runs["capture"]["round_s"] / off - 1,
            "live_overhead_per_round": runs["live"]["round_s"] / off - 1,
            "after_run_extra_wall_s": runs["after-run"]["wall_s"] - runs["capture"]["wall_s"],
            "goal_tap_overhead_le_2pct": runs["capture"]["round_s"] / off - 1 <= 0.02}
