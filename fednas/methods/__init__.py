"""Search methods as data: one registry entry per method, carrying its plug points.

Every method searches the same space (the paper's eight operations, :mod:`fednas.search_space`) in the same
Flower app; an entry says what its clients do in a round, what the server does with the average, between rounds
and at the end, and what its messages carry (:class:`WireLayout`, which the eavesdropper's report reads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fednas.methods import rounds, server
from fednas.methods.knobs import METHOD_NAMES, MethodKnobs
from fednas.registry import Registry
from fednas.search_space import Genotype, SupernetSpec
from fednas.supernet import SuperNet

ALPHA_ATTACKS, THETA_ATTACKS = "alpha", "theta"


@dataclass(frozen=True)
class WireLayout:
    """What one client's reply carries, how D^α reaches it, and which attack families apply (``None``) or why
    not (the reason); ``child_attacks`` overrides ``attacks`` in the rounds that train the adopted cell alone."""

    sends: tuple[tuple[str, str], ...]
    d_alpha: str
    attacks: Mapping[str, str | None]
    child_attacks: Mapping[str, str | None] = field(default_factory=dict)

    def reason(self, family: str, child_training: bool = False) -> str | None:
        if child_training and family in self.child_attacks:
            return self.child_attacks[family]
        return self.attacks.get(family)


@dataclass(frozen=True)
class SearchMethod:
    name: str
    paper: str
    trains_alpha: bool                          # clients take α gradient steps (α-step defenses apply)
    plain_average: bool                         # the average of the supernet's α/θ is the next broadcast, unchanged
    wire: WireLayout
    client_round: Callable[[rounds.RoundInputs], rounds.RoundOutputs]
    initial_extra: Callable[[SuperNet, MethodKnobs, int], rounds.Tensors]
    round_spec: Callable[[SupernetSpec, MethodKnobs, int, int], SupernetSpec]
    adopt: Callable[[SuperNet, rounds.Tensors, rounds.Tensors, MethodKnobs, int, int, int], None]
    transition: Callable[..., SuperNet | None]
    genotype: Callable[[SuperNet, MethodKnobs], Genotype]
    version: int = 1                            # raised when what the method trains changes (cached targets key on it)
    knobs: tuple[str, ...] = ()                 # the MethodKnobs fields it reads (the others cannot change its run)


def _none(model: SuperNet, knobs: MethodKnobs, seed: int) -> rounds.Tensors:
    return {}


_ALPHA_SENDS = (("alpha:<group>", "α after the client's α steps on D^α"),
                ("theta:<name>", "θ after its SGD steps on D^θ (share-weights = true)"))
SEARCH_METHODS: Registry[SearchMethod] = Registry("search method")
SEARCH_METHODS.add("darts", SearchMethod(
    "darts", "Liu et al., DARTS (ICLR 2019)", True, True,
    WireLayout(_ALPHA_SENDS, "α gradients: every α step moves α by -lr·∇α of a D^α batch", {}),
    rounds.darts_round, _none, server.same_spec, server.keep_model, server.no_transition,
    server.softmax_genotype))
SEARCH_METHODS.add("pdarts", SearchMethod(
    "pdarts", "Chen et al., P-DARTS (ICCV 2019)", True, False,
    WireLayout(_ALPHA_SENDS, "α gradients, as DARTS, on the stage's supernet (the round config names the stage's "
                             "depth; pruned operations carry exactly zero gradient)", {}),
    rounds.pdarts_round, _none, server.pdarts_spec, server.keep_model, server.pdarts_transition,
    server.pdarts_genotype, knobs=("pdarts_keep", "pdarts_depth_step", "pdarts_skip_dropout", "pdarts_max_skips")))
SEARCH_METHODS.add("enas", SearchMethod(
    "enas", "Pham et al., ENAS (ICML 2018)", False, False,
    WireLayout((("ctrl:<name>", "the LSTM controller after its REINFORCE steps (and the reward baseline)"),
                ("theta:<name>", "the shared weights after SGD on D^θ under sampled cells"),
                ("rank:scores", ("each of the round's cells sampled from the sent controller: its accuracy on the "
                                 "client's D^α sample (ENAS's derivation)")),
                ("alpha:<group>", "the server's encoding of the best-ranked cell, returned as received")),
               "scalar rewards: each controller step's D^α batch enters only as the accuracy of one sampled cell, "
               "through the policy gradient into the controller's update; and the candidates' accuracies on a D^α "
               "sample (rank:scores)",
               {ALPHA_ATTACKS: "ENAS clients take no α step: α is the server's encoding of the adopted cell, "
                               "returned unchanged (D^α reaches the wire only as rewards inside the controller's "
                               "update and as the candidates' accuracies)",
                THETA_ATTACKS: "ENAS's shared weights train under cells the controller samples on the client, "
                               "which never cross the wire; inverting Δθ under unknown cells is not implemented "
                               "(it applies in the child-training rounds, child-train-share)"},
               {THETA_ATTACKS: None}),   # the adopted cell, whose encoding is the α on the wire, trains alone
    rounds.enas_round, rounds.enas_extra, server.same_spec, server.enas_adopt, server.no_transition,
    server.softmax_genotype, version=4,   # 2: nodes are means; 3: child-train-share; 4: ranked candidates
    knobs=("enas_hidden", "enas_lr", "enas_entropy_weight", "enas_baseline_decay", "enas_temperature",
           "enas_tanh_constant", "enas_candidates", "enas_rank_samples", "child_train_share")))
SEARCH_METHODS.add("smash", SearchMethod(
    "smash", "Brock et al., SMASH (ICLR 2018)", False, False,
    WireLayout((("hyper:<name>", "the hypernetwork after SGD on D^θ over random architectures"),
                ("theta:<name>", "the directly learned weights (stem, depthwise kernels, classifier)"),
                ("rank:scores", "each candidate architecture's accuracy on the client's D^α sample"),
                ("alpha:<group>", "the server's encoding of the last best candidate, returned as received")),
               "candidate accuracies: the D^α sample enters only as the fraction of it each candidate classifies "
               "correctly (rank:scores)",
               {ALPHA_ATTACKS: "SMASH clients take no α step: D^α only ranks the candidates (rank:scores)",
                THETA_ATTACKS: "SMASH's 1×1 weights are generated per sampled architecture by the hypernetwork; "
                               "inverting a hypernetwork update is not implemented (it applies in the "
                               "child-training rounds, child-train-share)"},
               {THETA_ATTACKS: None}),   # the adopted cell's own weights train alone under the α on the wire
    rounds.smash_round, rounds.smash_extra, server.same_spec, server.smash_adopt, server.no_transition,
    server.softmax_genotype, version=4,   # 2: nodes are means; 3: child-train-share; 4: 32 candidates
    knobs=("smash_hidden", "smash_candidates", "smash_rank_samples", "child_train_share")))
assert SEARCH_METHODS.names() == METHOD_NAMES

__all__ = ["ALPHA_ATTACKS", "SEARCH_METHODS", "THETA_ATTACKS", "MethodKnobs", "SearchMethod", "WireLayout"]


def wire_table() -> str:
    """The message layout of every method as a Markdown table (the README carries it; a test keeps them equal)."""
    lines = ["| method | a client's reply carries | how D^α reaches the wire | attacks that do not apply |",
             "|---|---|---|---|"]
    for name in SEARCH_METHODS.names():
        m = SEARCH_METHODS.get(name)
        sends = "<br>".join(f"`{prefix}`: {what}" for prefix, what in m.wire.sends)
        refused = "<br>".join(f"{family}: {why}" for family, why in m.wire.attacks.items() if why) or "none"
        refused += "".join(f"<br>in the child-training rounds (`child-train-share`): {family} {why or 'applies'}"
                           for family, why in m.wire.child_attacks.items())
        lines.append(f"| `{name}` ({m.paper}) | {sends} | {m.wire.d_alpha} | {refused} |")
    return "\n".join(lines) + "\n"
