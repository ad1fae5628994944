"""The membership attacks that score candidates with reference models, in one registry beside ML-Leaks.

``ml-leaks`` (the paper's attack: an MLP on sorted posteriors, :mod:`attacker.membership.amia`) needs shadows and
an attack model; the attacks here need the target's answers on the attacker's universe (candidates, then
population samples) and the reference models' answers on the same universe (:mod:`.references`):

  lira         offline LiRA: the target's logit-scaled confidence against the OUT references' Gaussian
  lira-online  online LiRA: the likelihood ratio of the IN and OUT Gaussians
  rmia         RMIA: the target's probability ratio against the references, compared with population samples
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacker.membership.likelihood import (
    lira_offline,
    lira_online,
    logit_confidence,
    rmia,
    true_class_probability,
    unit,
)
from attacker.membership.references import ReferenceAnswers
from fednas.registry import Registry

# (target posteriors on the universe [U, K], references, universe labels [U], candidates n, RMIA γ) -> scores [n]
ReferenceAttack = Callable[[np.ndarray, ReferenceAnswers, np.ndarray, int, float], np.ndarray]
REFERENCE_ATTACKS: Registry[ReferenceAttack] = Registry("membership attack")


@REFERENCE_ATTACKS.register("lira")
def lira(target: np.ndarray, refs: ReferenceAnswers, labels: np.ndarray, n: int, gamma: float) -> np.ndarray:
    return lira_offline(logit_confidence(target[:n], labels[:n]), logit_confidence(refs.posteriors[:, :n], labels[:n]),
                        refs.inside[:, :n], outside=refs.outside[:, :n])


@REFERENCE_ATTACKS.register("lira-online")
def lira_in_out(target: np.ndarray, refs: ReferenceAnswers, labels: np.ndarray, n: int, gamma: float) -> np.ndarray:
    llr = lira_online(logit_confidence(target[:n], labels[:n]), logit_confidence(refs.posteriors[:, :n], labels[:n]),
                      refs.inside[:, :n], outside=refs.outside[:, :n])
    return unit(llr)      # 0.5: the likelihood-ratio test at 1


@REFERENCE_ATTACKS.register("rmia")
def rmia_scores(target: np.ndarray, refs: ReferenceAnswers, labels: np.ndarray, n: int, gamma: float) -> np.ndarray:
    p_target, p_refs = true_class_probability(target, labels), true_class_probability(refs.posteriors, labels)
    return rmia(p_target[:n], p_refs[:, :n], p_target[n:], p_refs[:, n:], gamma=gamma, inside_x=refs.inside[:, :n])
