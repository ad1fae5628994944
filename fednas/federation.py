"""Federation logic shared by server and clients, without Flower: seeds, data, model, aggregation.

The Flower apps only convert Messages to and from the tensors these functions take and return.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fednas.batches import ImageSet
from fednas.config import RunConfig, resolve_user_path
from fednas.data import ImageData, load_dataset, resolve_data_root, resolve_dataset
from fednas.methods import SEARCH_METHODS, SearchMethod
from fednas.methods.rounds import RoundInputs
from fednas.partition import FederatedSplit, split_federation
from fednas.search import AlphaStepFn, LocalSearchConfig
from fednas.search_space import SupernetSpec
from fednas.seeds import CLIENT_STREAM, DEFENSE_STREAM, MODEL_STREAM, generator
from fednas.state import THETA_PREFIX, export_state, import_state, split_extra, split_state
from fednas.supernet import SuperNet, build_supernet


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class DataChoice:
    """The dataset actually used and where it lives (``auto`` resolved once, on the server)."""

    dataset: str
    root: Path
    root_source: str
    warning: str | None = None


def choose_data(cfg: RunConfig) -> DataChoice:
    configured = str(resolve_user_path(cfg.data_root)) if cfg.data_root else ""
    root, source = resolve_data_root(configured)
    name, warning = resolve_dataset(cfg.dataset, root)
    return DataChoice(name, root, source, warning)


def supernet_spec(cfg: RunConfig, data: ImageData) -> SupernetSpec:
    return SupernetSpec(in_channels=data.channels, image_size=data.image_size,
                        num_classes=data.num_classes, **cfg.knobs())


def make_model(cfg: RunConfig, data: ImageData, device: torch.device) -> SuperNet:
    """The round-0 supernet: identical on the server and every client for the same seed."""
    return build_supernet(supernet_spec(cfg, data), data.mean, data.std,
                          generator(cfg.seed, MODEL_STREAM), device)


def search_method(cfg: RunConfig) -> SearchMethod:
    return SEARCH_METHODS.get(cfg.search_method)


def round_model(cfg: RunConfig, data: ImageData, device: torch.device, server_round: int) -> SuperNet:
    """The supernet a round runs on: the round-0 model's geometry, or the round's own under a method whose
    supernet changes (PDARTS's stages)."""
    spec = search_method(cfg).round_spec(supernet_spec(cfg, data), cfg, server_round, cfg.num_server_rounds)
    return build_supernet(spec, data.mean, data.std, generator(cfg.seed, MODEL_STREAM), device)


@functools.lru_cache(maxsize=8)
def _split(dataset: str, root: str, num_clients: int, scheme: str, concentration: float,
           population_fraction: float, alpha_fraction: float, cap: int, seed: int) -> FederatedSplit:
    labels = load_dataset(dataset, root).train_labels.numpy()
    return split_federation(labels, num_clients, scheme=scheme, concentration=concentration,
                            population_fraction=population_fraction, alpha_fraction=alpha_fraction,
                            samples_per_client=cap, seed=seed)


def federation_split(cfg: RunConfig, dataset: str, root: Path, num_clients: int) -> FederatedSplit:
    """The run's partition (cached per process; a pure function of the config and seed)."""
    return _split(dataset, str(root), num_clients, cfg.partitioning, cfg.dirichlet_alpha,
                  cfg.population_fraction, cfg.alpha_fraction, cfg.samples_per_client, cfg.seed)


def client_data(cfg: RunConfig, dataset: str, root: Path, partition_id: int,
                num_partitions: int) -> tuple[ImageSet, ImageSet]:
    """This client's D^θ and D^α."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is outside [0, {num_partitions})")
    data = load_dataset(dataset, str(root))
    split = federation_split(cfg, dataset, root, num_partitions).clients[partition_id]
    return (ImageSet.take(data.train_images, data.train_labels, split.theta),
            ImageSet.take(data.train_images, data.train_labels, split.alpha))


def aggregate(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted average of named tensors, accumulated in float64 in the given order."""
    if not states or len(states) != len(weights):
        raise ValueError("aggregate needs one weight per state and at least one state")
    total = float(sum(weights))
    out: dict[str, torch.Tensor] = {}
    for name in states[0]:
        acc = torch.zeros(states[0][name].shape, dtype=torch.float64)
        for state, w in zip(states, weights, strict=True):
            acc += state[name].to(torch.float64) * (w / total)
        out[name] = acc.to(states[0][name].dtype)
    return out


@dataclass
class ClientRound:
    """What a client sends back after its local search, plus evaluation-only facts."""

    state: dict[str, torch.Tensor]
    metrics: dict[str, float]
    alpha_batches: list[tuple[int, ...]] = field(default_factory=list)
    theta_batches: list[tuple[int, ...]] = field(default_factory=list)
    local_theta: dict[str, torch.Tensor] = field(default_factory=dict)


def run_client_round(cfg: RunConfig, search_cfg: LocalSearchConfig, server_round: int, choice: DataChoice,
                     partition_id: int, num_partitions: int, received: Mapping[str, torch.Tensor],
                     local_theta: Mapping[str, torch.Tensor] | None = None,
                     alpha_step_for: Callable[[torch.Generator], AlphaStepFn | None] | None = None) -> ClientRound:
    """One client's round: load the broadcast (or its own θ), search locally, export the reply.
    ``alpha_step_for`` builds the defended α step from a generator of its own stream."""
    device = resolve_device(cfg.device)
    data = load_dataset(choice.dataset, str(choice.root))
    method = search_method(cfg)
    model = round_model(cfg, data, device, server_round)
    core, extra = split_extra(received)
    _, broadcast_theta = split_state(core)
    state = dict(core)
    if not broadcast_theta and local_theta:
        state.update({THETA_PREFIX + k: v for k, v in local_theta.items()})
    import_state(model, state)
    theta_set, alpha_set = client_data(cfg, choice.dataset, choice.root, partition_id, num_partitions)
    gen = generator(cfg.seed, CLIENT_STREAM, server_round, partition_id)
    # a method without α steps has nothing to defend there (the server refuses the α-step defenses for it)
    step = (alpha_step_for(generator(cfg.seed, DEFENSE_STREAM, server_round, partition_id))
            if alpha_step_for and method.trains_alpha else None)
    out = method.client_round(RoundInputs(cfg, search_cfg, cfg.seed, server_round, cfg.num_server_rounds, model,
                                          extra, theta_set, alpha_set, gen, step))
    result = out.result
    metrics: dict[str, float] = {"num-examples": float(len(theta_set) + len(alpha_set)),
                                 "alpha-samples": float(len(alpha_set)),
                                 "partition-id": float(partition_id), **result.metrics(), **out.metrics}
    full = export_state(model, weights=True)
    reply = {**(full if cfg.share_weights else export_state(model, weights=False)), **out.extra}
    _, theta = split_state(full)
    return ClientRound(reply, metrics, result.alpha_batches, result.theta_batches,
                       {} if cfg.share_weights else theta)


def describe_choice(choice: DataChoice) -> dict[str, Any]:
    return {"dataset": choice.dataset, "data_root": str(choice.root), "data_root_source": choice.root_source}
