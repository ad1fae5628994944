"""attack-preset = paper: the paper's ADRA as written, as one setting, and named in what it writes."""

import pytest
import torch

from attacker.interceptor.config import InterceptorConfig
from attacker.reconstruct.adra import reconstruct_batch
from attacker.reconstruct.loop import ImageParams
from attacker.reconstruct.settings import PRESETS, AttackSettings
from fednas.data import load_dataset
from fednas.schema import ConfigError, parse_config
from fednas.search import LocalSearchConfig
from tests.helpers import tiny_problem, tiny_wire_targets


def test_the_paper_preset_sets_every_key_it_names_over_what_the_config_says():
    chosen = parse_config(InterceptorConfig, {"attack-preset": "paper", "attack-objective": "cosine",
                                              "attack-prior": "learned", "threat-model": "wire"})
    assert chosen.attack_preset == "paper"
    for key, value in PRESETS["paper"].items():
        assert chosen.model_dump(by_alias=True)[key] == value, key
    assert chosen.threat_model == "architecture-only" and chosen.attack_objective == "l2"
    assert parse_config(InterceptorConfig, {"attack-objective": "cosine"}).attack_objective == "cosine"


def test_denoising_every_iteration_needs_pixels():
    with pytest.raises(ConfigError, match="attack-denoise-every-iteration needs attack-prior = pixel"):
        parse_config(AttackSettings, {"attack-denoise-every-iteration": True, "attack-prior": "learned"})


def test_denoise_resets_pixels_above_kappa_and_keeps_the_rest():
    params = ImageParams(torch.tensor([[0.1, 0.5, 0.97, 0.99]]), None)
    params.denoise_(245 / 255)
    images = params.images()
    assert torch.allclose(images[0, :2], torch.tensor([0.1, 0.5]), atol=1e-6)
    assert (images[0, 2:] < 0.03).all()


def test_the_paper_attack_runs_and_leaves_no_pixel_above_kappa(data_root, mnist_or_digits):
    data = load_dataset(mnist_or_digits, str(data_root))
    model, public = tiny_problem(data)
    targets, _ = tiny_wire_targets(model, public, data, 2, LocalSearchConfig(theta_steps=1, theta_batch_size=1))
    settings = parse_config(AttackSettings, {"attack-preset": "paper", "attack-iterations": 5})
    assert settings.attack_iterations == 300, "the preset's budget"
    settings = settings.model_copy(update={"attack_iterations": 5})
    recons = reconstruct_batch(targets, public, settings, None, torch.Generator().manual_seed(0))
    assert len(recons) == 2
    assert all(float(r.images.max()) <= settings.attack_kappa for r in recons)
