"""Test helpers shared across packages: the tiny, seeded ADRA problem (an 8x8 supernet with more α entries than
pixels, known weights, B = 1) that the reconstruction and defense tests attack."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.loop import Reconstruction
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import THREAT_MODELS, AttackTarget
from attacker.scoring.metrics import psnr
from attacker.wire.synthetic import client_capture
from fednas.data import ImageData
from fednas.search import AlphaStepFn, LocalSearchConfig
from fednas.search_space import SupernetSpec
from fednas.supernet import SuperNet, build_supernet

TINY_SPEC = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=3, nodes=2, alpha_sharing="per-cell")


def shrink(x: torch.Tensor) -> torch.Tensor:
    """uint8 images area-resized to 8x8."""
    return F.interpolate(x.float(), size=(8, 8), mode="area").round().to(torch.uint8)


def tiny_problem(data: ImageData) -> tuple[SuperNet, PublicKnowledge]:
    """The seeded tiny supernet (120 α entries > 64 pixels) and the attacker's public knowledge for it."""
    model = build_supernet(TINY_SPEC, (0.13,), (0.3,), torch.Generator().manual_seed(0))
    public = PublicKnowledge(TINY_SPEC, (0.13,), (0.3,), shrink(data.train_images[:2000]).float() / 255,
                             data.train_labels[:2000], 0)
    return model, public


def tiny_wire_targets(model: SuperNet, public: PublicKnowledge, data: ImageData, count: int,
                      search: LocalSearchConfig, with_theta: bool = False,
                      alpha_step: Callable[[int], AlphaStepFn | None] = lambda i: None
                      ) -> tuple[list[AttackTarget], list[torch.Tensor]]:
    """Wire targets of clients that each took their α step (and, ``with_theta``, a θ step) on one test image:
    (targets, true images in [0, 1])."""
    targets, truth = [], []
    for i in range(count):
        x, y = shrink(data.test_images[i:i + 1]), data.test_labels[i:i + 1]
        view, _ = client_capture(model, x, y, search, f"c{i}", alpha_step=alpha_step(i),
                                 theta_data=(x, y) if with_theta else None)
        targets.append(THREAT_MODELS.get("wire")(view, public, {}))
        truth.append(x.float() / 255)
    return targets, truth


def l2_adam(iterations: int) -> AttackSettings:
    """ADRA as the tiny problem's tests run it: Eq. 5's L2 on pixels from the class mean, Adam, no TV."""
    return AttackSettings(attack_prior="pixel", attack_init="class-mean", attack_tv=0.0, attack_objective="l2",
                          attack_optimizer="adam", attack_lr=0.1, attack_iterations=iterations, attack_restarts=1)


def mean_psnr(recons: list[Reconstruction], truth: list[torch.Tensor]) -> torch.Tensor:
    return torch.tensor([float(psnr(r.images, t)[0]) for r, t in zip(recons, truth, strict=True)])
