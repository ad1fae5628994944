"""The interceptor's run-config section: when to attack, under which threat model, with which ADRA settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from attacker.objectives import OBJECTIVES
from attacker.threat import THREAT_MODELS
from fednas.config import register_section
from fednas.search import kebab

InterceptorMode = Literal["off", "capture", "live", "after-run"]
ATTACK_LR_PRESETS = {"adam": 0.05, "lbfgs": 1.0}


class AttackSettings(BaseModel):
    """ADRA settings (every one is a run-config key and a CLI option)."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=kebab, populate_by_name=True)

    threat_model: str = Field("wire", description="'architecture-only' (the paper: α only, own random θ) or "
                                                  "'wire' (everything in the messages, θ included)")
    attack_objective: str = Field("cosine", description="gradient matching: 'l2' (paper Eq. 5), 'cosine', "
                                                        "'whitened-l2'")
    attack_prior: Literal["pixel", "learned"] = Field(
        "learned", description="'pixel' (sigmoid-boxed pixels) or 'learned' (latent of a VAE trained on public data)")
    attack_tv: float = Field(1e-2, ge=0, description="total-variation weight")
    attack_init: Literal["noise", "constant", "class-mean"] = Field(
        "class-mean", description="dummy-image start: 'noise', 'constant' (0.5), 'class-mean' of the recovered label")
    attack_label: Literal["match", "joint"] = Field(
        "match", description="label recovery: 'match' (nearest class gradient, then fixed) or 'joint' "
                             "(soft labels optimised with the images, as in the paper)")
    attack_optimizer: Literal["adam", "lbfgs"] = Field(
        "lbfgs", description="'lbfgs' (few evaluations in the prior's low-dimensional latent space) or 'adam'")
    attack_iterations: int = Field(40, ge=1, description="iterations (Adam steps, or L-BFGS function evaluations)")
    attack_lr: float = Field(-1.0, description="step size; -1: the optimizer's preset (adam 0.05, lbfgs 1.0)")
    attack_restarts: int = Field(1, ge=1, description="random restarts; the best gradient match is kept")
    attack_denoise: bool = Field(False, description="the paper's denoising: pixels above attack-kappa set to 0")
    attack_kappa: float = Field(245 / 255, gt=0, le=1, description="denoising threshold κ")
    attack_batch: int = Field(16, ge=1, description="captures reconstructed together in one batched optimisation")
    attack_aux_samples: int = Field(2000, ge=10, description="public population images the attacker uses "
                                                             "(class means, label templates, prior)")
    attack_fast: bool = Field(True, description="fast path: edges leaving a state evaluated together, "
                                                 "channels-last frozen depthwise and pointwise convolutions (the "
                                                 "same function, tested to 1e-5)")
    attacks: str = Field("adra,theta,joint", description="comma list of attacks run on every capture: 'adra' (Δα), "
                                                         "'theta' (Δθ inversion), 'joint' (Δα and Δθ together)")
    inversion_objective: str = Field("cosine", description="θ/joint attacks: gradient matching on Δθ "
                                                           "(as attack-objective)")
    inversion_prior: Literal["pixel", "learned"] = Field("pixel", description="θ/joint attacks: image parametrisation")
    inversion_init: Literal["noise", "constant", "class-mean"] = Field(
        "class-mean", description="θ/joint attacks: dummy-image start (class-mean: of the analytically recovered label)")
    inversion_optimizer: Literal["adam", "lbfgs"] = Field(
        "lbfgs", description="θ/joint attacks: optimizer (L-BFGS: PSNR 27 dB after 60 evaluations on MNIST where Adam "
                             "reached 16 dB after 100 steps)")
    inversion_iterations: int = Field(60, ge=1, description="θ/joint attacks: iterations (Adam steps or L-BFGS "
                                                        "function evaluations)")
    inversion_lr: float = Field(-1.0, description="θ/joint attacks: step size; -1: the optimizer's preset")
    inversion_tv: float = Field(1e-2, ge=0, description="θ/joint attacks: total-variation weight")
    inversion_max_images: int = Field(32, ge=1, description="θ/joint attacks skip captures whose update holds more "
                                                        "images than this (θ steps x θ batch size): each costs a "
                                                        "double backward per iteration")
    joint_alpha_weight: float = Field(0.5, ge=0, le=1, description="joint attack: loss = w·match(Δα) + "
                                                                    "(1 − w)·match(Δθ)")
    joint_data: Literal["disjoint", "shared"] = Field(
        "disjoint", description="joint attack: 'disjoint' (α and θ batches are different images, as with D^α/D^θ "
                                "splits) or 'shared' (the client's α and θ steps used the same batch)")

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, value: str) -> str:
        from attacker.attacks import ATTACKS  # the registry imports the engines, which import this module

        names = [n.strip() for n in value.split(",") if n.strip()]
        if not names:
            raise ValueError(f"name at least one attack: {', '.join(ATTACKS.names())}")
        for name in names:
            ATTACKS.get(name)
        return ",".join(names)

    def attack_names(self) -> list[str]:
        return self.attacks.split(",")

    def for_theta(self) -> AttackSettings:
        """The settings of the θ/joint optimisation, in the attack-* fields the shared loop reads."""
        return self.model_copy(update={
            "attack_objective": self.inversion_objective, "attack_prior": self.inversion_prior,
            "attack_init": self.inversion_init, "attack_optimizer": self.inversion_optimizer,
            "attack_iterations": self.inversion_iterations, "attack_lr": self.inversion_lr,
            "attack_tv": self.inversion_tv})

    @field_validator("attack_lr", "inversion_lr")
    @classmethod
    def _lr_or_preset(cls, value: float) -> float:
        if value <= 0 and value != -1:
            raise ValueError("must be > 0, or -1 for the optimizer's preset")
        return value

    def step_size(self) -> float:
        return ATTACK_LR_PRESETS[self.attack_optimizer] if self.attack_lr == -1 else self.attack_lr

    @field_validator("threat_model")
    @classmethod
    def _known_threat(cls, value: str) -> str:
        THREAT_MODELS.get(value)
        return value

    @field_validator("attack_objective", "inversion_objective")
    @classmethod
    def _known_objective(cls, value: str) -> str:
        OBJECTIVES.get(value)
        return value


class InterceptorConfig(AttackSettings):
    """When and how the eavesdropper runs during a federated search."""

    interceptor: InterceptorMode = Field(
        "after-run", description="'off'; 'capture' (store captures only; attack later with archleak reconstruct); "
                                 "'live' (a niced worker process attacks captures as they arrive); "
                                 "'after-run' (attack the stored captures once the last round ends)")
    interceptor_queue: int = Field(8, ge=1, description="live mode: captures waiting at most; more are dropped "
                                                        "and counted, never blocking training")

    def attack(self) -> AttackSettings:
        return AttackSettings(**{k: getattr(self, k) for k in AttackSettings.model_fields})


register_section("interceptor", InterceptorConfig)
