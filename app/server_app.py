"""Flower ServerApp: federated DARTS with per-round records, checkpoints and resume (Message API).

The composition root of the server: it parses the run config, starts the eavesdropper's tap around the grid,
runs the rounds through the strategy (or the loop a defense replaces it with), and books every chosen
defense's privacy releases. The federation itself is :mod:`fednas`; nothing else happens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from app.config import parse_app
from attacker.interceptor.config import InterceptorConfig
from attacker.interceptor.eavesdropper import Eavesdropper
from defenses.accounting import PrivacyLedger
from defenses.config import DefenseConfig, account_round, check_compatible
from fednas.methods import SEARCH_METHODS
from fednas.records import from_array_record, to_array_record
from fednas.run import ServerRun
from fednas.strategy import FedDartsAvg


def say(line: str) -> None:
    log(INFO, "%s", line)


def _strategy(defense: DefenseConfig, strategy: Strategy, expected_clients: int) -> Strategy:
    for d in defense.chosen():
        if d.wrap_strategy is not None:
            strategy = d.wrap_strategy(strategy, defense, expected_clients)
    return strategy


def run_server(grid: Grid, context: Context, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parse the config (a bad value stops here, before training), run all rounds, return the summary."""
    app = parse_app({**context.run_config, **(overrides or {})})
    cfg, defense = app.federation, app.section("defense", DefenseConfig)
    check_compatible(defense, cfg.batchnorm, SEARCH_METHODS.get(cfg.search_method))
    run = ServerRun(app, context.run_id, log=say)
    spy = Eavesdropper.start(grid, run.dir, run.run_id, app.section("interceptor", InterceptorConfig), log=say)
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
        if run.advance(server_round + run.start_round + 1):
            # the search method set the next broadcast (ENAS's best-ranked cell, SMASH's best candidate, a PDARTS
            # stage): Flower's loop hands this same record to the next round, so it is rewritten in place
            arrays.clear()
            arrays.update(to_array_record(run.global_state()))
        return MetricRecord({"test-accuracy": rec["test_accuracy"] or 0.0})

    replaced = [d.server_rounds for d in defense.chosen() if d.server_rounds is not None]
    if run.remaining_rounds and replaced:
        replaced[0](spy.grid, context, run, defense)
    elif run.remaining_rounds:
        _strategy(defense, strategy, cfg.min_nodes).start(
            grid=spy.grid, initial_arrays=to_array_record(run.global_state()), num_rounds=run.remaining_rounds,
            evaluate_fn=record_round)
    extra: dict[str, Any] = {"privacy": ledger.report()} if ledger is not None else {}
    extra.update(spy.close_tap())
    summary = run.finish(extra)
    summary.update(spy.finish())
    return summary


def build_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """The ServerApp; ``overrides`` replace run-config values (for in-process simulations and tests)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, overrides)

    return server


app = build_server_app()
