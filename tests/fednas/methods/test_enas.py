import math

import torch

from fednas.methods.enas import Controller, reinforce_loss
from fednas.search_space import SupernetSpec


def test_reinforce_gradient_equals_the_analytic_one_on_two_choices():
    """E over the policy of ∇ reinforce_loss = -∇ E[reward] (the baseline and entropy aside), computed exactly by
    enumerating both choices of a two-choice policy."""
    logits = torch.tensor([0.3, -0.4], dtype=torch.float64, requires_grad=True)
    rewards = torch.tensor([0.9, 0.2], dtype=torch.float64)
    baseline = 0.35
    probs = torch.softmax(logits, 0)
    log_probs = torch.log_softmax(logits, 0)
    estimate = sum(float(probs[a].detach()) * torch.autograd.grad(
        reinforce_loss(log_probs[a], torch.zeros((), dtype=torch.float64), float(rewards[a]), baseline, 0.0),
        logits, retain_graph=True)[0] for a in range(2))
    analytic = -torch.autograd.grad((probs * rewards).sum(), logits)[0]
    p = float(probs[0].detach())
    closed_form = -(rewards[0] - rewards[1]) * p * (1 - p) * torch.tensor([1.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(estimate, analytic)
    torch.testing.assert_close(analytic, closed_form)


def test_entropy_bonus_pushes_towards_uniform():
    logits = torch.tensor([1.0, -1.0], requires_grad=True)
    log_p = torch.log_softmax(logits, 0)
    entropy = -(log_p.exp() * log_p).sum()
    grad = torch.autograd.grad(reinforce_loss(log_p[0], entropy, 0.0, 0.0, 1.0), logits)[0]
    assert grad[0] > 0 > grad[1], "descending the loss must lower the favoured choice's logit"


def test_the_controller_samples_valid_cells_reproducibly():
    spec = SupernetSpec(nodes=3)
    ctrl = Controller(spec, hidden=16)
    ctrl.reset_parameters(torch.Generator().manual_seed(0))
    first = ctrl.sample(torch.Generator().manual_seed(5))
    again = ctrl.sample(torch.Generator().manual_seed(5))
    assert first.child == again.child
    assert set(first.child) == {"normal", "reduce"}
    for nodes in first.child.values():
        for node, ((a, op_a), (b, op_b)) in enumerate(nodes):
            assert a != b and max(a, b) < 2 + node
            assert "none" not in (spec.primitives[op_a], spec.primitives[op_b])
    grads = torch.autograd.grad(first.log_prob, list(ctrl.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert ctrl.sample(None).child == ctrl.sample(None).child


def test_a_node_never_takes_the_same_input_twice():
    """The second input is drawn with the first one masked out; squashing the mask after applying it had turned
    -inf into -2.5, and about 5 % of the nodes took one input twice (a cell the α encoding cannot represent)."""
    ctrl = Controller(SupernetSpec(), hidden=16)
    ctrl.reset_parameters(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    pairs = [(a, b) for _ in range(100) for nodes in ctrl.sample(gen).child.values() for (a, _), (b, _) in nodes]
    assert len(pairs) == 800 and all(a != b for a, b in pairs)


def test_the_entropy_of_a_uniform_controller_counts_every_choice():
    """All weights zero: every choice is uniform over what it may pick, and the sample's entropy is the sum of the
    logs of the choices' sizes (the second input's included, with the first masked out)."""
    spec = SupernetSpec()
    ctrl = Controller(spec, hidden=8)
    with torch.no_grad():
        for p in ctrl.parameters():
            p.zero_()
    ops = sum(p != "none" for p in spec.primitives)
    per_group = sum(math.log(2 + k) + math.log(1 + k) + 2 * math.log(ops) for k in range(spec.nodes))
    entropy = float(ctrl.sample(torch.Generator().manual_seed(0)).entropy.detach())
    assert abs(entropy - len(spec.alpha_groups()) * per_group) < 1e-4


def test_the_baseline_is_a_moving_average():
    ctrl = Controller(SupernetSpec(), hidden=8)
    assert abs(ctrl.update_baseline(1.0, 0.9) - 0.1) < 1e-7
    assert abs(ctrl.update_baseline(0.0, 0.9) - 0.09) < 1e-7
