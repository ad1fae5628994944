"""A capture whose update is not finite (a client network that overflowed) is refused by every attack with the
reason, rather than failing inside label recovery or returning images fitted to NaN."""

from dataclasses import replace

import pytest
import torch

from attacker.reconstruct.attacks import ATTACKS
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import NotApplicable
from fednas.data import load_dataset
from fednas.search import LocalSearchConfig
from tests.helpers import tiny_problem, tiny_wire_targets


def _poisoned(targets, field):
    def nan_first(update):
        out = {k: v.clone() for k, v in update.items()}
        first = next(iter(out))
        out[first].view(-1)[0] = float("nan")
        return out

    return [replace(t, **{field: nan_first(getattr(t, field))}) if i == 1 else t for i, t in enumerate(targets)]


@pytest.mark.parametrize(("attack", "field", "batch"), [("adra", "alpha_delta", 1), ("adra", "alpha_delta", 2),
                                                        ("theta", "theta_delta", 1), ("joint", "theta_delta", 1),
                                                        ("joint", "alpha_delta", 1)])
def test_every_attack_refuses_a_capture_that_is_not_finite(data_root, mnist_or_digits, attack, field, batch):
    data = load_dataset(mnist_or_digits, str(data_root))
    model, public = tiny_problem(data)
    search = LocalSearchConfig(theta_steps=1, theta_batch_size=1, alpha_batch_size=1, search_order="alpha-first")
    targets, _ = tiny_wire_targets(model, public, data, 2, search, with_theta=True)
    settings = AttackSettings(attack_iterations=2, inversion_iterations=2, attack_prior="pixel",
                              inversion_prior="pixel")
    spec = ATTACKS.get(attack)
    assert len(spec.run(targets, public, settings, None, torch.Generator().manual_seed(0), ())) == 2   # finite: runs
    if batch == 2:   # B > 1 recovers labels by non-negative least squares, which refused NaN with a bare ValueError
        targets = [replace(t, rule=replace(t.rule, batch_size=2)) for t in targets]
    with pytest.raises(NotApplicable, match="not finite"):
        spec.run(_poisoned(targets, field), public, settings, None, torch.Generator().manual_seed(0), ())
