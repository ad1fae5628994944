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
from attacker.membership.attacks import REFERENCE_ATTACKS
from attacker.membership.audit import audit
from attacker.membership.members import (
    MEMBER_KINDS,
    QuerySet,
    attacker_pool,
    member_ids,
    membership_sets,
    run_facts,
)
from attacker.membership.metrics import MembershipMetrics, membership_metrics
from attacker.membership.references import cached_references, universe_of
from attacker.membership.shadow import MembershipKnowledge, StageProgress
from fednas.batches import ImageSet
from fednas.data import ImageData, load_dataset
from fednas.run_folder import RunFolder
from fednas.search_space import SupernetSpec
from fednas.seeds import AMIA_STREAM, generator
from fednas.serve import BlackBox
from fednas.storage import read_jsonl


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
    audit: dict[str, Any] = field(default_factory=dict)   # DP audit of the D^α members, for runs with DP-SGD on α


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
    if cfg.attack == "ml-leaks":
        attack = fit_attack(public, cfg, generator(cfg.seed, AMIA_STREAM), device, progress)
        seconds.update(attack.seconds)
        log(f"archleak: attack model fitted on {cfg.shadows} {cfg.shadow} shadow(s) "
            f"(shadow train accuracy {np.mean(attack.shadow_train_accuracy):.3f}, "
            f"attack accuracy on shadow answers {attack.shadow_member_rate:.3f})")
        score: Scoring = lambda posteriors, y, ids: scores_from_posteriors(attack, posteriors, y)
        shadow = {"kind": cfg.shadow, "count": cfg.shadows, "train_accuracy": attack.shadow_train_accuracy,
                  "attack_accuracy_on_shadows": attack.shadow_member_rate, "pool": len(public.pool)}
    else:
        score, shadow = reference_scoring(public, cfg, target, data, sets, device, progress, seconds, log)

    tick = time.perf_counter()
    metrics, scores, accuracy = {}, {}, {}
    for kind, query in sets.items():
        posteriors = target.predict(data.train_images[torch.as_tensor(query.ids)].numpy())
        y = labels[query.ids]
        s = score(posteriors, y, query.ids)
        metrics[kind] = membership_metrics(s, query.member)
        scores[kind] = (query.ids, query.member, s)
        correct = posteriors.argmax(1) == y
        accuracy[kind] = {"members": float(correct[query.member].mean()),
                          "nonmembers": float(correct[~query.member].mean())}
        progress("evaluation", len(scores), len(sets))
    seconds["evaluation"] = time.perf_counter() - tick
    audited = dp_audit(run_dir, scores.get("alpha"), cfg.seed)
    if audited.get("exceeds_accountant"):
        notes.append(f"BUG: the audited ε {audited['epsilon_lower']:.3f} exceeds the accountant's "
                     f"{audited['accountant_epsilon']:.3f}: the accountant or the mechanism is wrong")
    return AmiaResult(cfg, str(run_dir), description, metrics, scores, accuracy, seconds, shadow, notes, audited)


Scoring = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]   # (posteriors, labels, ids) -> scores


def reference_scoring(public: MembershipKnowledge, cfg: AmiaConfig, target: BlackBox, data: ImageData,
                      sets: dict[str, QuerySet], device: torch.device, progress: StageProgress,
                      seconds: dict[str, float], log: Callable[[str], None]) -> tuple[Scoring, dict[str, Any]]:
    """LiRA / RMIA: reference models on the universe of every candidate (cached), the target's answers on it,
    then the registry's scores; returns a scoring function over candidate ids and what the report says of it."""
    ids = np.unique(np.concatenate([q.ids for q in sets.values()]))
    candidates = ImageSet.take(data.train_images, data.train_labels, ids)
    universe, n = universe_of(candidates, public.pool, cfg.population)
    refs = cached_references(public, universe, cfg.shadow, cfg.references, cfg.training(), cfg.seed, device,
                             progress)
    seconds["references"] = refs.seconds
    tick = time.perf_counter()
    answers = target.predict(universe.images.numpy())
    all_scores = REFERENCE_ATTACKS.get(cfg.attack)(answers, refs, universe.labels.numpy(), n, cfg.rmia_gamma)
    seconds["scoring"] = time.perf_counter() - tick
    log(f"archleak: {cfg.attack} with {cfg.references} {cfg.shadow} reference model(s) "
        f"({'trained in ' + format(refs.seconds, '.1f') + ' s' if refs.seconds else 'from the cache'}) on "
        f"{n} candidates and {len(universe) - n} population samples")
    position = {int(i): k for k, i in enumerate(ids)}
    score: Scoring = lambda posteriors, y, query_ids: all_scores[[position[int(i)] for i in query_ids]]
    accuracy = [float((refs.posteriors[r].argmax(1) == universe.labels.numpy())[refs.inside[r]].mean())
                for r in range(len(refs.posteriors))]
    return score, {"kind": cfg.shadow, "count": cfg.references, "train_accuracy": accuracy,
                   "population": len(universe) - n, "pool": len(public.pool), "attack": cfg.attack}


def dp_audit(run_dir: Path, alpha: tuple[np.ndarray, np.ndarray, np.ndarray] | None, seed: int) -> dict[str, Any]:
    """For a run whose clients ran DP-SGD on α (an accountant in ``rounds.jsonl``): the empirical lower bound on ε
    from this attack's scores of the D^α members, beside the accountant's ε of the last round (the largest over
    clients, with its δ). Empty for a run without DP-SGD on α."""
    rounds = read_jsonl(RunFolder(run_dir).rounds_file, skip=lambda line: None)
    privacy = next((r["privacy"] for r in reversed(rounds) if r.get("privacy", {}).get("epsilon")), None)
    if alpha is None or privacy is None:
        return {}
    _, member, score = alpha
    delta = max(privacy["delta"].values())
    found = audit(score, member, delta, np.random.default_rng(seed))
    accountant = float(privacy["max_epsilon"])
    return {**found.to_dict(), "accountant_epsilon": accountant, "exceeds_accountant": found.epsilon_lower > accountant}
