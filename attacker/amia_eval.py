"""Score AMIA against a finished federated search: build the attacker's knowledge, fit, query, measure.

This is the scoring side: it reads the run's ground truth (partition, evaluation-only log) to form the
member/non-member query sets and passes the attack only the query images and labels, the black box and the
attacker's public knowledge. Stages are timed: target, shadows + attack model, evaluation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacker.amia import AmiaConfig, fit_attack, scores_from_posteriors
from attacker.blackbox import BlackBox, HttpBlackBox, TargetNotFound, load_target
from attacker.membership import MEMBER_KINDS, attacker_pool, member_ids, membership_sets, run_facts
from attacker.mia_metrics import MembershipMetrics, membership_metrics
from attacker.shadow import Progress, PublicKnowledge
from fednas.config import parse_app_config
from fednas.data import load_dataset
from fednas.federation import generator
from fednas.search_space import SupernetSpec

AMIA_STREAM = 7


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


def public_knowledge(run_dir: Path, cfg: AmiaConfig, data_root: str = "") -> PublicKnowledge:
    """The attacker's knowledge: public data statistics, search space and recipe, its labelled pool."""
    meta = json.loads((Path(run_dir) / "config.json").read_text())
    values = {**meta["config"], "dataset": meta["dataset"]}
    if data_root:
        values["data-root"] = data_root
    run_cfg = parse_app_config(values).federation
    root = data_root or meta["data_root"]
    data = load_dataset(meta["dataset"], root)
    pool = attacker_pool(data, run_cfg.population_fraction, run_cfg.seed, cfg.seed, cfg.eta, cfg.eta_dataset, root)
    return PublicKnowledge(SupernetSpec.model_validate(meta["supernet"]), data.mean, data.std,
                           run_cfg.local_search(), pool)


def _target(run_dir: Path, url: str, model: str, device: torch.device, data_root: str) -> BlackBox:
    return HttpBlackBox(url) if url else load_target(run_dir, device, data_root, model)


def evaluate_run(run_dir: Path, cfg: AmiaConfig, *, url: str = "", model: str = "global", data_root: str = "",
                 clients: tuple[int, ...] = (), kinds: tuple[str, ...] = (), num_clients: int = 0,
                 progress: Progress = lambda *a: None, log: Callable[[str], None] = print) -> AmiaResult:
    """Run AMIA on ``run_dir``'s global model or DMP student (in process), or the prediction service at ``url``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise TargetNotFound(f"{run_dir} is not a run folder (no config.json)")
    device = torch.device(cfg.device)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    target = _target(run_dir, url, model, device, data_root)
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

    public = public_knowledge(run_dir, cfg, data_root)
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
