"""The whole run config: pyproject.toml and the reference page hold every key of every section, with its default."""

import tomllib

import pytest

from app.config import SECTIONS, key_table, parse_app
from fednas.schema import ConfigError, section_keys
from tests.conftest import REPO


def flower_config():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_holds_every_key_with_the_models_default():
    assert flower_config() == parse_app({}).to_flower()


def test_the_reference_documents_every_key():
    reference = (REPO / "docs" / "run-config.md").read_text()
    missing = [k for k in parse_app({}).to_flower() if f"`{k}`" not in reference]
    assert not missing, f"the run-config reference lacks keys: {missing}"


def test_pyproject_values_parse():
    app = parse_app(flower_config())
    assert app.federation.num_server_rounds == 3 and app.federation.alpha_sharing == "shared"


def test_sections_share_no_key():
    names = list(SECTIONS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not section_keys(SECTIONS[a]) & section_keys(SECTIONS[b]), (a, b)


def test_an_unknown_key_names_every_section_s_keys():
    with pytest.raises(ConfigError, match=r"unknown run-config key\(s\) 'attack-itterations'.*attack-iterations"):
        parse_app({"attack-itterations": 3})


def test_the_reference_page_holds_the_generated_key_tables():
    page = (REPO / "docs" / "run-config.md").read_text()
    begin, end = page.index("-->\n", page.index("<!-- keys:begin")) + 4, page.index("<!-- keys:end -->")
    assert page[begin:end] == key_table(), "docs/run-config.md is stale: paste `archleak config --markdown` into it"
