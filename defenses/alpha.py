"""Client-side defenses of the architecture step, as named phases (no Flower).

One α step of a defended client is ``inputs → gradient → clip → noise → penalty → step``:

* :class:`InputNoise` (the paper's DP against AMIA): Gaussian noise N(0, s²) on every D^α sample of the step;
* :class:`DPSGDAlpha` (the paper's DP_SGD against ADRA): per-sample ∇α (one backward pass: the supernet takes a
  per-sample α), each clipped to L2 norm C over all α groups, summed, Gaussian noise with std σ·C added,
  divided by the batch size;
* :class:`L2Alpha` (the paper's LR): λ·Σα² added to the α loss (its gradient 2λα is data-independent, so under
  DP-SGD it is added after the noise and costs no privacy).

Randomness comes from a generator the caller passes in, separate from the batch sampler's, so that a defended and
an undefended client see the same batches.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fednas.supernet import SuperNet


def _gaussian(shape: torch.Size, std: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device)
    return (noise * std).to(like.device)


@dataclass(frozen=True)
class InputNoise:
    std: float

    def inputs(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + _gaussian(x.shape, self.std, generator, x) if self.std > 0 else x


@dataclass(frozen=True)
class L2Alpha:
    weight: float

    def penalty(self, alphas: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.weight * functools.reduce(torch.add, [(a * a).sum() for a in alphas])


@dataclass(frozen=True)
class DPSGDAlpha:
    noise_multiplier: float
    clip: float

    def per_sample_gradients(self, model: SuperNet, x: torch.Tensor, y: torch.Tensor
                             ) -> tuple[float, int, dict[str, torch.Tensor]]:
        """(mean loss, correct, {group: [B, edges, ops]}): every sample's own ∇α in one backward pass."""
        per = {g: a.detach().unsqueeze(0).expand(len(x), *a.shape).clone().requires_grad_(True)
               for g, a in model.alphas.items()}
        logits = model(x, per)
        loss = F.cross_entropy(logits, y, reduction="sum")
        grads = torch.autograd.grad(loss, list(per.values()))
        correct = int((logits.detach().argmax(1) == y).sum())
        return float(loss.detach()) / len(x), correct, dict(zip(per, grads, strict=True))

    @staticmethod
    def per_sample_norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every sample's L2 gradient norm over all α groups together: [B]."""
        return torch.sqrt(functools.reduce(torch.add, [g.flatten(1).pow(2).sum(1) for g in grads.values()]))

    def clip_(self, grads: dict[str, torch.Tensor], norms: torch.Tensor) -> None:
        """Scale every sample's gradient to L2 norm ≤ C in place, given its norm before (``per_sample_norms``)."""
        factor = (self.clip / (norms + 1e-12)).clamp(max=1.0)
        for g in grads.values():
            g.mul_(factor.view(-1, *([1] * (g.dim() - 1))))

    def noise(self, summed: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        std = self.noise_multiplier * self.clip
        return {g: s + _gaussian(s.shape, std, generator, s) for g, s in summed.items()}


@dataclass
class AlphaStep:
    """The α step of one client, with its defenses in phase order; a drop-in for local search's default step."""

    generator: torch.Generator
    input_noise: InputNoise | None = None
    dp: DPSGDAlpha | None = None
    l2: L2Alpha | None = None
    clipped_norms: list[float] = field(default_factory=list)   # per-sample norms before clipping (diagnostics)

    def __call__(self, model: SuperNet, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[float, int]:
        if self.input_noise is not None:
            x = self.input_noise.inputs(x, self.generator)
        params = model.alpha_parameters()
        if self.dp is not None:
            loss, correct, per_sample = self.dp.per_sample_gradients(model, x, y)
            norms = self.dp.per_sample_norms(per_sample)
            self.clipped_norms.extend(norms.tolist())
            self.dp.clip_(per_sample, norms)
            noised = self.dp.noise({g: p.sum(0) for g, p in per_sample.items()}, self.generator)
            grads = [noised[g] / len(x) for g in model.alphas]
            if self.l2 is not None:
                extra = torch.autograd.grad(self.l2.penalty(params), params)
                grads = [g + e for g, e in zip(grads, extra, strict=True)]
        else:
            logits = model(x)
            objective = F.cross_entropy(logits, y)
            loss, correct = float(objective.detach()), int((logits.detach().argmax(1) == y).sum())
            if self.l2 is not None:
                objective = objective + self.l2.penalty(params)
            grads = list(torch.autograd.grad(objective, params))
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss, correct
