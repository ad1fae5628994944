"""Threat models as function signatures: what an attack may read, and nothing else.

An attack receives a :class:`WireView` (exactly what crossed the wire for one capture) and
:class:`PublicKnowledge` (the public search space, the dataset's normalisation and public auxiliary
images that no client trained on). The client's true batch is never an argument: it reaches only the
scoring code.

Threat models (registry ``THREAT_MODELS``):

* ``architecture-only`` (the paper): the attacker sees α before and after; it uses its own weights
  θ_r ~ U(-0.25, 0.25) on the public search space.
* ``wire``: the attacker sees the whole messages, including the broadcast θ (federated NAS ships the
  weights too), so it evaluates gradients under the weights the client actually used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.wire.capture import WireView
from fednas.registry import Registry
from fednas.search import ALPHA_OPTIMIZERS, search_schedule
from fednas.state import split_state


@dataclass(frozen=True)
class UpdateRule:
    """How the client turned gradients into Δα (from the round's ConfigRecord and reply metrics)."""

    optimizer: str
    lr: float
    weight_decay: float
    steps: int
    batch_size: int

    @property
    def exact(self) -> bool:
        """One plain SGD step: Δα = -lr·(∇α + wd·α) holds exactly."""
        return self.optimizer == "sgd" and self.steps == 1


@dataclass(frozen=True)
class ThetaRule:
    """How the client turned θ gradients into Δθ (from the round's ConfigRecord and reply metrics)."""

    steps: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    clip: float

    @property
    def exact(self) -> bool:
        """One plain step: the update is -lr·(clip(∇θ) + wd·θ), with no trajectory to simulate."""
        return self.steps == 1


@dataclass(frozen=True)
class Schedule:
    """The client's step order and both update rules."""

    theta: ThetaRule
    alpha: UpdateRule
    order: str

    def kinds(self) -> list[str]:
        return search_schedule(self.theta.steps, self.alpha.steps, self.order)


@dataclass(frozen=True)
class AttackTarget:
    """Everything the optimisation needs for one capture."""

    capture_id: str
    theta_key: str                                  # captures with equal keys share θ (batched together)
    theta: Mapping[str, torch.Tensor]
    alpha_before: Mapping[str, torch.Tensor]
    alpha_delta: Mapping[str, torch.Tensor]
    rule: UpdateRule
    theta_delta: Mapping[str, torch.Tensor] | None = None   # Δθ when θ came back on the wire
    schedule: Schedule | None = None                        # the whole local search (θ attacks)
    cells: int = 0          # the supernet's depth in this capture's round, when it is not the public spec's (PDARTS)


class NotApplicable(ValueError):
    """This threat model cannot attack this capture (for instance, no weights on the wire)."""


def require_finite(update: str, tensors: Iterable[torch.Tensor]) -> None:
    """NotApplicable when a captured update holds NaN or inf: a client whose network overflowed (a large supernet
    without normalisation at its round-0 weights) sends no image to match, and label recovery would fail on it."""
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise NotApplicable(f"the captured {update} is not finite (NaN or inf): the client's network overflowed at "
                            "these weights, so its update carries no image to reconstruct")


def update_rule(view: WireView) -> UpdateRule:
    cfg = view.config
    name = str(cfg.get("alpha-optimizer", "sgd"))
    preset = ALPHA_OPTIMIZERS.get(name)
    lr = float(cfg.get("alpha-lr", -1))
    wd = float(cfg.get("alpha-weight-decay", -1))
    steps = round(view.metrics.get("alpha-steps", float(cfg.get("alpha-steps", 1))))
    return UpdateRule(name, preset.lr if lr == -1 else lr, preset.weight_decay if wd == -1 else wd,
                      steps, int(cfg.get("alpha-batch-size", 1)))


def theta_rule(view: WireView) -> ThetaRule:
    cfg = view.config
    steps = round(view.metrics.get("theta-steps", float(cfg.get("theta-steps", 10))))
    return ThetaRule(steps, int(cfg.get("theta-batch-size", 16)), float(cfg.get("theta-lr", 0.05)),
                     float(cfg.get("theta-momentum", 0.9)), float(cfg.get("theta-weight-decay", 3e-4)),
                     float(cfg.get("grad-clip", 5.0)))


def _alphas(view: WireView) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    before, _ = split_state(view.broadcast)
    after, _ = split_state(view.reply)
    if not before or set(before) != set(after):
        raise NotApplicable("no α before and after on the wire")
    return before, {g: after[g] - before[g] for g in before}


OWN_WEIGHTS = "attacker"   # the weights key of every architecture-only target: the attacker's own θ_r


@dataclass(frozen=True)
class ThreatModel:
    """What an attack may read of a capture (``target``), and which captures it attacks under the same weights
    (``weights_key`` of the capture's broadcast id: equal keys are batched into one optimisation)."""

    target: Callable[[WireView, PublicKnowledge, Mapping[str, torch.Tensor]], AttackTarget]
    weights_key: Callable[[str], str]

    def __call__(self, view: WireView, public: PublicKnowledge, own_theta: Mapping[str, torch.Tensor]
                 ) -> AttackTarget:
        return self.target(view, public, own_theta)


def architecture_only(view: WireView, public: PublicKnowledge,
                      own_theta: Mapping[str, torch.Tensor]) -> AttackTarget:
    before, delta = _alphas(view)
    return AttackTarget(view.capture_id, OWN_WEIGHTS, own_theta, before, delta, update_rule(view))


def wire(view: WireView, public: PublicKnowledge, own_theta: Mapping[str, torch.Tensor]) -> AttackTarget:
    before, delta = _alphas(view)
    _, theta = split_state(view.broadcast)
    if not theta:
        raise NotApplicable("the broadcast carries no weights (share-weights = false)")
    _, theta_after = split_state(view.reply)
    theta_delta = {k: theta_after[k] - theta[k] for k in theta} if set(theta_after) == set(theta) else None
    rule = update_rule(view)
    return AttackTarget(view.capture_id, view.broadcast_id, theta, before, delta, rule, theta_delta,
                        Schedule(theta_rule(view), rule, str(view.config.get("search-order", "interleaved"))))


THREAT_MODELS: Registry[ThreatModel] = Registry("threat model")
THREAT_MODELS.add("architecture-only", ThreatModel(architecture_only, lambda broadcast_id: OWN_WEIGHTS))
THREAT_MODELS.add("wire", ThreatModel(wire, lambda broadcast_id: broadcast_id))
