"""FedAvg for federated DARTS: seeded client sampling, absolute round numbers, order-independent averaging.

Flower's FedAvg samples with the global ``random`` module and sums replies in arrival order in float32.
Here sampling is seeded from the run seed and replies are averaged in partition order in float64, so
the same seed gives the same global model whatever the arrival order (and whether a tap is present).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fednas.federation import aggregate
from fednas.records import from_array_record, to_array_record, to_config_record, to_metric_record
from fednas.seeds import SAMPLING_STREAM, derive_seed

DROPPED_METRICS = ("num-examples", "partition-id")


def _numbers(record: MetricRecord) -> dict[str, float]:
    """A client's metrics as floats (every metric the clients send is a number)."""
    out = {}
    for key, value in record.items():
        if not isinstance(value, (int, float)):
            raise TypeError(f"metric {key!r} is {type(value).__name__}, expected a number")
        out[key] = float(value)
    return out


class FedDartsAvg(FedAvg):
    """Averages θ and α (one ArrayRecord) weighted by ``num-examples``."""

    def __init__(self, *, seed: int, round_config: Callable[[int], dict[str, Any]], round_offset: int = 0,
                 fraction_train: float = 1.0, min_nodes: int = 2, node_wait_s: float = 600.0) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=0.0, min_train_nodes=min_nodes,
                         min_available_nodes=min_nodes)
        self.seed = seed
        self.round_config = round_config
        self.round_offset = round_offset
        self.node_wait_s = node_wait_s
        self.last_metrics: dict[str, float] = {}
        self.last_client_metrics: list[dict[str, float]] = []   # per client, by partition-id
        self.last_clients = 0

    def sample(self, grid: Grid, absolute_round: int) -> list[int]:
        deadline = time.monotonic() + self.node_wait_s
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(nodes)} of {self.min_available_nodes} clients connected")
            log(INFO, "waiting for clients: %d of %d connected", len(nodes), self.min_available_nodes)
            time.sleep(1.0)
        k = min(len(nodes), max(int(len(nodes) * self.fraction_train), self.min_train_nodes))
        rng = random.Random(derive_seed(self.seed, SAMPLING_STREAM, absolute_round))
        return sorted(rng.sample(nodes, k))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        absolute = server_round + self.round_offset
        # the given config first: strategy wrappers (central DP) put their settings there
        record = RecordDict({self.arrayrecord_key: arrays,
                             self.configrecord_key: to_config_record({**dict(config),
                                                                      **self.round_config(absolute)})})
        return self._construct_messages(record, self.sample(grid, absolute), MessageType.TRAIN)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, errors = self._check_and_log_replies(list(replies), is_train=True)
        if errors:
            log(WARNING, "%d client(s) failed this round; averaging the %d that replied", len(errors), len(valid))
        if not valid:
            self.last_metrics, self.last_clients, self.last_client_metrics = {}, 0, []
            return None, None
        rows = [(_numbers(m.content.metric_records["metrics"]), m.content.array_records[self.arrayrecord_key])
                for m in valid]
        rows.sort(key=lambda row: row[0]["partition-id"])       # partition order: arrival order must not matter
        weights = [m["num-examples"] for m, _ in rows]
        states = [from_array_record(arrays) for _, arrays in rows]
        metrics = {k: sum(m[k] * w for (m, _), w in zip(rows, weights, strict=True))
                   / sum(weights) for k in rows[0][0] if k not in DROPPED_METRICS}
        self.last_metrics, self.last_clients = metrics, len(valid)
        self.last_client_metrics = [m for m, _ in rows]
        return to_array_record(aggregate(states, weights)), to_metric_record(metrics)
