"""The Flower App's run config: one flat namespace, one typed section per package.

``federation`` belongs to fednas (federated DARTS), ``interceptor`` to the eavesdropper and ``defense`` to the
defenses. The composition root names the sections here; the packages below it do not know each other's keys.
``pyproject.toml`` and the run-config reference (``docs/run-config.md``) are checked against these models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from attacker.interceptor.config import InterceptorConfig
from defenses.config import DefenseConfig
from fednas.config import AppConfig, RunConfig, check_sections, parse_sections

SECTIONS: Mapping[str, type[BaseModel]] = {"federation": RunConfig, "interceptor": InterceptorConfig,
                                           "defense": DefenseConfig}
check_sections(SECTIONS)


def parse_app(values: Mapping[str, Any]) -> AppConfig:
    """Parse and validate the whole flat run config (a bad or unknown key stops here, naming the key)."""
    return parse_sections(values, SECTIONS)


def key_table() -> str:
    """Every run-config key, its default and meaning, as Markdown: one table per section (docs/run-config.md)."""
    lines = []
    for section, model in SECTIONS.items():
        lines += [f"### `{section}`", "", "| key | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            meaning = str(field.description or "").replace("|", "\\|")
            lines.append(f"| `{field.alias or name}` | `{json.dumps(field.default)}` | {meaning} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
