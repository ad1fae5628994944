"""Privacy accounting for DP-SGD on α, composed across all rounds.

The maths is Opacus' (RDP or PRV accountant) applied to a client's whole history of subsampled Gaussian steps
``(σ, q, steps)``: one entry per round it took part in. The ledger (bookkeeping) only appends to histories; ε is
always recomputed from the full history, so it composes across rounds instead of restarting each round.

Caveat (as in Opacus): the analysis assumes Poisson subsampling at rate q = B/|D^α|; the local search draws
shuffled fixed-size batches, the usual approximation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fednas.registry import Registry

Step = tuple[float, float, int]      # (noise multiplier σ, sample rate q, steps)

# Opacus is imported when ε is first computed, not with this module: importing it pulls in
# torch.distributed and scipy.stats (about 2 s), which every ClientApp process would otherwise pay.
ACCOUNTANT_CLASSES: Registry[Callable[[], Any]] = Registry("privacy accountant")


@ACCOUNTANT_CLASSES.register("rdp")
def _rdp() -> Any:
    from opacus.accountants import RDPAccountant

    return RDPAccountant()


@ACCOUNTANT_CLASSES.register("prv")
def _prv() -> Any:
    from opacus.accountants import PRVAccountant

    return PRVAccountant()


def epsilon(history: Sequence[Step], delta: float, accountant: str = "rdp") -> float:
    """ε(δ) of a whole history of DP-SGD steps; inf when a step has σ = 0, 0 for an empty history."""
    steps = [s for s in history if s[2] > 0]
    if not steps:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in steps):
        return float("inf")
    acc = ACCOUNTANT_CLASSES.get(accountant)()
    acc.history = [(float(s), float(q), int(n)) for s, q, n in steps]
    return float(acc.get_epsilon(delta))


@dataclass
class PrivacyLedger:
    """Per-client histories of DP-SGD steps, and their ε after every round."""

    accountant: str = "rdp"
    histories: dict[str, list[Step]] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)

    def record(self, client: str, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> None:
        self.histories.setdefault(client, []).append((noise_multiplier, min(sample_rate, 1.0), steps))
        self.deltas[client] = delta

    def epsilons(self) -> dict[str, float]:
        return {c: epsilon(h, self.deltas[c], self.accountant) for c, h in sorted(self.histories.items())}

    def report(self) -> dict[str, Any]:
        eps = self.epsilons()
        return {"accountant": self.accountant, "epsilon": eps, "delta": dict(sorted(self.deltas.items())),
                "max_epsilon": max(eps.values(), default=0.0)}
