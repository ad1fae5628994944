"""Flower ClientApp: one client's local DARTS search per round (Message API).

The composition root of the client: it converts Messages to the tensors :func:`fednas.federation.run_client_round`
takes, hands the chosen defenses their plug points (the α step, the mods around the app, a message only a defense
speaks) and writes the evaluation-only log of the batches it used (scoring only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from app.config import parse_app
from defenses.config import DefenseConfig
from defenses.mods import ClientAppCallable, chain
from fednas.config import AppConfig
from fednas.evaluation_log import write_alpha_batches
from fednas.federation import DataChoice, run_client_round
from fednas.records import from_array_record, to_array_record, to_metric_record
from fednas.run import run_path
from fednas.schema import parse_config, pick
from fednas.search import LocalSearchConfig

LOCAL_THETA = "archleak-local-theta"


def _app(context: Context, overrides: Mapping[str, Any] | None) -> AppConfig:
    return parse_app({**context.run_config, **(overrides or {})})


def defense_mod(overrides: Mapping[str, Any] | None = None
                ) -> Callable[[Message, Context, ClientAppCallable], Message]:
    """The one mod the ClientApp always carries: it reads the run config at each message (defenses are chosen per
    run, mods are fixed when the app is built) and runs the chosen defenses' mods around the app."""

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        defense = _app(ctxt, overrides).section("defense", DefenseConfig)
        mods = [m for d in defense.chosen() if d.client_mod is not None and (m := d.client_mod(defense, msg))]
        return chain(mods, call_next)(msg, ctxt)

    return mod


def build_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; ``overrides`` replace run-config values (for in-process simulations and tests)."""
    client = ClientApp(mods=[defense_mod(overrides)])

    def local_round(received: dict[str, Any], round_cfg: dict[str, Any], context: Context
                    ) -> tuple[dict[str, Any], dict[str, float]]:
        """One local search from the broadcast state and round config; (reply state, metrics)."""
        app = _app(context, overrides)
        cfg, defense = app.federation, app.section("defense", DefenseConfig)
        search_cfg = parse_config(LocalSearchConfig, pick(round_cfg, LocalSearchConfig))
        choice = DataChoice(str(round_cfg["dataset"]), Path(str(round_cfg["data-root"])), "server")
        local = context.state.array_records.get(LOCAL_THETA)
        partition, partitions = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
        result = run_client_round(cfg, search_cfg, int(round_cfg["server-round"]), choice, partition, partitions,
                                  received, from_array_record(local) if local else None,
                                  alpha_step_for=defense.alpha_step)
        if result.local_theta:
            context.state[LOCAL_THETA] = to_array_record(result.local_theta)
        write_alpha_batches(run_path(cfg, context.run_id), int(round_cfg["server-round"]), context.node_id,
                            partition, result.alpha_batches, partitions, result.theta_batches)
        return result.state, result.metrics

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        app = _app(context, overrides)
        for d in app.section("defense", DefenseConfig).chosen():   # a message only a defense speaks (SecAgg+)
            if d.client_train is not None and (reply := d.client_train(
                    msg, lambda received, config: local_round(received, config, context), app.federation)):
                return reply
        state, metrics = local_round(from_array_record(msg.content["arrays"]), dict(msg.content["config"]), context)
        reply = RecordDict({"arrays": to_array_record(state), "metrics": to_metric_record(metrics)})
        return Message(reply, reply_to=msg)

    return client


app = build_client_app()
