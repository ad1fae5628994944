"""Local search of one client in one round: first-order DARTS.

θ trains on D^θ with SGD + momentum; α trains on the disjoint D^α with a selectable optimizer. With the
default ``sgd`` α optimizer (no momentum, no weight decay) one α step changes α by exactly -lr·∇α,
which is what the architecture-level attacks invert.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from fednas.batches import BatchSampler, ImageSet
from fednas.fastnet import frozen_weights, search_net
from fednas.registry import Registry
from fednas.schema import KebabModel
from fednas.supernet import SuperNet


@dataclass(frozen=True)
class OptimizerPreset:
    lr: float
    weight_decay: float
    build: Callable[[Iterable[torch.nn.Parameter], float, float], torch.optim.Optimizer]


ALPHA_OPTIMIZERS: Registry[OptimizerPreset] = Registry("alpha optimizer")
ALPHA_OPTIMIZERS.add("sgd", OptimizerPreset(
    0.1, 0.0, lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=wd)))
ALPHA_OPTIMIZERS.add("adam", OptimizerPreset(
    3e-4, 1e-3, lambda params, lr, wd: torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999),
                                                        weight_decay=wd)))

SearchOrder = Literal["interleaved", "alpha-first", "theta-first"]


class LocalSearchConfig(KebabModel):
    """Hyper-parameters of one client's local search (sent to the client in the round's ConfigRecord)."""

    theta_steps: int = Field(10, ge=0, le=10_000_000, description="θ (weight) SGD steps per round on D^θ")
    theta_epochs: int = Field(0, ge=0, le=10_000, description="if > 0: θ epochs per round instead of theta-steps")
    theta_batch_size: int = Field(16, ge=1, le=65_536, description="θ batch size")
    theta_lr: float = Field(0.05, gt=0, description="θ learning rate (SGD)")
    theta_momentum: float = Field(0.9, ge=0, lt=1, description="θ SGD momentum")
    theta_weight_decay: float = Field(3e-4, ge=0, description="θ weight decay")
    grad_clip: float = Field(5.0, ge=0, description="θ gradient-norm clipping (0: off)")
    alpha_steps: int = Field(1, ge=0, le=10_000_000, description="α (architecture) steps per round on D^α")
    alpha_epochs: int = Field(0, ge=0, le=10_000, description="if > 0: α epochs per round instead of alpha-steps")
    alpha_batch_size: int = Field(1, ge=1, le=65_536, description="α batch size B (the paper's ADRA uses B=1)")
    alpha_optimizer: str = Field("sgd", description="α optimizer: 'sgd' (Δα = -lr·∇α) or 'adam' (DARTS)")
    alpha_lr: float = Field(-1.0, description="α learning rate; -1: the optimizer's preset (sgd 0.1, adam 3e-4)")
    alpha_weight_decay: float = Field(
        -1.0, description="α weight decay; -1: the optimizer's preset (sgd 0, adam 1e-3)")
    fast_search: bool = Field(True, description="fast path: edges leaving a state evaluated together, channels-last, "
                                                "dilated convolutions without a dilated kernel (the same function, "
                                                "tested to 1e-5; false: the plain supernet)")
    search_order: SearchOrder = Field(
        "interleaved", description="'interleaved' (DARTS: α then θ, spread evenly), 'alpha-first', 'theta-first'")

    @field_validator("alpha_optimizer")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        ALPHA_OPTIMIZERS.get(value)
        return value

    @field_validator("alpha_lr", "alpha_weight_decay")
    @classmethod
    def _preset_or_valid(cls, value: float) -> float:
        if value < 0 and value != -1:
            raise ValueError("must be >= 0, or -1 for the optimizer's preset")
        return value

    def resolved_alpha_lr(self) -> float:
        return ALPHA_OPTIMIZERS.get(self.alpha_optimizer).lr if self.alpha_lr == -1 else self.alpha_lr

    def resolved_alpha_weight_decay(self) -> float:
        preset = ALPHA_OPTIMIZERS.get(self.alpha_optimizer).weight_decay
        return preset if self.alpha_weight_decay == -1 else self.alpha_weight_decay


def resolve_steps(steps: int, epochs: int, size: int, batch_size: int) -> int:
    """Epochs win when set: ``epochs * (size // batch_size)`` steps."""
    return epochs * (size // batch_size) if epochs > 0 else steps


def search_schedule(theta_steps: int, alpha_steps: int, order: str) -> list[str]:
    """Order of the ``"alpha"`` and ``"theta"`` steps of one local search.

    ``interleaved`` spreads the α steps evenly among the θ steps, α first (DARTS alternates α, θ);
    with one α step it equals ``alpha-first``: α is updated under the broadcast weights.
    """
    if order == "alpha-first":
        return ["alpha"] * alpha_steps + ["theta"] * theta_steps
    if order == "theta-first":
        return ["theta"] * theta_steps + ["alpha"] * alpha_steps
    events = [(j / alpha_steps, 0, "alpha") for j in range(alpha_steps)]
    events += [(i / theta_steps, 1, "theta") for i in range(theta_steps)]
    return [kind for _, _, kind in sorted(events)]


@dataclass(frozen=True)
class StepEvent:
    """What a progress/logging callback receives after every step."""

    kind: str
    index: int
    loss: float
    correct: int
    batch_ids: tuple[int, ...]


@dataclass
class LocalSearchResult:
    theta_steps: int = 0
    alpha_steps: int = 0
    theta_loss: float = 0.0
    theta_correct: int = 0
    theta_seen: int = 0
    alpha_loss: float = 0.0
    alpha_correct: int = 0
    alpha_seen: int = 0
    alpha_batches: list[tuple[int, ...]] = field(default_factory=list)
    theta_batches: list[tuple[int, ...]] = field(default_factory=list)
    seconds: float = 0.0

    def book(self, kind: str, loss: float, correct: int, seen: int, ids: tuple[int, ...]) -> int:
        """Count one ``"alpha"`` or ``"theta"`` step; returns its index among the steps of its kind."""
        if kind == "alpha":
            self.alpha_steps += 1
            self.alpha_loss, self.alpha_correct, self.alpha_seen = (
                self.alpha_loss + loss, self.alpha_correct + correct, self.alpha_seen + seen)
            self.alpha_batches.append(ids)
            return self.alpha_steps - 1
        self.theta_steps += 1
        self.theta_loss, self.theta_correct, self.theta_seen = (
            self.theta_loss + loss, self.theta_correct + correct, self.theta_seen + seen)
        self.theta_batches.append(ids)
        return self.theta_steps - 1

    def metrics(self) -> dict[str, float]:
        return {
            "theta-loss": self.theta_loss / max(self.theta_steps, 1),
            "theta-accuracy": self.theta_correct / max(self.theta_seen, 1),
            "alpha-loss": self.alpha_loss / max(self.alpha_steps, 1),
            "alpha-accuracy": self.alpha_correct / max(self.alpha_seen, 1),
            "theta-steps": float(self.theta_steps),
            "alpha-steps": float(self.alpha_steps),
            "search-seconds": self.seconds,
        }


StepCallback = Callable[[StepEvent], None]


def batch_ids(data: ImageSet, positions: torch.Tensor) -> tuple[int, ...]:
    """The dataset-level sample ids of a batch (what the evaluation-only log records)."""
    return tuple(int(i) for i in data.ids[positions.numpy()])
# a replacement for the α step (defenses): (model, α optimizer, x, y) -> (loss, correct)
AlphaStepFn = Callable[[SuperNet, torch.optim.Optimizer, torch.Tensor, torch.Tensor], tuple[float, int]]


def _step(model: Callable[[torch.Tensor], torch.Tensor], params: Sequence[torch.nn.Parameter],
          opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, clip: float) -> tuple[float, int]:
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)   # an operation off (PDARTS) has no gradient
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    if clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())


def local_search(model: SuperNet, theta_data: ImageSet, alpha_data: ImageSet, cfg: LocalSearchConfig,
                 generator: torch.Generator, callbacks: Sequence[StepCallback] = (),
                 alpha_step: AlphaStepFn | None = None) -> LocalSearchResult:
    """Run one round of first-order DARTS on this client's splits; mutates ``model`` in place.
    ``alpha_step`` replaces the plain α step (client-side defenses, ``defenses/alpha.py``)."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    n_theta = resolve_steps(cfg.theta_steps, cfg.theta_epochs, len(theta_data), cfg.theta_batch_size)
    n_alpha = resolve_steps(cfg.alpha_steps, cfg.alpha_epochs, len(alpha_data), cfg.alpha_batch_size)
    theta_sampler = BatchSampler(len(theta_data), cfg.theta_batch_size, generator) if n_theta else None
    alpha_sampler = BatchSampler(len(alpha_data), cfg.alpha_batch_size, generator) if n_alpha else None
    theta_params, alpha_params = model.weight_parameters(), model.alpha_parameters()
    theta_opt = torch.optim.SGD(theta_params, lr=cfg.theta_lr, momentum=cfg.theta_momentum,
                                weight_decay=cfg.theta_weight_decay)
    preset = ALPHA_OPTIMIZERS.get(cfg.alpha_optimizer)
    alpha_opt = preset.build(alpha_params, cfg.resolved_alpha_lr(), cfg.resolved_alpha_weight_decay())
    net = search_net(model, cfg.fast_search)
    result = LocalSearchResult()
    model.train()
    for kind in search_schedule(n_theta, n_alpha, cfg.search_order):
        data, sampler = (alpha_data, alpha_sampler) if kind == "alpha" else (theta_data, theta_sampler)
        assert sampler is not None
        positions = next(sampler)
        x, y = data.batch(positions, device)
        if kind == "alpha":
            if alpha_step is not None:
                loss, correct = alpha_step(model, alpha_opt, x, y)
            else:
                with frozen_weights(net):
                    loss, correct = _step(net, alpha_params, alpha_opt, x, y, 0.0)
        else:
            loss, correct = _step(net, theta_params, theta_opt, x, y, cfg.grad_clip)
        ids = batch_ids(data, positions)
        index = result.book(kind, loss, correct, len(y), ids)
        event = StepEvent(kind, index, loss, correct, ids)
        for callback in callbacks:
            callback(event)
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def evaluate(model: SuperNet, data: ImageSet, batch_size: int = 500) -> dict[str, float]:
    """Loss and accuracy of ``model`` (eval mode) on ``data``."""
    device = next(model.parameters()).device
    model.eval()
    net = search_net(model)
    total_loss, correct = 0.0, 0
    for start in range(0, len(data), batch_size):
        positions = torch.arange(start, min(start + batch_size, len(data)))
        x, y = data.batch(positions, device)
        logits = net(x)
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(data), 1)
    return {"loss": total_loss / n, "accuracy": correct / n}
