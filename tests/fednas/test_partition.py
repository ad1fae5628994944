import numpy as np
import pytest

from fednas.partition import split_federation

LABELS = np.repeat(np.arange(10), 100)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_deterministic_and_disjoint(scheme):
    a = split_federation(LABELS, 5, scheme=scheme, seed=3)
    b = split_federation(LABELS, 5, scheme=scheme, seed=3)
    assert np.array_equal(a.population, b.population)
    seen = set(a.population.tolist())
    assert len(seen) == 200
    for ca, cb in zip(a.clients, b.clients):
        assert np.array_equal(ca.theta, cb.theta) and np.array_equal(ca.alpha, cb.alpha)
        theta, alpha = set(ca.theta.tolist()), set(ca.alpha.tolist())
        assert not theta & alpha, "D^theta and D^alpha overlap"
        assert not (theta | alpha) & seen, "a client sees the held-back population or another client's data"
        seen |= theta | alpha
    assert len(seen) == len(LABELS)
    c = split_federation(LABELS, 5, scheme=scheme, seed=4)
    assert not np.array_equal(a.clients[0].alpha, c.clients[0].alpha)


def test_dirichlet_skews_labels_and_iid_does_not():
    def max_class_share(split):
        return np.mean([np.bincount(LABELS[c.theta], minlength=10).max() / len(c.theta) for c in split.clients])
    skewed = max_class_share(split_federation(LABELS, 5, scheme="dirichlet", concentration=0.1, seed=0))
    iid = max_class_share(split_federation(LABELS, 5, scheme="iid", seed=0))
    assert skewed > 2 * iid


def test_alpha_fraction_and_cap():
    split = split_federation(LABELS, 4, population_fraction=0.0, alpha_fraction=0.25, samples_per_client=100)
    for c in split.clients:
        assert len(c.alpha) == 25 and len(c.theta) == 75


def test_bad_arguments():
    with pytest.raises(ValueError, match="known: iid, dirichlet"):
        split_federation(LABELS, 2, scheme="shards")
    with pytest.raises(ValueError, match="alpha_fraction"):
        split_federation(LABELS, 2, alpha_fraction=1.0)


def test_population_indices_match_the_split():
    from fednas.partition import population_indices
    split = split_federation(LABELS, 3, seed=5, population_fraction=0.3)
    assert np.array_equal(population_indices(len(LABELS), 0.3, 5), split.population)
