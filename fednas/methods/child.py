"""A discrete architecture sampled from the search space (ENAS's and SMASH's child networks).

A child names, for every α group and every node, two (input, operation) pairs, as a DARTS genotype does; it
runs on the supernet's own operations (weight sharing), computing only the chosen ones. A node is the mean of its
two inputs: without BatchNorm a sum doubles the activations' variance at every node, and children sampled anew at
each step (ENAS's early controller, SMASH throughout) then diverge at the learning rate DARTS trains at.
:func:`encode` writes a child as α logits whose softmax is exactly ½ on the chosen operation and ½ on ``none`` on a
chosen edge, and exactly 1 on ``none`` elsewhere, so the supernet with that α computes the same function: that is
how a child is checkpointed, served and attacked like any other model of the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F

from fednas.search_space import CellGenotype, Genotype, SupernetSpec
from fednas.supernet import MixedOp, SearchCell, SuperNet

# node -> ((input, op index), (input, op index)); op indices are into spec.primitives
CellChoice = tuple[tuple[tuple[int, int], tuple[int, int]], ...]
Child = dict[str, CellChoice]
OFF = -1.0e4   # an α logit whose softmax weight is exactly 0 in float32 (exp underflows), with a zero gradient


def real_ops(spec: SupernetSpec) -> list[int]:
    return [k for k, p in enumerate(spec.primitives) if p != "none"]


def none_index(spec: SupernetSpec) -> int:
    if "none" not in spec.primitives:
        raise ValueError("a child network needs the 'none' operation in the primitives (it marks unused edges)")
    return spec.primitives.index("none")


def uniform_child(spec: SupernetSpec, generator: torch.Generator) -> Child:
    """Every node: two distinct inputs and two operations, uniformly (SMASH's random architectures)."""
    ops = real_ops(spec)
    child: Child = {}
    for group in spec.alpha_groups():
        nodes: list[tuple[tuple[int, int], tuple[int, int]]] = []
        for node in range(spec.nodes):
            inputs = torch.randperm(2 + node, generator=generator)[:2].tolist()
            picks = torch.randint(len(ops), (2,), generator=generator).tolist()
            nodes.append(((int(inputs[0]), ops[picks[0]]), (int(inputs[1]), ops[picks[1]])))
        child[group] = tuple(nodes)
    return child


def encode(child: Mapping[str, CellChoice], spec: SupernetSpec) -> dict[str, torch.Tensor]:
    """α logits per group whose softmax is the child, exactly (½ chosen operation + ½ ``none``: the mean)."""
    rows, cols = spec.alpha_shape()
    off = none_index(spec)
    out = {}
    for group in spec.alpha_groups():
        alpha = torch.full((rows, cols), OFF)
        alpha[:, off] = 0.0
        offset = 0
        for node, pairs in enumerate(child[group]):
            for src, op in pairs:
                alpha[offset + src, op] = 0.0
            offset += 2 + node
        out[group] = alpha
    return out


def genotype(child: Mapping[str, CellChoice], spec: SupernetSpec) -> Genotype:
    cells = []
    for group in spec.alpha_groups():
        edges = tuple((spec.primitives[op], src) for pairs in child[group] for src, op in sorted(pairs))
        cells.append((group, CellGenotype(edges=edges, concat=tuple(range(2, 2 + spec.nodes)))))
    return Genotype(groups=tuple(cells))


def child_forward(model: SuperNet, x: torch.Tensor, child: Mapping[str, CellChoice]) -> torch.Tensor:
    """Logits of the child on the supernet's shared weights: only the chosen operations run."""
    spec = model.spec
    s0 = s1 = model.stem((x - model.input_mean) / model.input_std)
    for i, module in enumerate(model.cells):
        cell = cast(SearchCell, module)
        choice = child[spec.alpha_group(i)]
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        offset = 0
        for node in range(cell.nodes):
            (src_a, op_a), (src_b, op_b) = choice[node]
            edge_a, edge_b = cast(MixedOp, cell.edges[offset + src_a]), cast(MixedOp, cell.edges[offset + src_b])
            h = 0.5 * (edge_a.ops[op_a](states[src_a]) + edge_b.ops[op_b](states[src_b]))
            offset += len(states)
            states.append(h)
        s0, s1 = s1, torch.cat(states[2:], dim=1)
    logits: torch.Tensor = model.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
    return logits


def decode(alphas: Mapping[str, torch.Tensor], spec: SupernetSpec) -> Child:
    """The child an :func:`encode`\\ d α holds (the inverse of :func:`encode`); raises on an α that is not one."""
    off = none_index(spec)
    child: Child = {}
    for group in spec.alpha_groups():
        on = alphas[group] > OFF / 2
        on[:, off] = False
        nodes: list[tuple[tuple[int, int], tuple[int, int]]] = []
        offset = 0
        for node in range(spec.nodes):
            pairs = [(src, int(on[offset + src].nonzero()[0])) for src in range(2 + node)
                     if int(on[offset + src].sum()) == 1]
            if len(pairs) != 2:
                raise ValueError(f"α group {group!r}, node {node}: not a child's encoding (two chosen edges needed)")
            nodes.append((pairs[0], pairs[1]))
            offset += 2 + node
        child[group] = tuple(nodes)
    return child
