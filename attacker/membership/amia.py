"""AMIA: black-box architectural membership inference with shadow models and an ML-Leaks attack model.

Threat model as a signature: :func:`fit_attack` sees only :class:`~attacker.membership.shadow.PublicKnowledge` (the
attacker's own data and the public search space); :func:`membership_scores` sees only the target's
:class:`~attacker.membership.blackbox.BlackBox` answers for the candidate samples. Membership labels never enter here.

The attack model is a 3-layer MLP on the sorted posterior vector (ML-Leaks), trained with SGD on the
shadows' answers for their members and non-members. ``features`` picks the input: the paper's sorted
posteriors, their logarithm (the same information, but confidences near 1 stay apart), or the
logarithm plus the log-posterior of the sample's true label (the default: label-aware, and the one that
transfers best from a shadow to a target that is trained differently, because the attacker knows each
candidate's label anyway).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from attacker.membership.shadow import SHADOWS, MembershipKnowledge, Shadow, ShadowTraining, StageProgress
from fednas.batches import ImageSet
from fednas.registry import Registry, registered
from fednas.schema import kebab
from fednas.seeds import seeded_init
from fednas.serve import BlackBox

Features = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (posteriors, labels, top_k) -> [N, d]
FEATURES: Registry[Features] = Registry("attack feature set")


def _sorted(posteriors: np.ndarray, top_k: int) -> np.ndarray:
    s = -np.sort(-posteriors.astype(np.float64), axis=1)
    return s[:, :top_k] if top_k > 0 else s


@FEATURES.register("sorted")
def sorted_posterior(posteriors: np.ndarray, labels: np.ndarray, top_k: int) -> np.ndarray:
    return _sorted(posteriors, top_k)


@FEATURES.register("sorted-log")
def sorted_log_posterior(posteriors: np.ndarray, labels: np.ndarray, top_k: int) -> np.ndarray:
    return np.log(np.clip(_sorted(posteriors, top_k), 1e-30, None))


@FEATURES.register("sorted-log+label")
def sorted_log_and_label(posteriors: np.ndarray, labels: np.ndarray, top_k: int) -> np.ndarray:
    true = posteriors[np.arange(len(labels)), labels].astype(np.float64)
    return np.c_[sorted_log_posterior(posteriors, labels, top_k), np.log(np.clip(true, 1e-30, None))]


MIA_ATTACKS = ("ml-leaks", "lira", "lira-online", "rmia")   # ml-leaks here; the others: attacks.REFERENCE_ATTACKS


class AmiaConfig(BaseModel):
    """Every AMIA setting; saved with its results."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=kebab, populate_by_name=True)

    seed: int = Field(0, ge=0, description="drives the population split, shadows, attack model and query sampling")
    attack: str = Field("ml-leaks", description="membership attack: 'ml-leaks' (the paper's: an MLP on sorted "
                                                "posteriors), 'lira' (offline), 'lira-online', 'rmia'")
    references: int = Field(4, ge=2, le=256, description="lira/rmia: reference models; every candidate and population "
                                                         "sample is in the training data of half of them")
    population: int = Field(1000, ge=1, le=100_000, description="lira/rmia: population samples from the attacker's "
                                                                "pool (RMIA compares with them)")
    rmia_gamma: float = Field(1.0, gt=0, le=1e6, description="rmia: the likelihood-ratio threshold γ")
    shadow: Annotated[str, registered(SHADOWS)] = Field(
        "fixed", description="shadow kind: 'fixed' (ResNet) or 'searchable' (DARTS on shadow data)")
    shadows: int = Field(1, ge=1, description="number of shadow models (the paper uses one)")
    eta: float = Field(1.0, description="share of the attacker's data from the target's distribution, in (0, 1]")
    eta_dataset: str = Field("", description="dataset of the (1 − η) share; empty: the usual pair "
                                             "(MNIST↔Fashion-MNIST, CIFAR-10↔CIFAR-100)")
    shadow_size: int = Field(500, ge=2, description="members per shadow (as many non-members)")
    shadow_epochs: int = Field(15, ge=1, description="shadow training epochs")
    shadow_batch_size: int = Field(32, ge=1, description="shadow batch size")
    shadow_lr: float = Field(0.05, gt=0, description="shadow learning rate (SGD, momentum 0.9, cosine decay)")
    resnet_depth: int = Field(8, ge=8, description="depth of the fixed shadow ResNet: 6n + 2")
    features: Annotated[str, registered(FEATURES)] = Field(
        "sorted-log+label", description="attack input: sorted (the paper), sorted-log, "
                                                         "sorted-log+label")
    top_k: int = Field(0, ge=0, description="keep the k largest posteriors (0: all)")
    attack_hidden: int = Field(64, ge=1, description="hidden width of the 3-layer attack MLP")
    attack_epochs: int = Field(150, ge=1, description="attack-model epochs (SGD)")
    attack_lr: float = Field(0.05, gt=0, description="attack-model learning rate (SGD, momentum 0.9)")
    eval_size: int = Field(1000, ge=1, description="at most this many members (and as many non-members) per kind")
    device: str = Field("cpu", description="'cpu', 'cuda' or 'cuda:N'")

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, value: str) -> str:
        if value not in MIA_ATTACKS:
            raise ValueError(f"unknown attack {value!r}; known: {', '.join(MIA_ATTACKS)}")
        return value

    @field_validator("eta")
    @classmethod
    def _eta_range(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError("allowed values: 0 < eta <= 1")
        return value

    def training(self) -> ShadowTraining:
        return ShadowTraining(self.shadow_epochs, self.shadow_batch_size, self.shadow_lr, self.resnet_depth)


class AttackModel(nn.Module):
    """Standardisation (fitted on the shadow features) and a 3-layer MLP giving a membership logit."""

    def __init__(self, features: np.ndarray, hidden: int) -> None:
        super().__init__()
        x = torch.as_tensor(features, dtype=torch.float32)
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("scale", x.std(0).clamp_min(1e-6))
        self.mlp = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp((x - self.mean) / self.scale).squeeze(1)


def train_attack_model(features: np.ndarray, member: np.ndarray, cfg: AmiaConfig, generator: torch.Generator,
                       progress: StageProgress) -> AttackModel:
    """SGD with momentum on binary cross-entropy, minibatches of 64."""
    with seeded_init(generator):
        model = AttackModel(features, cfg.attack_hidden)
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(member, dtype=torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.attack_lr, momentum=0.9, weight_decay=1e-4)
    for epoch in range(cfg.attack_epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            loss = F.binary_cross_entropy_with_logits(model(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        progress("attack model", epoch + 1, cfg.attack_epochs)
    model.eval()
    return model


@dataclass
class FittedAttack:
    model: AttackModel
    features: str
    top_k: int
    shadow_member_rate: float  # training accuracy of the attack model on the shadows' answers
    shadow_train_accuracy: list[float]
    seconds: dict[str, float]  # shadow training (or search) and attack-model training


def shadow_splits(pool: ImageSet, cfg: AmiaConfig, generator: torch.Generator) -> list[tuple[ImageSet, ImageSet]]:
    """(in, out) sets of each shadow: disjoint within a shadow, drawn afresh for each shadow."""
    need = 2 * cfg.shadow_size
    if len(pool) < need:
        raise ValueError(f"shadow-size {cfg.shadow_size} needs {need} attacker samples but the attacker's pool "
                         f"holds {len(pool)}; lower 'shadow-size'")
    out = []
    for _ in range(cfg.shadows):
        pick = torch.randperm(len(pool), generator=generator)[:need]
        sets = [pool.subset(p) for p in (pick[:cfg.shadow_size], pick[cfg.shadow_size:])]
        out.append((sets[0], sets[1]))
    return out


def _answers(box: BlackBox, data: ImageSet, cfg: AmiaConfig) -> np.ndarray:
    posteriors = box.predict(data.images.numpy())
    return FEATURES.get(cfg.features)(posteriors, data.labels.numpy(), cfg.top_k)


def fit_attack(public: MembershipKnowledge, cfg: AmiaConfig, generator: torch.Generator, device: torch.device,
               progress: StageProgress = lambda *a: None) -> FittedAttack:
    """Train ``cfg.shadows`` shadows on the attacker's pool, then the attack model on their answers."""
    feats, labels, train_acc = [], [], []
    tick = time.perf_counter()
    for inside, outside in shadow_splits(public.pool, cfg, generator):
        shadow: Shadow = SHADOWS.get(cfg.shadow)(public, inside, outside, cfg.training(), generator, device,
                                                 progress)
        n = min(len(shadow.members), len(shadow.nonmembers))
        members, nonmembers = (_head(shadow.members, n), _head(shadow.nonmembers, n))
        feats += [_answers(shadow.box, members, cfg), _answers(shadow.box, nonmembers, cfg)]
        labels += [np.ones(n, bool), np.zeros(n, bool)]
        p = shadow.box.predict(members.images.numpy())
        train_acc.append(float((p.argmax(1) == members.labels.numpy()).mean()))
    x, y = np.concatenate(feats), np.concatenate(labels)
    seconds = {"shadows": time.perf_counter() - tick}
    tick = time.perf_counter()
    model = train_attack_model(x, y, cfg, generator, progress)
    seconds["attack_model"] = time.perf_counter() - tick
    with torch.no_grad():
        rate = float(((model(torch.as_tensor(x, dtype=torch.float32)) > 0).numpy() == y).mean())
    return FittedAttack(model, cfg.features, cfg.top_k, rate, train_acc, seconds)


def _head(data: ImageSet, n: int) -> ImageSet:
    return ImageSet(data.images[:n], data.labels[:n], data.ids[:n])


@torch.no_grad()
def scores_from_posteriors(attack: FittedAttack, posteriors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    feats = FEATURES.get(attack.features)(posteriors, labels, attack.top_k)
    return torch.sigmoid(attack.model(torch.as_tensor(feats, dtype=torch.float32))).numpy().astype(np.float64)


def membership_scores(attack: FittedAttack, target: BlackBox, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """P(member) for each candidate (x, y), from the target's posteriors only."""
    return scores_from_posteriors(attack, target.predict(images), labels)
