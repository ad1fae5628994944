"""ENAS's and SMASH's ranking of candidate cells: it reads D^α only, and the ranked images are logged as used."""

import pytest
import torch

from fednas.batches import ImageSet
from fednas.methods import rounds
from fednas.methods.knobs import MethodKnobs
from fednas.search import LocalSearchConfig
from fednas.supernet import build_supernet


@pytest.mark.parametrize("method", ["enas", "smash"])
def test_ranking_reads_d_alpha_only(method, monkeypatch, data_root, mnist_or_digits):
    from fednas.data import load_dataset
    from fednas.search_space import SupernetSpec as Spec

    data = load_dataset(mnist_or_digits, str(data_root))
    spec = Spec(image_size=data.image_size, channels=4, cells=3, nodes=2)
    model = build_supernet(spec, data.mean, data.std, torch.Generator().manual_seed(0))
    knobs = MethodKnobs(search_method=method, smash_candidates=2, smash_rank_samples=10, smash_hidden=4,
                        enas_candidates=2, enas_rank_samples=10, enas_hidden=8)
    theta = ImageSet.take(data.train_images, data.train_labels, torch.arange(0, 40).numpy())
    alpha = ImageSet.take(data.train_images, data.train_labels, torch.arange(100, 140).numpy())
    seen = []
    real_rank = rounds.rank
    monkeypatch.setattr(rounds, "rank", lambda f, c, s: seen.append(set(s.ids.tolist())) or real_rank(f, c, s))
    extra = rounds.smash_extra(model, knobs, 0) if method == "smash" else rounds.enas_extra(model, knobs, 0)
    round_fn = rounds.smash_round if method == "smash" else rounds.enas_round
    out = round_fn(rounds.RoundInputs(
        knobs, LocalSearchConfig(theta_steps=2, theta_batch_size=8, alpha_steps=2, alpha_batch_size=4), 0, 1, 4,
        model, extra, theta, alpha, torch.Generator().manual_seed(0)))
    assert len(seen) == 1 and len(seen[0]) == 10 and seen[0] <= set(alpha.ids.tolist())
    assert out.extra["rank:scores"].shape == (2,)
    assert set(out.result.alpha_batches[-1]) == seen[0], "the ranked D^α images are the ones logged as used"
