"""One run folder: its layout, its stored configuration and its checkpoints, in one typed object.

``<output-dir>/<run-id>/`` (the deployed proxy writes the same layout under ``intercepted/<run-id>/``)::

  config.json          resolved config, seed, dataset actually used, search space, package versions
  rounds.jsonl         one record per round: genotype, softmax(α), test and client metrics, seconds
  checkpoints/         round-NNNN.safetensors (θ and α of the global model, atomic)
  summary.json         final genotype and accuracy
  resumes.jsonl        one record per resume
  captures/            what crossed the wire (attacker.wire.capture)
  evaluation/          the evaluation-only log of the clients' true batches (scoring only)
  reconstructions/<threat-model>/   the interceptor's metrics, report and gallery
  distilled/           the DMP student of the searched model (defenses.distillation)
  amia/                membership-inference reports

Every reader of a run goes through :class:`RunFolder`, so the layout is written down once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fednas.config import RunConfig
from fednas.schema import ModelT, parse_config, pick
from fednas.storage import CorruptFile, load_tensors

_CKPT = re.compile(r"round-(\d+)\.safetensors$")


class RunNotFound(FileNotFoundError):
    """A folder is not a run folder (no config.json), or holds no readable model."""


@dataclass(frozen=True)
class RunFolder:
    """The files of one run; nothing is read until asked for."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # --- layout -------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def rounds_file(self) -> Path:
        return self.path / "rounds.jsonl"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def resumes_file(self) -> Path:
        return self.path / "resumes.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def captures(self) -> Path:
        return self.path / "captures"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation"

    @property
    def distilled(self) -> Path:
        return self.path / "distilled"

    @property
    def amia(self) -> Path:
        return self.path / "amia"

    def reconstructions(self, threat_model: str) -> Path:
        """``reconstructions/<threat-model>/``: each threat model keeps its own gallery and metrics."""
        return self.path / "reconstructions" / threat_model

    def checkpoint(self, server_round: int) -> Path:
        return self.checkpoint_dir / f"round-{server_round:04d}.safetensors"

    # --- stored configuration -----------------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_file.exists()

    def require(self, what: str = "nothing to read") -> RunFolder:
        if not self.exists():
            raise RunNotFound(f"{self.path} is not a run folder (no config.json): {what}")
        return self

    def meta(self) -> dict[str, Any]:
        """``config.json`` as written by the server (or by the proxy for a deployed run)."""
        self.require()
        try:
            meta = json.loads(self.config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.config_file} is not valid JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise ValueError(f"{self.config_file} has no \"config\" object: not a run's config.json")  # noqa: TRY004
        return meta

    def values(self, data_root: str = "") -> dict[str, Any]:
        """The flat run config, with the dataset actually used (``auto`` resolved) and ``data_root`` when given."""
        meta = self.meta()
        values = {**meta["config"], "dataset": meta.get("dataset", meta["config"].get("dataset"))}
        if data_root:
            values["data-root"] = data_root
        return values

    def section(self, model: type[ModelT], data_root: str = "") -> ModelT:
        """One typed section of the stored run config (keys of other sections are left to their owners)."""
        return parse_config(model, pick(self.values(data_root), model))

    def federation(self, data_root: str = "") -> RunConfig:
        return self.section(RunConfig, data_root)

    def dataset(self) -> str:
        meta = self.meta()
        name = meta.get("dataset", meta["config"].get("dataset"))
        if not name:
            raise ValueError(f"{self.config_file} names no dataset (\"dataset\")")
        return str(name)

    def data_root(self, override: str = "") -> str:
        meta = self.meta()
        return override or str(meta.get("data_root", meta["config"].get("data-root", "")))

    # --- checkpoints --------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """(round, path) of every checkpoint file, newest first."""
        found = [(int(m.group(1)), p) for p in self.checkpoint_dir.glob("round-*.safetensors")
                 if (m := _CKPT.search(p.name)) and p.is_file()]
        return sorted(found, reverse=True)

    def latest_checkpoint(self, log: Callable[[str], None] = print
                          ) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
        """Newest readable checkpoint; damaged ones are reported and skipped."""
        for server_round, path in self.checkpoints():
            try:
                tensors, meta = load_tensors(path)
            except CorruptFile as exc:
                log(f"archleak: skipping damaged checkpoint {exc}")
                continue
            return server_round, tensors, meta
        raise FileNotFoundError(f"no readable checkpoint under {self.checkpoint_dir}")
