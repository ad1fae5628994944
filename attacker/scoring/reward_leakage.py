"""How well the attacker's reading of a reward matches the true batches (scoring side: the true batches enter here).

Per true batch: the L1 distance between the estimated and the true class shares, for the reading of its reward and
for the prior alone; the reduction the reward buys (1 − reader / prior, with a bootstrap interval over batches); and
whether the estimate names the batch's most frequent class, against the prior's guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from attacker.reconstruct.reward import RewardReader
from attacker.scoring.stats import mean_ci, wilson


def score_reader(reader: RewardReader, correct: torch.Tensor, labels: torch.Tensor,
                 batches: Sequence[torch.Tensor], classes: int, generator: torch.Generator,
                 resamples: int = 1000) -> dict[str, Any]:
    """``correct``/``labels`` per image of the true pool; ``batches``: positions into it, one tensor per batch."""
    read, prior, hits, prior_hits = [], [], 0, 0
    for pick in batches:
        truth = torch.bincount(labels[pick], minlength=classes).double() / len(pick)
        estimate = reader.estimate(int(correct[pick].sum()))
        read.append(float((estimate - truth).abs().sum()))
        prior.append(float((reader.prior - truth).abs().sum()))
        top = truth.max()
        hits += int(truth[int(estimate.argmax())] == top)
        prior_hits += int(truth[int(reader.prior.argmax())] == top)
    n = len(read)
    r, p = torch.tensor(read), torch.tensor(prior)
    boots = []
    for _ in range(resamples if n else 0):
        idx = torch.randint(n, (n,), generator=generator)
        boots.append(1 - float(r[idx].mean()) / max(float(p[idx].mean()), 1e-12))
    boots.sort()
    reduction = 1 - float(r.mean()) / max(float(p.mean()), 1e-12) if n else float("nan")
    interval = [boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]] if boots else [None, None]
    return {"batches": n, "l1_reader": mean_ci(read), "l1_prior": mean_ci(prior),
            "l1_reduction": reduction, "l1_reduction_ci95": interval,
            "majority_class_hit": hits / max(n, 1), "majority_class_hit_ci95": list(wilson(hits, n)),
            "majority_class_hit_prior": prior_hits / max(n, 1),
            "majority_class_hit_prior_ci95": list(wilson(prior_hits, n)), "few": min(hits, prior_hits) < 10}
