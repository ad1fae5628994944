"""Model distillation against membership inference (DMP, Shejwalkar and Houmansadr), the paper's MD defense.

The searched model is the teacher. It labels an unlabelled public reference set. Its lowest-entropy answers are
kept (per predicted class, so that every class stays represented): those are the samples whose labels reveal
least about any private training point. A student is trained only
on those samples and only on the teacher's soft labels, and the student is what gets served. The student never
sees private data, or the true labels of the reference set.

The reference set is the public half of the run's held-back population, the same half that the AMIA attacker holds
at the same seed. The student therefore never sees D^α, D^θ or AMIA's non-members. Student kinds:
  searched  the teacher's architecture (the supernet with the teacher's final α, frozen) with fresh weights
  resnet    a ResNet-8, a concise fixed student
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fednas.batches import BatchSampler, ImageSet
from fednas.registry import Registry, registered
from fednas.resnet import ResNet
from fednas.run_folder import RunFolder, RunNotFound
from fednas.schema import KebabModel
from fednas.search_space import SupernetSpec
from fednas.seeds import seeded_init
from fednas.storage import load_tensors
from fednas.supernet import SuperNet, build_supernet

STUDENT_FILE = "student.safetensors"   # in the run folder's distilled/


@dataclass(frozen=True)
class StudentKind:
    """How to make a fresh student from the teacher, and how to rebuild a saved one from its metadata."""

    make: Callable[[SuperNet, torch.Generator, torch.device], nn.Module]
    rebuild: Callable[[dict[str, Any]], nn.Module]


STUDENTS: Registry[StudentKind] = Registry("student kind")


class DistillConfig(KebabModel):
    """DMP settings; saved with the student."""

    seed: int = Field(0, ge=0, description="drives the reference split, the student's init and its batches")
    student: Annotated[str, registered(STUDENTS)] = Field(
        "searched", description="student kind: searched (teacher's α, fresh θ) or resnet")
    keep_fraction: float = Field(0.25, gt=0, le=1, description="share of the reference set kept: the lowest "
                                                                 "teacher-entropy samples")
    epochs: int = Field(3, ge=1, description="student training epochs")
    batch_size: int = Field(32, ge=1, description="student batch size")
    lr: float = Field(0.05, gt=0, description="student learning rate (SGD, momentum 0.9, cosine decay)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the teacher's soft labels")
    grad_clip: float = Field(5.0, ge=0, description="gradient-norm clipping of the student's steps (0: off)")


@torch.no_grad()
def soft_labels(teacher: nn.Module, images: torch.Tensor, temperature: float, device: torch.device,
                batch_size: int = 256) -> torch.Tensor:
    """The teacher's softmax(logits / T) on uint8 images, float32 [N, K]."""
    teacher.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device, torch.float32) / 255.0
        out.append(torch.softmax(teacher(x).double() / temperature, dim=1).float().cpu())
    return torch.cat(out)


def low_entropy(probs: torch.Tensor, keep_fraction: float) -> np.ndarray:
    """Positions of the lowest-entropy ``keep_fraction`` of the rows *within each predicted class* (at least one
    per class), sorted. Per class, so that a teacher that is most sure of a few classes does not leave the
    student with only those."""
    p = probs.double()
    entropy = (-(p * p.clamp_min(1e-30).log()).sum(1)).numpy()
    predicted = p.argmax(1).numpy()
    kept = []
    for c in np.unique(predicted):
        rows = np.nonzero(predicted == c)[0]
        keep = max(1, round(keep_fraction * len(rows)))
        kept.append(rows[np.argsort(entropy[rows], kind="stable")[:keep]])
    return np.sort(np.concatenate(kept))


@dataclass
class Distilled:
    student: nn.Module
    reference_ids: np.ndarray   # dataset ids the student was trained on (all public)
    targets: torch.Tensor       # the teacher's soft labels for them


def distill(teacher: SuperNet, reference: ImageSet, cfg: DistillConfig, generator: torch.Generator,
            device: torch.device, progress: Callable[[int, int], None] = lambda done, total: None,
            on_batch: Callable[[np.ndarray, torch.Tensor], None] = lambda ids, targets: None) -> Distilled:
    """Train a student on the teacher's soft labels of the low-entropy part of ``reference``.

    ``on_batch`` sees every training batch's dataset ids and targets (for logging and tests).
    """
    probs = soft_labels(teacher, reference.images, cfg.temperature, device)
    kept = low_entropy(probs, cfg.keep_fraction)
    data = reference.subset(kept)
    targets = probs[torch.as_tensor(kept)]
    student = STUDENTS.get(cfg.student).make(teacher, generator, device)
    sampler = BatchSampler(len(data), min(cfg.batch_size, len(data)), generator)
    steps = cfg.epochs * sampler.batches_per_epoch()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    student.train()
    for step in range(steps):
        positions = next(sampler)
        x = data.images[positions].to(device, torch.float32) / 255.0   # the true labels are never read
        y = targets[positions].to(device)
        on_batch(data.ids[positions.numpy()], y)
        loss = F.kl_div(F.log_softmax(student(x) / cfg.temperature, dim=1), y, reduction="batchmean")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the student's loss diverged at step {step + 1} of {steps}; lower 'lr'")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        progress(step + 1, steps)
    student.eval()
    return Distilled(student, data.ids.copy(), targets)


def _normalisation(model: SuperNet) -> tuple[list[float], list[float]]:
    return model.input_mean.flatten().tolist(), model.input_std.flatten().tolist()


def student_meta(student: nn.Module, kind: str, teacher: SuperNet) -> dict[str, Any]:
    """What :func:`rebuild_student` needs, as JSON."""
    mean, std = _normalisation(teacher)
    return {"student": kind, "spec": teacher.spec.model_dump(mode="json"), "mean": mean, "std": std}


def rebuild_student(meta: dict[str, Any], state: dict[str, torch.Tensor], device: torch.device) -> nn.Module:
    """A saved student, ready to answer queries (eval mode)."""
    model = STUDENTS.get(meta["student"]).rebuild(meta)
    model.load_state_dict(state)
    return model.to(device).eval()


def _make_searched(teacher: SuperNet, generator: torch.Generator, device: torch.device) -> nn.Module:
    """The teacher's searched architecture (its α, frozen) with freshly initialised weights."""
    mean, std = _normalisation(teacher)
    student = build_supernet(teacher.spec, mean, std, generator, device)
    with torch.no_grad():
        for group, alpha in teacher.alphas.items():
            student.alphas[group].copy_(alpha)
            student.alphas[group].requires_grad_(False)
    return student


def _rebuild_searched(meta: dict[str, Any]) -> nn.Module:
    return SuperNet(SupernetSpec.model_validate(meta["spec"]), meta["mean"], meta["std"])


def _rebuild_resnet(meta: dict[str, Any]) -> nn.Module:
    spec = meta["spec"]
    return ResNet(8, spec["in_channels"], spec["num_classes"], meta["mean"], meta["std"])


def _make_resnet(teacher: SuperNet, generator: torch.Generator, device: torch.device) -> nn.Module:
    """A ResNet-8 with the teacher's input normalisation."""
    with seeded_init(generator):
        return _rebuild_resnet(student_meta(teacher, "resnet", teacher)).to(device)


STUDENTS.add("searched", StudentKind(_make_searched, _rebuild_searched))
STUDENTS.add("resnet", StudentKind(_make_resnet, _rebuild_resnet))


def student_path(run_dir: Path) -> Path:
    return RunFolder(run_dir).distilled / STUDENT_FILE


def load_student(run_dir: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The DMP student that ``archleak distill`` saved in ``run_dir`` (eval mode), and its metadata."""
    path = student_path(run_dir)
    if not path.exists():
        raise RunNotFound(f"{path} does not exist: run 'archleak distill {run_dir}' first")
    state, meta = load_tensors(path)
    return rebuild_student(meta, state, device), meta
