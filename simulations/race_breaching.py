"""``archleak bench race``: our Δθ inversion against breaching's attacks on the same weight updates, run to the end.

Every contestant reconstructs the same MNIST test images from the same client updates of the same model,
single-threaded, in one process, **from the same start**: uniform noise (``noise``), or the public class mean of
the analytically recovered label (``class-mean``), the same images for every contestant (breaching receives them
as its ``initial_data``, in its normalised space). Each runs until it stops improving (its objective has not
fallen by ``min-improvement`` relative over ``patience`` evaluations) or until its wall cap per image; every few
evaluations the current images are kept, and scored against the truth afterwards, outside the timed part.

* ``ours``: :func:`attacker.reconstruct.invert.invert_batch` (analytic labels, cosine + TV, all images in one batched
  optimisation, L-BFGS);
* ``invertinggradients``, ``deepleakage``: breaching's attacks of those names (Geiping et al.'s Inverting
  Gradients with its signed Adam and step schedule over ``breaching-iterations``; DLG with L-BFGS and L2), one image
  at a time as breaching runs them, their own label recovery (its total variation, hard-wired to RGB, is given the
  images' one channel). breaching is an optional extra (``pip install -e ".[race]"``); without it only ``ours``
  runs and the JSON says why.

The figures are curves of mean PSNR and SSIM over the images against seconds per image (ours: the batch's
elapsed time over the number of images; breaching: each image's own elapsed time, the images' curves averaged at
equal times), each contestant's best, and the time each needs to reach breaching's best PSNR (with the ratio
ours / breaching: the goal is ≤ 0.5).

The client takes one θ step of B = 1 without clipping or weight decay, so Δθ = −lr·∇θ exactly and
breaching receives the gradient ∇θ = −Δθ/lr: the same information. α stays fixed (no α step), so the
model breaching sees is the supernet under the broadcast α, with θ as its only parameters.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from attacker.reconstruct.idlg import analytic_labels
from attacker.reconstruct.invert import invert_batch
from attacker.reconstruct.knowledge import public_knowledge
from attacker.reconstruct.loop import Progress, initial_images
from attacker.reconstruct.model import theta_model
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import THREAT_MODELS, AttackTarget
from attacker.wire.synthetic import client_capture
from fednas.config import parse_run_config
from fednas.data import load_dataset
from fednas.federation import make_model
from fednas.registry import Registry
from fednas.search import LocalSearchConfig
from fednas.storage import package_versions
from fednas.supernet import SuperNet
from simulations.race_curves import curves_png, image_steps, mean_curve, seconds_to_reach, summary

LR = 0.05
STARTS = ("noise", "class-mean")


@dataclass(frozen=True)
class RaceLimits:
    """When a contestant stops: ``patience`` evaluations without a relative improvement of ``min_improvement``
    (ours: L-BFGS evaluations; breaching: its iterations), or ``wall_cap_s`` seconds per image."""

    wall_cap_s: float = 120.0
    patience: int = 30
    breaching_patience: int = 300
    min_improvement: float = 1e-3
    snapshot_every: int = 5
    ours_iterations: int = 5000
    breaching_iterations: int = 4000


class _Stop(Exception):
    """Raised inside a contestant's objective when it stops improving or reaches its wall cap."""


@dataclass
class Trace:
    """Snapshots of one optimisation over ``images`` images: seconds since its start, images [n, C, H, W]."""

    start_images: torch.Tensor
    wall_cap_s: float
    patience: int
    min_improvement: float
    every: int
    began: float = field(default_factory=time.perf_counter)
    times: list[float] = field(default_factory=lambda: [0.0])
    snapshots: list[torch.Tensor] = field(default_factory=list)
    best: float = float("inf")
    since_best: int = 0
    evaluations: int = 0
    stopped: str = "its own criterion"
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.snapshots.append(self.start_images.clone())

    def observe(self, loss: float, current: Callable[[], torch.Tensor]) -> None:
        self.evaluations += 1
        elapsed = time.perf_counter() - self.began
        if self.evaluations % self.every == 0:
            self.times.append(elapsed)
            self.snapshots.append(current().clone())
        if self.evaluations == 1 or loss < self.best - self.min_improvement * abs(self.best):
            self.best, self.since_best = loss, 0
        else:
            self.since_best += 1
        if self.since_best >= self.patience:
            self.stopped = "stopped improving"
            raise _Stop
        if elapsed >= self.wall_cap_s * len(self.start_images):
            self.stopped = "wall cap"
            raise _Stop

    def finish(self, current: Callable[[], torch.Tensor] | None) -> None:
        if current is not None:
            self.times.append(time.perf_counter() - self.began)
            self.snapshots.append(current().clone())


def _trace(start: torch.Tensor, limits: RaceLimits, patience: int) -> Trace:
    return Trace(start, limits.wall_cap_s, patience, limits.min_improvement, limits.snapshot_every)


# (targets, context, start images in [0, 1], limits) -> traces (one per optimisation)
Contestant = Callable[[list[AttackTarget], dict[str, Any], torch.Tensor, RaceLimits], list[Trace]]
CONTESTANTS: Registry[Contestant] = Registry("race contestant")


class ThetaOnly(nn.Module):
    """The supernet under a fixed α, taking normalised images (breaching optimises inside the normalisation):
    θ is the only parameter, in the supernet's order, classifier bias last."""

    def __init__(self, net: SuperNet, alphas: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.fixed = {g: a.detach().clone() for g, a in alphas.items()}
        net.alphas = nn.ParameterDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x * self.net.input_std + self.net.input_mean, self.fixed)
        return logits


def _ours(targets: list[AttackTarget], ctx: dict[str, Any], start: torch.Tensor, limits: RaceLimits) -> list[Trace]:
    """All images in one batched optimisation, from ``start`` (the same images the init draws: see race)."""
    settings = AttackSettings(inversion_iterations=limits.ours_iterations, inversion_init=ctx["start_kind"],
                              attack_batch=len(targets))
    trace = _trace(start, limits, limits.patience)
    trace.labels = ctx["labels"]                 # the analytic labels the inversion uses (and starts from)
    seen: list[Callable[[], torch.Tensor]] = []

    def watch(progress: Progress) -> None:
        if progress.current is not None:
            seen[:] = [progress.current]
            trace.observe(progress.loss, progress.current)

    with contextlib.suppress(_Stop):
        invert_batch(targets, ctx["public"], settings, None, torch.Generator().manual_seed(ctx["seed"]),
                     callbacks=[watch])
    trace.finish(seen[0] if seen else None)
    return [trace]


CONTESTANTS.add("ours", _ours)


def _breaching(name: str) -> Contestant:
    def run(targets: list[AttackTarget], ctx: dict[str, Any], start: torch.Tensor, limits: RaceLimits) -> list[Trace]:
        import breaching
        from omegaconf import OmegaConf

        model, names = ctx["breaching_model"], ctx["theta_names"]
        with contextlib.redirect_stdout(io.StringIO()):      # breaching prints; stdout carries the JSON
            cfg = breaching.get_attack_config(name, overrides=[f"optim.max_iterations={limits.breaching_iterations}",
                                                               f"optim.callback={limits.breaching_iterations + 1}"])
        attacker = breaching.attacks.prepare_attack(model, nn.CrossEntropyLoss(), cfg)
        _per_channel_tv(attacker, ctx["shape"][0])
        meta = OmegaConf.create({"shape": list(ctx["shape"]), "mean": list(ctx["mean"]), "std": list(ctx["std"]),
                                 "modality": "vision", "classes": 10, "task": "classification"})
        payload = [{"parameters": [targets[0].theta[k] for k in names], "buffers": None, "metadata": meta}]
        traces = []
        for i, t in enumerate(targets):
            assert t.theta_delta is not None            # wire captures of a θ step
            shared = [{"gradients": [-t.theta_delta[k] / LR for k in names], "buffers": None,
                       "metadata": {"num_data_points": 1, "labels": None, "local_hyperparams": None}}]
            trace = _trace(start[i:i + 1], limits, limits.breaching_patience)
            current = _watch(attacker, trace, ctx)
            initial = (start[i:i + 1] - ctx["mean_t"]) / ctx["std_t"]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(_Stop):
                attacker.reconstruct(payload, shared, {}, initial_data=initial, dryrun=False)
            trace.finish(current[0] if current else None)
            traces.append(trace)
        return traces

    return run


def _watch(attacker: Any, trace: Trace, ctx: dict[str, Any]) -> list[Callable[[], torch.Tensor]]:
    """Wrap breaching's objective so that every evaluation reaches ``trace`` (with the current candidate in
    pixels) and its recovered label is kept; returns the holder of the latest candidate view."""
    original = type(attacker)._compute_objective
    holder: list[Callable[[], torch.Tensor]] = []

    def compute(candidate: torch.Tensor, labels: torch.Tensor, *args: Any) -> Callable[[], torch.Tensor]:
        closure = original(attacker, candidate, labels, *args)
        trace.labels = labels.detach().view(-1)[:1].clone()

        def view() -> torch.Tensor:
            pixels: torch.Tensor = (candidate.detach() * ctx["std_t"] + ctx["mean_t"]).clamp(0, 1)
            return pixels

        def watched() -> torch.Tensor:
            value: torch.Tensor = closure()
            holder[:] = [view]
            trace.observe(float(value.detach()), view)
            return value

        return watched

    attacker._compute_objective = compute
    return holder


def _per_channel_tv(attacker: Any, channels: int) -> None:
    """breaching's total variation is hard-wired to 3 channels (RGB); give it the images' channel count, the same
    per-channel penalty (its kernels come in pairs, dx and dy, per channel)."""
    from breaching.attacks.auxiliaries.regularizers import TotalVariation

    for reg in getattr(attacker, "regularizers", []):
        if isinstance(reg, TotalVariation) and not reg.double_opponents:
            reg.groups, reg.weight = channels, reg.weight[: 2 * channels]


CONTESTANTS.add("invertinggradients", _breaching("invertinggradients"))
CONTESTANTS.add("deepleakage", _breaching("deepleakage"))


def breaching_available() -> str:
    """'' when breaching imports, else why not."""
    try:
        import breaching  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: not available
        return f"{exc.__class__.__name__}: {exc} (install the optional extra: pip install -e '.[race]')"
    return ""


def start_images(targets: list[AttackTarget], public: Any, kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images the Δθ inversion starts from (:func:`invert_batch`: analytic labels, then the init drawn from the
    run's generator, boxed as its pixels are), the same start for every contestant; and those labels."""
    model = theta_model(public.spec, public.mean, public.std)
    groups = list(public.spec.alpha_groups())
    labels = torch.cat([analytic_labels(model, t, public, {g: t.alpha_before[g] + t.alpha_delta[g] for g in groups})
                        for t in targets])
    shape = (len(targets), public.spec.in_channels, public.spec.image_size, public.spec.image_size)
    start = initial_images(kind, labels, public, shape, torch.Generator().manual_seed(seed))
    return start.clamp(0.02, 0.98), labels


def _verdict(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ours against the first breaching contestant that ran: the time each needs to reach breaching's best PSNR."""
    rivals = [k for k, v in results.items() if k != "ours" and "best_psnr" in v]
    if "ours" not in results or "best_psnr" not in results["ours"] or not rivals:
        return {"verdict": "no race: ours and a breaching contestant must both run"}
    rival, ours = results[rivals[0]], results["ours"]
    level = rival["best_psnr"]
    ours_t = seconds_to_reach(ours["curve"], level)
    rival_t = rival["seconds_to_best"]
    ratio = None if ours_t is None or rival_t <= 0 else round(ours_t / rival_t, 3)
    line = (f"ours never reached {rivals[0]}'s best PSNR ({level:.2f} dB); its own best was {ours['best_psnr']:.2f} dB"
            if ours_t is None else
            f"ours reached {rivals[0]}'s best PSNR ({level:.2f} dB) in {ours_t:.2f} s per image against "
            f"{rival_t:.2f} s: {ratio}x its time (goal: 0.5x or less)")
    return {"rival": rivals[0], "rival_best_psnr": level, "ours_seconds_to_rival_best": ours_t,
            "rival_seconds_to_best": rival_t, "time_ratio": ratio, "goal_met": ratio is not None and ratio <= 0.5,
            "verdict": line}


def _setup(images: int, data_root: str, knobs: dict[str, Any], seed: int) -> tuple[list[AttackTarget], dict[str, Any],
                                                                                   torch.Tensor, torch.Tensor]:
    cfg = parse_run_config({"dataset": "mnist", "data-root": data_root, "seed": seed, **knobs})
    data = load_dataset("mnist", data_root)
    model = make_model(cfg, data, torch.device("cpu"))
    public = public_knowledge(cfg, data, 2000)
    search = LocalSearchConfig(theta_steps=1, theta_batch_size=1, alpha_steps=0, grad_clip=0.0,
                               theta_weight_decay=0.0, theta_lr=LR)
    targets = []
    for i in range(images):
        x, y = data.test_images[i:i + 1], data.test_labels[i:i + 1]
        view, _ = client_capture(model, x, y, search, f"race-{i}", theta_data=(x, y))
        targets.append(THREAT_MODELS.get("wire")(view, public, {}))
    net = SuperNet(model.spec, data.mean, data.std)
    net.load_state_dict(model.state_dict())
    ctx = {"public": public, "seed": seed, "breaching_model": ThetaOnly(net, dict(model.alphas)),
           "theta_names": [n for n, _ in net.named_parameters() if not n.startswith("alphas.")],
           "shape": (model.spec.in_channels, model.spec.image_size, model.spec.image_size), "spec": model.spec,
           "mean": data.mean, "std": data.std, "mean_t": torch.tensor(data.mean).view(1, -1, 1, 1),
           "std_t": torch.tensor(data.std).view(1, -1, 1, 1)}
    return targets, ctx, data.test_images[:images].float() / 255, data.test_labels[:images]


def race(images: int, data_root: str, knobs: dict[str, Any], contestants: list[str],
         starts: tuple[str, ...] = STARTS, limits: RaceLimits = RaceLimits(), seed: int = 0
         ) -> tuple[dict[str, Any], bytes]:
    """Every contestant from every start on the same ``images`` MNIST test images: figures (JSON-ready) and the plot."""
    torch.set_num_threads(1)
    targets, ctx, truth, true_labels = _setup(images, data_root, knobs, seed)
    missing = breaching_available()
    out: dict[str, Any] = {"versions": package_versions(), "threads": 1, "images": images, "seed": seed,
                           "limits": asdict(limits), "model": ctx["spec"].model_dump(by_alias=True),
                           "theta_entries": sum(t.numel() for t in targets[0].theta.values()), "starts": {}}
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for kind in starts:
        ctx["start_kind"] = kind
        start, ctx["labels"] = start_images(targets, ctx["public"], kind, seed)
        results: dict[str, dict[str, Any]] = {}
        for name in contestants:
            if name != "ours" and missing:
                results[name] = {"skipped": missing}
                continue
            traces = CONTESTANTS.get(name)(targets, ctx, start, limits)
            curve = mean_curve(image_steps(traces, truth))
            curves.setdefault(kind, {})[name] = curve
            labels = [t.labels for t in traces if t.labels is not None]
            results[name] = {**summary(curve), "evaluations": sum(t.evaluations for t in traces),
                             "stopped": dict(Counter(t.stopped for t in traces)), "curve": curve,
                             "label_accuracy": float((torch.cat(labels).cpu() == true_labels).float().mean())
                             if sum(len(v) for v in labels) == images else None}
        out["starts"][kind] = {"contestants": results, **_verdict(results)}
    return out, curves_png(curves, f"Δθ inversion race on {images} MNIST images") if curves else b""
