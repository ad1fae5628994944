"""Label recovery from Δα on a tiny supernet with known weights (wire threat model)."""

import torch

from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.labels import class_templates, match_labels
from attacker.reconstruct.model import attack_model
from attacker.reconstruct.threat import THREAT_MODELS
from attacker.reconstruct.update import flatten
from attacker.wire.synthetic import client_capture
from fednas.data import load_dataset
from fednas.search import LocalSearchConfig
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet

SPEC = SupernetSpec(channels=4, nodes=2, cells=3)


def setup(data_root, dataset, batch):
    data = load_dataset(dataset, str(data_root))
    model = build_supernet(SPEC, data.mean, data.std, torch.Generator().manual_seed(0))
    public = PublicKnowledge(SPEC, data.mean, data.std, data.train_images[:600].float() / 255,
                             data.train_labels[:600], 0)
    views, labels = [], []
    for i in range(0, 8, batch):
        x, y = data.test_images[i:i + batch], data.test_labels[i:i + batch]
        view, _ = client_capture(model, x, y, LocalSearchConfig(alpha_batch_size=batch), f"c{i}")
        views.append(THREAT_MODELS.get("wire")(view, public, {}))
        labels.append(sorted(y.tolist()))
    net = attack_model(SPEC, data.mean, data.std, views[0].theta)
    groups = list(SPEC.alpha_groups())
    alpha0 = {g: torch.stack([t.alpha_before[g] for t in views]) for g in groups}
    observed = flatten({g: torch.stack([t.alpha_delta[g] for t in views]) for g in groups}, groups)
    templates = class_templates(net, alpha0, public, views[0].rule)
    return match_labels(templates, observed, batch), labels


def test_single_image_labels_are_recovered(data_root, mnist_or_digits):
    recovered, truth = setup(data_root, mnist_or_digits, 1)
    assert [[int(v) for v in r] for r in recovered] == truth


def test_batch_label_counts_are_recovered(data_root, mnist_or_digits):
    recovered, truth = setup(data_root, mnist_or_digits, 2)
    hits = sum(sorted(int(v) for v in r) == t for r, t in zip(recovered, truth))
    assert hits >= 3, (recovered, truth)   # 4 batches of two; NNLS on class templates gets most multisets


def test_templates_are_computed_once_per_distinct_alpha_and_stay_per_capture(data_root, mnist_or_digits):
    data = load_dataset(mnist_or_digits, str(data_root))
    model = build_supernet(SPEC, data.mean, data.std, torch.Generator().manual_seed(0))
    public = PublicKnowledge(SPEC, data.mean, data.std, data.train_images[:200].float() / 255,
                             data.train_labels[:200], 0)
    net = attack_model(SPEC, data.mean, data.std, {k: v for k, v in model.state_dict().items()
                                                    if not k.startswith("alphas.")})
    view, _ = client_capture(model, data.test_images[:1], data.test_labels[:1], LocalSearchConfig(), "c")
    rule = THREAT_MODELS.get("wire")(view, public, {}).rule
    g = torch.Generator().manual_seed(3)
    two = {k: 0.5 * torch.randn(2, *a.shape, generator=g) for k, a in model.alphas.items()}
    rows = torch.tensor([0, 1, 0])   # captures 0 and 2 share their broadcast α
    shared = class_templates(net, {k: a[rows] for k, a in two.items()}, public, rule, per_class=1)
    each = torch.cat([class_templates(net, {k: a[i:i + 1] for k, a in two.items()}, public, rule, per_class=1)
                      for i in rows.tolist()])
    # one batched call against one call per capture: float32 kernels sum in a batch-dependent order (1 ulp)
    torch.testing.assert_close(shared, each, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(shared[0], shared[1])
