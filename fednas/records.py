"""Conversions between Flower records and the federation's tensors and dicts (with ``strategy.py``, the only
Flower glue in fednas; the apps in ``app/`` do the rest).

Wire format of the model state: α tensors travel under their own names (``alpha:<group>``); every float32 θ
tensor is concatenated into one flat array whose name carries its layout: ``theta:*packed:<layout>``, the
names and shapes as JSON, zlib-compressed and base64url-encoded. Every array on the wire is then a float array
that Flower's update-level mods and strategy wrappers (clipping, noise) may treat as numbers. Flower moves each
array as its own content-addressed objects, one HTTP request each in deployment, so a supernet's hundreds of
small θ tensors would cost hundreds of round trips per message; packed, a message is a handful of objects.
Anything else (other dtypes) travels unpacked.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

PACKED = "theta:*packed:"


Layout = list[list[Any]]   # [[name, shape], ...]


def _layout_key(layout: Layout) -> str:
    return PACKED + base64.urlsafe_b64encode(zlib.compress(json.dumps(layout).encode(), 9)).decode()


def _layout_of(key: str) -> Layout:
    try:
        layout: Layout = json.loads(zlib.decompress(base64.urlsafe_b64decode(key[len(PACKED):])))
        return layout
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"the packed θ array's name does not hold a readable layout: {exc}") from None


def pack_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Named tensors -> α as is, float32 θ as one flat tensor named by its layout."""
    packable = [k for k, v in state.items() if k.startswith("theta:") and v.dtype == torch.float32]
    out = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in set(packable)}
    if packable:
        key = _layout_key([[k, list(state[k].shape)] for k in packable])
        out[key] = torch.cat([state[k].detach().cpu().reshape(-1) for k in packable])
    return out


def unpack_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_state`; tensors without a packed array pass through unchanged."""
    keys = [k for k in tensors if k.startswith(PACKED)]
    if not keys:
        return dict(tensors)
    if len(keys) > 1:
        raise ValueError(f"{len(keys)} packed θ arrays in one record; expected one")
    layout, flat = _layout_of(keys[0]), tensors[keys[0]]
    sizes = [int(np.prod(shape)) for _, shape in layout]
    if sum(sizes) != flat.numel():
        raise ValueError(f"the packed θ array holds {flat.numel()} values but its layout describes {sum(sizes)}")
    out = {k: v for k, v in tensors.items() if k != keys[0]}
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


def to_config_record(config: Mapping[str, Any]) -> ConfigRecord:
    return ConfigRecord(dict(config))
