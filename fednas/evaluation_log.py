"""The evaluation-only log: which samples each client used for its α and θ steps, per round.

Clients write it; only scoring code reads it. Attacks never receive a path to it (their inputs are
what crossed the wire plus public knowledge), and a test checks that an attack opens no file here.
One small JSON file per (round, node), written atomically, so parallel clients never share a file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fednas.run_folder import RunFolder
from fednas.storage import atomic_write_json

ALPHA_BATCHES, THETA_BATCHES = "batches", "theta_batches"   # the two kinds of batches a record lists


def evaluation_folder(run_dir: Path) -> Path:
    """The folder of the per-(round, node) records of the run in ``run_dir``."""
    return RunFolder(run_dir).evaluation / "alpha-batches"


def batches_path(run_dir: Path, server_round: int, node_id: int) -> Path:
    return evaluation_folder(run_dir) / f"r{server_round:04d}-n{node_id}.json"


def write_alpha_batches(run_dir: Path, server_round: int, node_id: int, partition_id: int,
                        batches: Sequence[Sequence[int]], num_partitions: int,
                        theta_batches: Sequence[Sequence[int]] = ()) -> None:
    atomic_write_json(batches_path(run_dir, server_round, node_id),
                      {"round": server_round, "node_id": node_id, "partition_id": partition_id,
                       "num_partitions": num_partitions, ALPHA_BATCHES: [list(map(int, b)) for b in batches],
                       THETA_BATCHES: [list(map(int, b)) for b in theta_batches]})


def read_alpha_batches(run_dir: Path, server_round: int, node_id: int,
                       key: str = ALPHA_BATCHES) -> list[list[int]] | None:
    """The true α batches (``key="theta_batches"``: θ batches), dataset train indices; None without an entry."""
    path = batches_path(run_dir, server_round, node_id)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return [list(b) for b in record[key]] if key in record else None


def read_all_alpha_batches(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the log (for membership ground truth): round, node, partition, batches."""
    return [json.loads(p.read_text()) for p in sorted(evaluation_folder(run_dir).glob("r*-n*.json"))]
