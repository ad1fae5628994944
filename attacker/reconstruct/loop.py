"""The one optimisation loop of the reconstruction attacks, and what it works on.

Every attack (ADRA, Δθ inversion, joint) builds a pure loss over dummy images and hands it to :func:`optimise`,
which runs the stage's optimiser (L-BFGS or Adam) and calls back after every evaluation. Restarts are extra
batch rows (:class:`Rows`): all of them are optimised at once and the best gradient match per capture is kept.
Dummy images are :class:`ImageParams` (sigmoid-boxed pixels, or a learned prior's latent code) started from one
of the :data:`INITS`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.prior import ImageVAE
from attacker.reconstruct.settings import StageSettings
from fednas.registry import Registry


@dataclass
class Reconstruction:
    """One capture's recovered batch (``steps * B`` images, in the client's step order)."""

    capture_id: str
    images: torch.Tensor
    labels: torch.Tensor
    match_loss: float
    seconds: float


@dataclass(frozen=True)
class Progress:
    """What an iteration callback receives (``current``: the dummy images now, detached, for benchmarks that score
    the trajectory; ``None`` when the attack does not offer them)."""

    iteration: int
    iterations: int
    captures: int
    loss: float
    current: Callable[[], torch.Tensor] | None = None


ProgressCallback = Callable[[Progress], None]
Losses = Callable[[], tuple[torch.Tensor, torch.Tensor]]   # () -> (match per row, total per row)


@dataclass(frozen=True)
class Rows:
    """Restarts as extra batch rows: capture c, restart r → row r·C + c."""

    captures: int
    restarts: int

    @property
    def count(self) -> int:
        return self.captures * self.restarts

    def repeat(self, per_capture: torch.Tensor) -> torch.Tensor:
        """A ``[C, ...]`` tensor repeated for every restart: ``[R·C, ...]``."""
        return per_capture.repeat(self.restarts, *([1] * (per_capture.dim() - 1)))

    def best(self, match: torch.Tensor) -> torch.Tensor:
        """Per capture, the row whose gradient match is lowest: ``[C]`` row indices."""
        best = match.view(self.restarts, self.captures).argmin(0)
        return best * self.captures + torch.arange(self.captures)


class ImageParams:
    """Dummy images as optimisable parameters: boxed pixels, or the latent code of a learned prior."""

    def __init__(self, start: torch.Tensor, prior: ImageVAE | None) -> None:
        self.prior = prior
        if prior is None:
            self.param = torch.logit(start.clamp(0.02, 0.98)).detach().requires_grad_()
        else:
            mu, _ = prior.encode(start)
            self.param = mu.detach().requires_grad_()

    def images(self) -> torch.Tensor:
        return torch.sigmoid(self.param) if self.prior is None else self.prior.decode(self.param)

    @torch.no_grad()
    def denoise_(self, kappa: float) -> None:
        """The paper's denoising applied to the parameters: every pixel above ``kappa`` is set back to (almost) 0,
        and may grow again. Boxed pixels only (a learned prior has no pixels to reset)."""
        if self.prior is not None:
            raise ValueError("denoising every iteration needs attack-prior = pixel")
        self.param[torch.sigmoid(self.param) > kappa] = torch.logit(torch.tensor(0.02)).item()


# (labels, public, shape, noise in [0, 1)) -> start images in [0, 1]
Init = Callable[[torch.Tensor, PublicKnowledge, tuple[int, ...], torch.Tensor], torch.Tensor]
INITS: Registry[Init] = Registry("image init")
INITS.add("noise", lambda labels, public, shape, noise: noise)
INITS.add("constant", lambda labels, public, shape, noise: torch.full(shape, 0.5) + 0.01 * (noise - 0.5))
INITS.add("class-mean", lambda labels, public, shape, noise:
          (public.class_means()[labels.cpu()] + 0.05 * (noise - 0.5)).clamp(0, 1))


def initial_images(kind: str, labels: torch.Tensor, public: PublicKnowledge, shape: tuple[int, ...],
                   generator: torch.Generator) -> torch.Tensor:
    """Start images of one of :data:`INITS`; the noise is drawn from ``generator`` whatever the kind."""
    noise = torch.rand(shape, generator=generator)
    return INITS.get(kind)(labels, public, shape, noise)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block: every evaluation of the double backward creates
    thousands of autograd objects but no reference cycles, so collection passes only cost time (6 % of an
    ADRA iteration in a perf profile). The previous state is restored on exit."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _lbfgs(variables: list[torch.Tensor], losses: Losses, stage: StageSettings, rows: int,
           callbacks: Sequence[ProgressCallback], current: Callable[[], torch.Tensor] | None) -> None:
    iterations = stage.iterations
    opt = torch.optim.LBFGS(variables, lr=stage.step_size(), max_iter=iterations, max_eval=iterations,
                            history_size=20, line_search_fn="strong_wolfe")
    count = [0]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        _, total = losses()
        loss = total.sum()
        loss.backward(inputs=variables)
        count[0] += 1
        for cb in callbacks:
            cb(Progress(count[0], iterations, rows, float(loss.detach()) / rows, current))
        return loss

    opt.step(closure)


def _adam(variables: list[torch.Tensor], losses: Losses, stage: StageSettings, rows: int,
          callbacks: Sequence[ProgressCallback], current: Callable[[], torch.Tensor] | None) -> None:
    iterations = stage.iterations
    opt = torch.optim.Adam(variables, lr=stage.step_size())
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iterations * f) for f in (0.5, 0.75, 0.9)], 0.3)
    for it in range(iterations):
        opt.zero_grad()
        _, total = losses()
        loss = total.sum()
        loss.backward(inputs=variables)
        opt.step()
        sched.step()
        for cb in callbacks:
            cb(Progress(it + 1, iterations, rows, float(loss.detach()) / rows, current))


Optimiser = Callable[[list[torch.Tensor], Losses, StageSettings, int, Sequence[ProgressCallback],
                      Callable[[], torch.Tensor] | None], None]
OPTIMISERS: Registry[Optimiser] = Registry("attack optimizer")
OPTIMISERS.add("lbfgs", _lbfgs)
OPTIMISERS.add("adam", _adam)


def optimise(variables: list[torch.Tensor], losses: Losses, stage: StageSettings, rows: int,
             callbacks: Sequence[ProgressCallback] = (), current: Callable[[], torch.Tensor] | None = None) -> None:
    """Minimise ``losses()[1].sum()`` over ``variables`` with the stage's optimiser (L-BFGS: ``iterations``
    function evaluations; Adam: ``iterations`` steps with a step-down schedule); callbacks see every evaluation."""
    with gc_paused():
        OPTIMISERS.get(stage.optimizer)(variables, losses, stage, rows, callbacks, current)
