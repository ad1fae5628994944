"""``archleak bench race``: our Δθ inversion against breaching's attacks on the same weight updates.

Every contestant reconstructs the same MNIST test images from the same client updates of the same model,
single-threaded, in one process, with the same iteration budget (Adam steps, or L-BFGS function
evaluations):

* ``ours``: :func:`attacker.reconstruct.invert.invert_batch` (analytic labels, cosine + TV, all images in one batched
  optimisation, started from the public class mean of the recovered label); ``ours-noise-init``: the same
  from uniform noise, which shows what the start contributes;
* ``invertinggradients``, ``deepleakage``: breaching's attacks of those names (Geiping et al.'s Inverting
  Gradients; DLG with L-BFGS and L2), one image at a time as breaching runs them, their own label
  recovery (its total variation, hard-wired to RGB, is given the images' one channel). breaching is an
  optional extra (``pip install -e ".[race]"``); without it only ``ours`` runs
  and the JSON says why.

The client takes one θ step of B = 1 without clipping or weight decay, so Δθ = −lr·∇θ exactly and
breaching receives the gradient ∇θ = −Δθ/lr: the same information. α stays fixed (no α step), so the
model breaching sees is the supernet under the broadcast α, with θ as its only parameters.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from attacker.reconstruct.invert import invert_batch
from attacker.reconstruct.knowledge import public_knowledge
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import THREAT_MODELS, AttackTarget
from attacker.scoring.metrics import psnr, ssim
from attacker.wire.synthetic import client_capture
from fednas.config import parse_run_config
from fednas.data import load_dataset
from fednas.federation import make_model
from fednas.registry import Registry
from fednas.search import LocalSearchConfig
from fednas.storage import package_versions
from fednas.supernet import SuperNet

LR = 0.05
Contestant = Callable[[list[AttackTarget], dict[str, Any], int], tuple[torch.Tensor, torch.Tensor]]
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
        return self.net(x * self.net.input_std + self.net.input_mean, self.fixed)


def _ours(init: str) -> Contestant:
    def run(targets: list[AttackTarget], ctx: dict[str, Any], iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
        settings = AttackSettings(inversion_iterations=iterations, inversion_init=init, attack_batch=len(targets))
        recons = invert_batch(targets, ctx["public"], settings, None, torch.Generator().manual_seed(0))
        return torch.cat([r.images for r in recons]), torch.cat([r.labels for r in recons])

    return run


CONTESTANTS.add("ours", _ours("class-mean"))
CONTESTANTS.add("ours-noise-init", _ours("noise"))    # ablation: without the label's class-mean start


def _breaching(name: str) -> Contestant:
    def run(targets: list[AttackTarget], ctx: dict[str, Any], iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
        import breaching
        from omegaconf import OmegaConf

        model, names = ctx["breaching_model"], ctx["theta_names"]
        with contextlib.redirect_stdout(io.StringIO()):      # breaching prints; stdout carries the JSON
            cfg = breaching.get_attack_config(name, overrides=[f"optim.max_iterations={iterations}",
                                                               f"optim.callback={iterations + 1}"])
        attacker = breaching.attacks.prepare_attack(model, nn.CrossEntropyLoss(), cfg)
        _per_channel_tv(attacker, ctx["shape"][0])
        meta = OmegaConf.create({"shape": list(ctx["shape"]), "mean": list(ctx["mean"]), "std": list(ctx["std"]),
                                 "modality": "vision", "classes": 10, "task": "classification"})
        payload = [{"parameters": [targets[0].theta[k] for k in names], "buffers": None, "metadata": meta}]
        images, labels = [], []
        for t in targets:
            shared = [{"gradients": [-t.theta_delta[k] / LR for k in names], "buffers": None,
                       "metadata": {"num_data_points": 1, "labels": None, "local_hyperparams": None}}]
            with contextlib.redirect_stdout(io.StringIO()):
                out, _ = attacker.reconstruct(payload, shared, {}, dryrun=False)
            images.append((out["data"] * ctx["std_t"] + ctx["mean_t"]).clamp(0, 1).detach())
            labels.append(out["labels"].view(-1)[:1])
        return torch.cat(images), torch.cat(labels)

    return run


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


def race(images: int, iterations: int, data_root: str, knobs: dict[str, Any],
         contestants: list[str], seed: int = 0) -> dict[str, Any]:
    """Every contestant on the same ``images`` MNIST test images; figures as a dict (JSON-ready)."""
    torch.set_num_threads(1)
    cfg = parse_run_config({"dataset": "mnist", "data-root": data_root, "seed": seed, **knobs})
    data = load_dataset("mnist", data_root)
    model = make_model(cfg, data, torch.device("cpu"))
    public = public_knowledge(cfg, data, 2000)
    search = LocalSearchConfig(theta_steps=1, theta_batch_size=1, alpha_steps=0, grad_clip=0.0,
                               theta_weight_decay=0.0, theta_lr=LR)
    targets, truth = [], data.test_images[:images].float() / 255
    for i in range(images):
        x, y = data.test_images[i:i + 1], data.test_labels[i:i + 1]
        view, _ = client_capture(model, x, y, search, f"race-{i}", theta_data=(x, y))
        targets.append(THREAT_MODELS.get("wire")(view, public, {}))
    net = SuperNet(model.spec, data.mean, data.std)
    net.load_state_dict(model.state_dict())
    names = [n for n, _ in net.named_parameters() if not n.startswith("alphas.")]
    ctx = {"public": public, "breaching_model": ThetaOnly(net, dict(model.alphas)), "theta_names": names,
           "shape": (model.spec.in_channels, model.spec.image_size, model.spec.image_size),
           "mean": data.mean, "std": data.std, "mean_t": torch.tensor(data.mean).view(1, -1, 1, 1),
           "std_t": torch.tensor(data.std).view(1, -1, 1, 1)}
    missing = breaching_available()
    out: dict[str, Any] = {"versions": package_versions(), "threads": 1, "images": images, "iterations": iterations,
                           "model": model.spec.model_dump(by_alias=True), "theta_entries": sum(
                               t.numel() for t in targets[0].theta.values()), "results": {}}
    for name in contestants:
        run = CONTESTANTS.get(name)
        if not name.startswith("ours") and missing:
            out["results"][name] = {"skipped": missing}
            continue
        start = time.perf_counter()
        recon, labels = run(targets, ctx, iterations)
        seconds = time.perf_counter() - start
        out["results"][name] = {
            "psnr": float(psnr(recon, truth).mean()), "ssim": float(ssim(recon, truth).mean()),
            "psnr_per_image": [round(float(v), 2) for v in psnr(recon, truth)],
            "label_accuracy": float((labels.cpu() == data.test_labels[:images]).float().mean()),
            "seconds_per_image": seconds / images}
    done = {k: v for k, v in out["results"].items() if "psnr" in v}
    if "ours" in done:
        out["ratios_vs_ours"] = {k: {"time": done["ours"]["seconds_per_image"] / v["seconds_per_image"],
                                     "psnr_gain_db": done["ours"]["psnr"] - v["psnr"],
                                     "ssim_gain": done["ours"]["ssim"] - v["ssim"]}
                                 for k, v in done.items() if k != "ours"}
    out["label_only_psnr"] = float(np.mean([float(psnr(public.class_means()[data.test_labels[i:i + 1]],
                                                       truth[i:i + 1])[0]) for i in range(images)]))
    return out
