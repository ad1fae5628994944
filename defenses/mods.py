"""The Flower side of the update-level defenses: client mods and the server strategy wrapper.

The client's mods are fixed when the ClientApp is built, but the defenses are chosen per run in the run config.
:func:`defense_mod` is therefore always installed and reads the run config at each message. It then runs
Flower's own mods in this order:
- clip: ``fixedclipping_mod`` for central DP, when the server's wrapper sent a clipping norm;
- clip + noise: ``LocalDpMod`` for local DP.
Account: the server's :func:`defenses.config.account_round` books the noise multiplier of each release.

- SecAgg+: ``secaggplus_mod`` for the messages of Flower's SecAgg+ workflow (the legacy path, ``fednas/secagg.py``).
Both Flower DP mods check that the reply's arrays have the same names as the broadcast's and treat every array as
numbers. The packed θ therefore carries its layout in its name, not in an array (``fednas/records.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.client.mod.secure_aggregation.secaggplus_mod import RECORD_KEY_CONFIGS
from flwr.clientapp.mod import LocalDpMod, fixedclipping_mod
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from defenses.config import DefenseConfig
from fednas.config import parse_app_config

ClientAppCallable = Callable[[Message, Context], Message]


def _with_config(msg: Message) -> bool:
    return any(KEY_CLIPPING_NORM in record for record in msg.content.config_records.values())


def defense_mod(overrides: Mapping[str, Any] | None = None
                ) -> Callable[[Message, Context, ClientAppCallable], Message]:
    """The mod that applies the update-level defenses the run config (plus ``overrides``) asks for."""

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        defense = parse_app_config({**ctxt.run_config, **(overrides or {})}).section("defense", DefenseConfig)
        if RECORD_KEY_CONFIGS in msg.content.config_records:  # a SecAgg+ stage (fednas/secagg.py)
            return secaggplus_mod(msg, ctxt, call_next)
        inner = call_next
        if "local-dp-update" in defense.names:
            ldp = LocalDpMod(clipping_norm=defense.update_clip, sensitivity=2 * defense.update_clip,
                             epsilon=defense.ldp_epsilon, delta=defense.update_delta)
            inner = _chain(ldp, inner)
        if "central-dp" in defense.names and _with_config(msg):
            # outermost, so it acts last on the reply: clipping after the local noise is post-processing,
            # and it keeps the central sensitivity at C
            inner = _chain(fixedclipping_mod, inner)
        return inner(msg, ctxt)

    return mod


def _chain(mod: Callable[[Message, Context, ClientAppCallable], Message], inner: ClientAppCallable
           ) -> ClientAppCallable:
    return lambda msg, ctxt: mod(msg, ctxt, inner)


class CentralDP(DifferentialPrivacyClientSideFixedClipping):
    """Flower's central DP with client-side fixed clipping, calibrated to the clients that actually replied.

    Flower's wrapper adds N(0, (σC/m)²) to the aggregate with m fixed when it is built. Here m is set to the number
    of replies in each round before the noise is drawn, so the noise matches the mean it protects.
    """

    def aggregate_train(self, server_round: int, replies):  # type: ignore[override]
        replies = list(replies)
        self.num_sampled_clients = max(len(replies), 1)
        return super().aggregate_train(server_round, replies)


def wrap_strategy(strategy: Strategy, defense: DefenseConfig, expected_clients: int) -> Strategy:
    """The server's strategy with the server-stage defenses around it (central DP), or ``strategy`` itself."""
    if "central-dp" not in defense.names:
        return strategy
    return CentralDP(strategy, defense.central_noise_multiplier, defense.update_clip, max(expected_clients, 1))
