"""Hostile run-config values (from the hostile-input round) are refused with one error naming the key."""

import pytest

from app.config import parse_app
from fednas.schema import ConfigError


@pytest.mark.parametrize("values,message", [
    ({"alpha-lr": float("nan")}, "'alpha-lr'.*finite"),
    ({"attack-lr": float("nan")}, "'attack-lr'.*finite"),
    ({"theta-lr": float("inf")}, "'theta-lr'.*finite"),
    ({"dp-noise-multiplier": float("inf")}, "'dp-noise-multiplier'.*finite"),
    ({"dp-noise-multiplier": 1e9}, "'dp-noise-multiplier'.*less than or equal to 100"),
    ({"central-noise-multiplier": float("inf")}, "'central-noise-multiplier'.*finite"),
    ({"num-server-rounds": True}, "'num-server-rounds' is a boolean"),
    ({"channels": 10**9}, "'channels'.*less than or equal to 1024"),
    ({"cells": 10**6}, "'cells'.*less than or equal to 64"),
    ({"attack-iterations": 10**23}, "'attack-iterations'.*less than or equal"),
    ({"attack-batch": 10**12}, "'attack-batch'.*less than or equal"),
    ({"interceptor-queue": 10**18}, "'interceptor-queue'.*less than or equal"),
    ({"num-server-rounds": 10**30}, "'num-server-rounds'.*less than or equal"),
    ({"device": "cuda:99999999999"}, "'device'.*N < 1024"),
    ({"data-root": "a\x00b"}, "'data-root'.*NUL"),
    ({"attacks": "adra,adra"}, "'attacks'.*twice"),
])
def test_hostile_values_are_refused_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        parse_app(values)


def test_the_accountant_returns_for_the_largest_allowed_noise():
    from defenses.accounting import epsilon

    assert 0 < epsilon([(100.0, 0.01, 10)], 1e-5) < 1
