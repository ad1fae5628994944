"""ENAS (Pham et al., 2018) on the DARTS search space: an LSTM controller samples cells, the shared weights
train on D^θ under the sampled cells, and the controller trains with REINFORCE on the sampled cells' accuracy on
D^α (moving-average baseline, entropy bonus).

The controller decides, for every α group and every node, an input, an operation, a second (distinct) input and a
second operation. Inputs are chosen by attention over the anchors of the earlier nodes, operations by a linear
decoder; logits pass through ``c·tanh(l / T)`` (ENAS's temperature and tanh constant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fednas.methods.child import Child, real_ops
from fednas.search_space import SupernetSpec


def reinforce_loss(log_prob: torch.Tensor, entropy: torch.Tensor, reward: float, baseline: float,
                   entropy_weight: float) -> torch.Tensor:
    """The controller's loss: its gradient is the REINFORCE estimate of -∇E[reward], minus the entropy bonus."""
    return -(reward - baseline) * log_prob - entropy_weight * entropy


@dataclass(frozen=True)
class Sample:
    child: Child
    log_prob: torch.Tensor
    entropy: torch.Tensor


class Controller(nn.Module):
    """ENAS's micro-search controller over ``spec``'s α groups and nodes."""

    baseline: torch.Tensor

    def __init__(self, spec: SupernetSpec, hidden: int = 64, temperature: float = 5.0,
                 tanh_constant: float = 2.5) -> None:
        super().__init__()
        self.groups, self.nodes = spec.alpha_groups(), spec.nodes
        self.ops = real_ops(spec)
        self.temperature, self.tanh_constant = temperature, tanh_constant
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.op_embedding = nn.Embedding(len(self.ops), hidden)
        self.anchor_inputs = nn.Parameter(torch.zeros(2, hidden))   # the cell's two inputs
        self.attn_anchor = nn.Linear(hidden, hidden, bias=False)
        self.attn_query = nn.Linear(hidden, hidden, bias=False)
        self.attn_v = nn.Linear(hidden, 1, bias=False)
        self.op_decoder = nn.Linear(hidden, len(self.ops))
        self.register_buffer("baseline", torch.zeros(()))

    def reset_parameters(self, generator: torch.Generator, scale: float = 0.1) -> None:
        """ENAS initialises every controller weight uniformly in [-0.1, 0.1]."""
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-scale, scale, generator=generator)
            self.baseline.zero_()

    def _squash(self, logits: torch.Tensor) -> torch.Tensor:
        return self.tanh_constant * torch.tanh(logits / self.temperature)

    def _choose(self, logits: torch.Tensor, generator: torch.Generator | None
                ) -> tuple[int, torch.Tensor, torch.Tensor]:
        log_p = F.log_softmax(logits, dim=-1)
        if generator is None:
            index = int(log_p.argmax())
        else:
            index = int(torch.multinomial(log_p.exp(), 1, generator=generator))
        p = log_p.exp()
        return index, log_p[index], -(p * log_p.masked_fill(p == 0, 0.0)).sum()   # a masked choice adds 0

    def sample(self, generator: torch.Generator | None) -> Sample:
        """One child with its log-probability and entropy (``generator=None``: the greedy child)."""
        h: torch.Tensor = torch.zeros_like(self.start)
        c: torch.Tensor = torch.zeros_like(self.start)
        x: torch.Tensor = self.start
        log_prob, entropy = self.start.new_zeros(()), self.start.new_zeros(())
        child: Child = {}
        for group in self.groups:
            anchors = [self.anchor_inputs[0:1], self.anchor_inputs[1:2]]
            nodes: list[tuple[tuple[int, int], tuple[int, int]]] = []
            for _node in range(self.nodes):
                pairs: list[tuple[int, int]] = []
                keys = self.attn_anchor(torch.cat(anchors))
                for slot in range(2):
                    h, c = self.lstm(x, (h, c))
                    scores = self._squash(self.attn_v(torch.tanh(keys + self.attn_query(h))).squeeze(-1))
                    if slot == 1:   # after the squash, which would map -inf to -c
                        scores = scores.masked_fill(F.one_hot(torch.tensor(pairs[0][0]), len(anchors)).bool(),
                                                    float("-inf"))
                    src, lp, ent = self._choose(scores, generator)
                    log_prob, entropy = log_prob + lp, entropy + ent
                    x = anchors[src]
                    h, c = self.lstm(x, (h, c))
                    op, lp, ent = self._choose(self._squash(self.op_decoder(h)[0]), generator)
                    log_prob, entropy = log_prob + lp, entropy + ent
                    x = self.op_embedding.weight[op:op + 1]
                    pairs.append((src, self.ops[op]))
                nodes.append((pairs[0], pairs[1]))
                anchors.append(h)
            child[group] = tuple(nodes)
        return Sample(child, log_prob, entropy)

    def update_baseline(self, reward: float, decay: float) -> float:
        """ENAS's moving average: b ← decay·b + (1 − decay)·reward; returns the new baseline."""
        with torch.no_grad():
            self.baseline.mul_(decay).add_((1 - decay) * reward)
        return float(self.baseline)
