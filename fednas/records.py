"""Conversions between Flower records and the core's tensors and dicts (the only Flower glue besides the apps)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord


def to_array_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Named tensors -> one ArrayRecord (α and θ under distinct ``alpha:``/``theta:`` names)."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def from_array_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """ArrayRecord -> named tensors (copies, so the record can be released)."""
    return {k: t.clone() for k, t in record.to_torch_state_dict().items()}


def to_metric_record(metrics: Mapping[str, float]) -> MetricRecord:
    return MetricRecord({k: float(v) for k, v in metrics.items()})


def to_config_record(config: Mapping[str, object]) -> ConfigRecord:
    return ConfigRecord(dict(config))
