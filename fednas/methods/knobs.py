"""The run-config keys of the search methods (``search-method`` and each method's own settings).

Each method's keys carry its name as a prefix (``pdarts-*``, ``enas-*``, ``smash-*``; ``child-train-share`` is
ENAS's and SMASH's); a method ignores the others' keys. Lists are written as comma-separated strings, since a
Flower run-config value is a scalar.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METHOD_NAMES: tuple[str, ...] = ("darts", "pdarts", "enas", "smash")


def parse_list(value: str, kind: type[int | float]) -> tuple[float, ...]:
    """``"5,3"`` -> (5, 3); a one-line error on anything else."""
    try:
        return tuple(kind(part) for part in value.split(",")) if value.strip() else ()
    except ValueError:
        raise ValueError(f"expected comma-separated {kind.__name__}s, got {value!r}") from None


class MethodKnobs(BaseModel):
    """Which search method runs, and its settings (the defaults follow each method's paper, scaled down)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    search_method: str = Field("darts", description="search method: darts, pdarts (progressive stages), enas "
                                                    "(LSTM controller + REINFORCE), smash (hypernetwork)")
    pdarts_keep: str = Field("5,3", description="PDARTS: non-none operations kept per edge at each stage "
                                                "transition (one number per transition; stages = numbers + 1)")
    pdarts_depth_step: int = Field(2, ge=0, le=32, description="PDARTS: cells added at each stage")
    pdarts_skip_dropout: str = Field("0.0,0.4,0.7", description="PDARTS: dropout on skip connections per stage "
                                                                "(decays linearly to 0 within a stage)")
    pdarts_max_skips: int = Field(2, ge=0, le=64, description="PDARTS: at most this many skip connections in "
                                                               "the final normal cell")
    enas_hidden: int = Field(64, ge=4, le=1024, description="ENAS: LSTM controller hidden size")
    enas_lr: float = Field(3.5e-4, gt=0, description="ENAS: controller learning rate (Adam)")
    enas_entropy_weight: float = Field(1e-4, ge=0, description="ENAS: entropy bonus in the controller's loss")
    enas_baseline_decay: float = Field(0.95, ge=0, lt=1, description="ENAS: moving-average decay of the reward "
                                                                     "baseline")
    enas_temperature: float = Field(5.0, gt=0, description="ENAS: controller logits temperature")
    enas_tanh_constant: float = Field(2.5, gt=0, description="ENAS: controller logits tanh constant")
    enas_candidates: int = Field(10, ge=1, le=1024, description="ENAS: cells sampled from the controller each "
                                                                "searching round and ranked on D^α with the shared "
                                                                "weights (the best is the round's model)")
    enas_rank_samples: int = Field(500, ge=0, le=10_000_000, description="ENAS: D^α images each client ranks the "
                                                                         "candidates on (0: all of D^α)")
    smash_hidden: int = Field(8, ge=1, le=256, description="SMASH: width of the hypernetwork's code of an "
                                                           "architecture")
    smash_candidates: int = Field(32, ge=1, le=1024, description="SMASH: random architectures ranked on D^α each "
                                                                "round (the best is the round's model)")
    smash_rank_samples: int = Field(500, ge=0, le=10_000_000, description="SMASH: D^α images each client ranks "
                                                                           "the candidates on (0: all of D^α)")
    child_train_share: float = Field(0.5, ge=0, lt=1, description="ENAS and SMASH: the share of the rounds, at the "
                                     "end, that train the adopted child alone on D^θ (rounded up; at least one round "
                                     "searches); both papers train their final architecture for longer than they "
                                     "search; here it keeps the shared or generated weights")

    @field_validator("search_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHOD_NAMES:
            raise ValueError(f"unknown search method {value!r}; known: {', '.join(METHOD_NAMES)}")
        return value

    @field_validator("pdarts_keep")
    @classmethod
    def _keep_list(cls, value: str) -> str:
        keep = parse_list(value, int)
        if any(k < 1 for k in keep) or list(keep) != sorted(keep, reverse=True):
            raise ValueError(f"expected non-increasing positive integers such as '5,3', got {value!r}")
        return value

    @field_validator("pdarts_skip_dropout")
    @classmethod
    def _rates(cls, value: str) -> str:
        rates = parse_list(value, float)
        if not rates or any(not 0 <= r < 1 for r in rates):
            raise ValueError(f"expected comma-separated rates in [0, 1) such as '0.0,0.4,0.7', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_rate_per_stage(self) -> MethodKnobs:
        stages = len(parse_list(self.pdarts_keep, int)) + 1
        if self.search_method == "pdarts" and len(parse_list(self.pdarts_skip_dropout, float)) != stages:
            raise ValueError(f"'pdarts-skip-dropout' needs one rate per stage ({stages}, from 'pdarts-keep'), "
                             f"got {self.pdarts_skip_dropout!r}")
        return self

    def trains_child(self, server_round: int, num_rounds: int) -> bool:
        """True in the final rounds in which ENAS and SMASH train their adopted child alone (at least one round
        searches)."""
        last = min(math.ceil(self.child_train_share * num_rounds), max(num_rounds - 1, 0))
        return self.search_method in ("enas", "smash") and server_round > num_rounds - last

    def keep_schedule(self) -> tuple[int, ...]:
        return tuple(int(k) for k in parse_list(self.pdarts_keep, int))

    def skip_rates(self) -> tuple[float, ...]:
        return tuple(float(r) for r in parse_list(self.pdarts_skip_dropout, float))
