"""Shadow models for membership inference: a fixed ResNet, or the same DARTS search run on shadow data.

A shadow builder takes the attacker's public knowledge and its own in/out split and returns a black box with
the samples it was (and was not) trained on. ``fixed`` is the paper's setting (a ResNet; the paper used a
ResNet-50, here the CIFAR-style ResNet family scaled to the input: depth 6n+2 with widths 16/32/64).
``searchable`` is the improved AMIA: a supernet of the target's public search space, searched with first-order
DARTS on shadow data; its members are its D^α_s, exactly as the target's members are its D^α.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fednas.batches import BatchSampler, ImageSet
from fednas.registry import Registry
from fednas.resnet import ResNet
from fednas.search import LocalSearchConfig, local_search
from fednas.search_space import SupernetSpec
from fednas.seeds import seeded_init
from fednas.serve import ModelBlackBox, model_black_box
from fednas.supernet import build_supernet

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class ShadowTraining:
    """How hard shadows are trained (from the AMIA config)."""

    epochs: int
    batch_size: int
    lr: float
    resnet_depth: int


@dataclass(frozen=True)
class MembershipKnowledge:
    """What the membership attacker knows besides the target's answers: data statistics, the public search
    space and search recipe of the federation, and its own labelled data."""

    spec: SupernetSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    search: LocalSearchConfig
    pool: ImageSet


@dataclass(frozen=True)
class Shadow:
    box: ModelBlackBox
    members: ImageSet
    nonmembers: ImageSet


ShadowBuilder = Callable[[MembershipKnowledge, ImageSet, ImageSet, ShadowTraining, torch.Generator, torch.device,
                          StageProgress], Shadow]
SHADOWS: Registry[ShadowBuilder] = Registry("shadow kind")


def train_classifier(model: nn.Module, data: ImageSet, training: ShadowTraining, generator: torch.Generator,
                     device: torch.device, progress: StageProgress, stage: str) -> None:
    """SGD with momentum and cosine decay over ``training.epochs`` epochs of ``data``."""
    sampler = BatchSampler(len(data), min(training.batch_size, len(data)), generator)
    steps = training.epochs * sampler.batches_per_epoch()
    opt = torch.optim.SGD(model.parameters(), lr=training.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    for step in range(steps):
        x, y = data.batch(next(sampler), device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress(stage, step + 1, steps)


def _describe(public: MembershipKnowledge, model: str) -> dict:
    s = public.spec
    return {"num_classes": s.num_classes, "channels": s.in_channels, "height": s.image_size,
            "width": s.image_size, "dtype": "uint8", "model": model}


@SHADOWS.register("fixed")
def fixed_shadow(public: MembershipKnowledge, inside: ImageSet, outside: ImageSet, training: ShadowTraining,
                 generator: torch.Generator, device: torch.device, progress: StageProgress) -> Shadow:
    """A ResNet trained on the shadow's in-set; members are that whole in-set."""
    with seeded_init(generator):
        model = ResNet(training.resnet_depth, public.spec.in_channels, public.spec.num_classes,
                       public.mean, public.std).to(device)
    train_classifier(model, inside, training, generator, device, progress, "shadow")
    return Shadow(model_black_box(model, _describe(public, f"resnet-{training.resnet_depth}"), device),
                  inside, outside)


def halves(data: ImageSet) -> tuple[ImageSet, ImageSet]:
    n = len(data) // 2
    return data.subset(torch.arange(n)), data.subset(torch.arange(n, len(data)))


@SHADOWS.register("searchable")
def searchable_shadow(public: MembershipKnowledge, inside: ImageSet, outside: ImageSet, training: ShadowTraining,
                      generator: torch.Generator, device: torch.device, progress: StageProgress) -> Shadow:
    """First-order DARTS on shadow data with the target's search space and recipe: θ on one half of the in-set,
    α on the other; α steps as many as θ steps, so the shadow's architecture is fitted to its D^α_s."""
    theta_set, alpha_set = halves(inside)
    model = build_supernet(public.spec, public.mean, public.std, generator, device)
    batch = min(training.batch_size, len(theta_set), len(alpha_set))
    recipe = public.search.model_copy(update={
        "theta_epochs": training.epochs, "alpha_epochs": training.epochs, "theta_batch_size": batch,
        "alpha_batch_size": batch, "theta_lr": training.lr})
    total = 2 * training.epochs * (len(theta_set) // batch)
    done = [0]

    def tick(_event: object) -> None:
        done[0] += 1
        progress("shadow", done[0], total)

    local_search(model, theta_set, alpha_set, LocalSearchConfig.model_validate(recipe.model_dump()), generator,
                 callbacks=[tick])
    return Shadow(model_black_box(model, _describe(public, "supernet searched on shadow data"), device),
                  alpha_set, outside)
