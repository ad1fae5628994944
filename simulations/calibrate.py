"""``archleak amia-calibrate``: every membership attack against a target that overfits, before any
architecture-level figure is trusted.

The calibration target is weight-level and known to leak: a ResNet trained for many epochs on a small member set
(a clear train-test gap). Members and non-members are balanced and disjoint; the attacker's pool (shadows,
reference models, RMIA's population) is a third disjoint part of the train split. Every attack of the registry
scores the same candidates: ML-Leaks with its shadows and attack model, LiRA (offline, online) and RMIA with the
same cached reference models. The literature's order at low FPR is RMIA ≳ LiRA ≫ ML-Leaks; the report prints the
measured order beside it, and a departure is to be investigated, not explained away.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacker.membership.amia import AmiaConfig, fit_attack, scores_from_posteriors
from attacker.membership.attacks import REFERENCE_ATTACKS
from attacker.membership.metrics import FEW_POSITIVES, membership_metrics
from attacker.membership.references import cached_references, universe_of
from attacker.membership.report import log_roc_png
from attacker.membership.shadow import MembershipKnowledge, ShadowTraining, train_classifier
from attacker.scoring.stats import wilson
from fednas.batches import ImageSet
from fednas.data import load_dataset
from fednas.resnet import ResNet
from fednas.search import LocalSearchConfig
from fednas.search_space import SupernetSpec
from fednas.seeds import seeded_init
from fednas.serve import model_black_box
from fednas.storage import atomic_write_bytes, atomic_write_json, package_versions

ATTACKS = ("ml-leaks", "lira", "lira-online", "rmia")


def split(labels: int, members: int, pool: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint member, non-member and attacker-pool ids of the train split."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(labels)
    if 2 * members + pool > labels:
        raise ValueError(f"members = {members} and pool = {pool} need {2 * members + pool} train images; the "
                         f"dataset has {labels}")
    return np.sort(order[:members]), np.sort(order[members:2 * members]), np.sort(order[2 * members:2 * members + pool])


def calibrate(dataset: str, data_root: str, cfg: AmiaConfig, members: int, pool: int, target_epochs: int,
              out: Path, log: Any = print) -> dict[str, Any]:
    """Train the overfitting target, run every attack on the same candidates, write the table and the ROC plot."""
    data = load_dataset(dataset, data_root)
    device = torch.device(cfg.device)
    seconds: dict[str, float] = {}
    ins, outs, pool_ids = split(len(data.train_labels), members, pool, cfg.seed)
    member_set = ImageSet.take(data.train_images, data.train_labels, ins)
    tick = time.perf_counter()
    generator = torch.Generator().manual_seed(cfg.seed)
    with seeded_init(generator):
        model = ResNet(cfg.resnet_depth, data.channels, data.num_classes, data.mean, data.std).to(device)
    train_classifier(model, member_set, ShadowTraining(target_epochs, cfg.shadow_batch_size, cfg.shadow_lr,
                                                       cfg.resnet_depth), generator, device, lambda *a: None, "target")
    spec = SupernetSpec(in_channels=data.channels, image_size=data.image_size, num_classes=data.num_classes)
    box = model_black_box(model, {"num_classes": data.num_classes, "channels": data.channels,
                                  "height": data.image_size, "width": data.image_size, "dtype": "uint8",
                                  "model": f"resnet-{cfg.resnet_depth} overfitted"}, device)
    seconds["target"] = time.perf_counter() - tick
    candidates = np.concatenate([ins, outs])
    is_member = np.arange(len(candidates)) < len(ins)
    cand = ImageSet.take(data.train_images, data.train_labels, candidates)
    answers = box.predict(cand.images.numpy())
    y = cand.labels.numpy()
    gap = {"train_accuracy": float((answers.argmax(1) == y)[is_member].mean()),
           "test_accuracy": float((answers.argmax(1) == y)[~is_member].mean())}
    log(f"archleak: calibration target: train accuracy {gap['train_accuracy']:.3f}, held-out "
        f"{gap['test_accuracy']:.3f} ({seconds['target']:.0f} s)")
    public = MembershipKnowledge(spec, data.mean, data.std, LocalSearchConfig(),
                                 ImageSet.take(data.train_images, data.train_labels, pool_ids))
    # the attacker knows the training recipe (LiRA's threat model): shadows and references train like the target
    recipe = cfg.model_copy(update={"shadow_epochs": target_epochs})
    scores = attack_all(public, recipe, box, cand, answers, y, seconds, log)
    rows = [{"attack": name, **membership_metrics(s, is_member).as_dict()} for name, s in scores.items()]
    result = {"dataset": dataset, "members": members, "pool": pool, "target_epochs": target_epochs, **gap,
              "config": cfg.model_dump(by_alias=True), "seed": cfg.seed, "seconds": seconds, "rows": rows,
              "order_at_0.1%_fpr": [r["attack"] for r in sorted(rows, key=lambda r: -r["tpr_at_01pct_fpr"])],
              "versions": package_versions()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "calibration.json", result)
    atomic_write_bytes(out / "calibration.md", markdown(result).encode())
    atomic_write_bytes(out / "roc.png", log_roc_png({name: (s, is_member) for name, s in scores.items()},
                                                    "membership attacks on an overfitted target"))
    return result


def attack_all(public: MembershipKnowledge, cfg: AmiaConfig, box: Any, cand: ImageSet, answers: np.ndarray,
               y: np.ndarray, seconds: dict[str, float], log: Any) -> dict[str, np.ndarray]:
    tick = time.perf_counter()
    fitted = fit_attack(public, cfg, torch.Generator().manual_seed(cfg.seed + 1), torch.device(cfg.device))
    scores = {"ml-leaks": scores_from_posteriors(fitted, answers, y)}
    seconds["ml-leaks"] = time.perf_counter() - tick
    universe, n = universe_of(cand, public.pool, cfg.population)
    refs = cached_references(public, universe, cfg.shadow, cfg.references, cfg.training(), cfg.seed,
                             torch.device(cfg.device))
    seconds["references"] = refs.seconds
    log(f"archleak: {cfg.references} reference models "
        f"({'trained in ' + format(refs.seconds, '.0f') + ' s' if refs.seconds else 'from the cache'})")
    target_on_universe = box.predict(universe.images.numpy())
    for name in ATTACKS[1:]:
        scores[name] = REFERENCE_ATTACKS.get(name)(target_on_universe, refs, universe.labels.numpy(), n,
                                                   cfg.rmia_gamma)
    return scores


def markdown(result: dict[str, Any]) -> str:
    head = (f"Target: ResNet trained {result['target_epochs']} epochs on {result['members']} members: train "
            f"accuracy {result['train_accuracy']:.3f}, held-out {result['test_accuracy']:.3f}. {result['members']} "
            f"members against as many non-members; attacker pool {result['pool']}; "
            f"{result['config']['references']} reference models; seed {result['seed']}.")
    lines = [f"# Membership-attack calibration ({result['dataset']})", "", head, "",
             "| attack | AUC [95% CI] | TPR@1%FPR [95% CI] | TPR@0.1%FPR [95% CI] (TP) | best accuracy |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        few = ", too few to trust" if r["tp_at_01pct_fpr"] < FEW_POSITIVES else ""
        n = r["n_members"]
        tpr1 = wilson(round(r["tpr_at_1pct_fpr"] * n), n)
        tpr01 = wilson(r["tp_at_01pct_fpr"], n)
        lines.append(f"| {r['attack']} | {r['auc']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}] | "
                     f"{r['tpr_at_1pct_fpr']:.3f} [{tpr1[0]:.3f}, {tpr1[1]:.3f}] | {r['tpr_at_01pct_fpr']:.4f} "
                     f"[{tpr01[0]:.4f}, {tpr01[1]:.4f}] ({r['tp_at_01pct_fpr']} of {n}{few}) | "
                     f"{r['best_accuracy']:.3f} |")
    order = " > ".join(result["order_at_0.1%_fpr"])
    lines += ["", f"Measured order at 0.1% FPR: {order}; the literature's: rmia ≳ lira ≫ ml-leaks.",
              "Seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()), ""]
    return "\n".join(lines)
