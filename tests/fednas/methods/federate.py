"""The federation without Flower, for the search methods' tests: the server's and the clients' core functions in one
process, in the order the Flower apps call them (the apps only convert Messages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import parse_app
from fednas.evaluation_log import write_alpha_batches
from fednas.federation import aggregate, run_client_round
from fednas.run import ServerRun


def tiny_method(method: str, dataset: str, data_root: Path, out: Path, **kw: Any) -> dict[str, Any]:
    cfg = {"dataset": dataset, "data-root": str(data_root), "output-dir": str(out), "num-server-rounds": 2,
           "theta-steps": 3, "theta-batch-size": 8, "alpha-steps": 2, "alpha-batch-size": 4, "eval-samples": 64,
           "channels": 4, "nodes": 2, "samples-per-client": 80, "interceptor": "off", "search-method": method,
           "smash-rank-samples": 16, "smash-candidates": 3, "enas-hidden": 16, "enas-candidates": 3,
           "enas-rank-samples": 16, "population-fraction": 0.5}
    cfg.update(kw)
    return cfg


def federate(overrides: dict[str, Any], clients: int = 2) -> tuple[ServerRun, dict[str, Any]]:
    app = parse_app(overrides)
    cfg = app.federation
    run = ServerRun(app, "test", log=lambda line: None)
    state = run.global_state()
    for r in range(run.start_round + 1, cfg.num_server_rounds + 1):
        replies = [run_client_round(cfg, cfg.local_search(), r, run.choice, p, clients, state) for p in range(clients)]
        for p, reply in enumerate(replies):   # the evaluation-only log, as the ClientApp writes it (node id = p)
            write_alpha_batches(run.dir, r, p, p, reply.alpha_batches, clients, reply.theta_batches)
        weights = [c.metrics["num-examples"] for c in replies]
        metrics = {k: sum(c.metrics[k] for c in replies) / clients for k in replies[0].metrics}
        average = aggregate([c.state for c in replies], weights)
        run.complete_round(r, average, metrics, clients)
        state = run.global_state() if run.advance(r + 1) else average
    return run, run.finish()
