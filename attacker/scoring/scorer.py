"""The scoring half of the eavesdropper: ground truth enters here, after the attack and never feeding it.

The :class:`Scorer` reads the run's evaluation-only log (which samples each client really used) and the dataset,
and scores each reconstruction against its true batch, next to the label-only baseline (the public class mean
of the recovered label); it writes the capture's PNG grid. :func:`summarise_attack` turns one attack's metric
lines into success rates with the baseline beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacker.reconstruct.loop import Reconstruction
from attacker.scoring.gallery import grid_png
from attacker.scoring.label_leakage import true_counts
from attacker.scoring.metrics import (
    CRITERIA,
    Oracle,
    Truth,
    build_truth,
    cached_oracle,
    score_images,
    success_rates,
)
from attacker.scoring.stats import mean_ci, wilson
from attacker.wire.capture import CaptureRecord
from fednas.config import RunConfig
from fednas.data import ImageData
from fednas.evaluation_log import evaluation_folder, read_alpha_batches
from fednas.storage import atomic_write_bytes


class Scorer:
    """Scores reconstructions of one run's captures against the evaluation-only log."""

    def __init__(self, run_dir: Path, data: ImageData, class_means: torch.Tensor, seed: int, out: Path) -> None:
        self.run_dir, self.data, self.class_means, self.seed, self.out = Path(run_dir), data, class_means, seed, out
        self._oracle: Oracle | None = None

    @property
    def oracle(self) -> Oracle:
        """The judge of recognisability: a CNN trained once on the train split and cached."""
        if self._oracle is None:
            self._oracle = cached_oracle(self.data.name, self.data.train_images.float() / 255,
                                         self.data.train_labels, self.data.num_classes)
        return self._oracle

    def label_truth(self, cfg: RunConfig, root: Path) -> dict[int, dict[str, Any]]:
        """Per node: its partition and the label counts of its D^α and D^θ (for the label-leakage score)."""
        try:
            return true_counts(self.run_dir, cfg, self.data.name, root, self.data.train_labels.numpy(),
                               self.data.num_classes)
        except (OSError, ValueError, KeyError, IndexError):
            return {}

    def describe(self) -> dict[str, Any]:
        """Where the evaluation-only log is looked for, and whether it is there (a report says which)."""
        folder = evaluation_folder(self.run_dir)
        return {"path": str(folder), "present": folder.is_dir() and any(folder.iterdir())}

    def truth(self, record: CaptureRecord, keys: Sequence[str]) -> Truth | None:
        """The capture's true images: the batches named by ``keys`` of the evaluation-only log, in step order."""
        ids = []
        for key in keys:
            batches = read_alpha_batches(self.run_dir, record.server_round, record.node_id, key)
            if batches is None:
                return None
            ids += [i for b in batches for i in b]
        return build_truth(self.data.train_images, self.data.train_labels, ids, self.seed)

    def score(self, record: CaptureRecord, recon: Reconstruction, attack: str, keys: Sequence[str]
              ) -> dict[str, Any]:
        """Per-image metrics of ``recon`` (labels only when the log has no truth for it) and its PNG grid."""
        baseline = self.class_means[recon.labels]
        truth = self.truth(record, keys)
        if truth is None or len(truth.labels) != len(recon.labels):
            rows: list[dict[str, Any]] = [{"label": int(lbl)} for lbl in recon.labels]
            shown = [recon.images, baseline]
        else:
            rows, shown = score_images(recon.images, recon.labels, baseline, truth, self.oracle)
        png = f"r{record.server_round:04d}-n{record.node_id}-{attack}.png"
        atomic_write_bytes(self.out / png, grid_png(shown))
        return {"png": png, "images": rows}


def summarise_attack(lines: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One attack's lines: success rates under each criterion, its label-only baseline, cost, skips."""
    ok = [r for r in lines if not r.get("error")]
    images = [m for r in ok for m in r["images"] if "true_label" in m]
    attack, base = success_rates(images), success_rates([m["baseline"] for m in images])
    if images:
        attack["label"] = base["label"] = float(np.mean([m["label_correct"] for m in images]))
    secs = [r["seconds_per_image"] for r in ok]
    skipped = [r for r in lines if r.get("not_applicable")]
    failed = [r for r in lines if r.get("error") and not r.get("not_applicable")]
    intervals = {"attack": rate_intervals(images), "baseline": rate_intervals([m["baseline"] for m in images])}
    if images:
        intervals["attack"]["label"] = intervals["baseline"]["label"] = count_interval(
            [bool(m["label_correct"]) for m in images])
    return {"captures": len(ok), "images_scored": len(images), "attack": attack, "baseline": base,
            "intervals": intervals,
            "seconds_per_image": float(np.mean(secs)) if secs else None, "not_applicable": len(skipped),
            "failed": len(failed),
            "why_not": skipped[-1]["error"].removeprefix("not applicable: ") if skipped else "",
            "why_failed": failed[-1]["error"].splitlines()[0] if failed else ""}


def count_interval(hits: Sequence[bool]) -> dict[str, Any]:
    k, n = int(sum(hits)), len(hits)
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "low": lo, "high": hi}


def rate_intervals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per criterion: successes k of n images with a 95% Wilson interval; per mean (PSNR, SSIM, MSE): a 95%
    normal interval."""
    if not rows:
        return {}
    out: dict[str, Any] = {c: count_interval([bool(r[c]) for r in rows]) for c in CRITERIA}
    for key in ("mse", "psnr", "ssim"):
        _, lo, hi = mean_ci([float(r[key]) for r in rows])
        out[key] = {"n": len(rows), "low": lo, "high": hi}
    return out
