"""Deterministic federated partitions: population hold-back, IID or Dirichlet shares, D^θ / D^α splits.

All indices refer to the dataset's train split. The population split is never given to a client: it is
the attacker's public auxiliary/shadow data and the non-member pool for membership inference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fednas.registry import Registry
from fednas.seeds import MEMBERSHIP_STREAM, PARTITION_STREAM, numpy_rng


@dataclass(frozen=True)
class ClientSplit:
    """One client's private data: disjoint index arrays into the train split."""

    theta: np.ndarray
    alpha: np.ndarray

    @property
    def size(self) -> int:
        return len(self.theta) + len(self.alpha)


@dataclass(frozen=True)
class FederatedSplit:
    population: np.ndarray
    clients: tuple[ClientSplit, ...]


Partitioner = Callable[[np.ndarray, np.ndarray, int, float, np.random.Generator], list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partitioning")


@PARTITIONERS.register("iid")
def iid_shares(indices: np.ndarray, labels: np.ndarray, n: int, concentration: float,
               rng: np.random.Generator) -> list[np.ndarray]:
    """Uniformly random, equally sized shares."""
    return [np.sort(s) for s in np.array_split(rng.permutation(indices), n)]


@PARTITIONERS.register("dirichlet")
def dirichlet_shares(indices: np.ndarray, labels: np.ndarray, n: int, concentration: float,
                     rng: np.random.Generator, min_size: int = 2, attempts: int = 100) -> list[np.ndarray]:
    """Label-skewed shares: each class is split across clients by Dirichlet(concentration) proportions."""
    classes = np.unique(labels[indices])
    for _ in range(attempts):
        shares: list[list[np.ndarray]] = [[] for _ in range(n)]
        for c in classes:
            members = rng.permutation(indices[labels[indices] == c])
            cuts = (np.cumsum(rng.dirichlet(np.full(n, concentration)))[:-1] * len(members)).astype(int)
            for k, part in enumerate(np.split(members, cuts)):
                shares[k].append(part)
        merged = [np.sort(np.concatenate(s)) for s in shares]
        if min(len(s) for s in merged) >= min_size:
            return merged
    raise ValueError(f"dirichlet partitioning with concentration {concentration} left a client with "
                     f"fewer than {min_size} samples after {attempts} attempts; raise 'dirichlet-alpha' "
                     "or lower the number of clients")


def population_indices(num_samples: int, population_fraction: float, seed: int) -> np.ndarray:
    """The held-back population (public data): the same indices :func:`split_federation` holds back."""
    order = numpy_rng(seed, PARTITION_STREAM).permutation(num_samples)
    return np.sort(order[:round(population_fraction * num_samples)])


def population_halves(population: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(public half, held-out half) of the population: disjoint, sorted, deterministic. The public half is what an
    attacker (AMIA's shadows) or a defender (the DMP reference set) may use; the other half supplies the
    non-members of membership inference."""
    order = numpy_rng(seed, MEMBERSHIP_STREAM).permutation(np.asarray(population))
    half = len(order) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def split_federation(labels: np.ndarray, num_clients: int, *, scheme: str = "iid",
                     concentration: float = 0.5, population_fraction: float = 0.2,
                     alpha_fraction: float = 0.5, samples_per_client: int = 0,
                     seed: int = 0) -> FederatedSplit:
    """Split the train indices into a population hold-back and ``num_clients`` private shares.

    Each share is split into disjoint D^θ (weights) and D^α (architecture) parts, with
    ``alpha_fraction`` of it going to D^α. ``samples_per_client`` > 0 caps each share.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if not 0.0 <= population_fraction < 1.0:
        raise ValueError(f"population_fraction must be in [0, 1), got {population_fraction}")
    if not 0.0 < alpha_fraction < 1.0:
        raise ValueError(f"alpha_fraction must be in (0, 1), got {alpha_fraction}")
    labels = np.asarray(labels)
    rng = numpy_rng(seed, PARTITION_STREAM)
    order = rng.permutation(len(labels))
    n_pop = round(population_fraction * len(labels))
    population, private = np.sort(order[:n_pop]), np.sort(order[n_pop:])
    shares = PARTITIONERS.get(scheme)(private, labels, num_clients, concentration, rng)
    clients = []
    for share in shares:
        share = rng.permutation(share)
        if samples_per_client > 0:
            share = share[:samples_per_client]
        n_alpha = max(1, round(alpha_fraction * len(share)))
        if len(share) - n_alpha < 1:
            raise ValueError(f"a client share of {len(share)} samples cannot be split into D^θ and D^α")
        clients.append(ClientSplit(theta=np.sort(share[n_alpha:]), alpha=np.sort(share[:n_alpha])))
    return FederatedSplit(population=population, clients=tuple(clients))
