"""Conversions between Flower records and the core's tensors and dicts (the only Flower glue besides the apps).

Wire format of the model state: α tensors travel under their own names (``alpha:<group>``); every float32 θ
tensor is concatenated into one flat array ``theta:*packed`` whose layout (names and shapes, JSON as uint8)
travels beside it as ``theta:*layout``. Flower moves each array as its own content-addressed objects, one HTTP
request each in deployment, so a supernet's hundreds of small θ tensors would cost hundreds of round trips per
message; packed, a message is a handful of objects. Anything else (other dtypes) travels unpacked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

PACKED = "theta:*packed"
LAYOUT = "theta:*layout"


def pack_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Named tensors -> α as is, float32 θ as one flat tensor plus its layout."""
    packable = [k for k, v in state.items() if k.startswith("theta:") and v.dtype == torch.float32]
    out = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in set(packable)}
    if packable:
        out[PACKED] = torch.cat([state[k].detach().cpu().reshape(-1) for k in packable])
        layout = json.dumps([[k, list(state[k].shape)] for k in packable]).encode()
        out[LAYOUT] = torch.from_numpy(np.frombuffer(layout, dtype=np.uint8).copy())
    return out


def unpack_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_state`; tensors without a layout pass through unchanged."""
    if LAYOUT not in tensors:
        return dict(tensors)
    layout = json.loads(bytes(tensors[LAYOUT].numpy().astype(np.uint8)).decode())
    flat = tensors[PACKED]
    sizes = [int(np.prod(shape)) for _, shape in layout]
    if sum(sizes) != flat.numel():
        raise ValueError(f"{PACKED} holds {flat.numel()} values but its layout describes {sum(sizes)}")
    out = {k: v for k, v in tensors.items() if k not in (PACKED, LAYOUT)}
    for (name, shape), part in zip(layout, torch.split(flat, sizes), strict=True):
        out[name] = part.reshape(shape)
    return out


def to_array_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Named tensors -> one ArrayRecord (α and θ under distinct names, θ packed)."""
    return ArrayRecord(pack_state(state))


def from_array_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """ArrayRecord -> named tensors (copies, so the record can be released)."""
    return {k: t.clone() for k, t in unpack_state(record.to_torch_state_dict()).items()}


def to_metric_record(metrics: Mapping[str, float]) -> MetricRecord:
    return MetricRecord({k: float(v) for k, v in metrics.items()})


def to_config_record(config: Mapping[str, object]) -> ConfigRecord:
    return ConfigRecord(dict(config))
