"""The race's figures: every image's PSNR/SSIM over time from a contestant's snapshots, their mean curve against
seconds per image, the time to reach a level, and the plot. Pure functions of recorded traces and the truth."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from attacker.scoring.metrics import psnr, ssim

GRID_POINTS = 200


class Recorded(Protocol):
    """What a contestant's optimisation left: snapshot times (seconds since its start) and images."""

    times: list[float]
    snapshots: list[torch.Tensor]


@dataclass(frozen=True)
class Step:
    """One image's PSNR and SSIM after each snapshot, at seconds per image."""

    seconds: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray


def image_steps(traces: Sequence[Recorded], truth: torch.Tensor) -> list[Step]:
    """Per image, its step function. A trace over n images (a batched optimisation) is charged its time over n
    per image; a trace per image (one at a time) its own time."""
    steps: list[Step] = []
    offset = 0
    for trace in traces:
        shots = torch.stack(trace.snapshots)                          # [S, n, C, H, W]
        n = shots.shape[1]
        seconds = np.asarray(trace.times) / n
        for i in range(n):
            target = truth[offset + i:offset + i + 1].expand(len(shots), *truth.shape[1:])
            steps.append(Step(seconds, psnr(shots[:, i], target).numpy(), ssim(shots[:, i], target).numpy()))
        offset += n
    return steps


def mean_curve(steps: Sequence[Step]) -> dict[str, list[float]]:
    """Mean PSNR and SSIM over the images on a common grid of seconds per image (each image holds its latest
    snapshot's value, its last one after it stopped)."""
    times = np.unique(np.concatenate([s.seconds for s in steps]))
    if len(times) > GRID_POINTS:
        times = np.unique(np.quantile(times, np.linspace(0, 1, GRID_POINTS)))
    values: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for key in values:
        grid = np.stack([getattr(s, key)[np.searchsorted(s.seconds, times, side="right") - 1] for s in steps])
        values[key] = [round(float(v), 4) for v in grid.mean(0)]
    return {"seconds_per_image": [round(float(t), 4) for t in times], **values}


def seconds_to_reach(curve: dict[str, list[float]], level: float) -> float | None:
    """The first time the mean PSNR reaches ``level`` (None: never)."""
    for t, v in zip(curve["seconds_per_image"], curve["psnr"], strict=True):
        if v >= level - 1e-9:
            return t
    return None


def summary(curve: dict[str, list[float]]) -> dict[str, Any]:
    best = int(np.argmax(curve["psnr"]))
    return {"best_psnr": curve["psnr"][best], "seconds_to_best": curve["seconds_per_image"][best],
            "final_psnr": curve["psnr"][-1], "final_ssim": curve["ssim"][-1],
            "seconds_per_image": curve["seconds_per_image"][-1], "start_psnr": curve["psnr"][0]}


def curves_png(curves: dict[str, dict[str, dict[str, list[float]]]], title: str) -> bytes:
    """One panel per start: mean PSNR against seconds per image (log scale), a line per contestant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (start, per_contestant) in zip(axes[0], curves.items(), strict=True):
        for name, curve in per_contestant.items():
            seconds = np.maximum(curve["seconds_per_image"], 1e-2)
            ax.plot(seconds, curve["psnr"], drawstyle="steps-post", label=name)
        ax.set(xscale="log", xlabel="seconds per image (one thread)", ylabel="mean PSNR (dB)", title=f"start: {start}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
