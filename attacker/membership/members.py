"""Who is a member, and what the membership attacker holds.

The run's held-back population is split once, deterministically, into two halves: the attacker's labelled
public data (shadow training) and the non-member pool for scoring. Ground truth (:func:`membership_sets`)
is read from the run's partition and evaluation-only log and reaches only the scoring code; the attack
receives :func:`attacker_pool` and the query images, never the membership labels.

Member kinds, reported separately so that architecture-level leakage is told apart from weight-level leakage:
  alpha       every sample of the participating clients' D^α splits (the paper's members)
  alpha-used  the D^α samples that were actually in an α batch (from the evaluation-only log)
  theta       the D^θ samples (weights' data: the classic MIA signal, as a reference)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fednas.batches import ImageSet
from fednas.data import DATASETS, ImageData, load_dataset
from fednas.evaluation_log import read_all_alpha_batches
from fednas.partition import population_halves, population_indices, split_federation
from fednas.seeds import MEMBERSHIP_STREAM, numpy_rng

MEMBER_KINDS = ("alpha", "alpha-used", "theta")
# the dataset the (1 − η) share of the attacker's data comes from, when not given
OTHER_DATASET = {"mnist": "fashion-mnist", "fashion-mnist": "mnist", "digits": "fashion-mnist",
                 "cifar10": "cifar100", "cifar10-subset": "cifar100", "cifar100": "cifar10"}


class EmptyMemberSet(ValueError):
    """A member kind has no samples in this run."""


@dataclass(frozen=True)
class RunFacts:
    """What the scorer reads from a run folder: config, dataset, partition size, who trained."""

    config: dict
    dataset: str
    data_root: str
    num_partitions: int
    partitions: tuple[int, ...]
    used_alpha: np.ndarray


def run_facts(run_dir: Path, num_partitions: int = 0) -> RunFacts:
    meta = json.loads((Path(run_dir) / "config.json").read_text())
    records = read_all_alpha_batches(run_dir)
    counts = {int(r["num_partitions"]) for r in records if "num_partitions" in r}
    if num_partitions <= 0:
        if len(counts) != 1:
            raise ValueError(f"{run_dir}: the evaluation log does not say how many clients the run had; "
                             "pass the number of clients (--num-clients)")
        num_partitions = counts.pop()
    partitions = tuple(sorted({int(r["partition_id"]) for r in records})) or tuple(range(num_partitions))
    used = np.unique(np.array([i for r in records for b in r["batches"] for i in b], dtype=np.int64))
    return RunFacts(meta["config"], meta["dataset"], meta["data_root"], num_partitions, partitions, used)


@dataclass(frozen=True)
class QuerySet:
    """Scoring-side ground truth for one member kind: balanced members and non-members (train-split ids)."""

    kind: str
    ids: np.ndarray
    member: np.ndarray


def member_ids(facts: RunFacts, labels: np.ndarray, clients: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """Train-split ids of each member kind, for the chosen clients (default: every client that trained)."""
    c = facts.config
    split = split_federation(labels, facts.num_partitions, scheme=c["partitioning"],
                             concentration=c["dirichlet-alpha"], population_fraction=c["population-fraction"],
                             alpha_fraction=c["alpha-fraction"], samples_per_client=c["samples-per-client"],
                             seed=c["seed"])
    chosen = clients or facts.partitions
    bad = [k for k in chosen if not 0 <= k < facts.num_partitions]
    if bad:
        raise ValueError(f"clients {bad} are outside the run's partitions 0..{facts.num_partitions - 1}")
    alpha = np.concatenate([split.clients[k].alpha for k in chosen])
    theta = np.concatenate([split.clients[k].theta for k in chosen])
    return {"alpha": np.sort(alpha), "alpha-used": np.intersect1d(alpha, facts.used_alpha),
            "theta": np.sort(theta)}


def membership_sets(facts: RunFacts, labels: np.ndarray, max_per_side: int, seed: int,
                    clients: tuple[int, ...] = (), kinds: tuple[str, ...] = MEMBER_KINDS,
                    members: dict[str, np.ndarray] | None = None) -> dict[str, QuerySet]:
    """Balanced query sets per member kind; non-members come from the population's non-member half.
    ``members``: the result of :func:`member_ids` when the caller already has it."""
    members = members if members is not None else member_ids(facts, labels, clients)
    population = population_indices(len(labels), facts.config["population-fraction"], facts.config["seed"])
    _, nonmembers = population_halves(population, seed)
    out = {}
    for j, kind in enumerate(kinds):
        if kind not in members:
            raise ValueError(f"unknown member kind {kind!r}; known: {', '.join(MEMBER_KINDS)}")
        n = min(len(members[kind]), len(nonmembers), max_per_side)
        if n == 0:
            raise EmptyMemberSet(f"member kind {kind!r} has no samples in this run "
                                 f"({len(members[kind])} members, {len(nonmembers)} non-members)")
        rng = numpy_rng(seed, MEMBERSHIP_STREAM, 1, j)
        pos = np.sort(rng.choice(members[kind], n, replace=False))
        neg = np.sort(rng.choice(nonmembers, n, replace=False))
        out[kind] = QuerySet(kind, np.r_[pos, neg], np.r_[np.ones(n, bool), np.zeros(n, bool)])
    return out


def conform(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 images resized (bilinear, antialiased) and converted to ``channels`` (grey = channel mean)."""
    x = images.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1)
    return x.round().clamp(0, 255).to(torch.uint8).contiguous()


def attacker_pool(data: ImageData, population_fraction: float, run_seed: int, seed: int, eta: float,
                  other: str = "", data_root: str = "") -> ImageSet:
    """The attacker's labelled data: η of it from the public population half, 1 − η from another dataset.

    Ids of samples from the other dataset are negative (−1 − index), so they can never collide with the
    target dataset's ids. Raises ValueError when η is outside (0, 1] or the other dataset is unavailable.
    """
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"eta must be in (0, 1], got {eta}")
    public, _ = population_halves(population_indices(len(data.train_labels), population_fraction, run_seed), seed)
    own = ImageSet.take(data.train_images, data.train_labels, public)
    if eta == 1.0:
        return own
    n_other = round((1 - eta) * len(public))
    other = other or OTHER_DATASET.get(data.name, "")
    info = DATASETS.get(other) if other else None
    if info is None or not info.present(Path(data_root)):
        found = [n for n in DATASETS if DATASETS.get(n).present(Path(data_root)) and n != data.name]
        raise ValueError(f"eta < 1 needs another dataset; {other or 'none'!r} is not under {data_root}. "
                         f"Set 'eta-dataset' to one that is: {', '.join(found) or 'none found'}")
    extra = load_dataset(other, data_root, False)
    rng = numpy_rng(seed, MEMBERSHIP_STREAM, 2)
    n_pick = min(n_other, len(extra.train_labels))  # a small other dataset shrinks the pool, keeping η exact
    n_keep = len(public) - n_other if n_pick == n_other else round(n_pick * eta / (1 - eta))
    pick = np.sort(rng.choice(len(extra.train_labels), n_pick, replace=False))
    keep = np.sort(rng.choice(public, n_keep, replace=False))
    images = torch.cat([data.train_images[torch.as_tensor(keep)],
                        conform(extra.train_images[torch.as_tensor(pick)], data.channels, data.image_size)])
    labels = torch.cat([data.train_labels[torch.as_tensor(keep)],
                        extra.train_labels[torch.as_tensor(pick)] % data.num_classes])
    return ImageSet(images, labels, np.r_[keep, -1 - pick])
