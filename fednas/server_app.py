"""Flower ServerApp: federated DARTS with per-round records, checkpoints and resume (Message API)."""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from attacker.capture import CaptureStore
from attacker.config import InterceptorConfig
from attacker.service import InterceptorService
from attacker.tap import TappedGrid
from defenses.accounting import PrivacyLedger
from defenses.config import DefenseConfig, account_round, check_compatible
from defenses.mods import wrap_strategy
from fednas.config import parse_app_config
from fednas.records import from_array_record, to_array_record
from fednas.run import ServerRun
from fednas.secagg import run_secagg
from fednas.strategy import FedDartsAvg


def say(line: str) -> None:
    log(INFO, "%s", line)


def run_server(grid: Grid, context: Context, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parse the config (a bad value stops here, before training), run all rounds, return the summary."""
    app = parse_app_config({**context.run_config, **(overrides or {})})
    cfg = app.federation
    defense = app.section("defense", DefenseConfig)
    check_compatible(defense, cfg.batchnorm)
    run = ServerRun(app, context.run_id, log=say)
    eavesdropper = app.section("interceptor", InterceptorConfig)
    service = None
    if eavesdropper.interceptor != "off":
        service = InterceptorService(run.dir, eavesdropper, log=say)
        service.start()
        grid = TappedGrid(grid, CaptureStore(run.dir / "captures", report=say), run.run_id,
                          on_capture=service.submit, log=say)
    strategy = FedDartsAvg(seed=cfg.seed, round_config=run.round_config, round_offset=run.start_round,
                           fraction_train=cfg.fraction_train, min_nodes=cfg.min_nodes)

    ledger = PrivacyLedger(defense.dp_accountant) if defense.accounted() else None

    def record_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        extra = None
        if ledger is not None:
            account_round(ledger, defense, cfg.alpha_batch_size, strategy.last_client_metrics)
            extra = {"privacy": ledger.report()}
        rec = run.complete_round(server_round + run.start_round, from_array_record(arrays),
                                 strategy.last_metrics, strategy.last_clients, extra)
        return MetricRecord({"test-accuracy": rec["test_accuracy"] or 0.0})

    if run.remaining_rounds and "secagg-plus" in defense.names:
        run_secagg(grid, context, run, cfg.min_nodes, defense.secagg_clip)
    elif run.remaining_rounds:
        wrap_strategy(strategy, defense, cfg.min_nodes).start(
            grid=grid, initial_arrays=to_array_record(run.global_state()), num_rounds=run.remaining_rounds,
            evaluate_fn=record_round)
    extra: dict[str, Any] = {"privacy": ledger.report()} if ledger is not None else {}
    if service is not None:
        assert isinstance(grid, TappedGrid)
        stats = grid.close()
        say(f"archleak: tap stored {stats.captures} captures ({stats.errors} errors); "
            f"{stats.hot_path_s:.3f}s on the training path, {stats.writer_s:.2f}s in its writer thread")
        extra["tap"] = {"captures": stats.captures, "errors": stats.errors, "hot_path_s": stats.hot_path_s,
                        "writer_s": stats.writer_s}
    summary = run.finish(extra)
    if service is not None:
        summary["interceptor"] = service.finish()
    return summary


def build_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """The ServerApp; ``overrides`` replace run-config values (for in-process simulations and tests)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, overrides)

    return server


app = build_server_app()
