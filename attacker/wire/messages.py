"""Reading a Flower message's content as the eavesdropper stores it: serialized arrays (θ unpacked from its wire
format), the ConfigRecord's values and the MetricRecord's numbers. Shared by the simulation tap and the proxy's
Fleet-API decoder, so both produce the same capture records."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from flwr.app import RecordDict

from fednas.records import unpack_state

RawArrays = dict[str, bytes]


def raw_arrays(content: RecordDict) -> RawArrays:
    """References to the serialized arrays of every ArrayRecord (no copy)."""
    return {name: arr.data for record in content.array_records.values() for name, arr in record.items()}


def decode_arrays(raw: RawArrays) -> dict[str, torch.Tensor]:
    """Serialized arrays -> named tensors, θ unpacked from its wire format (``fednas.records``)."""
    return unpack_state({k: torch.from_numpy(np.load(io.BytesIO(v), allow_pickle=False)) for k, v in raw.items()})


def config_of(content: RecordDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for record in content.config_records.values():
        out.update({k: v for k, v in record.items() if not isinstance(v, bytes)})
    return out


def metrics_of(content: RecordDict) -> dict[str, float]:
    out: dict[str, float] = {}
    for record in content.metric_records.values():
        out.update({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
    return out
