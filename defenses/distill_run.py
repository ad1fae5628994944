"""``archleak distill RUN``: DMP on a finished search. Writes ``RUN/distilled/student.safetensors`` (weights and
metadata) and ``RUN/distilled/distill.json`` (config, seed, versions, accuracies, seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defenses.distillation import DistillConfig, distill, student_meta, student_path
from fednas.batches import ImageSet
from fednas.data import load_dataset
from fednas.partition import population_halves, population_indices
from fednas.run_folder import RunFolder
from fednas.search import evaluate
from fednas.seeds import DISTILL_STREAM, generator
from fednas.storage import atomic_write_json, package_versions, save_tensors
from fednas.target import load_global_model


def _accuracy(model: torch.nn.Module, test: ImageSet) -> float:
    return float(evaluate(model, test)["accuracy"])  # type: ignore[arg-type]


def distill_run(run_dir: Path, cfg: DistillConfig, device: torch.device, data_root: str = "",
                progress: Callable[[int, int], None] = lambda done, total: None) -> dict[str, Any]:
    """Distil the run's global model into a student trained on public data only; save and describe it."""
    run_dir = Path(run_dir)
    teacher, description = load_global_model(run_dir, device, data_root)
    folder = RunFolder(run_dir)
    config = folder.meta()["config"]
    data = load_dataset(description["dataset"], folder.data_root(data_root))
    population = population_indices(len(data.train_labels), config["population-fraction"], config["seed"])
    public, _ = population_halves(population, cfg.seed)
    if len(public) == 0:
        raise ValueError("the run holds back no population (population-fraction = 0): DMP has no public "
                         "reference data")
    reference = ImageSet.take(data.train_images, data.train_labels, public)
    tick = time.perf_counter()
    result = distill(teacher, reference, cfg, generator(cfg.seed, DISTILL_STREAM), device, progress)
    seconds = time.perf_counter() - tick
    n_test = config.get("eval-samples", 500) or len(data.test_labels)
    test = ImageSet.take(data.test_images, data.test_labels, np.arange(min(n_test, len(data.test_labels))))
    record = {"run_dir": str(run_dir), "config": cfg.model_dump(by_alias=True), "seed": cfg.seed,
              "reference": len(reference), "kept": len(result.reference_ids),
              "teacher_test_accuracy": _accuracy(teacher, test),
              "student_test_accuracy": _accuracy(result.student, test), "seconds": seconds,
              "versions": package_versions()}
    save_tensors(student_path(run_dir), result.student.state_dict(),
                 {**student_meta(result.student, cfg.student, teacher), "distill": record["config"]})
    atomic_write_json(folder.distilled / "distill.json", record)
    return record
