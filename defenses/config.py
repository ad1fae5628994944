"""The defenses: their run-config section, and one registry entry per defense carrying all its plug points.

``defenses = "dp-sgd-alpha,l2-alpha"`` switches them on. A :class:`Defense` names where it acts, and the Flower
apps (the composition root) only loop over the chosen entries:

=================  ===========================================================================================
plug point         where it acts
=================  ===========================================================================================
``alpha_step``     a phase of the client's α step (:mod:`defenses.alpha`: inputs → gradient → clip → noise)
``client_mod``     a Flower mod around the ClientApp for this message (:mod:`defenses.mods`)
``client_train``   answers a message the plain ClientApp does not speak (SecAgg+'s legacy fit)
``wrap_strategy``  a Flower strategy wrapper on the server (central DP)
``server_rounds``  replaces the server's strategy loop altogether (SecAgg+, :mod:`defenses.secagg`)
``account``        books the round's releases in the privacy ledger (:mod:`defenses.accounting`)
``refuses``        a combination this defense cannot work with, refused before training starts
=================  ===========================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
from flwr.app import Context, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from pydantic import Field, field_validator

from defenses.accounting import ACCOUNTANT_CLASSES, PrivacyLedger
from defenses.alpha import AlphaStep, DPSGDAlpha, InputNoise, L2Alpha
from defenses.mods import ClientMod, central_clip_mod, central_dp_strategy, local_dp_mod
from defenses.secagg import LocalTrain, legacy_train, run_secagg, secagg_stage_mod
from fednas.config import RunConfig
from fednas.methods import SearchMethod
from fednas.registry import Registry, registered
from fednas.run import ServerRun
from fednas.schema import ConfigError, KebabModel

ClientMetrics = list[dict[str, float]]


def _accepts(cfg: DefenseConfig, batchnorm: bool) -> str | None:
    """Nothing refused."""
    return None


@dataclass(frozen=True)
class Defense:
    """A named defense and every place it plugs in (see the module docstring); ``None``: not at that point."""

    description: str
    private: bool = False    # a privacy guarantee accounted per client: hidden per-client metrics cannot carry it
    alpha_step: Callable[[AlphaStep, DefenseConfig], None] | None = None
    client_mod: Callable[[DefenseConfig, Message], ClientMod | None] | None = None
    client_train: Callable[[Message, LocalTrain, RunConfig], Message | None] | None = None
    wrap_strategy: Callable[[Strategy, DefenseConfig, int], Strategy] | None = None
    server_rounds: Callable[[Grid, Context, ServerRun, DefenseConfig], None] | None = None
    account: Callable[[PrivacyLedger, DefenseConfig, int, ClientMetrics], None] | None = None
    refuses: Callable[[DefenseConfig, bool], str | None] = _accepts


DEFENSES: Registry[Defense] = Registry("defense")


class DefenseConfig(KebabModel):
    """Client-side defenses (comma list in ``defenses``) and their strengths."""

    defenses: str = Field("", description="comma list of defenses, empty for none: "
                                          "dp-sgd-alpha, dp-sgd-alpha-paper, l2-alpha, input-noise, "
                                          "local-dp-update, central-dp, secagg-plus")
    dp_noise_multiplier: float = Field(1.0, ge=0, le=100, description="DP-SGD on α: noise std σ relative to the clip "
                                                                      "norm (at most 100)")
    dp_clip: float = Field(1.0, gt=0, description="DP-SGD on α: per-sample L2 clip norm C of ∇α")
    dp_delta: float = Field(-1.0, description="DP-SGD on α: δ for ε; -1: 1/|D^α| of each client")
    dp_accountant: Annotated[str, registered(ACCOUNTANT_CLASSES)] = Field(
        "rdp", description="privacy accountant (Opacus): rdp or prv")
    l2_alpha_weight: float = Field(1e-3, ge=0, description="l2-alpha: λ of the penalty λ·Σα² in the α loss")
    input_noise_std: float = Field(0.1, ge=0, description="input-noise: std s of N(0, s²) added to each D^α "
                                                          "sample (pixels in [0, 1]; the paper's N(0, 0.01): 0.1)")
    update_clip: float = Field(1.0, gt=0, description="local-dp-update, central-dp: L2 clip norm C of a client's "
                                                       "whole update (α and θ as sent)")
    ldp_epsilon: float = Field(1.0, gt=0, description="local-dp-update: ε of each release (Flower's LocalDpMod: "
                                                       "noise std 2C·sqrt(2 ln(1.25/δ))/ε on every coordinate)")
    central_noise_multiplier: float = Field(
        1.0, ge=0, le=100, description="central-dp: σ (at most 100); the server adds "
                                       "N(0, (σC/m)²) to the mean of m clipped updates")
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
        if sum(DEFENSES.get(n).private and DEFENSES.get(n).alpha_step is not None for n in names) > 1:
            raise ValueError("choose one of dp-sgd-alpha and dp-sgd-alpha-paper")
        return ",".join(names)

    @field_validator("dp_delta")
    @classmethod
    def _delta(cls, value: float) -> float:
        if value != -1 and not 0 < value < 1:
            raise ValueError(f"dp-delta must be in (0, 1), or -1 for 1/|D^α|; got {value}")
        return value

    @property
    def names(self) -> list[str]:
        return [n for n in self.defenses.split(",") if n]

    def chosen(self) -> list[Defense]:
        """The chosen defenses, in registry order (which fixes the order of their mods)."""
        return [DEFENSES.get(n) for n in DEFENSES.names() if n in self.names]

    def accounted(self) -> bool:
        """Whether any chosen defense has a privacy guarantee to account."""
        return any(d.account is not None for d in self.chosen())

    def ldp_noise_multiplier(self) -> float:
        """LocalDpMod's noise std over its sensitivity 2C: sqrt(2 ln(1.25/δ))/ε (the classical Gaussian bound)."""
        return math.sqrt(2 * math.log(1.25 / self.update_delta)) / self.ldp_epsilon

    def alpha_delta(self, alpha_samples: int) -> float:
        """δ of a client's DP-SGD on α: ``dp-delta``, or 1/|D^α|."""
        return self.dp_delta if self.dp_delta != -1 else 1.0 / max(alpha_samples, 1)

    def dp(self) -> DPSGDAlpha | None:
        """The DP-SGD mechanism in force, if any (the paper's preset fixes its own σ and C)."""
        step = self.alpha_step(torch.Generator())
        return step.dp if step is not None else None

    def alpha_step(self, generator: torch.Generator) -> AlphaStep | None:
        """The client's defended α step (phases in order), or None when no defense acts on it."""
        hooks = [d.alpha_step for d in self.chosen() if d.alpha_step is not None]
        if not self.names:
            return None
        step = AlphaStep(generator)
        for hook in hooks:
            hook(step, self)
        return step


PLUG_POINTS = ("alpha_step", "client_mod", "client_train", "wrap_strategy", "server_rounds", "account")


def plug_table() -> str:
    """Where every registered defense plugs in, as Markdown (docs/defenses.md is checked against it)."""
    lines = ["| defense | " + " | ".join(f"`{p}`" for p in PLUG_POINTS) + " | refuses |",
             "|---|" + "---|" * (len(PLUG_POINTS) + 1)]
    for name in DEFENSES.names():
        d = DEFENSES.get(name)
        marks = ["✓" if getattr(d, p) is not None else "" for p in PLUG_POINTS]
        refuses = (d.refuses.__doc__ or "").strip().split("\n")[0] if d.refuses is not _accepts else ""
        lines.append(f"| `{name}` | " + " | ".join(marks) + f" | {refuses} |")
    return "\n".join(lines) + "\n"


def check_compatible(defense: DefenseConfig, batchnorm: bool, method: SearchMethod | None = None) -> None:
    """Combinations that cannot work, refused before training starts (each defense's ``refuses``, and the plug
    points the search method lacks)."""
    for name in (n for n in DEFENSES.names() if n in defense.names):
        d = DEFENSES.get(name)
        reason = d.refuses(defense, batchnorm)
        if reason:
            raise ConfigError(reason)
        if method is not None and d.alpha_step is not None and not method.trains_alpha:
            raise ConfigError(f"defense {name!r} acts on the α step, and search-method {method.name!r} takes none; "
                              "allowed with it: the defenses on the update or the channel (local-dp-update, "
                              "central-dp)")
        if method is not None and d.server_rounds is not None and not method.plain_average:
            raise ConfigError(f"defense {name!r} runs its own rounds over the supernet's α and θ only; "
                              f"search-method {method.name!r} sends more (or changes the supernet between rounds); "
                              "allowed: search-method = darts")


def account_round(ledger: PrivacyLedger, defense: DefenseConfig, batch_size: int, clients: ClientMetrics) -> None:
    """Bookkeeping after a round: every chosen defense books its releases (composed per client, never reset)."""
    for d in defense.chosen():
        if d.account is not None:
            d.account(ledger, defense, batch_size, clients)


def _client(metrics: dict[str, float]) -> str:
    return f"partition-{int(metrics['partition-id'])}"


def _account_dp_sgd(ledger: PrivacyLedger, cfg: DefenseConfig, batch_size: int, clients: ClientMetrics) -> None:
    """Per participating client: ``alpha-steps`` DP-SGD steps at q = B/|D^α|."""
    dp = cfg.dp()
    assert dp is not None
    for m in clients:
        n = int(m["alpha-samples"])
        ledger.record(_client(m), dp.noise_multiplier, batch_size / max(n, 1), int(m["alpha-steps"]),
                      cfg.alpha_delta(n))


def _account_local_dp(ledger: PrivacyLedger, cfg: DefenseConfig, batch_size: int, clients: ClientMetrics) -> None:
    """Per participating client: one LocalDpMod release (noise multiplier std/2C, q = 1), composed in the same
    history as DP-SGD, at the smaller δ of the two."""
    for m in clients:
        delta = (min(cfg.alpha_delta(int(m["alpha-samples"])), cfg.update_delta) if cfg.dp() is not None
                 else cfg.update_delta)
        ledger.record(_client(m), cfg.ldp_noise_multiplier(), 1.0, 1, delta)


def _account_central_dp(ledger: PrivacyLedger, cfg: DefenseConfig, batch_size: int, clients: ClientMetrics) -> None:
    """One client-level Gaussian release (σ, q = 1) of the whole federation per round."""
    if clients:
        ledger.record("federation (client-level)", cfg.central_noise_multiplier, 1.0, 1, cfg.update_delta)


def _needs_per_sample_gradients(cfg: DefenseConfig, batchnorm: bool) -> str | None:
    """`batchnorm = true` (batch statistics mix the per-sample gradients)"""
    if batchnorm:
        return ("dp-sgd-alpha needs per-sample gradients, which batch statistics mix across samples: "
                "set batchnorm = false (the default) or drop dp-sgd-alpha")
    return None


def _secagg_refuses(cfg: DefenseConfig, batchnorm: bool) -> str | None:
    """any defense accounted per client (`private`): the server sees no per-client update or metrics"""
    clash = [n for n in cfg.names if DEFENSES.get(n).private]
    if clash:
        return (f"secagg-plus hides every client's update and metrics from the server, so {', '.join(clash)} "
                "cannot be accounted per client (and central-dp needs the Message-API strategy); "
                "allowed with secagg-plus: l2-alpha, input-noise")
    return None


def _set(attr: str, make: Callable[[DefenseConfig], object]) -> Callable[[AlphaStep, DefenseConfig], None]:
    return lambda step, cfg: setattr(step, attr, make(cfg))


DEFENSES.add("dp-sgd-alpha", Defense(
    "per-sample clipping of ∇α to dp-clip, Gaussian noise σ·C on the sum (accounted)", private=True,
    alpha_step=_set("dp", lambda c: DPSGDAlpha(c.dp_noise_multiplier, c.dp_clip)),
    account=_account_dp_sgd, refuses=_needs_per_sample_gradients))
DEFENSES.add("dp-sgd-alpha-paper", Defense(
    "the paper's setting: N(0, 0.01) on the α gradient, i.e. std 0.1 (σ = 0.1 at C = 1; accounted)", private=True,
    alpha_step=_set("dp", lambda c: DPSGDAlpha(0.1, 1.0)), account=_account_dp_sgd,
    refuses=_needs_per_sample_gradients))
DEFENSES.add("l2-alpha", Defense(
    "λ·Σα² added to the α loss (the paper's LR)", alpha_step=_set("l2", lambda c: L2Alpha(c.l2_alpha_weight))))
DEFENSES.add("input-noise", Defense(
    "N(0, s²) added to every D^α sample before the α step (the paper's DP)",
    alpha_step=_set("input_noise", lambda c: InputNoise(c.input_noise_std))))
DEFENSES.add("local-dp-update", Defense(
    "Flower's LocalDpMod on the client's reply: update clipped to update-clip, Gaussian noise on every coordinate",
    private=True, client_mod=lambda cfg, msg: local_dp_mod(cfg.update_clip, cfg.ldp_epsilon, cfg.update_delta),
    account=_account_local_dp))
DEFENSES.add("secagg-plus", Defense(
    "Flower's SecAgg+ (legacy strategy path): the server and the wire see only masked, quantised updates",
    client_mod=lambda cfg, msg: secagg_stage_mod(msg), client_train=legacy_train,
    server_rounds=lambda grid, context, run, cfg: run_secagg(grid, context, run, run.cfg.min_nodes, cfg.secagg_clip),
    refuses=_secagg_refuses))
DEFENSES.add("central-dp", Defense(
    "Flower's client-side fixed clipping (fixedclipping_mod) + server-side noise on the aggregate "
    "(DifferentialPrivacyClientSideFixedClipping): the wire carries clipped, un-noised updates", private=True,
    client_mod=lambda cfg, msg: central_clip_mod(msg),
    wrap_strategy=lambda strategy, cfg, n: central_dp_strategy(strategy, cfg.central_noise_multiplier,
                                                               cfg.update_clip, n),
    account=_account_central_dp))
