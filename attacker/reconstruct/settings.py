"""The attack settings: under which threat model, with which objective, prior and optimiser, for each attack.

They are run-config keys (one flat Flower namespace, hence the ``attack-*`` and ``inversion-*`` prefixes) and
CLI options. Attack names are checked against :data:`ATTACK_NAMES` here, without importing the engines
(a test keeps it equal to the ``ATTACKS`` registry), so that parsing a run config stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from attacker.reconstruct.objectives import OBJECTIVES
from attacker.reconstruct.threat import THREAT_MODELS
from fednas.schema import KebabModel

ATTACK_LR_PRESETS = {"adam": 0.05, "lbfgs": 1.0}
ATTACK_NAMES = ("adra", "theta", "joint")   # the ATTACKS registry's names (attacker.reconstruct.attacks)


# attack-preset = paper: the paper's ADRA as written (its Eq. 5 L2 match, the attacker's own θ_r ~ U(-0.25, 0.25)
# of the architecture-only threat model, boxed pixels started from noise, no learned prior and no TV term, soft
# labels optimised with the images, and κ = 245 denoising in every iteration). The paper names no optimiser or
# budget for ADRA: Adam (which it names for DARTS) with 300 steps is this project's choice. The preset overrides
# these keys whatever else the run config says.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "paper": {"threat-model": "architecture-only", "attacks": "adra", "attack-objective": "l2",
              "attack-prior": "pixel", "attack-init": "noise", "attack-tv": 0.0, "attack-label": "joint",
              "attack-denoise": True, "attack-denoise-every-iteration": True, "attack-kappa": 245 / 255,
              "attack-optimizer": "adam", "attack-lr": -1.0, "attack-iterations": 300},
}

Prior = Literal["pixel", "learned"]
Init = Literal["noise", "constant", "class-mean"]
Optimizer = Literal["adam", "lbfgs"]


@dataclass(frozen=True)
class StageSettings:
    """What one optimisation stage reads: its objective, image parametrisation, start, optimiser and budget."""

    objective: str
    prior: Prior
    init: Init
    optimizer: Optimizer
    iterations: int
    lr: float                 # -1: the optimizer's preset
    tv: float

    def step_size(self) -> float:
        return ATTACK_LR_PRESETS[self.optimizer] if self.lr == -1 else self.lr


class AttackSettings(KebabModel):
    """Attack settings (every one is a run-config key and a CLI option)."""

    attack_preset: Literal["none", "paper"] = Field(
        "none", description="'paper': the paper's ADRA as written (Eq. 5 L2, own θ_r ~ U(-0.25, 0.25), boxed "
                            "pixels from noise, no prior, κ denoising every iteration; overrides those keys) or "
                            "'none'")
    threat_model: str = Field("wire", description="'architecture-only' (the paper: α only, own random θ) or "
                                                  "'wire' (everything in the messages, θ included)")
    attack_objective: str = Field("cosine", description="gradient matching: 'l2' (paper Eq. 5), 'cosine', "
                                                        "'whitened-l2'")
    attack_prior: Prior = Field(
        "learned", description="'pixel' (sigmoid-boxed pixels) or 'learned' (latent of a VAE trained on public data)")
    attack_tv: float = Field(1e-2, ge=0, description="total-variation weight")
    attack_init: Init = Field(
        "class-mean", description="dummy-image start: 'noise', 'constant' (0.5), 'class-mean' of the recovered label")
    attack_label: Literal["match", "joint"] = Field(
        "match", description="label recovery: 'match' (nearest class gradient, then fixed) or 'joint' "
                             "(soft labels optimised with the images, as in the paper)")
    attack_optimizer: Optimizer = Field(
        "lbfgs", description="'lbfgs' (few evaluations in the prior's low-dimensional latent space) or 'adam'")
    attack_iterations: int = Field(
        40, ge=1, le=1_000_000, description="iterations (Adam steps, or L-BFGS function evaluations)")
    attack_lr: float = Field(-1.0, description="step size; -1: the optimizer's preset (adam 0.05, lbfgs 1.0)")
    attack_restarts: int = Field(1, ge=1, le=1_000, description="random restarts; the best gradient match is kept")
    attack_denoise: bool = Field(False, description="the paper's denoising: pixels above attack-kappa set to 0")
    attack_kappa: float = Field(245 / 255, gt=0, le=1, description="denoising threshold κ")
    attack_denoise_every_iteration: bool = Field(
        False, description="denoise in every iteration, as the paper does (pixel prior only), not only the result")
    attack_batch: int = Field(
        16, ge=1, le=4_096, description="captures reconstructed together in one batched optimisation")
    attack_aux_samples: int = Field(
        2000, ge=10, le=1_000_000, description="public population images the attacker uses "
                                               "(class means, label templates, prior)")
    attack_fast: bool = Field(True, description="fast path: edges leaving a state evaluated together, "
                                                 "channels-last frozen depthwise and pointwise convolutions (the "
                                                 "same function, tested to 1e-5)")
    attacks: str = Field("adra,theta,joint", description="comma list of attacks run on every capture: 'adra' (Δα), "
                                                         "'theta' (Δθ inversion), 'joint' (Δα and Δθ together)")
    inversion_objective: str = Field("cosine", description="θ/joint attacks: gradient matching on Δθ "
                                                           "(as attack-objective)")
    inversion_prior: Prior = Field("pixel", description="θ/joint attacks: image parametrisation")
    inversion_init: Init = Field(
        "class-mean",
        description="θ/joint attacks: dummy-image start (class-mean: of the analytically recovered label)")
    inversion_optimizer: Optimizer = Field(
        "lbfgs", description="θ/joint attacks: optimizer (L-BFGS: PSNR 27 dB after 60 evaluations on MNIST where Adam "
                             "reached 16 dB after 100 steps)")
    inversion_iterations: int = Field(
        60, ge=1, le=1_000_000, description="θ/joint attacks: iterations (Adam steps or L-BFGS "
                                            "function evaluations)")
    inversion_lr: float = Field(-1.0, description="θ/joint attacks: step size; -1: the optimizer's preset")
    inversion_tv: float = Field(1e-2, ge=0, description="θ/joint attacks: total-variation weight")
    inversion_fast: bool = Field(True, description="θ/joint attacks: the clients' local searches replayed through "
                                                   "the edge-batched supernet with one weight set per row and "
                                                   "grouped double-backward kernels (the same function, tested to "
                                                   "1e-12 in float64); false: vmap over the plain supernet")
    inversion_max_images: int = Field(
        32, ge=1, le=65_536, description="θ/joint attacks skip captures whose update holds more "
                                         "images than this (θ steps x θ batch size): each costs a "
                                         "double backward per iteration")
    inversion_clients: int = Field(
        0, ge=0, le=1_000_000, description="θ/joint attacks follow the first N clients seen on the wire (a targeted "
                                           "eavesdropper; the others are recorded as not attacked); 0: every client")
    joint_alpha_weight: float = Field(0.5, ge=0, le=1, description="joint attack: loss = w·match(Δα) + "
                                                                    "(1 − w)·match(Δθ)")
    joint_data: Literal["disjoint", "shared"] = Field(
        "disjoint", description="joint attack: 'disjoint' (α and θ batches are different images, as with D^α/D^θ "
                                "splits) or 'shared' (the client's α and θ steps used the same batch)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("attack-preset", data.get("attack_preset", "none"))
        values = PRESETS.get(preset) if isinstance(preset, str) else None
        if not values:
            return data
        out = {k: v for k, v in data.items() if k not in values and k.replace("_", "-") not in values}
        return {**out, **values}

    @model_validator(mode="after")
    def _denoise_needs_pixels(self) -> AttackSettings:
        if self.attack_denoise_every_iteration and self.attack_prior != "pixel":
            raise ValueError("attack-denoise-every-iteration needs attack-prior = pixel (a learned prior has no "
                             "pixels to reset)")
        return self

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        if not names:
            raise ValueError(f"name at least one attack: {', '.join(ATTACK_NAMES)}")
        for name in names:
            if name not in ATTACK_NAMES:
                raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACK_NAMES)}")
        if len(set(names)) != len(names):
            raise ValueError(f"attacks lists a name twice: {value!r}")
        return ",".join(names)

    def attack_names(self) -> list[str]:
        return self.attacks.split(",")

    @field_validator("attack_lr", "inversion_lr")
    @classmethod
    def _lr_or_preset(cls, value: float) -> float:
        if value <= 0 and value != -1:
            raise ValueError("must be > 0, or -1 for the optimizer's preset")
        return value

    def adra_stage(self) -> StageSettings:
        """The optimisation of ADRA (the ``attack-*`` keys)."""
        return StageSettings(objective=self.attack_objective, prior=self.attack_prior, init=self.attack_init,
                             optimizer=self.attack_optimizer, iterations=self.attack_iterations, lr=self.attack_lr,
                             tv=self.attack_tv)

    def inversion_stage(self) -> StageSettings:
        """The optimisation of the Δθ and joint attacks (the ``inversion-*`` keys)."""
        return StageSettings(objective=self.inversion_objective, prior=self.inversion_prior,
                             init=self.inversion_init, optimizer=self.inversion_optimizer,
                             iterations=self.inversion_iterations, lr=self.inversion_lr, tv=self.inversion_tv)

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
