"""PDARTS (Chen et al., 2019): DARTS in stages, the supernet deeper at each stage, the weakest operations of
every edge pruned between stages, dropout on the skip connections, and a cap on their number in the final cell.

The federated rounds are split evenly into stages (``pdarts-keep`` has one entry per transition). At a transition
the server keeps, on every edge, the ``keep`` strongest non-``none`` operations by the stage's final α, builds the
next stage's supernet ``pdarts-depth-step`` cells deeper with fresh weights, and starts α afresh on the kept
operations (the pruned ones sit at :data:`~fednas.methods.child.OFF`: weight exactly 0, never computed, zero
gradient). Within a stage the skip-connection dropout decays linearly from the stage's rate to 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fednas.methods.child import OFF
from fednas.methods.knobs import MethodKnobs
from fednas.search_space import CellGenotype, Genotype, SupernetSpec
from fednas.supernet import MixedOp, SearchCell, SuperNet, derive_cell


def stages(knobs: MethodKnobs) -> int:
    return len(knobs.keep_schedule()) + 1


def stage_of(knobs: MethodKnobs, server_round: int, num_rounds: int) -> int:
    """The stage of a round (round 0, the initial model, is in stage 0); rounds are split evenly."""
    if server_round <= 0:
        return 0
    return min(stages(knobs) - 1, (server_round - 1) * stages(knobs) // num_rounds)


def stage_rounds(knobs: MethodKnobs, stage: int, num_rounds: int) -> list[int]:
    return [r for r in range(1, num_rounds + 1) if stage_of(knobs, r, num_rounds) == stage]


def stage_spec(base: SupernetSpec, knobs: MethodKnobs, stage: int) -> SupernetSpec:
    return base.model_copy(update={"cells": base.cells + stage * knobs.pdarts_depth_step})


def skip_rate(knobs: MethodKnobs, server_round: int, num_rounds: int) -> float:
    """The skip-connection dropout of a round: the stage's rate, decaying linearly to 0 over the stage."""
    stage = stage_of(knobs, server_round, num_rounds)
    rounds = stage_rounds(knobs, stage, num_rounds)
    if not rounds:
        return 0.0
    return knobs.skip_rates()[stage] * (1 - rounds.index(server_round) / len(rounds))


def set_skip_dropout(model: SuperNet, rate: float, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, MixedOp):
            module.skip_dropout = (rate, generator) if rate > 0 else None


def mark_pruned(model: SuperNet) -> None:
    """Let every edge skip the operations its α has pruned (their weight is exactly zero: the same function)."""
    for i, cell in enumerate(model.cells):
        assert isinstance(cell, SearchCell)
        alpha = model.alphas[model.spec.alpha_group(i)].detach()
        for row, edge in enumerate(cell.edges):
            if isinstance(edge, MixedOp):
                edge.off = frozenset(int(k) for k in (alpha[row] <= OFF / 2).nonzero().flatten().tolist())


def prune(alpha: torch.Tensor, keep: int, primitives: tuple[str, ...], generator: torch.Generator,
          init_scale: float = 1e-3) -> torch.Tensor:
    """Keep the ``keep`` strongest non-``none`` operations still alive on every edge (``none`` stays); the kept
    entries restart at ``init_scale``·N(0, 1) (a new stage's α), the rest are :data:`OFF`."""
    real = torch.tensor([p != "none" for p in primitives])
    alive = alpha > OFF / 2
    ranked = alpha.masked_fill(~(alive & real), float("-inf"))
    top = ranked.topk(min(keep, int(real.sum())), dim=1).indices
    kept = torch.zeros_like(alive).scatter_(1, top, True) & alive
    kept |= ~real & alive
    fresh = init_scale * torch.randn(alpha.shape, generator=generator)
    return torch.where(kept, fresh, torch.full_like(alpha, OFF))


def kept_counts(alpha: torch.Tensor, primitives: tuple[str, ...]) -> list[int]:
    """Live non-``none`` operations per edge."""
    real = torch.tensor([p != "none" for p in primitives])
    return ((alpha > OFF / 2) & real).sum(1).tolist()


def cap_skips(weights: torch.Tensor, nodes: int, primitives: tuple[str, ...], cap: int) -> CellGenotype:
    """PDARTS's final rule: derive the cell; while it holds more than ``cap`` skip connections, zero the weakest
    chosen skip connection's weight and derive again."""
    w = weights.detach().clone()
    skip = primitives.index("skip_connect") if "skip_connect" in primitives else -1
    while True:
        cell = derive_cell(w, nodes, primitives)
        chosen = _chosen_rows(cell, nodes)
        skips = [row for row, (op, _) in zip(chosen, cell.edges, strict=True) if op == "skip_connect"]
        if skip < 0 or len(skips) <= cap:
            return cell
        weakest = min(skips, key=lambda row: float(w[row, skip]))
        w[weakest, skip] = 0.0


def _chosen_rows(cell: CellGenotype, nodes: int) -> list[int]:
    rows, offset = [], 0
    for node in range(nodes):
        rows += [offset + src for _, src in cell.edges[2 * node:2 * node + 2]]
        offset += 2 + node
    return rows


def final_genotype(weights: Mapping[str, torch.Tensor], spec: SupernetSpec, cap: int) -> Genotype:
    """The genotype with the skip cap on the normal cells (every group but ``reduce``)."""
    return Genotype(groups=tuple(
        (g, cap_skips(weights[g], spec.nodes, spec.primitives, cap if g != "reduce" else 10 ** 6)
         if g != "reduce" else derive_cell(weights[g], spec.nodes, spec.primitives))
        for g in spec.alpha_groups()))
