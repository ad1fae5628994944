"""Run the Flower App in this process with Flower's simulation runtime, for scenarios, benchmarks and tests.

``flwr run .`` is what users run; this path skips the managed SuperLink so that scripts and tests can
pass a run config directly and find the run folder afterwards. The clients run on Ray, as under ``flwr run .``,
or one after another in this process (:mod:`simulations.engines`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.client_app import build_client_app
from app.config import parse_app
from app.server_app import build_server_app
from fednas.config import resolve_user_path
from simulations.engines import engine as run_engine
from simulations.engines import resolve


def simulate(overrides: Mapping[str, Any], num_clients: int = 2, cpus_per_client: float = 1.0,
             gpus_per_client: float = 0.0, engine: str | None = None) -> Path:
    """Run a whole federation; return its run folder. ``engine``: where the clients run (``ray``,
    ``in-process``; default ``$ARCHLEAK_SIMULATION_ENGINE``, else ``ray``)."""
    from flwr.simulation import run_simulation

    chosen = resolve(engine)
    cfg = parse_app(overrides).federation  # fail before Ray starts
    base = resolve_user_path(cfg.resume_from) if cfg.resume_from else resolve_user_path(cfg.output_dir)
    before = set(base.iterdir()) if base.exists() and not cfg.resume_from else set()
    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client}}
    with run_engine(chosen):
        run_simulation(build_server_app(overrides), build_client_app(overrides), num_supernodes=num_clients,
                       backend_config=backend)
    if cfg.resume_from:
        return base
    created = sorted(set(base.iterdir()) - before)
    if len(created) != 1:
        raise RuntimeError(f"expected one new run folder under {base}, found {len(created)}")
    return created[0]
