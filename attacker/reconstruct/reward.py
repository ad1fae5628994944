"""What a scalar reward says about its batch (ENAS): the attacker's reading, from public images only.

An ENAS client's controller step turns one D^α batch into one number, the accuracy k/B of a sampled cell on it. To
bound what that number reveals, the attacker is granted the cell and the weights it ran under (an upper bound: the
wire carries neither the cell nor the reward, only the controller's update). It then simulates batches of B public
images under that cell, and reads a reward k/B as the mean class histogram of the public batches that scored k: the
Bayes estimate of the batch's class balance under the public distribution. The prior is the mean histogram of all
public batches, whatever they scored; what the reward adds is the gap between the two (scored in
:mod:`attacker.scoring.reward_leakage`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fednas.methods.child import CellChoice, child_forward
from fednas.supernet import SuperNet


@dataclass(frozen=True)
class RewardReader:
    histograms: torch.Tensor   # [B + 1, classes]: mean class share of the public batches that scored k
    counts: torch.Tensor       # [B + 1]: public batches that scored k
    prior: torch.Tensor        # [classes]: mean class share of every public batch

    def estimate(self, correct: int) -> torch.Tensor:
        """The class balance a batch with ``correct`` right answers most likely had (the prior where no public
        batch scored that)."""
        return self.histograms[correct] if self.counts[correct] > 0 else self.prior


@torch.no_grad()
def correct_per_image(model: SuperNet, child: Mapping[str, CellChoice], images: torch.Tensor,
                      labels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Whether the cell classifies each image right (without BatchNorm an image's answer does not depend on its
    batch, so a batch's reward is the mean of its images')."""
    model.eval()
    out = [child_forward(model, images[i:i + batch_size], child).argmax(1) == labels[i:i + batch_size]
           for i in range(0, len(labels), batch_size)]
    return torch.cat(out)


def fit_reader(correct: torch.Tensor, labels: torch.Tensor, classes: int, batch_size: int, trials: int,
               generator: torch.Generator) -> RewardReader:
    """Simulate ``trials`` public batches of ``batch_size``: the mean class share per number of right answers."""
    sums = torch.zeros(batch_size + 1, classes, dtype=torch.float64)
    counts = torch.zeros(batch_size + 1, dtype=torch.int64)
    for _ in range(trials):
        pick = torch.randperm(len(labels), generator=generator)[:batch_size]
        k = int(correct[pick].sum())
        sums[k] += torch.bincount(labels[pick], minlength=classes).double() / batch_size
        counts[k] += 1
    histograms = sums / counts.clamp(min=1).unsqueeze(1)
    return RewardReader(histograms, counts, sums.sum(0) / max(trials, 1))
