"""The client-update simulator reproduces the client's Δα exactly when fed the true batch."""

import pytest
import torch
import torch.nn.functional as F

from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.model import attack_model
from attacker.reconstruct.threat import THREAT_MODELS
from attacker.reconstruct.update import flatten, predicted_update
from attacker.wire.synthetic import client_capture
from fednas.search import LocalSearchConfig
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet

SPEC = SupernetSpec(channels=4, nodes=2, image_size=16)


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 16, 16, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("optimizer,steps,batch", [("sgd", 1, 1), ("sgd", 3, 2), ("adam", 2, 1)])
@pytest.mark.parametrize("fast", [False, True])
def test_simulated_update_equals_the_clients(optimizer, steps, batch, fast):
    model = build_supernet(SPEC, (0.5,), (0.25,), torch.Generator().manual_seed(0))
    x, y = images(steps * batch)
    search = LocalSearchConfig(alpha_steps=steps, alpha_batch_size=batch, alpha_optimizer=optimizer,
                               alpha_lr=0.05, search_order="alpha-first")
    view, result = client_capture(model, x, y, search, "c0")
    batches = result.alpha_batches
    public = PublicKnowledge(SPEC, (0.5,), (0.25,), x.float() / 255, y, 0)
    target = THREAT_MODELS.get("wire")(view, public, {})
    net = attack_model(SPEC, (0.5,), (0.25,), target.theta, fast=fast)
    order = [i for b in batches for i in b]           # the client's sampled order
    groups = list(SPEC.alpha_groups())
    alpha0 = {g: target.alpha_before[g].unsqueeze(0) for g in groups}
    owner = torch.zeros(len(order), dtype=torch.long)
    step = torch.arange(steps).repeat_interleave(batch)
    pred = predicted_update(net, alpha0, x[order].float() / 255, F.one_hot(y[order], 10).float(), owner, step,
                            target.rule, create_graph=False)
    observed = flatten({g: target.alpha_delta[g].unsqueeze(0) for g in groups}, groups)
    torch.testing.assert_close(flatten(pred, groups).detach(), observed, rtol=1e-3, atol=1e-7)
