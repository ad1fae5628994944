"""The Flower side of the update-level defenses: client mods and the server strategy wrapper (Flower's own).

Each function here is a plug point of one registry entry (:mod:`defenses.config`); the ClientApp installs one mod
that reads the run config at each message and chains the chosen defenses' mods (``app.client_app``):
- local DP: ``LocalDpMod`` clips the reply to C and adds Gaussian noise to every coordinate;
- central DP: ``fixedclipping_mod`` clips the reply when the server's wrapper sent a clipping norm; the server
  (:class:`CentralDP`) adds the noise to the aggregate. The wire carries clipped, un-noised updates.
Both Flower DP mods check that the reply's arrays have the same names as the broadcast's and treat every array as
numbers. The packed θ therefore carries its layout in its name, not in an array (``fednas/records.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Context, Message
from flwr.clientapp.mod import LocalDpMod, fixedclipping_mod
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

ClientAppCallable = Callable[[Message, Context], Message]
ClientMod = Callable[[Message, Context, ClientAppCallable], Message]


def local_dp_mod(clip: float, epsilon: float, delta: float) -> ClientMod:
    """Flower's LocalDpMod: the update clipped to ``clip``, noise for (ε, δ) at sensitivity 2C on every coordinate."""
    return LocalDpMod(clipping_norm=clip, sensitivity=2 * clip, epsilon=epsilon, delta=delta)


def central_clip_mod(msg: Message) -> ClientMod | None:
    """Flower's ``fixedclipping_mod`` for the messages that carry the server's clipping norm (central DP).

    It wraps the others (the registry puts central DP last): clipping after local noise is post-processing, and it
    keeps the central sensitivity at C."""
    with_norm = any(KEY_CLIPPING_NORM in record for record in msg.content.config_records.values())
    return fixedclipping_mod if with_norm else None


def chain(mods: Iterable[ClientMod], inner: ClientAppCallable) -> ClientAppCallable:
    """``inner`` wrapped in ``mods``, the first one innermost."""
    for mod in mods:
        inner = _wrap(mod, inner)
    return inner


def _wrap(mod: ClientMod, inner: ClientAppCallable) -> ClientAppCallable:
    return lambda msg, ctxt: mod(msg, ctxt, inner)


class CentralDP(DifferentialPrivacyClientSideFixedClipping):
    """Flower's central DP with client-side fixed clipping, calibrated to the clients that actually replied.

    Flower's wrapper adds N(0, (σC/m)²) to the aggregate with m fixed when it is built. Here m is set to the number
    of replies in each round before the noise is drawn, so the noise matches the mean it protects.
    """

    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        replies = list(replies)
        self.num_sampled_clients = max(len(replies), 1)
        return super().aggregate_train(server_round, replies)


def central_dp_strategy(strategy: Strategy, noise_multiplier: float, clip: float, expected_clients: int
                        ) -> Strategy:
    """The server's strategy inside Flower's central-DP wrapper (noise σ·C/m on the mean of m clipped updates)."""
    return CentralDP(strategy, noise_multiplier, clip, max(expected_clients, 1))
