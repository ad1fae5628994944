"""``archleak bench reward --run RUN``: what ENAS's scalar rewards reveal about the D^α batches behind them.

The attacker (granted, as an upper bound, the cell and weights of the run's final model, and each batch's reward)
reads a reward as the class balance of the public batches that scored the same (:mod:`attacker.reconstruct.reward`);
the scorer compares that with the true controller batches of the run's evaluation-only log
(:mod:`attacker.scoring.reward_leakage`). Prints JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacker.reconstruct.knowledge import public_knowledge
from attacker.reconstruct.reward import correct_per_image, fit_reader
from attacker.scoring.reward_leakage import score_reader
from fednas.data import load_dataset
from fednas.evaluation_log import ALPHA_BATCHES, read_all_alpha_batches
from fednas.methods.child import decode, genotype
from fednas.run_folder import RunFolder
from fednas.seeds import ATTACK_STREAM, generator
from fednas.target import load_global_model
from simulations.reproduce.runner import provenance


def reward_leakage(run_dir: Path, data_root: str = "", trials: int = 20_000, public_samples: int = 5_000,
                   ) -> dict[str, Any]:
    folder = RunFolder(run_dir)
    cfg = folder.federation(data_root)
    if cfg.search_method != "enas":
        raise ValueError(f"bench reward reads an ENAS run (search-method = enas); {run_dir} ran "
                         f"search-method = {cfg.search_method}")
    model, description = load_global_model(run_dir, torch.device("cpu"), data_root, log=lambda line: None)
    child = decode({g: a.detach() for g, a in model.alphas.items()}, model.spec)
    data = load_dataset(folder.dataset(), folder.data_root())
    public = public_knowledge(cfg, data, public_samples)
    size, classes = cfg.alpha_batch_size, data.num_classes
    reader = fit_reader(correct_per_image(model, child, public.aux_images, public.aux_labels), public.aux_labels,
                        classes, size, trials, generator(cfg.seed, ATTACK_STREAM, 0xE5A5))
    # scoring side: the true controller batches of every client and round
    batches = [b for record in read_all_alpha_batches(run_dir) for b in record[ALPHA_BATCHES] if len(b) == size]
    if not batches:
        raise ValueError(f"{run_dir} logged no controller batch of {size} images (evaluation-only log)")
    ids = np.unique(np.concatenate([np.asarray(b) for b in batches]))
    where = {int(i): k for k, i in enumerate(ids)}
    index = torch.as_tensor(ids)
    truth_correct = correct_per_image(model, child, data.train_images[index].float() / 255, data.train_labels[index])
    positions = [torch.tensor([where[int(i)] for i in b]) for b in batches]
    score = score_reader(reader, truth_correct, data.train_labels[index], positions, classes,
                         generator(cfg.seed, ATTACK_STREAM, 0xB007))
    return {"run": str(run_dir), "round": description["round"], "batch_size": size, "partitioning": cfg.partitioning,
            "public_images": len(public.aux_labels), "public_batches": trials,
            "cell": str(genotype(child, model.spec)), "public_batches_per_reward": reader.counts.tolist(), **score,
            "seed": cfg.seed, **provenance()}
