"""The supernet's state as flat named tensors: ``alpha:<group>`` and ``theta:<state_dict key>``.

A search method may add its own entries (:data:`EXTRA_PREFIXES`); the supernet's functions pass them by.
This is the payload that travels between server and clients (one ArrayRecord, distinct names) and
the content of checkpoints. BatchNorm's ``num_batches_tracked`` counters stay local (an integer
counter has no meaningful average and does not affect the forward pass with a fixed momentum).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fednas.supernet import SuperNet

ALPHA_PREFIX = "alpha:"
THETA_PREFIX = "theta:"
# a search method's own tensors (fednas.methods): ENAS's controller, SMASH's hypernetwork and candidate scores
EXTRA_PREFIXES = ("ctrl:", "hyper:", "rank:")


def split_extra(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the supernet's α and θ entries, the search method's own entries)."""
    extra = {k: v for k, v in state.items() if k.startswith(EXTRA_PREFIXES)}
    return {k: v for k, v in state.items() if k not in extra}, extra


def unprefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _theta_keys(model: SuperNet) -> list[str]:
    return [k for k in model.state_dict()
            if not k.startswith("alphas.") and not k.endswith("num_batches_tracked")]


def export_state(model: SuperNet, weights: bool = True) -> dict[str, torch.Tensor]:
    """CPU copies of α (always) and θ (when ``weights``)."""
    out = {ALPHA_PREFIX + g: a.detach().cpu().clone() for g, a in model.alphas.items()}
    if weights:
        sd = model.state_dict()
        out.update({THETA_PREFIX + k: sd[k].detach().cpu().clone() for k in _theta_keys(model)})
    return out


def split_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(α by group, θ by state_dict key); a search method's own entries are left out; raises on any other name."""
    alphas, theta = {}, {}
    for name, tensor in state.items():
        if name.startswith(EXTRA_PREFIXES):
            continue
        if name.startswith(ALPHA_PREFIX):
            alphas[name[len(ALPHA_PREFIX):]] = tensor
        elif name.startswith(THETA_PREFIX):
            theta[name[len(THETA_PREFIX):]] = tensor
        else:
            raise ValueError(f"state entry {name!r} is neither {ALPHA_PREFIX}* nor {THETA_PREFIX}*")
    return alphas, theta


def import_state(model: SuperNet, state: Mapping[str, torch.Tensor]) -> None:
    """Load α (every group required) and θ (all of it, or none) into ``model`` in place."""
    alphas, theta = split_state(state)
    if set(alphas) != set(model.alphas):
        raise ValueError(f"α groups {sorted(alphas)} do not match the model's {sorted(model.alphas)}")
    keys = _theta_keys(model)
    if theta and set(theta) != set(keys):
        missing, extra = sorted(set(keys) - set(theta)), sorted(set(theta) - set(keys))
        raise ValueError(f"θ does not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    sd = model.state_dict()
    for name, value, target in [*((f"{ALPHA_PREFIX}{g}", a, model.alphas[g]) for g, a in alphas.items()),
                                *((f"{THETA_PREFIX}{k}", v, sd[k]) for k, v in theta.items())]:
        if value.numel() != target.numel():
            raise ValueError(f"state entry {name!r} has shape {list(value.shape)}; the model needs "
                             f"{list(target.shape)} (a checkpoint of another search space?)")
    with torch.no_grad():
        for g, a in alphas.items():
            model.alphas[g].copy_(a.reshape(model.alphas[g].shape))
        for k, v in theta.items():
            sd[k].copy_(v.reshape(sd[k].shape))


def alpha_softmax(state: Mapping[str, torch.Tensor]) -> dict[str, list[list[float]]]:
    """softmax(α) per group as nested lists (for JSON)."""
    alphas, _ = split_state({k: v for k, v in state.items() if k.startswith(ALPHA_PREFIX)})
    return {g: torch.softmax(a.double(), dim=-1).tolist() for g, a in alphas.items()}
