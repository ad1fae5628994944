"""The model a federated search leaves behind, as its owner serves it: the supernet with its final α and θ.

:func:`describe_target` is what a client of the prediction API may know (dataset, classes, input shape);
:func:`load_global_model` rebuilds the model from the run folder's latest checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fednas.config import RunConfig
from fednas.data import ImageData, load_dataset
from fednas.federation import choose_data, round_model
from fednas.run_folder import RunFolder, RunNotFound
from fednas.state import import_state, split_state
from fednas.supernet import SuperNet


def describe_target(run_dir: Path, data_root: str = "") -> tuple[RunConfig, ImageData, dict[str, Any]]:
    """(federation config, dataset, public description) of the run in ``run_dir``; no model is built."""
    folder = RunFolder(run_dir).require("nothing to serve")
    meta = folder.meta()
    cfg = folder.federation(data_root)
    found = folder.checkpoints()
    if not found:
        raise RunNotFound(f"{run_dir} holds no model: no checkpoint under {folder.checkpoint_dir}")
    choice = choose_data(cfg)
    data = load_dataset(choice.dataset, str(choice.root))
    description = {"run_id": str(meta.get("run_id")), "round": found[0][0], "dataset": choice.dataset,
                   "num_classes": data.num_classes, "channels": data.channels, "height": data.image_size,
                   "width": data.image_size, "dtype": "uint8", "model": "supernet with final α"}
    return cfg, data, description


def load_global_model(run_dir: Path, device: torch.device, data_root: str = "",
                      log: Callable[[str], None] = print) -> tuple[SuperNet, dict[str, Any]]:
    """The global model a federated search left in ``run_dir`` (the supernet with its final α and θ), and its
    public description.

    Raises :class:`~fednas.run_folder.RunNotFound` when the folder has no run or no readable checkpoint, and
    ValueError when the checkpoint carries no weights (``share-weights = false``: θ never reached the server) or
    does not fit the run's search space. A damaged newest checkpoint is skipped with a line on ``log``, and the
    line names the round that answers instead.
    """
    cfg, data, description = describe_target(run_dir, data_root)
    try:
        folder = RunFolder(run_dir)
        server_round, tensors, _ = folder.latest_checkpoint(log=log)
    except FileNotFoundError as exc:
        raise RunNotFound(f"{run_dir} holds no model: {exc}") from None
    if not split_state(tensors)[1]:
        raise ValueError(f"the checkpoint of {run_dir} has no weights θ (share-weights = false): "
                         "there is no global model to query")
    newest = folder.checkpoints()[0][0]
    if server_round != newest:
        log(f"archleak: the model of round {server_round} answers (round {newest} is damaged)")
    model = round_model(cfg, data, device, server_round)   # the round's geometry (PDARTS: its stage's depth)
    import_state(model, tensors)
    return model, {**description, "round": server_round}
