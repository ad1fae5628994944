"""The federation's own run-config section: typed, validated with one clear error per bad key."""

import pytest

from fednas.config import parse_run_config, resolve_user_path
from fednas.schema import ConfigError


@pytest.mark.parametrize("key,value,expected", [
    ("activation", "gelu", "elu, tanh, sigmoid, relu"),
    ("alpha-sharing", "global", "'shared' or 'per-cell'"),
    ("dataset", "svhn", "mnist, fashion-mnist, cifar10, cifar100, cifar10-subset, digits"),
    ("partitioning", "shards", "iid, dirichlet"),
    ("alpha-optimizer", "rmsprop", "sgd, adam"),
    ("search-order", "random", "'interleaved', 'alpha-first' or 'theta-first'"),
    ("device", "tpu", "'auto', 'cpu', 'cuda', 'cuda:N'"),
    ("num-server-rounds", 0, "greater than or equal to 1"),
    ("alpha-fraction", 1.5, "less than 1"),
    ("alpha-lr", -2.0, "-1 for the optimizer's preset"),
    ("cells", 2.5, "valid integer"),
])
def test_bad_values_name_the_key_and_the_allowed_values(key, value, expected):
    with pytest.raises(ConfigError) as info:
        parse_run_config({key: value})
    assert f"'{key}'" in str(info.value) and expected in str(info.value)


def test_unknown_key_lists_known_keys():
    with pytest.raises(ConfigError, match=r"unknown run-config key\(s\) 'rounds'.*num-server-rounds"):
        parse_run_config({"rounds": 3})


def test_relative_paths_resolve_under_archleak_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLEAK_HOME", str(tmp_path))
    assert resolve_user_path("runs") == (tmp_path / "runs").resolve()
    assert resolve_user_path(str(tmp_path / "abs")) == tmp_path / "abs"
    monkeypatch.delenv("ARCHLEAK_HOME")
    assert resolve_user_path("runs").parent.name == "archleak"


def test_batchnorm_with_single_image_batches_is_rejected():
    with pytest.raises(ConfigError, match="'batchnorm' = true needs 'alpha-batch-size'"):
        parse_run_config({"batchnorm": True, "alpha-batch-size": 1})
    assert parse_run_config({"batchnorm": True, "alpha-batch-size": 2}).batchnorm
