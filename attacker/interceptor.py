"""The interceptor: consumes captures, runs the chosen attacks (:mod:`attacker.attacks`: ADRA on Δα,
inversion of Δθ, joint) under the chosen threat model, scores, writes the gallery.

The attack half sees only what :mod:`attacker.threat` allows. The scoring half reads the run's
evaluation-only log to fetch the true images; it runs after the attack and never feeds it. An exception
while attacking a capture is logged with its capture id and recorded; the service carries on.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacker.adra import Progress, Reconstruction
from attacker.attacks import ATTACKS
from attacker.capture import CaptureRecord, CaptureStore
from attacker.config import InterceptorConfig
from attacker.gallery import grid_png, render_index, skip_notes, summary_table, write_summary
from attacker.metrics import Oracle, Truth, build_truth, cached_oracle, chance, score_images, success_rates
from attacker.model import uniform_weights
from attacker.prior import ImageVAE, learned_prior
from attacker.threat import THREAT_MODELS, AttackTarget, NotApplicable, PublicKnowledge, WireView
from fednas.config import RunConfig, parse_app_config
from fednas.data import ImageData, load_dataset
from fednas.evaluation_log import read_alpha_batches
from fednas.federation import derive_seed, generator, supernet_spec
from fednas.partition import population_indices
from fednas.state import export_state, split_state
from fednas.storage import append_record, atomic_write_bytes, read_jsonl
from fednas.supernet import SuperNet

ATTACK_STREAM = 4
OUTPUT = "reconstructions"


def output_dir(run_dir: Path, threat_model: str) -> Path:
    """``reconstructions/<threat-model>/``: each threat model keeps its own gallery and metrics."""
    return Path(run_dir) / OUTPUT / threat_model


def load_run_config(run_dir: Path) -> tuple[RunConfig, InterceptorConfig, dict[str, Any]]:
    meta = json.loads((Path(run_dir) / "config.json").read_text())
    app = parse_app_config(meta["config"])
    return app.federation, app.section("interceptor", InterceptorConfig), meta


def public_knowledge(cfg: RunConfig, data: ImageData, aux_samples: int) -> PublicKnowledge:
    """The population split (held back from every client) is the attacker's public data."""
    ids = population_indices(len(data.train_labels), cfg.population_fraction, cfg.seed)[:aux_samples]
    if len(ids) == 0:
        raise ValueError("the run holds back no population data (population-fraction = 0): the attacker has no "
                         "public images for label templates, class means or a prior")
    index = torch.as_tensor(ids)
    return PublicKnowledge(supernet_spec(cfg, data), data.mean, data.std,
                           data.train_images[index].float() / 255, data.train_labels[index], cfg.seed)


def attacker_theta(public: PublicKnowledge) -> dict[str, torch.Tensor]:
    """θ_r ~ U(-0.25, 0.25) on the public search space (the paper's architecture-only attacker)."""
    model = SuperNet(public.spec, public.mean, public.std)
    uniform_weights(model, -0.25, 0.25, generator(public.seed, ATTACK_STREAM))
    _, theta = split_state(export_state(model))
    return theta


def _balanced(groups: list[list[Any]], k: int, n: int) -> list[list[Any]]:
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


def wire_view(store: CaptureStore, record: CaptureRecord) -> WireView:
    capture = store.load(record)
    return WireView(record.capture_id, record.server_round, record.node_id, record.broadcast_blob,
                    capture.broadcast, capture.reply, record.broadcast_config, record.reply_metrics)


class Interceptor:
    """Attack captures of one run folder and keep its ``reconstructions/<threat-model>/`` gallery current."""

    def __init__(self, run_dir: Path, settings: InterceptorConfig | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.run_dir = Path(run_dir)
        cfg, stored, self.meta = load_run_config(self.run_dir)
        self.cfg, self.settings, self.log = cfg, settings or stored, log
        self.store = CaptureStore(self.run_dir / "captures", report=log)
        self.out = output_dir(self.run_dir, self.settings.threat_model)
        self.data = load_dataset(self.meta["dataset"], self.meta["data_root"])
        self.public = public_knowledge(cfg, self.data, self.settings.attack_aux_samples)
        self.own_theta = attacker_theta(self.public)
        self._prior: ImageVAE | None = None
        self._oracle = None
        self.stats = {"attacked": 0, "failed": 0, "not_applicable": 0}
        self.wire = {"exchanges": 0, "with_update": 0, "without_update": 0}  # counted by pending()

    # --- the attack half: wire data and public knowledge only -------------------------------------
    def prior(self, attack: str) -> ImageVAE | None:
        if ATTACKS.get(attack).prior(self.settings) != "learned":
            return None
        if self._prior is None:
            self._prior = learned_prior(self.public.aux_images, self.public.seed)
        return self._prior

    def targets(self, records: Iterable[CaptureRecord]) -> list[AttackTarget]:
        threat = THREAT_MODELS.get(self.settings.threat_model)
        out, done = [], self.done()
        for record in records:
            try:
                out.append(threat(wire_view(self.store, record), self.public, self.own_theta))
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

    def attack(self, targets: Sequence[AttackTarget], callbacks: Sequence[Callable[[Progress], None]] = (),
               name: str = "adra") -> list[Reconstruction]:
        key = f"{name}:{targets[0].capture_id}" if name != "adra" else targets[0].capture_id
        seed = derive_seed(self.cfg.seed, ATTACK_STREAM, int(hashlib.sha1(key.encode()).hexdigest()[:8], 16))
        return ATTACKS.get(name).run(targets, self.public, self.settings, self.prior(name),
                                     torch.Generator().manual_seed(seed), callbacks)

    # --- the scoring half: ground truth from the evaluation-only log -------------------------------
    @property
    def oracle(self) -> Oracle:
        if self._oracle is None:
            self._oracle = cached_oracle(self.meta["dataset"], self.data.train_images.float() / 255,
                                         self.data.train_labels, self.public.spec.num_classes)
        return self._oracle

    def truth(self, record: CaptureRecord, attack: str = "adra") -> Truth | None:
        ids = []
        for key in ATTACKS.get(attack).truth(self.settings):
            batches = read_alpha_batches(self.run_dir, record.server_round, record.node_id, key)
            if batches is None:
                return None
            ids += [i for b in batches for i in b]
        return build_truth(self.data.train_images, self.data.train_labels, ids, self.cfg.seed)

    def score(self, record: CaptureRecord, recon: Reconstruction, attack: str = "adra") -> dict[str, Any]:
        baseline = self.public.class_means()[recon.labels]
        truth = self.truth(record, attack)
        if truth is None or len(truth.labels) != len(recon.labels):
            rows: list[dict[str, Any]] = [{"label": int(lbl)} for lbl in recon.labels]
            shown = [recon.images, baseline]
        else:
            rows, shown = score_images(recon.images, recon.labels, baseline, truth, self.oracle)
        png = f"r{record.server_round:04d}-n{record.node_id}-{attack}.png"
        atomic_write_bytes(self.out / png, grid_png(shown))
        return {"png": png, "images": rows}

    # --- bookkeeping --------------------------------------------------------------------------------
    def done(self) -> set[tuple[str, str]]:
        """(capture id, attack) pairs already recorded (attacked, failed or not applicable)."""
        return {(r["capture_id"], r.get("attack", "adra")) for r in read_jsonl(self.out / "metrics.jsonl")}

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
                        not_applicable: bool = False) -> None:
        self.log(f"archleak interceptor: capture {record.capture_id} ({attack}): {error}")
        append_record(self.out / "metrics.jsonl", {**self._base_record(record, attack), "error": error,
                                                   "not_applicable": not_applicable, "images": []})

    def process(self, records: Sequence[CaptureRecord], callbacks: Sequence[Callable[[Progress], None]] = (),
                shard: tuple[int, int] = (0, 1)) -> int:
        """Attack, score and record ``records`` with every attack not run on them yet (``shard=(k, n)``: only
        the k-th of n balanced parts, by groups of captures that share weights); returns how many
        reconstructions were made."""
        by_id = {r.capture_id: r for r in records}
        by_weights: dict[tuple[str, Any], list[CaptureRecord]] = {}
        for record in sorted(records, key=lambda r: (r.server_round, r.node_id)):
            by_weights.setdefault(self._group_key(record), []).append(record)
        mine = _balanced(list(by_weights.values()), *shard)
        targets = self.targets([r for group in mine for r in group])
        grouped: dict[tuple[str, Any], list[AttackTarget]] = {}
        for target in targets:
            grouped.setdefault((target.theta_key, target.rule, target.schedule), []).append(target)
        size = 1 if self.public.spec.batchnorm else self.settings.attack_batch
        done, attacked = self.done(), 0
        for name in self.settings.attack_names():
            for group in grouped.values():
                todo = [t for t in group if (t.capture_id, name) not in done]
                for start in range(0, len(todo), size):
                    attacked += self._run(name, todo[start:start + size], by_id, callbacks)
        return attacked

    def _run(self, name: str, chunk: list[AttackTarget], by_id: dict[str, CaptureRecord],
             callbacks: Sequence[Callable[[Progress], None]]) -> int:
        """One attack on one batch of captures; failures are recorded per capture, never raised."""
        try:
            recons = self.attack(chunk, callbacks, name)
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
            record = by_id[recon.capture_id]
            line = {**self._base_record(record, name), **self.score(record, recon, name),
                    "match_loss": recon.match_loss, "seconds_per_image": recon.seconds / len(recon.images)}
            append_record(self.out / "metrics.jsonl", line)
        self.stats["attacked"] += len(recons)
        self.refresh()
        return len(recons)

    def _group_key(self, record: CaptureRecord) -> tuple[str, Any]:
        """Captures attacked with the same weights: one group under architecture-only, a broadcast under wire."""
        return ("attacker", None) if self.settings.threat_model == "architecture-only" else (record.broadcast_blob, None)

    def summary(self) -> dict[str, Any]:
        """Per attack (``by_attack``) and, at the top level, ADRA's (else the first attack's) figures."""
        lines = read_jsonl(self.out / "metrics.jsonl")
        names = self.settings.attack_names()
        by_attack = {n: summarise([r for r in lines if r.get("attack", "adra") == n]) for n in names}
        primary = "adra" if "adra" in names else names[0]
        return {"threat_model": self.settings.threat_model, "wire": dict(self.wire), "attacks": names,
                **by_attack[primary], "by_attack": by_attack, "chance": chance(self.public.spec.num_classes),
                "stats": dict(self.stats), "settings": self.settings.attack().model_dump(by_alias=True)}

    def refresh(self) -> dict[str, Any]:
        summary = self.summary()
        write_summary(self.out, summary)
        render_index(self.out, f"archleak · eavesdropper · run {self.meta.get('run_id', '')} · {self.settings.threat_model}",
                     summary["settings"], summary)
        return summary

    def report(self) -> str:
        summary = self.refresh()
        rows = summary_table(summary)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
                         + skip_notes(summary))


def summarise(lines: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One attack's lines: success rates under each criterion, its label-only baseline, cost, skips."""
    ok = [r for r in lines if not r.get("error")]
    images = [m for r in ok for m in r["images"] if "true_label" in m]
    attack, base = success_rates(images), success_rates([m["baseline"] for m in images])
    if images:
        attack["label"] = base["label"] = float(np.mean([m["label_correct"] for m in images]))
    secs = [r["seconds_per_image"] for r in ok]
    skipped = [r for r in lines if r.get("not_applicable")]
    return {"captures": len(ok), "images_scored": len(images), "attack": attack, "baseline": base,
            "seconds_per_image": float(np.mean(secs)) if secs else None, "not_applicable": len(skipped),
            "failed": len(lines) - len(ok) - len(skipped),
            "why_not": skipped[-1]["error"].split(": ", 2)[-1] if skipped else ""}
