"""The weight-update attacks: analytic labels, the trajectory simulator, the dense-depthwise fast path."""

import pytest
import torch
import torch.nn.functional as F

from attacker.reconstruct.idlg import analytic_labels
from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.model import theta_model
from attacker.reconstruct.row_replay import replay_rows
from attacker.reconstruct.threat import THREAT_MODELS
from attacker.reconstruct.trajectory import replay_local_search
from attacker.wire.synthetic import client_capture
from fednas.fastnet import FastSearchNet
from fednas.search import LocalSearchConfig
from fednas.search_space import SupernetSpec
from fednas.state import THETA_PREFIX, export_state
from fednas.supernet import SuperNet, build_supernet

SPEC = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=3, nodes=2, alpha_sharing="per-cell")


def images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=gen) * 255).to(torch.uint8), torch.randint(0, 10, (n,), generator=gen)


def public_for(x, y):
    return PublicKnowledge(SPEC, (0.5,), (0.25,), x.float() / 255, y, 0)


@pytest.fixture(scope="module")
def model():
    return build_supernet(SPEC, (0.5,), (0.25,), torch.Generator().manual_seed(3))


@pytest.mark.parametrize("clip", [5.0, 1e-3])         # 1e-3: every update is clipped, the label still shows
def test_analytic_label_is_exact_for_a_single_sample_update(model, clip):
    x, y = images(5)
    public = public_for(*images(40, seed=1))
    net = theta_model(SPEC, (0.5,), (0.25,))
    search = LocalSearchConfig(theta_steps=1, theta_batch_size=1, grad_clip=clip, search_order="alpha-first")
    for i in range(5):
        view, _ = client_capture(model, x[i:i + 1], y[i:i + 1], search, f"c{i}", theta_data=(x[i:i + 1], y[i:i + 1]))
        target = THREAT_MODELS.get("wire")(view, public, {})
        alphas = {g: target.alpha_before[g] + target.alpha_delta[g] for g in target.alpha_before}
        assert analytic_labels(net, target, public, alphas).tolist() == [int(y[i])]


def replay_paths():
    """Both implementations of the replay, each with the network it takes."""
    return {"rows": lambda: (FastSearchNet(theta_model(SPEC, (0.5,), (0.25,))), replay_rows),
            "vmap": lambda: (theta_model(SPEC, (0.5,), (0.25,)), replay_local_search)}


@pytest.mark.parametrize("path", ["rows", "vmap"])
@pytest.mark.parametrize("alpha_optimizer", ["sgd", "adam"])
def test_the_trajectory_simulator_reproduces_the_client_update_from_the_true_data(model, alpha_optimizer, path):
    x, y = images(12)
    tx, ty = images(12, seed=5)
    # interleaved α and θ steps, momentum, weight decay and active clipping: the whole local search
    search = LocalSearchConfig(theta_steps=3, theta_batch_size=2, alpha_steps=2, alpha_batch_size=2, grad_clip=0.05,
                               alpha_optimizer=alpha_optimizer, search_order="interleaved")
    view, result = client_capture(model, x, y, search, "c0", theta_data=(tx, ty))
    target = THREAT_MODELS.get("wire")(view, public_for(x, y), {})
    a_ids = [i for b in result.alpha_batches for i in b]
    t_ids = [i for b in result.theta_batches for i in b]
    net, replay = replay_paths()[path]()
    d_alpha, d_theta = replay(
        net, target.schedule, target.theta, {g: a.unsqueeze(0) for g, a in target.alpha_before.items()},
        (x[a_ids].float() / 255)[None], F.one_hot(y[a_ids], 10).float()[None],
        (tx[t_ids].float() / 255)[None], F.one_hot(ty[t_ids], 10).float()[None])
    # exact up to float rounding: a delta taken from float32 weights carries an ulp of the weights themselves
    def ulps(t):
        return 4 * torch.finfo(torch.float32).eps * float(t.abs().max())

    for g, delta in target.alpha_delta.items():
        torch.testing.assert_close(d_alpha[g][0], delta, rtol=1e-4, atol=ulps(target.alpha_before[g]) + 1e-9)
    assert any(v.abs().max() > 1e-4 for v in target.theta_delta.values())
    for k, delta in target.theta_delta.items():
        torch.testing.assert_close(d_theta[k][0], delta, rtol=1e-4, atol=ulps(target.theta[k]) + 1e-9)


@pytest.mark.parametrize("known", [True, False], ids=["theta-attack", "joint-attack"])
@pytest.mark.parametrize(("order", "steps", "clip", "optimizer"), [("alpha-first", 1, 5.0, "sgd"),
                                                                   ("interleaved", 3, 0.05, "adam")])
def test_row_replay_is_the_vmap_replay_to_the_image_gradient(model, known, order, steps, clip, optimizer):
    """inversion-fast: the same (Δα, Δθ) and the same gradient of a match with respect to both image batches, in
    float64, with α known (θ attack) or simulated (joint attack), clipping, momentum and Adam on α."""
    from attacker.reconstruct.threat import Schedule, ThetaRule, UpdateRule

    sched = Schedule(ThetaRule(steps, 2, 0.05, 0.9, 3e-4, clip), UpdateRule(optimizer, 0.1, 1e-3, 2, 2), order)
    gen = torch.Generator().manual_seed(7)
    rows, dt = 3, torch.float64
    theta = {k[len(THETA_PREFIX):]: v.to(dt) for k, v in export_state(model, weights=True).items()
             if k.startswith(THETA_PREFIX)}
    a0 = {g: 0.3 * torch.randn(rows, *SPEC.alpha_shape(), generator=gen, dtype=dt) for g in SPEC.alpha_groups()}
    known_alphas = {g: a.unsqueeze(1).expand(rows, steps, *a.shape[1:]) * 1.1 for g, a in a0.items()} if known else None
    a_img = torch.rand(rows, 4, 1, 8, 8, generator=gen, dtype=dt, requires_grad=True)
    t_img = torch.rand(rows, 2 * steps, 1, 8, 8, generator=gen, dtype=dt, requires_grad=True)
    a_soft, t_soft = (F.softmax(torch.randn(rows, n, 10, generator=gen, dtype=dt), -1) for n in (4, 2 * steps))
    weights = {k: torch.randn(rows, *v.shape, generator=gen, dtype=dt) for k, v in theta.items()}
    results = []
    for path in ("rows", "vmap"):
        net, replay = replay_paths()[path]()
        d_alpha, d_theta = replay(net.double(), sched, theta, a0, a_img, a_soft, t_img, t_soft, known_alphas)
        match = sum((d_theta[k] * weights[k]).sum() for k in d_theta) + sum((v ** 2).sum() for v in d_alpha.values())
        results.append((match, *torch.autograd.grad(match, [t_img] if known else [t_img, a_img])))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_dense_depthwise_model_is_the_same_function_with_the_same_theta_gradients(model):
    x, y = images(3)
    theta = {k[len(THETA_PREFIX):]: v for k, v in export_state(model, weights=True).items()
             if k.startswith(THETA_PREFIX)}
    dense = theta_model(SPEC, (0.5,), (0.25,))
    reference = SuperNet(SPEC, (0.5,), (0.25,))
    reference.load_state_dict(model.state_dict())
    inputs = (x.float() / 255).requires_grad_()
    alphas = {g: a.detach() for g, a in model.alphas.items()}

    def second_order(net, params):
        loss = F.cross_entropy(torch.func.functional_call(net, params, (inputs,), {"alphas": alphas}), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in grads), inputs)[0]

    ref_params = {n: p.detach().clone().requires_grad_() for n, p in reference.named_parameters()
                  if not n.startswith("alphas.")}
    dense_params = {n: theta[n].clone().requires_grad_() for n in ref_params}
    torch.testing.assert_close(second_order(dense, dense_params), second_order(reference, ref_params),
                               rtol=1e-4, atol=1e-7)


def test_without_shared_weights_only_the_architecture_attack_applies(model):
    """share-weights = false: only α crosses the wire, so Δθ inversion and the joint attack cannot run, ADRA
    under `wire` (which needs the broadcast θ) cannot either, and architecture-only ADRA still can."""
    from dataclasses import replace

    from attacker.reconstruct.attacks import ATTACKS
    from attacker.reconstruct.knowledge import attacker_theta
    from attacker.reconstruct.settings import AttackSettings
    from attacker.reconstruct.threat import NotApplicable

    x, y = images(1)
    public = public_for(*images(40, seed=1))
    search = LocalSearchConfig(theta_steps=1, theta_batch_size=1, search_order="alpha-first")
    view, _ = client_capture(model, x, y, search, "c0", theta_data=(x, y))
    alpha_only = replace(view, broadcast={k: v for k, v in view.broadcast.items() if k.startswith("alpha:")},
                         reply={k: v for k, v in view.reply.items() if k.startswith("alpha:")})
    with pytest.raises(NotApplicable, match="no weights"):
        THREAT_MODELS.get("wire")(alpha_only, public, {})
    target = THREAT_MODELS.get("architecture-only")(alpha_only, public, attacker_theta(public))
    settings = AttackSettings(attack_prior="pixel", attack_iterations=1, attack_optimizer="adam")
    for name in ("theta", "joint"):
        with pytest.raises(NotApplicable, match="no Δθ on the wire"):
            ATTACKS.get(name).run([target], public, settings, None, torch.Generator().manual_seed(0), ())
    recons = ATTACKS.get("adra").run([target], public, settings, None, torch.Generator().manual_seed(0), ())
    assert len(recons) == 1 and recons[0].images.shape == (1, 1, 8, 8)


def test_updates_with_too_many_images_are_reported_not_attacked():
    """The demo's 10 θ steps x 16 images exceed inversion-max-images: the attack says so instead of running."""
    from attacker.reconstruct.invert import invert_batch
    from attacker.reconstruct.settings import AttackSettings
    from attacker.reconstruct.threat import AttackTarget, NotApplicable, Schedule, ThetaRule, UpdateRule

    x, y = images(4)
    schedule = Schedule(ThetaRule(10, 16, 0.05, 0.9, 3e-4, 5.0), UpdateRule("sgd", 0.1, 0.0, 1, 1), "interleaved")
    target = AttackTarget("c0", "b", {"w": torch.zeros(1)}, {}, {}, schedule.alpha, {"w": torch.zeros(1)}, schedule)
    with pytest.raises(NotApplicable, match="160 images, more than inversion-max-images = 32"):
        invert_batch([target], public_for(x, y), AttackSettings(), None, torch.Generator())
