"""What any attacker knows without tapping: the public search space, the data's normalisation and public images.

The public images come from the run's held-back population (no client trained on them): the attacker's class
means, label templates and learned prior are built from them. :func:`public_knowledge` takes the population
slice of a dataset and nothing else of it; :func:`attacker_theta` is the paper's attacker's own weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attacker.reconstruct.model import uniform_weights_
from fednas.config import RunConfig
from fednas.data import ImageData
from fednas.federation import supernet_spec
from fednas.partition import population_indices
from fednas.search_space import SupernetSpec
from fednas.seeds import ATTACK_STREAM, generator
from fednas.state import export_state, split_state
from fednas.supernet import SuperNet


@dataclass(frozen=True)
class PublicKnowledge:
    """What any attacker knows without tapping: the search space and public data."""

    spec: SupernetSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    aux_images: torch.Tensor          # float [N, C, H, W] in [0, 1], from the held-back population
    aux_labels: torch.Tensor
    seed: int

    def class_means(self) -> torch.Tensor:
        """Mean public image per class, [num_classes, C, H, W]."""
        return torch.stack([self.aux_images[self.aux_labels == c].mean(0)
                            for c in range(self.spec.num_classes)])


def public_knowledge(cfg: RunConfig, data: ImageData, aux_samples: int) -> PublicKnowledge:
    """The population split (held back from every client) is the attacker's public data."""
    ids = population_indices(len(data.train_labels), cfg.population_fraction, cfg.seed)[:aux_samples]
    if len(ids) == 0:
        raise ValueError("the run holds back no population data (population-fraction = 0): the attacker has no "
                         "public images for label templates, class means or a prior")
    index = torch.as_tensor(ids)
    return PublicKnowledge(supernet_spec(cfg, data), data.mean, data.std,
                           data.train_images[index].float() / 255, data.train_labels[index], cfg.seed)


def attacker_theta(public: PublicKnowledge) -> dict[str, torch.Tensor]:
    """θ_r ~ U(-0.25, 0.25) on the public search space (the paper's architecture-only attacker)."""
    model = SuperNet(public.spec, public.mean, public.std)
    uniform_weights_(model, -0.25, 0.25, generator(public.seed, ATTACK_STREAM))
    _, theta = split_state(export_state(model))
    return theta
