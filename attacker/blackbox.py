"""The black-box prediction interface the membership attack queries: images in, posterior vectors out.

The attack sees a :class:`BlackBox` and nothing else of the target. Two implementations answer identically:
:class:`ModelBlackBox` runs a model in this process; :class:`HttpBlackBox` is an MLaaS client of
``archleak serve`` (:mod:`attacker.serve`). Images travel as raw uint8 ``[N, C, H, W]`` (what a client of a
prediction API uploads); normalisation is the service's business. Posteriors are float32 ``[N, K]``.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

NPY = "application/x-npy"
DEFAULT_BATCH = 256


class BlackBox(Protocol):
    """What a membership attacker may use: the service's public description and its answers."""

    def info(self) -> dict[str, Any]: ...

    def predict(self, images: np.ndarray) -> np.ndarray: ...


class TargetNotFound(FileNotFoundError):
    """The run folder holds no model to serve or attack."""


def check_images(images: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """A uint8 [N, C, H, W] batch of the shape the service takes, or ValueError saying what is wrong."""
    arr = np.asarray(images)
    shape = (info["channels"], info["height"], info["width"])
    if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
        raise ValueError(f"images must be uint8 [N, {shape[0]}, {shape[1]}, {shape[2]}]; "
                         f"got {arr.dtype} {list(arr.shape)}")
    return arr


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """An array from .npy bytes; never unpickles (object arrays are refused)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


@dataclass
class ModelBlackBox:
    """A classifier answering posterior queries in this process (eval mode, no gradients)."""

    forward: Callable[[torch.Tensor], torch.Tensor]  # float images in [0, 1] -> logits
    description: dict[str, Any]
    device: torch.device
    batch_size: int = DEFAULT_BATCH

    def info(self) -> dict[str, Any]:
        return dict(self.description)

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> np.ndarray:
        arr = check_images(images, self.description)
        out = []
        for start in range(0, len(arr), self.batch_size):
            x = torch.from_numpy(arr[start:start + self.batch_size]).to(self.device, torch.float32) / 255.0
            out.append(torch.softmax(self.forward(x).double(), dim=1).float().cpu().numpy())
        k = int(self.description["num_classes"])
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)


def model_black_box(model: torch.nn.Module, description: dict[str, Any], device: torch.device,
                    batch_size: int = DEFAULT_BATCH) -> ModelBlackBox:
    model.eval()
    return ModelBlackBox(model, description, device, batch_size)


TARGETS = ("global", "student")


def _run_target(run_dir: Path, data_root: str) -> tuple[Any, Any, dict[str, Any]]:
    """(federation config, dataset, public description) of the run in ``run_dir``; no model is built."""
    from fednas.config import parse_app_config
    from fednas.data import load_dataset
    from fednas.federation import choose_data
    from fednas.run import checkpoints

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise TargetNotFound(f"{run_dir} is not a run folder (no config.json): nothing to serve")
    meta = json.loads((run_dir / "config.json").read_text())
    values = {**meta["config"], "dataset": meta.get("dataset", meta["config"].get("dataset"))}
    if data_root:
        values["data-root"] = data_root
    cfg = parse_app_config(values).federation
    found = checkpoints(run_dir)
    if not found:
        raise TargetNotFound(f"{run_dir} holds no model: no checkpoint under {run_dir / 'checkpoints'}")
    choice = choose_data(cfg)
    data = load_dataset(choice.dataset, str(choice.root))
    description = {"run_id": str(meta.get("run_id")), "round": found[0][0], "dataset": choice.dataset,
                   "num_classes": data.num_classes, "channels": data.channels, "height": data.image_size,
                   "width": data.image_size, "dtype": "uint8", "model": "supernet with final α"}
    return cfg, data, description


def load_global_model(run_dir: Path, device: torch.device, data_root: str = ""
                      ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The global model a federated search left in ``run_dir`` (the supernet with its final α and θ), and its
    public description.

    Raises :class:`TargetNotFound` when the folder has no run or no readable checkpoint, and ValueError when
    the checkpoint carries no weights (``share-weights = false``: θ never reached the server).
    """
    from fednas.federation import make_model
    from fednas.run import load_latest_checkpoint
    from fednas.state import import_state, split_state

    cfg, data, description = _run_target(run_dir, data_root)
    try:
        server_round, tensors, _ = load_latest_checkpoint(Path(run_dir), log=lambda line: None)
    except FileNotFoundError as exc:
        raise TargetNotFound(f"{run_dir} holds no model: {exc}") from None
    if not split_state(tensors)[1]:
        raise ValueError(f"the checkpoint of {run_dir} has no weights θ (share-weights = false): "
                         "there is no global model to query")
    model = make_model(cfg, data, device)
    import_state(model, tensors)
    return model, {**description, "round": server_round}


STUDENT_FILE = Path("distilled") / "student.safetensors"


def load_target(run_dir: Path, device: torch.device, data_root: str = "", model: str = "global") -> ModelBlackBox:
    """The model a run serves: ``global`` (the searched model) or ``student`` (its DMP-distilled student, written
    by ``archleak distill``)."""
    from defenses.distillation import rebuild_student
    from fednas.storage import load_tensors

    if model not in TARGETS:
        raise ValueError(f"unknown target model {model!r}; known: {', '.join(TARGETS)}")
    if model == "global":
        network, description = load_global_model(run_dir, device, data_root)
        return model_black_box(network, description, device)
    _, _, description = _run_target(run_dir, data_root)
    path = Path(run_dir) / STUDENT_FILE
    if not path.exists():
        raise TargetNotFound(f"{path} does not exist: run 'archleak distill {run_dir}' first")
    state, meta = load_tensors(path)
    description["model"] = f"DMP student ({meta['student']}) of the searched model"
    return model_black_box(rebuild_student(meta, state, device), description, device)


class HttpBlackBox:
    """A client of ``archleak serve``: the same interface as :class:`ModelBlackBox`, over HTTP."""

    def __init__(self, url: str, batch_size: int = DEFAULT_BATCH, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.timeout = timeout
        self._info: dict[str, Any] | None = None

    def _request(self, path: str, body: bytes | None = None) -> tuple[str, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": NPY, "Accept": NPY})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.headers.get("Content-Type", ""), resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"prediction service {self.url} answered {exc.code}: {detail}") from None

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = json.loads(self._request("/v1/info")[1])
        return dict(self._info)

    def predict(self, images: np.ndarray) -> np.ndarray:
        arr = check_images(images, self.info())
        out = []
        for start in range(0, len(arr), self.batch_size):
            kind, body = self._request("/v1/predict", encode_npy(arr[start:start + self.batch_size]))
            if not kind.startswith(NPY):
                raise RuntimeError(f"prediction service {self.url} answered {kind!r}, expected {NPY}")
            out.append(decode_npy(body))
        k = int(self.info()["num_classes"])
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)
