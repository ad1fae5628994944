"""One client's local round under each search method: what it trains on D^θ, what it does with D^α, and what it
sends back (the supernet's α/θ entries plus the method's own, prefixed ``ctrl:``, ``hyper:`` or ``rank:``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fednas.batches import BatchSampler, ImageSet
from fednas.methods.child import Child, child_forward, decode, uniform_child
from fednas.methods.enas import Controller, reinforce_loss
from fednas.methods.knobs import MethodKnobs
from fednas.methods.pdarts import mark_pruned, set_skip_dropout, skip_rate, stage_of
from fednas.methods.smash import HyperNet, loss_on, smash_forward
from fednas.search import (
    AlphaStepFn,
    LocalSearchConfig,
    LocalSearchResult,
    batch_ids,
    local_search,
    resolve_steps,
    search_schedule,
)
from fednas.seeds import METHOD_STREAM, generator
from fednas.state import unprefix
from fednas.supernet import SuperNet

Tensors = dict[str, torch.Tensor]
Forward = Callable[[torch.Tensor, Child], torch.Tensor]   # a candidate's logits: forward(images, child)


@dataclass
class RoundInputs:
    """Everything a client's local round reads."""

    knobs: MethodKnobs
    search: LocalSearchConfig
    seed: int
    server_round: int
    num_rounds: int
    model: SuperNet
    extra: Tensors
    theta_set: ImageSet
    alpha_set: ImageSet
    generator: torch.Generator
    alpha_step: AlphaStepFn | None = None


@dataclass
class RoundOutputs:
    result: LocalSearchResult
    extra: Tensors = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def darts_round(inp: RoundInputs) -> RoundOutputs:
    return RoundOutputs(local_search(inp.model, inp.theta_set, inp.alpha_set, inp.search, inp.generator,
                                     alpha_step=inp.alpha_step))


def pdarts_round(inp: RoundInputs) -> RoundOutputs:
    """DARTS on the stage's supernet, with the stage's skip-connection dropout (on the plain supernet: the fast path
    has no dropout)."""
    rate = skip_rate(inp.knobs, inp.server_round, inp.num_rounds)
    mark_pruned(inp.model)
    set_skip_dropout(inp.model, rate, inp.generator)
    search = inp.search.model_copy(update={"fast_search": False}) if rate > 0 else inp.search
    out = local_search(inp.model, inp.theta_set, inp.alpha_set, search, inp.generator, alpha_step=inp.alpha_step)
    set_skip_dropout(inp.model, 0.0, inp.generator)
    return RoundOutputs(out, metrics={"pdarts-stage": float(stage_of(inp.knobs, inp.server_round,
                                                                            inp.num_rounds)),
                                      "pdarts-skip-dropout": rate})


def controller(model: SuperNet, knobs: MethodKnobs) -> Controller:
    return Controller(model.spec, knobs.enas_hidden, knobs.enas_temperature, knobs.enas_tanh_constant)


def hypernet(model: SuperNet, knobs: MethodKnobs) -> HyperNet:
    return HyperNet(model, knobs.smash_hidden)


def _sgd(params: list[torch.nn.Parameter], search: LocalSearchConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=search.theta_lr, momentum=search.theta_momentum,
                           weight_decay=search.theta_weight_decay)


def _theta_step(loss: torch.Tensor, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer,
                clip: float) -> None:
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _train_on_theta(inp: RoundInputs, params: list[torch.nn.Parameter],
                    step_loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]) -> LocalSearchResult:
    """SGD over the round's D^θ steps: ``step_loss(x, y)`` gives each batch's loss and correct count."""
    search = inp.search
    n_theta = resolve_steps(search.theta_steps, search.theta_epochs, len(inp.theta_set), search.theta_batch_size)
    opt = _sgd(params, search)
    sampler = BatchSampler(len(inp.theta_set), search.theta_batch_size, inp.generator) if n_theta else None
    result = LocalSearchResult()
    inp.model.train()
    for _ in range(n_theta):
        assert sampler is not None
        positions = next(sampler)
        x, y = inp.theta_set.batch(positions, "cpu")
        loss, correct = step_loss(x, y)
        _theta_step(loss, params, opt, search.grad_clip)
        result.book("theta", float(loss.detach()), correct, len(y), batch_ids(inp.theta_set, positions))
    return result


def child_round(inp: RoundInputs) -> RoundOutputs:
    """ENAS's and SMASH's final rounds: SGD on D^θ of the adopted child (the broadcast α's encoding) alone, with
    its own weights; D^α is not read, and the method's tensors go back as received."""
    model = inp.model
    child = decode({g: a.detach() for g, a in model.alphas.items()}, model.spec)

    def step_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        logits = child_forward(model, x, child)
        return F.cross_entropy(logits, y), int((logits.detach().argmax(1) == y).sum())

    result = _train_on_theta(inp, model.weight_parameters(), step_loss)
    return RoundOutputs(result, {k: v.detach().clone() for k, v in inp.extra.items()}, {"child-training": 1.0})


def enas_round(inp: RoundInputs) -> RoundOutputs:
    """θ: SGD on D^θ, each step under a child the controller samples. Controller: per D^α batch, sample a child,
    reward = its accuracy on the batch, baseline ← moving average, one Adam step on the REINFORCE loss. Then
    ENAS's derivation: the round's candidates (:func:`enas_candidates`) are ranked on a sample of D^α with the
    shared weights; the scores go back as ``rank:scores``. In the child-training rounds (``child-train-share``):
    :func:`child_round`."""
    if inp.knobs.trains_child(inp.server_round, inp.num_rounds):
        return child_round(inp)
    model, search, knobs, gen = inp.model, inp.search, inp.knobs, inp.generator
    ctrl = controller(model, knobs)
    ctrl.load_state_dict(unprefix(inp.extra, "ctrl:"))
    n_theta = resolve_steps(search.theta_steps, search.theta_epochs, len(inp.theta_set), search.theta_batch_size)
    n_ctrl = resolve_steps(search.alpha_steps, search.alpha_epochs, len(inp.alpha_set), search.alpha_batch_size)
    theta_params = model.weight_parameters()
    theta_opt = _sgd(theta_params, search)
    ctrl_opt = torch.optim.Adam(ctrl.parameters(), lr=knobs.enas_lr)
    samplers = {"theta": BatchSampler(len(inp.theta_set), search.theta_batch_size, gen) if n_theta else None,
                "alpha": BatchSampler(len(inp.alpha_set), search.alpha_batch_size, gen) if n_ctrl else None}
    result, rewards = LocalSearchResult(), []
    for kind in search_schedule(n_theta, n_ctrl, search.search_order):
        data = inp.alpha_set if kind == "alpha" else inp.theta_set
        sampler = samplers[kind]
        assert sampler is not None
        positions = next(sampler)
        x, y = data.batch(positions, "cpu")
        if kind == "theta":
            model.train()
            with torch.no_grad():
                child = ctrl.sample(gen).child
            logits = child_forward(model, x, child)
            loss = F.cross_entropy(logits, y)
            _theta_step(loss, theta_params, theta_opt, search.grad_clip)
            result.book("theta", float(loss.detach()), int((logits.detach().argmax(1) == y).sum()), len(y),
                        batch_ids(data, positions))
            continue
        sample = ctrl.sample(gen)
        model.eval()
        with torch.no_grad():
            correct = int((child_forward(model, x, sample.child).argmax(1) == y).sum())
        reward = correct / len(y)
        baseline = ctrl.update_baseline(reward, knobs.enas_baseline_decay)
        loss = reinforce_loss(sample.log_prob, sample.entropy, reward, baseline, knobs.enas_entropy_weight)
        ctrl_opt.zero_grad(set_to_none=True)
        loss.backward()
        ctrl_opt.step()
        rewards.append(reward)
        result.book("alpha", float(loss.detach()), correct, len(y), batch_ids(data, positions))
    scores = rank_on_alpha(inp, result, lambda x, c: child_forward(model, x, c),
                           enas_candidates(model, knobs, inp.extra, inp.seed, inp.server_round),
                           knobs.enas_rank_samples)
    extra = {f"ctrl:{k}": v.detach().clone() for k, v in ctrl.state_dict().items()}
    extra["rank:scores"] = scores
    metrics = {"enas-reward": sum(rewards) / max(len(rewards), 1), "enas-baseline": float(ctrl.baseline),
               "enas-best-score": float(scores.max())}
    return RoundOutputs(result, extra, metrics)


def enas_candidates(model: SuperNet, knobs: MethodKnobs, sent: Tensors, seed: int, server_round: int) -> list[Child]:
    """ENAS's derivation: cells sampled from the controller the server sent this round (a stream of the run seed,
    so every client and the server draw the same cells); the clients rank them on D^α, the server adopts the best."""
    ctrl = controller(model, knobs)
    ctrl.load_state_dict(unprefix(sent, "ctrl:"))
    gen = generator(seed, METHOD_STREAM, 3, server_round)
    with torch.no_grad():
        return [ctrl.sample(gen).child for _ in range(knobs.enas_candidates)]


def rank_on_alpha(inp: RoundInputs, result: LocalSearchResult, forward: Forward, children: list[Child],
                  cap: int) -> torch.Tensor:
    """Rank ``children`` on a random ``cap`` of the client's D^α images (0: all), booked as used; their scores."""
    order = torch.randperm(len(inp.alpha_set), generator=inp.generator)
    chosen = order[:cap] if cap else order
    ranked = inp.alpha_set.subset(chosen)
    inp.model.eval()
    scores = rank(forward, children, ranked)
    result.book("alpha", 0.0, round(float(scores.max()) * len(ranked)), len(ranked), tuple(int(i) for i in ranked.ids))
    return scores


def candidates(seed: int, server_round: int, model: SuperNet, k: int) -> list[Child]:
    """The round's SMASH candidates: the same on every client and on the server (a stream of the run seed)."""
    gen = generator(seed, METHOD_STREAM, 1, server_round)
    return [uniform_child(model.spec, gen) for _ in range(k)]


@torch.no_grad()
def rank(forward: Forward, children: list[Child], ranked: ImageSet, batch_size: int = 500) -> torch.Tensor:
    """Each candidate's accuracy on ``ranked`` (a sample of D^α: ranking reads D^α only), ``forward(x, child)``
    giving its logits (ENAS: the shared weights; SMASH: generated weights)."""
    scores = []
    for child in children:
        correct = 0
        for start in range(0, len(ranked), batch_size):
            x, y = ranked.batch(torch.arange(start, min(start + batch_size, len(ranked))), "cpu")
            correct += int((forward(x, child).argmax(1) == y).sum())
        scores.append(correct / max(len(ranked), 1))
    return torch.tensor(scores, dtype=torch.float64)


def smash_round(inp: RoundInputs) -> RoundOutputs:
    """θ and the hypernetwork: SGD on D^θ, each step a uniformly random architecture with generated 1×1 weights.
    Then the round's candidates are ranked on (a seeded sample of) D^α; the scores go back as ``rank:scores``.
    In the child-training rounds (``child-train-share``): :func:`child_round` on the best candidate's
    materialised weights."""
    if inp.knobs.trains_child(inp.server_round, inp.num_rounds):
        return child_round(inp)
    model, gen = inp.model, inp.generator
    hyper = hypernet(model, inp.knobs)
    hyper.load_state_dict(unprefix(inp.extra, "hyper:"))
    result = _train_on_theta(inp, [*model.weight_parameters(), *hyper.parameters()],
                             lambda x, y: loss_on(model, hyper, x, y, uniform_child(model.spec, gen)))
    scores = rank_on_alpha(inp, result, lambda x, c: smash_forward(model, hyper, x, c),
                           candidates(inp.seed, inp.server_round, model, inp.knobs.smash_candidates),
                           inp.knobs.smash_rank_samples)
    extra = {f"hyper:{k}": v.detach().clone() for k, v in hyper.state_dict().items()}
    extra["rank:scores"] = scores
    return RoundOutputs(result, extra, {"smash-best-score": float(scores.max())})


def enas_extra(model: SuperNet, knobs: MethodKnobs, seed: int) -> Tensors:
    """The controller at the start of a run (ENAS's uniform [-0.1, 0.1] init, a stream of the run seed)."""
    ctrl = controller(model, knobs)
    ctrl.reset_parameters(generator(seed, METHOD_STREAM, 0))
    return {**{f"ctrl:{k}": v.detach().clone() for k, v in ctrl.state_dict().items()},
            "rank:scores": torch.zeros(knobs.enas_candidates, dtype=torch.float64)}   # the reply's layout


def smash_extra(model: SuperNet, knobs: MethodKnobs, seed: int) -> Tensors:
    """The hypernetwork at the start of a run."""
    hyper = hypernet(model, knobs)
    hyper.reset_parameters(model, generator(seed, METHOD_STREAM, 0))
    return {**{f"hyper:{k}": v.detach().clone() for k, v in hyper.state_dict().items()},
            "rank:scores": torch.zeros(knobs.smash_candidates, dtype=torch.float64)}   # the reply's layout from round 1
