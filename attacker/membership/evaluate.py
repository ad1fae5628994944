"""Score AMIA against a finished federated search: build the attacker's knowledge, fit, query, measure.

This is the scoring side: it reads the run's ground truth (partition, evaluation-only log) to form the
member/non-member query sets and passes the attack only the query images and labels, the black box and the
attacker's public knowledge. Stages are timed: target, shadows + attack model, evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacker.membership.amia import AmiaConfig, fit_attack, scores_from_posteriors
from attacker.membership.members import MEMBER_KINDS, attacker_pool, member_ids, membership_sets, run_facts
from attacker.membership.metrics import MembershipMetrics, membership_metrics
from attacker.membership.shadow import MembershipKnowledge, StageProgress
from fednas.data import load_dataset
from fednas.run_folder import RunFolder
from fednas.search_space import SupernetSpec
from fednas.seeds import AMIA_STREAM, generator
from fednas.serve import BlackBox


@dataclass
class AmiaResult:
    config: AmiaConfig
    run_dir: str
    target: dict[str, Any]
    metrics: dict[str, MembershipMetrics]
    scores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # kind -> (ids, member, score)
    target_accuracy: dict[str, dict[str, float]]  # kind -> the target's accuracy on members / non-members
    seconds: dict[str, float] = field(default_factory=dict)
    shadow: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def membership_knowledge(run_dir: Path, cfg: AmiaConfig, data_root: str = "") -> MembershipKnowledge:
    """The attacker's knowledge: public data statistics, search space and recipe, its labelled pool."""
    folder = RunFolder(run_dir)
    run_cfg, root = folder.federation(data_root), folder.data_root(data_root)
    data = load_dataset(folder.dataset(), root)
    pool = attacker_pool(data, run_cfg.population_fraction, run_cfg.seed, cfg.seed, cfg.eta, cfg.eta_dataset, root)
    return MembershipKnowledge(SupernetSpec.model_validate(folder.meta()["supernet"]), data.mean, data.std,
                               run_cfg.local_search(), pool)


def evaluate_run(run_dir: Path, cfg: AmiaConfig, target: BlackBox, *, data_root: str = "",
                 clients: tuple[int, ...] = (), kinds: tuple[str, ...] = (), num_clients: int = 0,
                 progress: StageProgress = lambda *a: None, log: Callable[[str], None] = print) -> AmiaResult:
    """Run AMIA against ``target`` (the black box serving ``run_dir``'s model: in process, over HTTP, or its DMP
    student); the run folder supplies the ground truth for scoring and the attacker's public knowledge."""
    run_dir = RunFolder(run_dir).require("no membership to score").path
    device = torch.device(cfg.device)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    description = target.info()
    seconds["target"] = time.perf_counter() - tick

    facts = run_facts(run_dir, num_clients)
    data = load_dataset(facts.dataset, data_root or facts.data_root)
    labels = data.train_labels.numpy()
    members = member_ids(facts, labels, clients)
    notes = []
    if not kinds and not len(members["alpha-used"]):  # by default, leave out what the log cannot tell
        notes.append("no α batches in the evaluation-only log: the 'alpha-used' members are left out")
    chosen = kinds or tuple(k for k in MEMBER_KINDS if k != "alpha-used" or len(members[k]))
    sets = membership_sets(facts, labels, cfg.eval_size, cfg.seed, clients, chosen, members)

    public = membership_knowledge(run_dir, cfg, data_root)
    attack = fit_attack(public, cfg, generator(cfg.seed, AMIA_STREAM), device, progress)
    seconds.update(attack.seconds)
    log(f"archleak: attack model fitted on {cfg.shadows} {cfg.shadow} shadow(s) "
        f"(shadow train accuracy {np.mean(attack.shadow_train_accuracy):.3f}, "
        f"attack accuracy on shadow answers {attack.shadow_member_rate:.3f})")

    tick = time.perf_counter()
    metrics, scores, accuracy = {}, {}, {}
    for kind, query in sets.items():
        posteriors = target.predict(data.train_images[torch.as_tensor(query.ids)].numpy())
        y = labels[query.ids]
        s = scores_from_posteriors(attack, posteriors, y)
        metrics[kind] = membership_metrics(s, query.member)
        scores[kind] = (query.ids, query.member, s)
        correct = posteriors.argmax(1) == y
        accuracy[kind] = {"members": float(correct[query.member].mean()),
                          "nonmembers": float(correct[~query.member].mean())}
        progress("evaluation", len(scores), len(sets))
    seconds["evaluation"] = time.perf_counter() - tick
    shadow = {"kind": cfg.shadow, "count": cfg.shadows, "train_accuracy": attack.shadow_train_accuracy,
              "attack_accuracy_on_shadows": attack.shadow_member_rate, "pool": len(public.pool)}
    return AmiaResult(cfg, str(run_dir), description, metrics, scores, accuracy, seconds, shadow, notes)
