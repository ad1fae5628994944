"""Each defense is one registry entry carrying its plug points; the reference page shows where each plugs in."""

import pytest

from defenses.accounting import PrivacyLedger
from defenses.config import (
    DEFENSES,
    PLUG_POINTS,
    Defense,
    DefenseConfig,
    account_round,
    check_compatible,
    plug_table,
)
from fednas.schema import ConfigError, parse_config
from tests.conftest import REPO


def test_every_defense_plugs_in_somewhere():
    for name in DEFENSES.names():
        d = DEFENSES.get(name)
        assert isinstance(d, Defense) and any(getattr(d, p) is not None for p in PLUG_POINTS), name


def test_the_reference_page_holds_the_generated_plug_table():
    page = (REPO / "docs" / "defenses.md").read_text()
    begin, end = page.index("-->\n", page.index("<!-- plugs:begin")) + 4, page.index("<!-- plugs:end -->")
    assert page[begin:end] == plug_table(), "docs/defenses.md is stale: paste defenses.config.plug_table() into it"


def test_a_defense_is_refused_through_its_own_entry(monkeypatch):
    """A new entry's ``refuses`` is all check_compatible needs: no name check elsewhere."""
    entry = Defense("test only", alpha_step=lambda step, cfg: None,
                    refuses=lambda cfg, batchnorm: "refused by its own entry" if batchnorm else None)
    monkeypatch.setitem(DEFENSES._items, "test-only", entry)
    cfg = parse_config(DefenseConfig, {"defenses": "test-only"})
    with pytest.raises(ConfigError, match="refused by its own entry"):
        check_compatible(cfg, batchnorm=True)
    check_compatible(cfg, batchnorm=False)


def test_only_entries_with_an_account_hook_are_booked():
    cfg = parse_config(DefenseConfig, {"defenses": "l2-alpha,input-noise"})
    assert not cfg.accounted()
    ledger = PrivacyLedger()
    account_round(ledger, cfg, 1, [{"partition-id": 0.0, "alpha-samples": 10.0, "alpha-steps": 1.0}])
    assert ledger.histories == {}
    cfg = parse_config(DefenseConfig, {"defenses": "dp-sgd-alpha,central-dp"})
    account_round(ledger, cfg, 1, [{"partition-id": 0.0, "alpha-samples": 10.0, "alpha-steps": 2.0}])
    assert ledger.histories == {"partition-0": [(1.0, 0.1, 2)], "federation (client-level)": [(1.0, 1.0, 1)]}
