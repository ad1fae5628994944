"""Failures are visible and not permanent; a torn metrics line does not lock a run; a rerun that attacks nothing
does not relabel old results (findings of the hostile-input round)."""

import json
import shutil

import pytest

from attacker.interceptor.config import InterceptorConfig
from attacker.interceptor.interceptor import Interceptor
from attacker.reconstruct.engine import Attacker
from fednas.run_folder import RunFolder

QUICK = {"attacks": "adra", "attack-iterations": 2, "attack-prior": "pixel", "attack-aux-samples": 100}


@pytest.fixture
def run(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("reconstructions"))
    return copy


def settings(run, **extra):
    return RunFolder(run).section(InterceptorConfig).model_copy(update={
        k.replace("-", "_"): v for k, v in {**QUICK, **extra}.items()})


def test_failed_attacks_are_reported_and_tried_again_by_the_next_session(run, monkeypatch):
    def broken(self, targets, name="adra", callbacks=()):
        raise RuntimeError("transient failure")

    with monkeypatch.context() as m:
        m.setattr(Attacker, "attack", broken)
        first = Interceptor(run, settings(run), log=lambda line: None)
        assert first.process(first.pending()) == 0
        report = first.report()
    assert "FAILED on 2 capture(s): RuntimeError: transient failure" in report
    assert "0 (0, 2)" in report
    assert not first.pending(), "within a session a failure is not retried (a live worker must not loop)"
    second = Interceptor(run, settings(run), log=lambda line: None)
    assert len(second.pending()) == 2
    assert second.process(second.pending()) == 2
    summary = second.summary()
    assert summary["by_attack"]["adra"]["captures"] == 2 and summary["by_attack"]["adra"]["failed"] == 0


def test_a_torn_metrics_line_is_skipped_with_a_message(run):
    interceptor = Interceptor(run, settings(run), log=lambda line: None)
    interceptor.process(interceptor.pending())
    metrics = interceptor.out / "metrics.jsonl"
    with open(metrics, "a") as fh:
        fh.write('{"capture_id": "torn", "att')
    seen = []
    again = Interceptor(run, settings(run), log=seen.append)
    assert again.pending() == [] and any("unreadable line skipped" in line for line in seen)
    assert again.summary()["by_attack"]["adra"]["captures"] == 2


def test_a_rerun_that_attacks_nothing_keeps_the_summary_of_the_results(run):
    interceptor = Interceptor(run, settings(run), log=lambda line: None)
    interceptor.process(interceptor.pending())
    interceptor.report()
    path = interceptor.out / "summary.json"
    before = path.read_text()
    rerun = Interceptor(run, settings(run, **{"attack-iterations": 999}), log=lambda line: None)
    assert rerun.process(rerun.pending()) == 0
    rerun.report()
    assert path.read_text() == before and json.loads(before)["settings"]["attack-iterations"] == 2


def test_inversion_clients_follows_the_first_clients_and_a_later_session_takes_the_rest(run):
    quick = {"attacks": "theta", "inversion-iterations": 2}
    first = Interceptor(run, settings(run, **quick, **{"inversion-clients": 1}), log=lambda line: None)
    assert first.process(first.pending()) == 1
    by = first.summary()["by_attack"]["theta"]
    assert by["captures"] == 1 and by["not_applicable"] == 1 and "inversion-clients = 1" in by["why_not"]
    followed = next(iter(first.store.records())).node_id
    assert [r["node_id"] for r in first.lines() if not r.get("error")] == [followed]
    assert not first.pending(), "a live worker does not loop on the captures it leaves out"
    second = Interceptor(run, settings(run, **quick), log=lambda line: None)
    assert second.process(second.pending()) == 1
    assert second.summary()["by_attack"]["theta"]["captures"] == 2
