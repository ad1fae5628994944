"""The attacks the interceptor runs on every capture, by name (run-config key ``attacks``).

Each takes only threat-model targets and public knowledge; ``truth`` names the evaluation-only batches
its reconstruction is scored against (used by the scoring half only):

* ``adra``: Δα → the α batches (:mod:`attacker.reconstruct.adra`);
* ``theta``: Δθ → the θ batches (:mod:`attacker.reconstruct.invert`);
* ``joint``: Δα and Δθ → the α then the θ batches (``joint-data = shared``: the one shared batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from attacker.reconstruct.adra import reconstruct_batch
from attacker.reconstruct.invert import invert_batch
from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.loop import ProgressCallback, Reconstruction
from attacker.reconstruct.prior import ImageVAE
from attacker.reconstruct.settings import AttackSettings, StageSettings
from attacker.reconstruct.threat import AttackTarget
from fednas.evaluation_log import ALPHA_BATCHES, THETA_BATCHES
from fednas.registry import Registry

AttackFn = Callable[[Sequence[AttackTarget], PublicKnowledge, AttackSettings, ImageVAE | None, torch.Generator,
                     Sequence[ProgressCallback]], list[Reconstruction]]


@dataclass(frozen=True)
class Attack:
    """An attack: its runner, the optimisation stage it reads, and which of the client's batches (keys of the
    evaluation-only log) its reconstruction is scored against."""

    title: str
    reads: tuple[str, ...]          # what of the update it inverts: "alpha", "theta" (fednas.methods' attack families)
    run: AttackFn
    truth: Callable[[AttackSettings], tuple[str, ...]]
    stage: Callable[[AttackSettings], StageSettings]


ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.add("adra", Attack(
    "Δα (ADRA)", ("alpha",),
    lambda t, p, s, prior, gen, cbs: reconstruct_batch(t, p, s, prior, gen, cbs),
    lambda s: (ALPHA_BATCHES,), AttackSettings.adra_stage))
ATTACKS.add("theta", Attack(
    "Δθ inversion", ("theta",),
    lambda t, p, s, prior, gen, cbs: invert_batch(t, p, s, prior, gen, joint=False, callbacks=cbs),
    lambda s: (THETA_BATCHES,), AttackSettings.inversion_stage))
ATTACKS.add("joint", Attack(
    "Δα + Δθ (joint)", ("alpha", "theta"),
    lambda t, p, s, prior, gen, cbs: invert_batch(t, p, s, prior, gen, joint=True, callbacks=cbs),
    lambda s: (ALPHA_BATCHES, THETA_BATCHES) if s.joint_data == "disjoint" else (THETA_BATCHES,),
    AttackSettings.inversion_stage))
