"""Captures made without Flower: a client's real local α step on chosen images, wrapped as a WireView.

Used by the ADRA benchmark and the tests: the images go through :func:`fednas.search.local_search`
exactly as a client's D^α batch would, and the result is what a tap would have captured.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from attacker.wire.capture import WireView, content_hash
from fednas.batches import ImageSet
from fednas.search import AlphaStepFn, LocalSearchConfig, LocalSearchResult, local_search
from fednas.state import export_state, import_state
from fednas.supernet import SuperNet


def client_capture(model: SuperNet, images: torch.Tensor, labels: torch.Tensor, search: LocalSearchConfig,
                   capture_id: str, server_round: int = 1, seed: int = 0,
                   alpha_step: AlphaStepFn | None = None,
                   theta_data: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[WireView, LocalSearchResult]:
    """Run the client's α steps on ``images`` (uint8) and return (what the wire showed, the search result with
    the true batches as positions in ``images``). ``alpha_step``: a defended α step
    (``defenses.alpha.AlphaStep``) instead of the plain one. ``theta_data`` (uint8 images, labels): the
    client's D^θ, on which it also takes ``search.theta_steps`` θ steps (pass the α images for a client that
    trains both on one batch); without it the client takes no θ step."""
    broadcast = export_state(model, weights=True)
    client = type(model)(model.spec, model.input_mean.flatten().tolist(), model.input_std.flatten().tolist())
    import_state(client, broadcast)
    data = ImageSet(images, labels, np.arange(len(labels)))
    theta_set = data if theta_data is None else ImageSet(theta_data[0], theta_data[1], np.arange(len(theta_data[1])))
    cfg = search if theta_data is not None else search.model_copy(update={"theta_steps": 0, "theta_epochs": 0})
    result = local_search(client, theta_set, data, cfg, torch.Generator().manual_seed(seed), alpha_step=alpha_step)
    reply = export_state(client, weights=True)
    config: Mapping[str, object] = {**search.model_dump(by_alias=True), "server-round": server_round}
    view = WireView(capture_id, server_round, 0, content_hash(broadcast), broadcast, reply, config,
                    result.metrics())
    return view, result
