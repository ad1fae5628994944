"""The defenses' run-config section and registry: ``defenses = "dp-sgd-alpha,l2-alpha"`` switches them on.

Each defense acts at one stage: the client's α step (``defenses/alpha.py``), the client's reply (Flower mods,
``defenses/mods.py``), or the server's aggregation (a Flower strategy wrapper).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from defenses.accounting import PrivacyLedger
from defenses.alpha import AlphaStep, DPSGDAlpha, InputNoise, L2Alpha
from fednas.config import ConfigError, register_section
from fednas.registry import Registry
from fednas.search import kebab

ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class Defense:
    """A named defense: what it adds to a client's α step, and what it needs from the federation."""

    description: str
    apply: Callable[[AlphaStep, DefenseConfig], None] = lambda step, cfg: None
    private: bool = False       # True: DP-SGD, accounted per client
    stage: str = "alpha-step"   # alpha-step, client-reply or server


DEFENSES: Registry[Defense] = Registry("defense")


class DefenseConfig(BaseModel):
    """Client-side defenses (comma list in ``defenses``) and their strengths."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=kebab, populate_by_name=True)

    defenses: str = Field("", description="comma list of defenses, empty for none: "
                                          "dp-sgd-alpha, dp-sgd-alpha-paper, l2-alpha, input-noise, "
                                          "local-dp-update, central-dp, secagg-plus")
    dp_noise_multiplier: float = Field(1.0, ge=0, description="DP-SGD on α: noise std σ relative to the clip norm")
    dp_clip: float = Field(1.0, gt=0, description="DP-SGD on α: per-sample L2 clip norm C of ∇α")
    dp_delta: float = Field(-1.0, description="DP-SGD on α: δ for ε; -1: 1/|D^α| of each client")
    dp_accountant: str = Field("rdp", description="privacy accountant (Opacus): rdp or prv")
    l2_alpha_weight: float = Field(1e-3, ge=0, description="l2-alpha: λ of the penalty λ·Σα² in the α loss")
    input_noise_std: float = Field(0.1, ge=0, description="input-noise: std s of N(0, s²) added to each D^α "
                                                          "sample (pixels in [0, 1]; the paper's N(0, 0.01): 0.1)")
    update_clip: float = Field(1.0, gt=0, description="local-dp-update, central-dp: L2 clip norm C of a client's "
                                                       "whole update (α and θ as sent)")
    ldp_epsilon: float = Field(1.0, gt=0, description="local-dp-update: ε of each release (Flower's LocalDpMod: "
                                                       "noise std 2C·sqrt(2 ln(1.25/δ))/ε on every coordinate)")
    central_noise_multiplier: float = Field(1.0, ge=0, description="central-dp: σ; the server adds N(0, (σC/m)²) to "
                                                                    "the mean of m clipped updates")
    update_delta: float = Field(1e-5, gt=0, lt=1, description="local-dp-update, central-dp: δ")
    secagg_clip: float = Field(8.0, gt=0, description="secagg-plus: every coordinate sent is clipped to ±this before "
                                                        "quantisation (2^22 levels)")

    @field_validator("defenses")
    @classmethod
    def _known(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        for name in names:
            DEFENSES.get(name)
        if len(set(names)) != len(names):
            raise ValueError(f"defenses lists a name twice: {value!r}")
        if sum(DEFENSES.get(n).private and DEFENSES.get(n).stage == "alpha-step" for n in names) > 1:
            raise ValueError("choose one of dp-sgd-alpha and dp-sgd-alpha-paper")
        return ",".join(names)

    @field_validator("dp_delta")
    @classmethod
    def _delta(cls, value: float) -> float:
        if value != -1 and not 0 < value < 1:
            raise ValueError(f"dp-delta must be in (0, 1), or -1 for 1/|D^α|; got {value}")
        return value

    @field_validator("dp_accountant")
    @classmethod
    def _accountant(cls, value: str) -> str:
        if value not in ACCOUNTANTS:
            raise ValueError(f"dp-accountant must be one of {', '.join(ACCOUNTANTS)}; got {value!r}")
        return value

    @property
    def names(self) -> list[str]:
        return [n for n in self.defenses.split(",") if n]

    def stage(self, stage: str) -> list[str]:
        """The chosen defenses that act at ``stage``."""
        return [n for n in self.names if DEFENSES.get(n).stage == stage]

    def accounted(self) -> bool:
        """Whether any chosen defense has a privacy guarantee to account."""
        return self.dp() is not None or "local-dp-update" in self.names or "central-dp" in self.names

    def ldp_noise_multiplier(self) -> float:
        """LocalDpMod's noise std over its sensitivity 2C: sqrt(2 ln(1.25/δ))/ε (the classical Gaussian bound)."""
        return math.sqrt(2 * math.log(1.25 / self.update_delta)) / self.ldp_epsilon

    def dp(self) -> DPSGDAlpha | None:
        """The DP-SGD mechanism in force, if any (the paper's preset fixes its own σ and C)."""
        step = self.alpha_step(torch.Generator())
        return step.dp if step is not None else None

    def alpha_step(self, generator: torch.Generator) -> AlphaStep | None:
        if not self.names:
            return None
        step = AlphaStep(generator)
        for name in self.names:
            DEFENSES.get(name).apply(step, self)
        return step


def check_compatible(defense: DefenseConfig, batchnorm: bool) -> None:
    """Combinations that cannot work, refused before training starts."""
    if "secagg-plus" in defense.names:
        clash = [n for n in defense.names if DEFENSES.get(n).private]
        if clash:
            raise ConfigError(f"secagg-plus hides every client's update and metrics from the server, so {', '.join(clash)} "
                              "cannot be accounted per client (and central-dp needs the Message-API strategy); "
                              "allowed with secagg-plus: l2-alpha, input-noise")
    if defense.dp() is not None and batchnorm:
        raise ConfigError("dp-sgd-alpha needs per-sample gradients, which batch statistics mix across samples: "
                          "set batchnorm = false (the default) or drop dp-sgd-alpha")


def _set(attr: str, make: Callable[[DefenseConfig], object]) -> Callable[[AlphaStep, DefenseConfig], None]:
    return lambda step, cfg: setattr(step, attr, make(cfg))


DEFENSES.add("dp-sgd-alpha", Defense(
    "per-sample clipping of ∇α to dp-clip, Gaussian noise σ·C on the sum (accounted)",
    _set("dp", lambda c: DPSGDAlpha(c.dp_noise_multiplier, c.dp_clip)), private=True))
DEFENSES.add("dp-sgd-alpha-paper", Defense(
    "the paper's setting: N(0, 0.01) on the α gradient, i.e. std 0.1 (σ = 0.1 at C = 1; accounted)",
    _set("dp", lambda c: DPSGDAlpha(0.1, 1.0)), private=True))
DEFENSES.add("l2-alpha", Defense("λ·Σα² added to the α loss (the paper's LR)",
                                 _set("l2", lambda c: L2Alpha(c.l2_alpha_weight))))
DEFENSES.add("input-noise", Defense("N(0, s²) added to every D^α sample before the α step (the paper's DP)",
                                    _set("input_noise", lambda c: InputNoise(c.input_noise_std))))
DEFENSES.add("local-dp-update", Defense(
    "Flower's LocalDpMod on the client's reply: update clipped to update-clip, Gaussian noise on every coordinate",
    private=True, stage="client-reply"))
DEFENSES.add("secagg-plus", Defense(
    "Flower's SecAgg+ (legacy strategy path): the server and the wire see only masked, quantised updates",
    stage="server"))
DEFENSES.add("central-dp", Defense(
    "Flower's client-side fixed clipping (fixedclipping_mod) + server-side noise on the aggregate "
    "(DifferentialPrivacyClientSideFixedClipping): the wire carries clipped, un-noised updates",
    private=True, stage="server"))

register_section("defense", DefenseConfig)


def account_round(ledger: PrivacyLedger, defense: DefenseConfig, batch_size: int,
                  clients: list[dict[str, float]]) -> None:
    """Bookkeeping after a round. Per participating client: ``alpha-steps`` DP-SGD steps at q = B/|D^α|, and one
    LocalDpMod release (noise multiplier std/2C, q = 1), composed in the same history. For central DP: one
    client-level Gaussian release (σ, q = 1) of the whole federation."""
    dp = defense.dp()
    for metrics in clients:
        client, n = f"partition-{int(metrics['partition-id'])}", int(metrics["alpha-samples"])
        dp_delta = defense.dp_delta if defense.dp_delta != -1 else 1.0 / max(n, 1)
        if dp is not None:
            ledger.record(client, dp.noise_multiplier, batch_size / max(n, 1), int(metrics["alpha-steps"]), dp_delta)
        if "local-dp-update" in defense.names:  # ε of the composed history at the smaller δ of the two
            delta = min(dp_delta, defense.update_delta) if dp is not None else defense.update_delta
            ledger.record(client, defense.ldp_noise_multiplier(), 1.0, 1, delta)
    if "central-dp" in defense.names and clients:
        ledger.record("federation (client-level)", defense.central_noise_multiplier, 1.0, 1, defense.update_delta)
