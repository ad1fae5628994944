"""The interceptor's run-config section: when the eavesdropper runs (its mode and queue) and the attack settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from attacker.reconstruct.settings import AttackSettings

InterceptorMode = Literal["off", "capture", "live", "after-run"]


class InterceptorConfig(AttackSettings):
    """When and how the eavesdropper runs during a federated search."""

    interceptor: InterceptorMode = Field(
        "after-run", description="'off'; 'capture' (store captures only; attack later with archleak reconstruct); "
                                 "'live' (a niced worker process attacks captures as they arrive); "
                                 "'after-run' (attack the stored captures once the last round ends)")
    interceptor_queue: int = Field(
        8, ge=1, le=1_000_000, description="live mode: captures waiting at most; more are dropped "
                                           "and counted, never blocking training")

    def attack(self) -> AttackSettings:
        return AttackSettings(**{k: getattr(self, k) for k in AttackSettings.model_fields})

