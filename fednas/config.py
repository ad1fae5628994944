"""The run configuration: typed, frozen, parsed once at the boundary, saved with every result.

Keys are kebab-case (Flower's ``[tool.flwr.app.config]``). :class:`RunConfig` is the single source of
truth: ``pyproject.toml`` and the README's key table are checked against it by the tests.

Path rule: ``output-dir``, ``data-root`` and ``resume-from`` expand ``~``; a relative path is resolved
against ``$ARCHLEAK_HOME`` when it is set, otherwise against ``~/archleak``. (``flwr run .`` executes an
installed copy of the app under ``$FLWR_HOME/apps/`` in a long-lived SuperLink process, so the folder
you typed the command in is unknown to the app.) The run prints its output folder at start and end.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from fednas.data import AUTO, DATASETS
from fednas.methods.knobs import MethodKnobs
from fednas.partition import PARTITIONERS
from fednas.schema import ConfigError, KebabModel, ModelT, parse_config, pick, section_keys
from fednas.search import LocalSearchConfig
from fednas.search_space import SearchSpaceKnobs

HOME_ENV = "ARCHLEAK_HOME"


def resolve_user_path(value: str) -> Path:
    """Resolve a user-given path by the rule in this module's docstring."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    base = Path(os.environ.get(HOME_ENV) or Path.home() / "archleak").expanduser()
    return (base / path).resolve()


class RunConfig(LocalSearchConfig, SearchSpaceKnobs, MethodKnobs):
    """Every federation key of the Flower App's run config, with its default and meaning."""

    model_config = KebabModel.model_config

    num_server_rounds: int = Field(3, ge=1, le=100_000, description="federated rounds")
    seed: int = Field(0, ge=0, description="the one seed behind model init, partitions, sampling and batches")
    dataset: str = Field("auto", description="auto (MNIST, else bundled digits), mnist, fashion-mnist, cifar10, "
                                             "cifar100, cifar10-subset, digits")
    data_root: str = Field("", description="data folder; empty: $FEDNAS_DATA_ROOT, else ~/.cache/archleak/data")
    output_dir: str = Field("runs", description="results go to <output-dir>/<run-id>/ (see the path rule)")
    resume_from: str = Field("", description="a run folder to resume from its last checkpoint")
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'")
    partitioning: str = Field("iid", description="'iid' or 'dirichlet' (label skew)")
    dirichlet_alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller: more skew)")
    population_fraction: float = Field(
        0.2, ge=0, lt=1, description="share of the train split held back from every client (population)")
    alpha_fraction: float = Field(0.5, gt=0, lt=1, description="share of each client's data that is D^α")
    samples_per_client: int = Field(0, ge=0, le=10_000_000, description="cap on each client's share (0: no cap)")
    fraction_train: float = Field(1.0, gt=0, le=1, description="fraction of connected clients sampled per round")
    min_nodes: int = Field(2, ge=1, le=100_000, description="clients that must be connected (and sampled) per round")
    share_weights: bool = Field(True, description="clients send θ as well as α (false: θ stays on the client)")
    eval_samples: int = Field(500, ge=0, le=10_000_000, description="test images for the server's evaluation (0: all)")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value != AUTO:
            DATASETS.get(value)
        return value

    @field_validator("partitioning")
    @classmethod
    def _known_partitioning(cls, value: str) -> str:
        PARTITIONERS.get(value)
        return value

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        head, _, index = value.partition(":")
        if value in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit() and int(index) < 1024):
            return value
        raise ValueError("allowed values: 'auto', 'cpu', 'cuda', 'cuda:N' (N < 1024)")

    @field_validator("data_root", "output_dir", "resume_from")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("a path cannot contain a NUL character")
        return value

    @model_validator(mode="after")
    def _batchnorm_needs_batches(self) -> RunConfig:
        # With batch statistics and a single image, every channel is normalised to zero spatial mean, so
        # global pooling sees zeros: the output is constant and every gradient vanishes.
        if self.batchnorm and min(self.alpha_batch_size, self.theta_batch_size) < 2:
            raise ValueError("'batchnorm' = true needs 'alpha-batch-size' and 'theta-batch-size' >= 2 "
                             "(BatchNorm on one image makes the output constant); allowed: batchnorm = false "
                             "with any batch size, or batches of at least 2")
        return self

    @model_validator(mode="after")
    def _method_fits(self) -> RunConfig:
        if self.search_method == "pdarts" and self.alpha_sharing != "shared" and self.pdarts_depth_step:
            raise ValueError("'search-method' = pdarts with 'alpha-sharing' = per-cell needs 'pdarts-depth-step' = 0 "
                             "(a stage that adds cells would add α groups); allowed: alpha-sharing = shared, or "
                             "pdarts-depth-step = 0")
        if self.search_method == "pdarts" and not self.share_weights:
            raise ValueError("'search-method' = pdarts needs 'share-weights' = true (each stage rebuilds the "
                             "weights on the server)")
        return self

    def local_search(self) -> LocalSearchConfig:
        return LocalSearchConfig(**{k: getattr(self, k) for k in LocalSearchConfig.model_fields})

    def knobs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SearchSpaceKnobs.model_fields}

    def to_flower(self) -> dict[str, Any]:
        """Kebab-case mapping, as in ``[tool.flwr.app.config]``."""
        return self.model_dump(by_alias=True, mode="json")


@dataclass(frozen=True)
class AppConfig:
    """The whole run config, one typed section per package."""

    sections: Mapping[str, BaseModel]

    @property
    def federation(self) -> RunConfig:
        return self.section("federation", RunConfig)

    def section(self, name: str, model: type[ModelT]) -> ModelT:
        value = self.sections[name]
        assert isinstance(value, model)
        return value

    def to_flower(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for value in self.sections.values():
            out.update(value.model_dump(by_alias=True, mode="json"))
        return out


Sections = Mapping[str, type[BaseModel]]


def check_sections(sections: Sections) -> None:
    """The run config is one flat namespace: no key may belong to two sections."""
    names = list(sections)
    for i, name in enumerate(names):
        for other in names[:i]:
            shared = section_keys(sections[name]) & section_keys(sections[other])
            if shared:
                raise ValueError(f"run-config section {name!r} reuses key(s) of section {other!r}: {sorted(shared)}")


def parse_sections(values: Mapping[str, Any], sections: Sections) -> AppConfig:
    """Parse a flat Flower run config into the given sections; a key of no section is an error."""
    known = set().union(*(section_keys(m) for m in sections.values()))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown run-config key(s) {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(sorted(known))}")
    return AppConfig({name: parse_config(model, pick(values, model)) for name, model in sections.items()})


def parse_run_config(values: Mapping[str, Any]) -> RunConfig:
    """Parse the federation's own keys (any other key is an error: the app's composition root parses the rest)."""
    return parse_sections(values, {"federation": RunConfig}).federation
