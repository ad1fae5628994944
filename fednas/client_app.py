"""Flower ClientApp: one client's local DARTS search per round (Message API)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from defenses.config import DefenseConfig
from defenses.mods import defense_mod
from fednas.config import parse_app_config, parse_config
from fednas.evaluation_log import write_alpha_batches
from fednas.federation import DataChoice, run_client_round
from fednas.records import from_array_record, to_array_record, to_metric_record
from fednas.run import run_folder
from fednas.search import LocalSearchConfig
from fednas.secagg import is_legacy_fit, legacy_reply, run_wire_names

LOCAL_THETA = "archleak-local-theta"
SEARCH_KEYS = frozenset(f.alias or k for k, f in LocalSearchConfig.model_fields.items())


def build_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; ``overrides`` replace run-config values (for in-process simulations and tests)."""
    client = ClientApp(mods=[defense_mod(overrides)])

    def local_round(received: dict, round_cfg: dict, context: Context) -> tuple[dict, dict[str, float]]:
        """One local search from the broadcast state and round config; (reply state, metrics)."""
        app = parse_app_config({**context.run_config, **(overrides or {})})
        cfg, defense = app.federation, app.section("defense", DefenseConfig)
        search_cfg = parse_config(LocalSearchConfig, {k: v for k, v in round_cfg.items() if k in SEARCH_KEYS})
        choice = DataChoice(str(round_cfg["dataset"]), Path(str(round_cfg["data-root"])), "server")
        local = context.state.array_records.get(LOCAL_THETA)
        result = run_client_round(
            cfg, search_cfg, int(round_cfg["server-round"]), choice,
            int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]),
            received, from_array_record(local) if local else None, alpha_step_for=defense.alpha_step)
        if result.local_theta:
            context.state[LOCAL_THETA] = to_array_record(result.local_theta)
        write_alpha_batches(run_folder(cfg, context.run_id), int(round_cfg["server-round"]), context.node_id,
                            int(context.node_config["partition-id"]), result.alpha_batches,
                            int(context.node_config["num-partitions"]), result.theta_batches)
        return result.state, result.metrics

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        if is_legacy_fit(msg):  # SecAgg+ runs on Flower's legacy path (fednas/secagg.py)
            cfg = parse_app_config({**context.run_config, **(overrides or {})}).federation
            config = msg.content["fitins.config"]
            names = run_wire_names(cfg, str(config["dataset"]), str(config["data-root"]))
            return legacy_reply(msg, lambda received, config: local_round(received, config, context), names)
        state, metrics = local_round(from_array_record(msg.content["arrays"]), dict(msg.content["config"]), context)
        reply = RecordDict({"arrays": to_array_record(state), "metrics": to_metric_record(metrics)})
        return Message(reply, reply_to=msg)

    return client


app = build_client_app()
