"""The interceptor: attacks the captures of one run folder and keeps its gallery current.

It wires the two halves of the eavesdropper together and keeps the books:

* the attacking half (:class:`~attacker.reconstruct.engine.Attacker`) gets the run's public knowledge and the
  captures, nothing else: it holds no dataset;
* the scoring half (:class:`~attacker.scoring.scorer.Scorer`) reads the evaluation-only log and the dataset to
  score each reconstruction after the fact.

Every (capture, attack) ends as one line of ``reconstructions/<threat-model>/metrics.jsonl``: scored, not
applicable (with the reason), or failed (with the error). An exception while attacking a capture is logged with
its capture id and recorded; the service carries on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attacker.interceptor.config import InterceptorConfig
from attacker.reconstruct.attacks import ATTACKS
from attacker.reconstruct.engine import Attacker
from attacker.reconstruct.knowledge import public_knowledge
from attacker.reconstruct.loop import Progress, Reconstruction
from attacker.reconstruct.threat import AttackTarget, NotApplicable
from attacker.scoring.gallery import headline, render_index, skip_notes, summary_table, write_summary
from attacker.scoring.label_leakage import label_leakage, leakage_lines
from attacker.scoring.metrics import chance
from attacker.scoring.scorer import Scorer, summarise_attack
from attacker.wire.capture import CaptureRecord, CaptureStore, wire_view
from fednas.data import load_dataset
from fednas.methods import SEARCH_METHODS, SearchMethod
from fednas.run_folder import RunFolder
from fednas.storage import append_record, read_jsonl

INVERSIONS = ("theta", "joint")   # the attacks that invert Δθ (seconds per image): inversion-clients limits them


def latest(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last line of every (capture, attack): a retried capture counts once, as its latest outcome."""
    last = {(r["capture_id"], r.get("attack", "adra")): r for r in lines}
    return list(last.values())


def balanced_shard(groups: list[list[Any]], k: int, n: int) -> list[list[Any]]:
    """The k-th of n parts of ``groups``, largest first onto the lightest part (deterministic); groups are
    halved while there are fewer groups than parts, so that every part gets work."""
    groups = [list(g) for g in groups if g]
    while 0 < len(groups) < n and max(len(g) for g in groups) > 1:
        big = max(groups, key=len)
        groups.remove(big)
        groups += [big[: len(big) // 2], big[len(big) // 2:]]
    loads = [0] * n
    parts: list[list[list[Any]]] = [[] for _ in range(n)]
    for group in sorted(groups, key=len, reverse=True):
        lightest = loads.index(min(loads))
        parts[lightest].append(group)
        loads[lightest] += len(group)
    return parts[k]


class Interceptor:
    """Attack captures of one run folder and keep its ``reconstructions/<threat-model>/`` gallery current."""

    def __init__(self, run_dir: Path, settings: InterceptorConfig | None = None,
                 log: Callable[[str], None] = print, evaluation_dir: Path | None = None) -> None:
        self.folder = RunFolder(run_dir)
        self.run_dir, self.meta = self.folder.path, self.folder.meta()
        # where the clients wrote the evaluation-only log: this folder in simulation; in a deployment the
        # federation's run folder (named by ``evaluation_dir`` or by the proxy in config.json). Scoring only.
        self.truth_dir = Path(evaluation_dir or self.meta.get("evaluation_dir") or self.run_dir)
        self.cfg = self.folder.federation()
        self.settings, self.log = settings or self.folder.section(InterceptorConfig), log
        self.store = CaptureStore(self.folder.captures, report=log)
        self.out = self.folder.reconstructions(self.settings.threat_model)
        data = load_dataset(self.folder.dataset(), self.folder.data_root())
        public = public_knowledge(self.cfg, data, self.settings.attack_aux_samples)
        self.attacker = Attacker(public, self.settings)
        self.scorer = Scorer(self.truth_dir, data, public.class_means(), self.cfg.seed, self.out)
        self.stats = {"attacked": 0, "failed": 0, "not_applicable": 0}
        self.tried: set[tuple[str, str]] = set()    # (capture, attack) recorded in this session
        self.wire = {"exchanges": 0, "with_update": 0, "without_update": 0}  # counted by pending()

    def targets(self, records: Iterable[CaptureRecord]) -> list[AttackTarget]:
        """The attacker's targets; captures it cannot attack are recorded (not applicable, or failed)."""
        out, done = [], self.done()
        for record in records:
            try:
                out.append(self.attacker.target(wire_view(self.store, record)))
            except NotApplicable as exc:
                self._fail_all(record, f"not applicable: {exc}", done, not_applicable=True)
            except Exception as exc:  # noqa: BLE001 - a damaged capture must not stop the others
                self._fail_all(record, f"{exc.__class__.__name__}: {exc}", done)
        return out

    def _fail_all(self, record: CaptureRecord, error: str, done: set[tuple[str, str]],
                  not_applicable: bool = False) -> None:
        for name in self.settings.attack_names():
            if (record.capture_id, name) not in done:
                self.stats["not_applicable" if not_applicable else "failed"] += 1
                self._record_failure(record, error, name, not_applicable)

    # --- bookkeeping --------------------------------------------------------------------------------
    def lines(self) -> list[dict[str, Any]]:
        """Every readable line of ``metrics.jsonl`` (a line torn by a crash is reported and skipped)."""
        return read_jsonl(self.out / "metrics.jsonl", skip=self.log)

    def done(self) -> set[tuple[str, str]]:
        """(capture id, attack) pairs attacked or found not applicable (which the threat model of this folder
        decides), and those tried in this session. A failure, or a capture left out by ``inversion-clients``, from
        an earlier session is tried again; within a session it is not, so a live worker never loops on it."""
        settled = {(r["capture_id"], r.get("attack", "adra")) for r in self.lines()
                   if not r.get("error") or r.get("not_applicable") and not r.get("budget")}
        return settled | self.tried

    def pending(self, wanted: set[str] | None = None) -> list[CaptureRecord]:
        """Captures with a client update and an attack not run yet; also counts what the wire carried."""
        done = self.done()
        records = list(self.store.records())
        with_update = [r for r in records if r.reply_blob]
        self.wire = {"exchanges": len(records), "with_update": len(with_update),
                     "without_update": len(records) - len(with_update)}
        names = self.settings.attack_names()
        return [r for r in with_update if any((r.capture_id, n) not in done for n in names)
                and (wanted is None or r.capture_id in wanted)]

    def _base_record(self, record: CaptureRecord, attack: str) -> dict[str, Any]:
        return {"capture_id": record.capture_id, "server_round": record.server_round, "node_id": record.node_id,
                "threat_model": self.settings.threat_model, "attack": attack, "time": time.time()}

    def _record_failure(self, record: CaptureRecord, error: str, attack: str = "adra",
                        not_applicable: bool = False, budget: bool = False) -> None:
        self.log(f"archleak interceptor: capture {record.capture_id} ({attack}): {error}")
        self.tried.add((record.capture_id, attack))
        append_record(self.out / "metrics.jsonl", {**self._base_record(record, attack), "error": error,
                                                   "not_applicable": not_applicable, "budget": budget, "images": []})

    def process(self, records: Sequence[CaptureRecord], callbacks: Sequence[Callable[[Progress], None]] = (),
                shard: tuple[int, int] = (0, 1)) -> int:
        """Attack, score and record ``records`` with every attack not run on them yet (``shard=(k, n)``: only
        the k-th of n balanced parts, by groups of captures that share weights); returns how many
        reconstructions were made."""
        by_id = {r.capture_id: r for r in records}
        # shards are cut from every capture with an update, not from what is still to do: workers that start at
        # different moments must agree on the parts (one that started after another had finished would otherwise
        # cut the rest anew, and a capture could fall to the worker that had already ended)
        everything = [r for r in self.store.records() if r.reply_blob] if shard[1] > 1 else list(records)
        by_weights: dict[str, list[CaptureRecord]] = {}
        for record in sorted(everything, key=lambda r: (r.server_round, r.node_id)):
            by_weights.setdefault(self.attacker.weights_key(record.broadcast_blob), []).append(record)
        mine = balanced_shard(list(by_weights.values()), *shard)
        targets = self.targets([by_id[r.capture_id] for group in mine for r in group if r.capture_id in by_id])
        grouped: dict[tuple[Any, ...], list[AttackTarget]] = {}
        for target in targets:
            grouped.setdefault((target.theta_key, target.rule, target.schedule), []).append(target)
        size = 1 if self.attacker.public.spec.batchnorm else self.settings.attack_batch
        done, attacked = self.done(), 0
        for name in self.settings.attack_names():
            for group in grouped.values():
                todo = self._followed([t for t in group if (t.capture_id, name) not in done], name, by_id)
                for start in range(0, len(todo), size):
                    attacked += self._run(name, todo[start:start + size], by_id, callbacks)
        return attacked

    def _followed(self, todo: list[AttackTarget], name: str, by_id: dict[str, CaptureRecord]) -> list[AttackTarget]:
        """The targets an inversion attack takes under ``inversion-clients = N``: those of the first N clients
        seen on the wire (a targeted eavesdropper); the others are recorded as not attacked, and a later session
        with another setting takes them."""
        n = self.settings.inversion_clients
        if n == 0 or name not in INVERSIONS:
            return todo
        followed = self._first_clients(n)
        for t in todo:
            if by_id[t.capture_id].node_id not in followed:
                self.stats["not_applicable"] += 1
                self._record_failure(by_id[t.capture_id], f"not applicable: not attacked, the {name} attack "
                                     f"follows the first {n} client(s) seen on the wire (inversion-clients = {n}; "
                                     "0: every client)", name, not_applicable=True, budget=True)
        return [t for t in todo if by_id[t.capture_id].node_id in followed]

    def _first_clients(self, n: int) -> set[int]:
        """The first ``n`` node ids of the capture index (append-only, so the choice never changes once made)."""
        seen: dict[int, None] = {}
        for record in self.store.records():
            seen.setdefault(record.node_id, None)
            if len(seen) == n:
                break
        return set(seen)

    def _run(self, name: str, chunk: list[AttackTarget], by_id: dict[str, CaptureRecord],
             callbacks: Sequence[Callable[[Progress], None]]) -> int:
        """One attack on one batch of captures; failures are recorded per capture, never raised."""
        try:
            for round_ in sorted({by_id[t.capture_id].server_round for t in chunk}):
                self.applies(name, round_)
            recons = self.attacker.attack(chunk, name, callbacks)
        except NotApplicable as exc:
            self.stats["not_applicable"] += len(chunk)
            for t in chunk:
                self._record_failure(by_id[t.capture_id], f"not applicable: {exc}", name, True)
            return 0
        except Exception as exc:  # noqa: BLE001 - logged with the capture id; carry on
            self.stats["failed"] += len(chunk)
            for t in chunk:
                self._record_failure(by_id[t.capture_id], f"{exc.__class__.__name__}: {exc}\n"
                                                           f"{traceback.format_exc(limit=4)}", name)
            return 0
        for recon in recons:
            self._record(by_id[recon.capture_id], recon, name)
        self.stats["attacked"] += len(recons)
        self.refresh()
        return len(recons)

    def applies(self, name: str, server_round: int) -> None:
        """Raises NotApplicable when the run's search method puts nothing this attack inverts on the wire in
        that round."""
        method = SEARCH_METHODS.get(self.cfg.search_method)
        child = self.cfg.trains_child(server_round, self.cfg.num_server_rounds)
        for family in ATTACKS.get(name).reads:
            reason = method.wire.reason(family, child)
            if reason:
                raise NotApplicable(f"search-method {method.name}: {reason}")

    def method_report(self) -> dict[str, Any]:
        """What the run's search method sends, how D^α reaches the wire, and which attacks apply (or why not)."""
        method = SEARCH_METHODS.get(self.cfg.search_method)
        rounds = self.cfg.num_server_rounds
        child = [r for r in range(1, rounds + 1) if self.cfg.trains_child(r, rounds)]
        report = {"name": method.name, "paper": method.paper, "sends": [list(s) for s in method.wire.sends],
                  "d_alpha": method.wire.d_alpha, "attacks": self._why(method, False)}
        if child:
            report.update(child_rounds=child, attacks_in_child_rounds=self._why(method, True))
        return report

    @staticmethod
    def _why(method: SearchMethod, child_training: bool) -> dict[str, str]:
        why = {}
        for name in ATTACKS.names():
            reasons = [r for f in ATTACKS.get(name).reads if (r := method.wire.reason(f, child_training))]
            why[name] = reasons[0] if reasons else "applies"
        return why

    def _record(self, record: CaptureRecord, recon: Reconstruction, name: str) -> None:
        scored = self.scorer.score(record, recon, name, ATTACKS.get(name).truth(self.settings))
        append_record(self.out / "metrics.jsonl", {**self._base_record(record, name), **scored,
                                                   "match_loss": recon.match_loss,
                                                   "seconds_per_image": recon.seconds / len(recon.images)})
        self.tried.add((record.capture_id, name))

    # --- reports ------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Per attack (``by_attack``) and, at the top level, ADRA's (else the first attack's) figures."""
        lines = latest(self.lines())
        names = self.settings.attack_names()
        by_attack = {n: summarise_attack([r for r in lines if r.get("attack", "adra") == n]) for n in names}
        primary = "adra" if "adra" in names else names[0]
        classes = self.attacker.public.spec.num_classes
        population = np.bincount(self.attacker.public.aux_labels.numpy(), minlength=classes)
        leak = label_leakage(lines, self.scorer.label_truth(self.cfg, Path(self.folder.data_root())), population,
                             classes)
        return {"threat_model": self.settings.threat_model, "wire": dict(self.wire), "attacks": names,
                "search_method": self.method_report(),
                "label_leakage": leak, "preset": self.settings.attack_preset,
                **by_attack[primary], "by_attack": by_attack,
                "chance": chance(self.attacker.public.spec.num_classes), "evaluation_log": self.scorer.describe(),
                "stats": dict(self.stats), "settings": self.settings.attack().model_dump(by_alias=True)}

    def refresh(self) -> dict[str, Any]:
        summary = self.summary()
        write_summary(self.out, summary)
        render_index(self.out, f"archleak · eavesdropper · run {self.meta.get('run_id', '')} · "
                               f"{self.settings.threat_model}", summary["settings"], summary)
        return summary

    def report(self, force: bool = False) -> str:
        """The summary table as text; ``summary.json`` and the gallery are rewritten only when this session
        recorded something (a rerun that attacks nothing must not relabel old results with new settings), or when
        ``force``d (the after-run service, once every worker has written its lines)."""
        fresh = force or self.tried or not (self.out / "summary.json").exists()
        summary = self.refresh() if fresh else self.summary()
        rows = summary_table(summary)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join([headline(summary)]
                         + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
                         + skip_notes(summary) + leakage_lines(summary.get("label_leakage", {})))
