"""What a membership attack queries: a run's served model as a black box, by kind, or any prediction service.

``global`` is the searched model (the supernet with its final α and θ); ``student`` its DMP-distilled student
(``archleak distill``); ``--url`` any running ``archleak serve``. The attack itself only ever sees the
:class:`~fednas.serve.BlackBox` this module returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from attacker.membership.blackbox import HttpBlackBox
from defenses.distillation import load_student
from fednas.registry import Registry
from fednas.serve import BlackBox, ModelBlackBox, model_black_box
from fednas.target import describe_target, load_global_model

Log = Callable[[str], None]
TargetLoader = Callable[[Path, torch.device, str, Log], ModelBlackBox]
TARGETS: Registry[TargetLoader] = Registry("target model")


@TARGETS.register("global")
def global_model(run_dir: Path, device: torch.device, data_root: str, log: Log) -> ModelBlackBox:
    network, description = load_global_model(run_dir, device, data_root, log)
    return model_black_box(network, description, device)


@TARGETS.register("student")
def student_model(run_dir: Path, device: torch.device, data_root: str, log: Log) -> ModelBlackBox:
    _, _, description = describe_target(run_dir, data_root)
    network, meta = load_student(run_dir, device)
    description["model"] = f"DMP student ({meta['student']}) of the searched model"
    return model_black_box(network, description, device)


def load_target(run_dir: Path, device: torch.device, data_root: str = "", model: str = "global",
                log: Log = print) -> ModelBlackBox:
    """The model a run serves: ``global`` or ``student`` (see the module docstring); ``log`` hears which
    checkpoint answers when the newest is damaged."""
    return TARGETS.get(model)(Path(run_dir), device, data_root, log)


def target_box(run_dir: Path, url: str = "", model: str = "global", device: torch.device | None = None,
               data_root: str = "") -> BlackBox:
    """The prediction service at ``url`` when given, else the run's ``model`` answering in this process."""
    return HttpBlackBox(url) if url else load_target(run_dir, device or torch.device("cpu"), data_root, model)
