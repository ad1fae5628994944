"""The attacking half of the eavesdropper: what crossed the wire plus public knowledge, and nothing else.

An :class:`Attacker` holds the public knowledge, its own random weights θ_r (the paper's attacker) and the attack
settings; it holds no dataset and never sees the evaluation-only log. It turns a :class:`~attacker.wire.capture.
WireView` into a threat model's target, and runs a registered attack on a batch of targets that share weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence

import torch

from attacker.reconstruct.attacks import ATTACKS
from attacker.reconstruct.knowledge import PublicKnowledge, attacker_theta
from attacker.reconstruct.loop import ProgressCallback, Reconstruction
from attacker.reconstruct.prior import ImageVAE, learned_prior
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import THREAT_MODELS, AttackTarget
from attacker.wire.capture import WireView
from fednas.seeds import ATTACK_STREAM, derive_seed


class Attacker:
    """Targets and reconstructions under one threat model (see the module docstring)."""

    def __init__(self, public: PublicKnowledge, settings: AttackSettings) -> None:
        self.public, self.settings = public, settings
        self.threat = THREAT_MODELS.get(settings.threat_model)
        self.own_theta = attacker_theta(public)
        self._prior: ImageVAE | None = None
        self._stages: dict[int, tuple[PublicKnowledge, Mapping[str, torch.Tensor]]] = {}

    def _stage(self, cells: int) -> tuple[PublicKnowledge, Mapping[str, torch.Tensor]]:
        """The public knowledge and own weights for a supernet of ``cells`` cells (a PDARTS stage: the round config
        on the wire names its depth)."""
        if cells == self.public.spec.cells:
            return self.public, self.own_theta
        if cells not in self._stages:
            public = dataclasses.replace(self.public, spec=self.public.spec.model_copy(update={"cells": cells}))
            self._stages[cells] = (public, attacker_theta(public))
        return self._stages[cells]

    def target(self, view: WireView) -> AttackTarget:
        """The threat model's view of one capture; raises NotApplicable when it cannot attack it."""
        cells = int(view.config.get("supernet-cells", self.public.spec.cells))
        public, own = self._stage(cells)
        target = self.threat(view, public, own)
        if cells == self.public.spec.cells:
            return target
        return dataclasses.replace(target, cells=cells, theta_key=f"{target.theta_key}@{cells}-cells")

    def weights_key(self, broadcast_id: str) -> str:
        """Captures attacked with the same weights share this key: all of them under architecture-only (the
        attacker's own θ_r), a round's broadcast under wire."""
        return self.threat.weights_key(broadcast_id)

    def prior(self, attack: str) -> ImageVAE | None:
        """The learned prior (trained once on the public images, cached) when the attack's stage uses it."""
        if ATTACKS.get(attack).stage(self.settings).prior != "learned":
            return None
        if self._prior is None:
            self._prior = learned_prior(self.public.aux_images, self.public.seed)
        return self._prior

    def attack(self, targets: Sequence[AttackTarget], name: str = "adra",
               callbacks: Sequence[ProgressCallback] = ()) -> list[Reconstruction]:
        """Run attack ``name`` on targets that share weights; the randomness is the capture's own stream."""
        key = f"{name}:{targets[0].capture_id}" if name != "adra" else targets[0].capture_id
        seed = derive_seed(self.public.seed, ATTACK_STREAM, int(hashlib.sha1(key.encode()).hexdigest()[:8], 16))
        public = self._stage(targets[0].cells)[0] if targets[0].cells else self.public
        return ATTACKS.get(name).run(targets, public, self.settings, self.prior(name),
                                     torch.Generator().manual_seed(seed), callbacks)
