"""Seeded end-to-end checks where the problem is determined: a tiny supernet with known weights (wire
threat model) and more α entries (120) than pixels (8x8 = 64), B = 1. The client takes one α step and then
one θ step on the same image, so ADRA (Δα) and the weight-update inversion (Δθ, 26,718 entries) attack the
same images.

Threshold: the mean PSNR must reach 25 dB and beat the label-only baseline (the public class mean of the
recovered label, which is also where the optimisation starts) by at least 5 dB. 25 dB is an RMS pixel
error of 5.6% of the range; 5 dB over the start means the α update moved every image measurably towards
its own pixels, which the label alone cannot explain. (Measured while writing this test: 29-37 dB
against a 15-25 dB baseline.)
"""

import pytest
import torch
import torch.nn.functional as F

from attacker.reconstruct.adra import reconstruct_batch
from attacker.reconstruct.invert import invert_batch
from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import THREAT_MODELS
from attacker.scoring.metrics import psnr
from attacker.wire.synthetic import client_capture
from fednas.data import load_dataset
from fednas.search import LocalSearchConfig
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet


def shrink(x):
    return F.interpolate(x.float(), size=(8, 8), mode="area").round().to(torch.uint8)


@pytest.fixture(scope="module")
def captured(data_root, mnist_or_digits):
    data = load_dataset(mnist_or_digits, str(data_root))
    spec = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=3, nodes=2, alpha_sharing="per-cell")
    assert spec.alpha_count() > 8 * 8
    model = build_supernet(spec, (0.13,), (0.3,), torch.Generator().manual_seed(0))
    public = PublicKnowledge(spec, (0.13,), (0.3,), shrink(data.train_images[:2000]).float() / 255,
                             data.train_labels[:2000], 0)
    search = LocalSearchConfig(theta_steps=1, theta_batch_size=1, search_order="alpha-first")
    targets, truth = [], []
    for i in range(4):
        x, y = shrink(data.test_images[i:i + 1]), data.test_labels[i:i + 1]
        view, _ = client_capture(model, x, y, search, f"c{i}", theta_data=(x, y))
        targets.append(THREAT_MODELS.get("wire")(view, public, {}))
        truth.append(x.float() / 255)
    settings = AttackSettings(attack_prior="pixel", attack_init="class-mean", attack_tv=0.0, attack_objective="l2",
                              attack_optimizer="adam", attack_lr=0.1, attack_iterations=250, attack_restarts=1)
    adra = reconstruct_batch(targets, public, settings, None, torch.Generator().manual_seed(0))
    labels = [int(data.test_labels[i]) for i in range(4)]
    return targets, truth, public, adra, labels


def mean_psnr(recons, truth):
    return torch.tensor([float(psnr(r.images, t)[0]) for r, t in zip(recons, truth)])


def baseline_psnr(recons, truth, public):
    return torch.tensor([float(psnr(public.class_means()[r.labels], t)[0]) for r, t in zip(recons, truth)])


def test_reconstruction_beats_the_label_only_baseline(captured):
    _, truth, public, recons, labels = captured
    assert [int(r.labels[0]) for r in recons] == labels
    ours, base = mean_psnr(recons, truth), baseline_psnr(recons, truth, public)
    assert ours.mean() >= 25.0, (ours, base)
    assert ours.mean() >= base.mean() + 5.0, (ours, base)


def test_weight_update_inversion_beats_adra_and_the_baseline(captured):
    """Threshold 31 dB (RMS pixel error 2.8%), 6 dB above ADRA's 25: Δθ has 26,718 entries against 64 pixels and
    one exact SGD step, so the images are pinned down far more tightly than by 120 α entries. It must also beat
    ADRA on the same images by 2 dB and the label-only baseline (its start) by 10 dB. (Measured while writing
    this test: mean 33.0 dB, 29-36 per image, with 30 L-BFGS evaluations; ADRA mean 29.6; baseline 19.2.)"""
    targets, truth, public, adra, labels = captured
    settings = AttackSettings(inversion_optimizer="lbfgs", inversion_iterations=30, inversion_tv=0.0,
                              inversion_init="class-mean")
    recons = invert_batch(targets, public, settings, None, torch.Generator().manual_seed(0))
    assert [int(r.labels[0]) for r in recons] == labels           # analytic labels from the bias update
    ours, base = mean_psnr(recons, truth), baseline_psnr(recons, truth, public)
    assert ours.mean() >= 31.0, (ours, base)
    assert ours.mean() >= mean_psnr(adra, truth).mean() + 2.0, (ours, mean_psnr(adra, truth))
    assert ours.mean() >= base.mean() + 10.0, (ours, base)
