"""The attacks the interceptor runs on every capture, by name (run-config key ``attacks``).

Each takes only threat-model targets and public knowledge; ``truth`` names the evaluation-only batches
its reconstruction is scored against (used by the scoring half only):

* ``adra``: Δα → the α batches (:mod:`attacker.adra`);
* ``theta``: Δθ → the θ batches (:mod:`attacker.invert`);
* ``joint``: Δα and Δθ → the α then the θ batches (``joint-data = shared``: the one shared batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from attacker.adra import ProgressCallback, Reconstruction, reconstruct_batch
from attacker.config import AttackSettings
from attacker.invert import invert_batch
from attacker.prior import ImageVAE
from attacker.threat import AttackTarget, PublicKnowledge
from fednas.registry import Registry

AttackFn = Callable[[Sequence[AttackTarget], PublicKnowledge, AttackSettings, ImageVAE | None, torch.Generator,
                     Sequence[ProgressCallback]], list[Reconstruction]]
ALPHA_BATCHES, THETA_BATCHES = "batches", "theta_batches"   # keys of the evaluation-only log


@dataclass(frozen=True)
class Attack:
    title: str
    run: AttackFn
    truth: Callable[[AttackSettings], tuple[str, ...]]
    prior: Callable[[AttackSettings], str]


ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.add("adra", Attack(
    "Δα (ADRA)",
    lambda t, p, s, prior, gen, cbs: reconstruct_batch(t, p, s, prior, gen, cbs),
    lambda s: (ALPHA_BATCHES,), lambda s: s.attack_prior))
ATTACKS.add("theta", Attack(
    "Δθ inversion",
    lambda t, p, s, prior, gen, cbs: invert_batch(t, p, s, prior, gen, joint=False, callbacks=cbs),
    lambda s: (THETA_BATCHES,), lambda s: s.inversion_prior))
ATTACKS.add("joint", Attack(
    "Δα + Δθ (joint)",
    lambda t, p, s, prior, gen, cbs: invert_batch(t, p, s, prior, gen, joint=True, callbacks=cbs),
    lambda s: (ALPHA_BATCHES, THETA_BATCHES) if s.joint_data == "disjoint" else (THETA_BATCHES,),
    lambda s: s.inversion_prior))
