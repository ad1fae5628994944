"""DP-SGD on α with the paper's preset against ADRA, on the seeded tiny problem of ``tests/helpers.py``.

Margin: undefended, this problem reconstructs at 27-37 dB. The paper's preset adds noise of std 0.1 to the α
gradient, far above the clipped signal (norm ≤ 1 over 120 entries), so the observed Δα is mostly noise. We ask
the defended mean PSNR to be at least 6 dB lower (a 2x larger RMS pixel error); measured while writing this
test: 24.4 dB undefended vs 11.7 dB defended (2 images, 60 Adam iterations; 120 iterations: 26.6 vs 9.9 dB;
4 images, 250 iterations: 29.6 vs 9.4 dB).
"""

import torch

from attacker.reconstruct.adra import reconstruct_batch
from defenses.alpha import AlphaStep, DPSGDAlpha
from fednas.data import load_dataset
from fednas.search import LocalSearchConfig
from tests.helpers import l2_adam, mean_psnr, tiny_problem, tiny_wire_targets


def attack_psnr(data, defended: bool, images: int = 2, iterations: int = 60) -> float:
    model, public = tiny_problem(data)
    steps = (lambda i: AlphaStep(torch.Generator().manual_seed(100 + i), dp=DPSGDAlpha(0.1, 1.0))) if defended \
        else (lambda i: None)
    targets, truth = tiny_wire_targets(model, public, data, images, LocalSearchConfig(), alpha_step=steps)
    recons = reconstruct_batch(targets, public, l2_adam(iterations), None, torch.Generator().manual_seed(0))
    return float(mean_psnr(recons, truth).mean())


def test_the_paper_dp_preset_lowers_adra_reconstruction_quality(data_root, mnist_or_digits):
    data = load_dataset(mnist_or_digits, str(data_root))
    clear, noised = attack_psnr(data, False), attack_psnr(data, True)
    assert noised <= clear - 6.0, (clear, noised)
