from pathlib import Path

import pytest

from fednas.methods import SEARCH_METHODS, wire_table
from fednas.methods.knobs import METHOD_NAMES


def test_the_readme_carries_every_method_s_message_layout():
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = readme.split("<!-- methods:begin -->\n")[1].split("<!-- methods:end -->")[0]
    assert block == wire_table(), "README.md is stale: paste fednas.methods.wire_table() between the markers"


def test_an_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: darts, pdarts, enas, smash"):
        SEARCH_METHODS.get("nsga-net")
    assert SEARCH_METHODS.names() == METHOD_NAMES


def test_only_methods_with_an_alpha_step_let_alpha_attacks_and_alpha_defenses_in():
    for name in SEARCH_METHODS:
        method = SEARCH_METHODS.get(name)
        assert (method.wire.reason("alpha") is None) == method.trains_alpha


def test_defenses_on_the_alpha_step_are_refused_for_methods_without_one():
    from defenses.config import DefenseConfig, check_compatible
    from fednas.schema import ConfigError, parse_config

    dp = parse_config(DefenseConfig, {"defenses": "dp-sgd-alpha"})
    with pytest.raises(ConfigError, match="search-method 'enas' takes none"):
        check_compatible(dp, False, SEARCH_METHODS.get("enas"))
    check_compatible(dp, False, SEARCH_METHODS.get("pdarts"))
    secagg = parse_config(DefenseConfig, {"defenses": "secagg-plus"})
    with pytest.raises(ConfigError, match="allowed: search-method = darts"):
        check_compatible(secagg, False, SEARCH_METHODS.get("smash"))
    check_compatible(parse_config(DefenseConfig, {"defenses": "local-dp-update"}), False, SEARCH_METHODS.get("smash"))
