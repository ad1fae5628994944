"""The server's side of each search method: what it does with the average before evaluating it (ENAS: the
best-ranked of the cells sampled from the controller it sent; SMASH: the best-ranked random candidate, with
generated weights), and between rounds (PDARTS: a stage transition)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fednas.methods.child import encode
from fednas.methods.knobs import MethodKnobs
from fednas.methods.pdarts import final_genotype, prune, stage_of, stage_spec
from fednas.methods.rounds import Tensors, candidates, enas_candidates, hypernet
from fednas.methods.smash import materialise
from fednas.search_space import Genotype, SupernetSpec
from fednas.seeds import METHOD_STREAM, generator
from fednas.state import unprefix
from fednas.supernet import SuperNet, build_supernet


def keep_model(model: SuperNet, extra: Tensors, sent: Tensors, knobs: MethodKnobs, seed: int, server_round: int,
               num_rounds: int) -> None:
    """DARTS and PDARTS: the average is the model. (``extra``: the method's averaged tensors; ``sent``: those the
    server broadcast this round.)"""


def enas_adopt(model: SuperNet, extra: Tensors, sent: Tensors, knobs: MethodKnobs, seed: int, server_round: int,
               num_rounds: int) -> None:
    """ENAS's derivation: the model is the best of the cells sampled from the controller the server sent, by the
    clients' mean D^α accuracy with the shared weights (its encoded α); in the rounds that train the child, the
    average is the model."""
    if knobs.trains_child(server_round, num_rounds):
        return
    cells = enas_candidates(model, knobs, sent, seed, server_round)
    best = int(extra["rank:scores"].argmax())
    with torch.no_grad():
        for group, alpha in encode(cells[best], model.spec).items():
            model.alphas[group].copy_(alpha)


def smash_adopt(model: SuperNet, extra: Tensors, sent: Tensors, knobs: MethodKnobs, seed: int, server_round: int,
                num_rounds: int) -> None:
    """The model is the round's best candidate by the clients' mean D^α accuracy, with generated weights; in the
    rounds that train the child, the average is the model."""
    if knobs.trains_child(server_round, num_rounds):
        return
    hyper = hypernet(model, knobs)
    hyper.load_state_dict(unprefix(extra, "hyper:"))
    children = candidates(seed, server_round, model, knobs.smash_candidates)
    scores = extra.get("rank:scores")
    best = int(scores.argmax()) if scores is not None else 0
    materialise(model, hyper, children[best])


Norm = tuple[Sequence[float], Sequence[float]]


def no_transition(model: SuperNet, base: SupernetSpec, knobs: MethodKnobs, seed: int, next_round: int,
                  num_rounds: int, norm: Norm) -> SuperNet | None:
    return None


def pdarts_transition(model: SuperNet, base: SupernetSpec, knobs: MethodKnobs, seed: int, next_round: int,
                      num_rounds: int, norm: Norm) -> SuperNet | None:
    """At a stage boundary: prune every edge to the transition's keep count by the stage's α, and build the next
    stage's deeper supernet with fresh weights and fresh α on the kept operations."""
    stage = stage_of(knobs, next_round, num_rounds)
    if next_round > num_rounds or stage == stage_of(knobs, next_round - 1, num_rounds):
        return None
    gen = generator(seed, METHOD_STREAM, 2, stage)
    new = build_supernet(stage_spec(base, knobs, stage), *norm, gen, next(model.parameters()).device)
    keep = knobs.keep_schedule()[stage - 1]
    with torch.no_grad():
        for group, alpha in model.alphas.items():
            new.alphas[group].copy_(prune(alpha.detach().cpu(), keep, model.spec.primitives, gen))
    return new


def softmax_genotype(model: SuperNet, knobs: MethodKnobs) -> Genotype:
    return model.genotype()


def pdarts_genotype(model: SuperNet, knobs: MethodKnobs) -> Genotype:
    weights = {g: torch.softmax(a.detach(), dim=-1) for g, a in model.alphas.items()}
    return final_genotype(weights, model.spec, knobs.pdarts_max_skips)


def same_spec(base: SupernetSpec, knobs: MethodKnobs, server_round: int, num_rounds: int) -> SupernetSpec:
    return base


def pdarts_spec(base: SupernetSpec, knobs: MethodKnobs, server_round: int, num_rounds: int) -> SupernetSpec:
    return stage_spec(base, knobs, stage_of(knobs, server_round, num_rounds))
