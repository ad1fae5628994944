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
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from fednas.data import AUTO, DATASETS
from fednas.partition import PARTITIONERS
from fednas.search import LocalSearchConfig, kebab
from fednas.search_space import SearchSpaceKnobs

HOME_ENV = "ARCHLEAK_HOME"


class ConfigError(ValueError):
    """A run-config value is invalid; the message names the key and the allowed values."""


def resolve_user_path(value: str) -> Path:
    """Resolve a user-given path by the rule in this module's docstring."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    base = Path(os.environ.get(HOME_ENV) or Path.home() / "archleak").expanduser()
    return (base / path).resolve()


class RunConfig(LocalSearchConfig, SearchSpaceKnobs):
    """Every run-config key of the Flower App, with its default and meaning."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=kebab, populate_by_name=True)

    num_server_rounds: int = Field(3, ge=1, description="federated rounds")
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
    samples_per_client: int = Field(0, ge=0, description="cap on each client's share (0: no cap)")
    fraction_train: float = Field(1.0, gt=0, le=1, description="fraction of connected clients sampled per round")
    min_nodes: int = Field(2, ge=1, description="clients that must be connected (and sampled) per round")
    share_weights: bool = Field(True, description="clients send θ as well as α (false: θ stays on the client)")
    eval_samples: int = Field(500, ge=0, description="test images for the server's evaluation (0: all)")

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
        if value in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
            return value
        raise ValueError("allowed values: 'auto', 'cpu', 'cuda', 'cuda:N'")

    @model_validator(mode="after")
    def _batchnorm_needs_batches(self) -> RunConfig:
        # With batch statistics and a single image, every channel is normalised to zero spatial mean, so
        # global pooling sees zeros: the output is constant and every gradient vanishes.
        if self.batchnorm and min(self.alpha_batch_size, self.theta_batch_size) < 2:
            raise ValueError("'batchnorm' = true needs 'alpha-batch-size' and 'theta-batch-size' >= 2 "
                             "(BatchNorm on one image makes the output constant); allowed: batchnorm = false "
                             "with any batch size, or batches of at least 2")
        return self

    def local_search(self) -> LocalSearchConfig:
        return LocalSearchConfig(**{k: getattr(self, k) for k in LocalSearchConfig.model_fields})

    def knobs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SearchSpaceKnobs.model_fields}

    def to_flower(self) -> dict[str, Any]:
        """Kebab-case mapping, as in ``[tool.flwr.app.config]``."""
        return self.model_dump(by_alias=True, mode="json")


def _describe(err: Mapping[str, Any], model: type) -> str:
    key = ".".join(str(part) for part in err["loc"])
    if not key:
        return "run config: " + str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        known = ", ".join(f.alias or k for k, f in model.model_fields.items())
        return f"unknown run-config key {key!r}; known keys: {known}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"run-config key {key!r}: got {err.get('input')!r}; {msg}"


def parse_config(model: type[LocalSearchConfig], values: Mapping[str, Any]) -> Any:
    """Validate ``values`` into ``model``, turning pydantic's errors into one clear ConfigError."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        lines = [_describe(err, model) for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def parse_run_config(values: Mapping[str, Any]) -> RunConfig:
    """Parse Flower's run config (kebab-case keys) into a :class:`RunConfig`."""
    return parse_config(RunConfig, values)
