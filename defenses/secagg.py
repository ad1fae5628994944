"""Federated DARTS under SecAgg+: Flower's legacy strategy path, which is the only one SecAgg+ runs on in 1.42.

``defenses = "secagg-plus"`` switches the ServerApp to ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow)``
around a legacy ``FedAvg``. Each client's ``secaggplus_mod`` masks its quantised, weighted update, so the
server, and anyone on the wire, sees only masked vectors; the server learns nothing but the sum.

What this path costs compared with the Message-API path:
- The state travels as a legacy ``Parameters`` list. Its order is fixed by the public model (:func:`wire_names`).
  θ stays packed, so a message still carries a handful of arrays.
- Updates are clipped to ±``secagg-clip`` and quantised (Flower's defaults: 2^22 levels), so the average is
  exact only to about clip/2^22 per coordinate.
- Clients are averaged with equal weights. Flower scales each update by num_examples/max_weight before it
  quantises, so a weighted average would lose precision in proportion. With equal shares (IID), as here by
  default, this is the same average as the Message-API path.
- Per-client metrics do not reach the server: ``rounds.jsonl`` has the averaged metrics only, and DP-SGD
  cannot be accounted per client. The combination is refused before training.
- Every round costs four exchanges per client (setup, key sharing, masked vectors, unmasking) instead of one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from fednas.config import RunConfig
from fednas.data import load_dataset
from fednas.federation import make_model
from fednas.records import pack_state, unpack_state
from fednas.run import ServerRun
from fednas.state import export_state
from fednas.supernet import SuperNet

LEGACY_PARAMETERS = "fitins.parameters"
# one local search: (received state, round config) -> (reply state, metrics)
LocalTrain = Callable[[dict[str, torch.Tensor], dict[str, Any]], tuple[dict[str, torch.Tensor], dict[str, float]]]


def wire_names(model: SuperNet, weights: bool) -> list[str]:
    """The order of the legacy parameter list: the packed record's names, as both sides build them."""
    return list(pack_state(export_state(model, weights=weights)))


@functools.lru_cache(maxsize=4)
def run_wire_names(cfg: RunConfig, dataset: str, data_root: str) -> list[str]:
    """:func:`wire_names` of a run's model, built once per process (on the CPU: only its names are used)."""
    model = make_model(cfg, load_dataset(dataset, data_root), torch.device("cpu"))
    return wire_names(model, cfg.share_weights)


def to_parameters(state: Mapping[str, torch.Tensor], names: list[str]) -> Parameters:
    packed = pack_state(state)
    if list(packed) != names:
        raise ValueError("the state does not match the model's wire layout")
    return ndarrays_to_parameters([packed[k].numpy() for k in names])


def from_parameters(parameters: Parameters, names: list[str]) -> dict[str, torch.Tensor]:
    arrays = parameters_to_ndarrays(parameters)
    if len(arrays) != len(names):
        raise ValueError(f"{len(arrays)} arrays on the wire, but the model has {len(names)}")
    return unpack_state({k: torch.from_numpy(np.array(a)) for k, a in zip(names, arrays, strict=True)})


def is_legacy_fit(msg: Message) -> bool:
    return LEGACY_PARAMETERS in msg.content.array_records


def secagg_stage_mod(msg: Message
                     ) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message] | None:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ stage (setup, key sharing, masking, unmasking)."""
    return secaggplus_mod if RECORD_KEY_CONFIGS in msg.content.config_records else None


def legacy_train(msg: Message, train: LocalTrain, cfg: RunConfig) -> Message | None:
    """The ClientApp's answer to SecAgg+'s legacy FitIns (None for any other message): decode, train, reply."""
    if not is_legacy_fit(msg):
        return None
    config = msg.content["fitins.config"]
    names = run_wire_names(cfg, str(config["dataset"]), str(config["data-root"]))
    return legacy_reply(msg, train, names)


def legacy_reply(msg: Message, train: LocalTrain, names: list[str]) -> Message:
    """Answer a legacy FitIns: decode it, train, and reply with a FitRes (what ``secaggplus_mod`` masks)."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    state, metrics = train(from_parameters(fitins.parameters, names), dict(fitins.config))
    fitres = FitRes(Status(Code.OK, "ok"), to_parameters(state, names), 1,  # equal weights: see the docstring
                    {k: float(v) for k, v in metrics.items()})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


def _average(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    total = sum(n for n, _ in results) or 1
    keys = set().union(*(m.keys() for _, m in results)) if results else set()
    return {k: sum(n * float(m.get(k, 0.0)) for n, m in results) / total for k in sorted(keys)}


class LegacyFedDarts(FedAvg):
    """Legacy FedAvg with the run's round config, seeded-free full participation, and the run's records."""

    def __init__(self, run: ServerRun, names: list[str], min_nodes: int) -> None:
        self.run, self.names, self.sampled = run, names, 0
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=min_nodes,
                         min_evaluate_clients=0, min_available_clients=min_nodes,
                         initial_parameters=to_parameters(run.global_state(), names),
                         on_fit_config_fn=lambda r: run.round_config(r + run.start_round),
                         evaluate_fn=self._record, fit_metrics_aggregation_fn=_average)
        self.last_metrics: dict[str, float] = {}

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self.sampled = len(instructions)
        return instructions

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        self.last_metrics = {k: float(v) for k, v in metrics.items()}
        return parameters, metrics

    def _record(self, server_round: int, arrays: list[np.ndarray], config: dict[str, Scalar]
                ) -> tuple[float, dict[str, Scalar]] | None:
        if server_round == 0:
            return None
        state = from_parameters(ndarrays_to_parameters(arrays), self.names)
        rec = self.run.complete_round(server_round + self.run.start_round, state, self.last_metrics, self.sampled,
                                      {"secure_aggregation": "secagg+"})
        return float(rec["test_loss"] or 0.0), {"test-accuracy": rec["test_accuracy"] or 0.0}


def run_secagg(grid: Grid, context: Context, run: ServerRun, min_nodes: int, clip: float) -> None:
    """All remaining rounds through SecAgg+ (every sampled client's share is needed to unmask: threshold n)."""
    names = wire_names(run.model, run.cfg.share_weights)
    strategy = LegacyFedDarts(run, names, min_nodes)
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=run.remaining_rounds), strategy=strategy)
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=1.0, max_weight=1.0, clipping_range=clip)
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
