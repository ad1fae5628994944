"""The one optimisation loop: restarts as rows with pick-best, image starts, both optimisers."""

import typing

import pytest
import torch

from attacker.reconstruct.attacks import ATTACKS
from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.loop import INITS, OPTIMISERS, Rows, initial_images, optimise
from attacker.reconstruct.settings import ATTACK_NAMES, AttackSettings, Init, Optimizer, StageSettings
from fednas.search_space import SupernetSpec


def test_restarts_are_rows_and_the_best_row_per_capture_is_picked():
    rows = Rows(captures=3, restarts=2)
    per_capture = torch.arange(3).view(3, 1).float()
    assert rows.repeat(per_capture).flatten().tolist() == [0, 1, 2, 0, 1, 2]
    match = torch.tensor([5.0, 1.0, 7.0, 2.0, 3.0, 0.5])   # restart 0: rows 0-2, restart 1: rows 3-5
    assert rows.best(match).tolist() == [3, 1, 5]


def test_the_registries_match_the_settings_literals_and_the_attack_names():
    assert set(OPTIMISERS.names()) == set(typing.get_args(Optimizer))
    assert set(INITS.names()) == set(typing.get_args(Init))
    assert ATTACKS.names() == ATTACK_NAMES        # settings check names without importing the engines


def test_each_attack_reads_its_own_stage():
    s = AttackSettings(attack_iterations=7, inversion_iterations=11, attack_prior="learned", inversion_prior="pixel")
    assert ATTACKS.get("adra").stage(s) == s.adra_stage() and s.adra_stage().iterations == 7
    assert ATTACKS.get("theta").stage(s).iterations == 11 and ATTACKS.get("joint").stage(s).prior == "pixel"


@pytest.mark.parametrize("kind", ["noise", "constant", "class-mean"])
def test_initial_images_are_in_the_box(kind):
    spec = SupernetSpec(image_size=4, num_classes=2)
    public = PublicKnowledge(spec, (0.5,), (0.5,), torch.rand(10, 1, 4, 4), torch.tensor([0, 1] * 5), 0)
    x = initial_images(kind, torch.tensor([0, 1]), public, (2, 1, 4, 4), torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 4, 4) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_an_unknown_init_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: noise, constant, class-mean"):
        INITS.get("zeros")


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_both_optimisers_minimise_and_call_back(optimizer):
    x = torch.zeros(3, requires_grad=True)
    target = torch.tensor([1.0, -2.0, 0.5])
    seen = []

    def losses():
        per_row = (x - target).pow(2)
        return per_row, per_row

    stage = StageSettings("l2", "pixel", "noise", optimizer, 150, 0.2 if optimizer == "adam" else -1.0, 0.0)
    optimise([x], losses, stage, 3, [seen.append])
    assert torch.allclose(x.detach(), target, atol=0.05) and len(seen) >= 1 and seen[-1].iterations == 150
