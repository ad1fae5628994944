"""The server's side of a federated search run, without Flower: evaluation, records, checkpoints, resume.

What it writes, and where, is the run folder's layout (:mod:`fednas.run_folder`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fednas.batches import ImageSet
from fednas.config import AppConfig, RunConfig, resolve_user_path
from fednas.data import load_dataset
from fednas.federation import choose_data, describe_choice, resolve_device, round_model, search_method, supernet_spec
from fednas.run_folder import RunFolder
from fednas.schema import ConfigError, parse_config, pick
from fednas.search import evaluate
from fednas.search_space import Genotype
from fednas.state import alpha_softmax, export_state, import_state, split_extra, split_state
from fednas.storage import (
    append_jsonl,
    atomic_write_json,
    package_versions,
    read_jsonl,
    save_tensors,
    write_jsonl,
)

# Keys that must match between a run and its resumption (they define the model and the data).
_RESUME_KEYS = ("seed", "search_method", "dataset", "cells", "nodes", "channels", "stem_stride", "activation",
                "alpha_sharing", "batchnorm", "partitioning", "dirichlet_alpha", "population_fraction",
                "alpha_fraction", "samples_per_client")


def run_path(cfg: RunConfig, run_id: int | str) -> Path:
    """Where a run writes: ``resume-from`` when resuming, else ``<output-dir>/<run-id>``."""
    return resolve_user_path(cfg.resume_from) if cfg.resume_from else resolve_user_path(cfg.output_dir) / str(run_id)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ServerRun:
    """Owns the global model between rounds and writes everything a run leaves behind."""

    def __init__(self, app: AppConfig, run_id: int | str, log: Callable[[str], None] = print) -> None:
        cfg = app.federation
        self.app, self.cfg, self.run_id, self.log = app, cfg, str(run_id), log
        self.choice = choose_data(cfg)
        if self.choice.warning:
            log(self.choice.warning)
        self.data = load_dataset(self.choice.dataset, str(self.choice.root))
        self.method = search_method(cfg)
        self.model = round_model(cfg, self.data, resolve_device(cfg.device), 0)
        self.extra = self.method.initial_extra(self.model, cfg, cfg.seed)   # the method's own tensors
        n_test = len(self.data.test_labels) if cfg.eval_samples == 0 else cfg.eval_samples
        ids = np.arange(min(n_test, len(self.data.test_labels)))
        self.test = ImageSet.take(self.data.test_images, self.data.test_labels, ids)
        self.start_round = 0
        self.dir = run_path(cfg, self.run_id)
        self.folder = RunFolder(self.dir)
        if cfg.resume_from:
            self._resume()
        else:
            if self.folder.exists():
                raise ConfigError(f"output folder {self.dir} already holds a run; use 'resume-from'")
            atomic_write_json(self.folder.config_file, self._metadata())
        self.advance(self.start_round + 1)   # a resumed PDARTS run may start its next round in a new stage
        self.started = self.last_tick = time.perf_counter()
        log(f"archleak: run {self.run_id} writes to {self.dir}")
        log(f"archleak: dataset {self.choice.dataset} from {self.choice.root}; "
            f"{self.model.spec.alpha_count()} α entries; rounds {self.start_round + 1}..{cfg.num_server_rounds}")

    def _metadata(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "created": now(), "seed": self.cfg.seed,
                "config": self.app.to_flower(), **describe_choice(self.choice),
                "supernet": self.model.spec.model_dump(mode="json"),
                "alpha_count": self.model.spec.alpha_count(), "versions": package_versions()}

    def _resume(self) -> None:
        old = parse_config(RunConfig, pick(self.folder.meta()["config"], RunConfig))   # as typed, not resolved
        diff = [k for k in _RESUME_KEYS if getattr(old, k) != getattr(self.cfg, k)]
        if diff:
            raise ConfigError(f"cannot resume {self.dir}: these keys differ from the original run: "
                              + ", ".join(RunConfig.model_fields[k].alias or k for k in diff))
        self.start_round, tensors, _ = self.folder.latest_checkpoint(self.log)
        self.model = round_model(self.cfg, self.data, resolve_device(self.cfg.device), self.start_round)
        import_state(self.model, tensors)
        self.extra = split_extra(tensors)[1] if self.extra else {}
        write_jsonl(self.folder.rounds_file,
                    [r for r in read_jsonl(self.folder.rounds_file) if r["round"] <= self.start_round])
        append_jsonl(self.folder.resumes_file, {"run_id": self.run_id, "time": now(),
                                                   "from_round": self.start_round,
                                                   "config": self.app.to_flower(),
                                                   "versions": package_versions()})

    @property
    def remaining_rounds(self) -> int:
        return max(self.cfg.num_server_rounds - self.start_round, 0)

    def global_state(self) -> dict[str, torch.Tensor]:
        """What the server broadcasts: α, θ unless clients keep their weights, and the search method's own tensors."""
        return {**export_state(self.model, weights=self.cfg.share_weights), **self.extra}

    def advance(self, next_round: int) -> bool:
        """Between rounds: let the search method change the model (a PDARTS stage). True when the next broadcast
        is not the plain average (the method set it: then the caller must broadcast :meth:`global_state`)."""
        new = self.method.transition(self.model, supernet_spec(self.cfg, self.data), self.cfg, self.cfg.seed,
                                     next_round, self.cfg.num_server_rounds, (self.data.mean, self.data.std))
        if new is not None:
            self.model = new
            self.log(f"archleak: {self.method.name} stage for round {next_round}: {new.spec.cells} cells, "
                     "weights and α afresh on the kept operations")
        return not self.method.plain_average

    def round_config(self, server_round: int) -> dict[str, Any]:
        """The round's ConfigRecord content: local-search settings, round and data choice."""
        return {**self.cfg.local_search().model_dump(by_alias=True), "server-round": server_round,
                "dataset": self.choice.dataset, "data-root": str(self.choice.root),
                "search-method": self.method.name, "supernet-cells": self.model.spec.cells}

    def complete_round(self, server_round: int, state: Mapping[str, torch.Tensor],
                       client_metrics: Mapping[str, float], num_clients: int,
                       extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Adopt the aggregate, evaluate, append to rounds.jsonl, checkpoint, print one line."""
        core, own = split_extra(state)
        _, theta = split_state(core)
        merged = {**export_state(self.model, weights=True), **core}
        import_state(self.model, merged)
        sent, self.extra = self.extra, {**self.extra, **own}
        self.method.adopt(self.model, self.extra, sent, self.cfg, self.cfg.seed, server_round,
                          self.cfg.num_server_rounds)
        test = evaluate(self.model, self.test) if theta else {"loss": None, "accuracy": None}
        tick = time.perf_counter()
        record = {"round": server_round, "time": now(), "seconds": tick - self.last_tick,
                  "clients": num_clients, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                  "test_samples": len(self.test) if theta else 0,
                  "client_metrics": dict(client_metrics), "genotype": self.genotype().to_dict(),
                  "alpha_softmax": alpha_softmax(export_state(self.model, weights=False)), **(extra or {})}
        self.last_tick = tick
        append_jsonl(self.folder.rounds_file, record)
        save_tensors(self.folder.checkpoint(server_round),
                     {**export_state(self.model, weights=True), **self.extra},
                     {"round": server_round, "run_id": self.run_id, "seed": self.cfg.seed,
                      "supernet": self.model.spec.model_dump(mode="json"), **describe_choice(self.choice)})
        acc = "n/a (θ stays on clients)" if test["accuracy"] is None else f"{test['accuracy']:.3f}"
        self.log(f"archleak: round {server_round}/{self.cfg.num_server_rounds}  test acc {acc}  "
                 f"α-loss {client_metrics.get('alpha-loss', float('nan')):.3f}  "
                 f"θ-loss {client_metrics.get('theta-loss', float('nan')):.3f}  "
                 f"clients {num_clients}  {record['seconds']:.1f}s")
        return record

    def genotype(self) -> Genotype:
        return self.method.genotype(self.model, self.cfg)

    def finish(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        rounds = read_jsonl(self.folder.rounds_file)
        last = rounds[-1] if rounds else {}
        summary = {"run_id": self.run_id, "finished": now(), "rounds": len(rounds),
                   "final_test_accuracy": last.get("test_accuracy"),
                   "final_genotype": self.genotype().to_dict(),
                   "genotype": str(self.genotype()), "search_method": self.method.name,
                   "seconds_this_session": time.perf_counter() - self.started,
                   "checkpoint": str(found[0][1]) if (found := self.folder.checkpoints()) else None,
                   "run_dir": str(self.dir), **(extra or {})}
        atomic_write_json(self.folder.summary_file, summary)
        self.log(f"archleak: finished; genotype {summary['genotype']}")
        self.log(f"archleak: results in {self.dir}")
        return summary
