"""Run the Flower App in this process with Flower's simulation engine (Ray), for scenarios and benchmarks.

``flwr run .`` is what users run; this path skips the managed SuperLink so that scripts and tests can
pass a run config directly and find the run folder afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.client_app import build_client_app
from app.config import parse_app
from app.server_app import build_server_app
from fednas.config import resolve_user_path


def simulate(overrides: Mapping[str, Any], num_clients: int = 2, cpus_per_client: float = 1.0,
             gpus_per_client: float = 0.0) -> Path:
    """Run a whole federation in-process; return its run folder."""
    from flwr.simulation import run_simulation

    cfg = parse_app(overrides).federation  # fail before Ray starts
    base = resolve_user_path(cfg.resume_from) if cfg.resume_from else resolve_user_path(cfg.output_dir)
    before = set(base.iterdir()) if base.exists() and not cfg.resume_from else set()
    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client}}
    run_simulation(build_server_app(overrides), build_client_app(overrides), num_supernodes=num_clients,
                   backend_config=backend)
    if cfg.resume_from:
        return base
    created = sorted(set(base.iterdir()) - before)
    if len(created) != 1:
        raise RuntimeError(f"expected one new run folder under {base}, found {len(created)}")
    return created[0]
