"""Typed frozen settings: the kebab-case base model, and parsing with one clear error per bad key.

Every settings model of the project (run-config sections, AMIA, distillation) derives from :class:`KebabModel`:
frozen, unknown keys refused, fields named in snake_case and written in kebab-case as Flower's
``[tool.flwr.app.config]`` keys are. :func:`parse_config` is the one boundary where raw values become a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


def kebab(name: str) -> str:
    """Flower run-config keys are kebab-case versions of the field names."""
    return name.replace("_", "-")


class KebabModel(BaseModel):
    """Frozen, strict, kebab-case aliases (``theta_lr`` is written ``theta-lr``), snake_case accepted too; NaN and
    infinity are refused for every float, and a boolean for every number."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=kebab, populate_by_name=True,
                              allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, values: Any) -> Any:
        if isinstance(values, Mapping):
            for name, field in cls.model_fields.items():
                value = values.get(field.alias or name, values.get(name))
                if isinstance(value, bool) and field.annotation in (int, float):
                    raise ValueError(f"key {field.alias or name!r} is a boolean ({value!r}); expected a number")
        return values


ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the allowed values."""


def section_keys(model: type[BaseModel]) -> set[str]:
    """The kebab-case keys of a settings model."""
    return {f.alias or k for k, f in model.model_fields.items()}


def pick(values: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The entries of ``values`` that are keys of ``model`` (a section of a flat run config)."""
    keys = section_keys(model)
    return {k: v for k, v in values.items() if k in keys}


def _describe(err: Mapping[str, Any]) -> str:
    key = ".".join(str(part) for part in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not key:
        return "run config: " + msg
    return f"run-config key {key!r}: got {err.get('input')!r}; {msg}"


def parse_config(model: type[ModelT], values: Mapping[str, Any]) -> ModelT:
    """Validate ``values`` into ``model``, turning pydantic's errors into one clear ConfigError."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if err["type"] == "extra_forbidden":
                known = ", ".join(f.alias or k for k, f in model.model_fields.items())
                lines.append(f"unknown key {'.'.join(map(str, err['loc']))!r}; known keys: {known}")
            else:
                lines.append(_describe(err))
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
