"""AMIA cells (the paper's Tables 3–5): a trained federated target per (dataset, P, search method), cached by
its config, attacked by the paper's ML-Leaks and the strongest attack, on the D^α samples that reached an α step.

A cell's knobs: ``dataset``, ``p`` (network size, :func:`fednas.search_space.spec_for_paper_p`), ``eta`` (share
of the attacker's data from the target's distribution) and ``search-method`` (:data:`fednas.methods.SEARCH_METHODS`;
a name it does not hold is "not implemented", never a number). Targets use D^α every round (``alpha-epochs`` ≥ 1 in
the scenarios: DARTS/PDARTS α steps, ENAS controller steps, SMASH's ranking), so that D^α membership can matter.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from attacker.cache import cache_dir, cache_lock
from attacker.membership.amia import AmiaConfig
from attacker.membership.evaluate import AmiaResult, evaluate_run
from attacker.scoring.stats import wilson
from fednas.config import RunConfig, parse_run_config
from fednas.data import available_datasets, load_dataset, resolve_data_root, resolve_dataset
from fednas.federation import client_data, make_model
from fednas.methods import SEARCH_METHODS
from fednas.methods.knobs import MethodKnobs
from fednas.search import local_search
from fednas.seeds import generator
from fednas.supernet import SuperNet
from simulations.reproduce.scenario import Cell, Strict, beyond_scale, p_knobs

Progress = Callable[[str, int, int], None]
TARGET_VERSION = 1


class AmiaSettings(Strict):
    clients: int = Field(4, ge=2, description="clients of the target federation")
    run: dict[str, Any] = Field(description="run-config keys of the target (rounds, epochs, sizes)")
    run_by_dataset: dict[str, dict[str, Any]] = Field(
        default_factory=dict, alias="run-by-dataset", description="per dataset: run-config keys that replace run's")
    attacks: list[str] = Field(min_length=1, description="membership attacks, one row each")
    amia: dict[str, Any] = Field(default_factory=dict, description="AMIA settings shared by the attacks")
    amia_by_dataset: dict[str, dict[str, Any]] = Field(
        default_factory=dict, alias="amia-by-dataset", description="per dataset: AMIA keys that replace amia's")
    eta_dataset: dict[str, str] = Field(default_factory=dict, alias="eta-dataset",
                                        description="per target dataset: where the (1 − η) share comes from")
    max_p: int = Field(256, alias="max-p", ge=2)

    def model_post_init(self, _: Any) -> None:
        parse_run_config(self.run)
        for extra in self.run_by_dataset.values():
            parse_run_config({**self.run, **extra})
        for attack in self.attacks:
            for extra in [{}, *self.amia_by_dataset.values()]:
                AmiaConfig.model_validate({**self.amia, **extra, "attack": attack})


def target_overrides(cell: Cell, settings: AmiaSettings, seed: int, data_root: str) -> dict[str, Any]:
    dataset = str(cell.knobs["dataset"])
    method = str(cell.knobs.get("search-method", "darts"))
    run = {k: v for k, v in {**settings.run, **settings.run_by_dataset.get(dataset, {})}.items()
           if k.split("-")[0] not in SEARCH_METHODS or k.split("-")[0] == method}   # a method's keys to its cells only
    return {**run, "dataset": dataset, "data-root": data_root,
            "seed": seed, **p_knobs(int(cell.knobs.get("p", 64))), **({} if method == "darts" else {
                "search-method": method})}


def skip(cell: Cell, settings: AmiaSettings, data_root: str) -> str | None:
    method = str(cell.knobs.get("search-method", "darts"))
    if method not in SEARCH_METHODS:
        return (f"not implemented: search method {method!r} (this project searches with "
                f"{', '.join(SEARCH_METHODS.names())})")
    root, _ = resolve_data_root(data_root)
    found = available_datasets(Path(root))
    dataset = str(cell.knobs["dataset"])
    if not found.get(dataset, False):
        return (f"not run: dataset {dataset} not present under {root} (set FEDNAS_DATA_ROOT to a folder that "
                f"holds it, or run once with internet: archleak info lists what is found)")
    other = settings.eta_dataset.get(dataset, "")
    if float(cell.knobs.get("eta", 1.0)) < 1 and other and not found.get(other, False):
        return f"not run: η < 1 needs {other} under {root} for the attacker's other share"
    return beyond_scale(int(cell.knobs.get("p", 64)), settings.max_p)


def probe(cell: Cell, settings: AmiaSettings, seed: int, data_root: str) -> float:
    """Estimated seconds to train the target (nothing when it is cached) plus the attacks' shadows or reference
    models."""
    cfg = parse_run_config(target_overrides(cell, settings, seed, data_root))
    model = make_model(cfg, load_dataset(cfg.dataset, data_root), torch.device("cpu"))
    attacks = sum(attack_seconds(settings.amia, attack, model) for attack in settings.attacks)
    if _cached(target_key(cell, settings, seed, data_root)) is not None:
        return attacks
    return federation_seconds(cfg, settings.clients, data_root) + attacks


def federation_seconds(cfg: RunConfig, clients: int, data_root: str) -> float:
    """A federation's local search: two θ and two α steps timed on client 0's data, times the steps of every
    client and round (evaluation and messaging left out)."""
    root = resolve_data_root(data_root)[0]
    dataset = resolve_dataset(cfg.dataset, root)[0]
    theta, alpha = client_data(cfg, dataset, root, 0, clients)
    model = make_model(cfg, load_dataset(dataset, str(root)), torch.device("cpu"))
    quick = cfg.local_search().model_copy(update={"theta_steps": 2, "theta_epochs": 0, "alpha_steps": 2,
                                                  "alpha_epochs": 0})
    tick = time.perf_counter()
    local_search(model, theta, alpha, quick, generator(cfg.seed, 0))
    per_step = (time.perf_counter() - tick) / 4
    search = cfg.local_search()
    theta_steps = search.theta_epochs * math.ceil(len(theta) / search.theta_batch_size) or search.theta_steps
    alpha_steps = search.alpha_epochs * math.ceil(len(alpha) / search.alpha_batch_size) or search.alpha_steps
    return per_step * (theta_steps + alpha_steps) * clients * cfg.num_server_rounds


def attack_seconds(amia: Mapping[str, Any], attack: str, target: SuperNet) -> float:
    """The attack's training cost: its shadows (ML-Leaks) or reference models (LiRA, RMIA), each a ResNet of the
    config's depth trained for its epochs, from three timed SGD steps; the queries are left out (small)."""
    from fednas.resnet import ResNet

    cfg = AmiaConfig.model_validate({**amia, "attack": attack})
    spec = target.spec
    model = ResNet(cfg.resnet_depth, spec.in_channels, spec.num_classes, (0.5,) * spec.in_channels,
                   (0.5,) * spec.in_channels)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(cfg.shadow_batch_size, spec.in_channels, spec.image_size, spec.image_size)
    y = torch.zeros(cfg.shadow_batch_size, dtype=torch.long)
    tick = time.perf_counter()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    per_step = (time.perf_counter() - tick) / 3
    if attack == "ml-leaks":
        steps = cfg.shadows * cfg.shadow_epochs * math.ceil(cfg.shadow_size / cfg.shadow_batch_size)
    else:
        half = (2 * cfg.eval_size + cfg.population) / 2
        steps = cfg.references * cfg.shadow_epochs * math.ceil(half / cfg.shadow_batch_size)
    return per_step * steps


def target_key(cell: Cell, settings: AmiaSettings, seed: int, data_root: str) -> str:
    from attacker.cache import images_hash

    config = parse_run_config(target_overrides(cell, settings, seed, data_root)).model_dump(by_alias=True)
    config.pop("data-root", None)
    reads = SEARCH_METHODS.get(str(config.get("search-method", "darts"))).knobs
    for name, field in MethodKnobs.model_fields.items():   # at their defaults (DARTS), targets keep their old keys;
        key = field.alias or name.replace("_", "-")         # another method's knobs cannot change this target
        if config.get(key) == field.default or (name != "search_method" and name not in reads):
            config.pop(key, None)
    if "search-method" in config:   # not DARTS: the method's implementation version too
        config["method-version"] = SEARCH_METHODS.get(str(config["search-method"])).version
    return images_hash(torch.zeros(1), sorted(config.items()), settings.clients, TARGET_VERSION)


def _cached(key: str) -> Path | None:
    folder = cache_dir().parent / "targets" / key / "run"
    return folder if (folder / "summary.json").exists() else None


def trained_target(cell: Cell, settings: AmiaSettings, seed: int, data_root: str, log: Callable[[str], None]
                   ) -> Path:
    """The target's run folder: trained once per config (federated search through Flower's simulation engine),
    then reused by every table and rerun that needs the same target."""
    from simulations.simulate import simulate

    key = target_key(cell, settings, seed, data_root)
    home = cache_dir().parent / "targets" / key
    with cache_lock(home / "run.lock"):
        found = _cached(key)
        if found is not None:
            return found
        scratch = home / "training"
        shutil.rmtree(scratch, ignore_errors=True)
        log(f"archleak: training target {key} ({settings.clients} clients)")
        run = simulate({**target_overrides(cell, settings, seed, data_root), "interceptor": "off",
                        "output-dir": str(scratch)},
                       num_clients=settings.clients)
        require_every_client(run, settings.clients)
        run.rename(home / "run")   # atomic: a target folder is whole or absent
        shutil.rmtree(scratch, ignore_errors=True)
        return home / "run"


def require_every_client(run: Path, clients: int) -> None:
    """A target is cached only when every round averaged every client: a round that lost one (a worker killed
    for memory, say) trained another model than the config names."""
    from fednas.storage import read_jsonl

    short = [r["round"] for r in read_jsonl(run / "rounds.jsonl") if r.get("clients") != clients]
    if short:
        raise RuntimeError(f"target run {run} averaged fewer than {clients} clients in round(s) {short}; "
                           "not cached (free memory or CPUs and run again)")


def run_cell(cell: Cell, settings: AmiaSettings, seed: int, data_root: str, progress: Progress,
             log: Callable[[str], None]) -> dict[str, Any]:
    from simulations.targets import load_target

    run_dir = trained_target(cell, settings, seed, data_root, log)
    summary = json.loads((run_dir / "summary.json").read_text())
    rows, details = [], []
    for done, attack in enumerate(settings.attacks):
        progress(f"{cell.id}: {attack}", done, len(settings.attacks))
        dataset_keys = settings.amia_by_dataset.get(str(cell.knobs["dataset"]), {})
        cfg = AmiaConfig.model_validate({**settings.amia, **dataset_keys, "attack": attack, "seed": seed,
                                         "eta": float(cell.knobs.get("eta", 1.0)),
                                         "eta-dataset": settings.eta_dataset.get(str(cell.knobs["dataset"]), "")})
        box = load_target(run_dir, torch.device(cfg.device), data_root, log=lambda line: None)
        result = evaluate_run(run_dir, cfg, box, data_root=data_root, log=lambda line: None)
        rows.append(attack_row(cell, attack, result, summary))
        details.append({"attack": attack, "config": cfg.model_dump(by_alias=True), "seconds": result.seconds,
                        "shadow": result.shadow, "notes": result.notes,
                        "metrics": {k: m.as_dict() for k, m in result.metrics.items()}})
    progress(cell.id, len(settings.attacks), len(settings.attacks))
    return {"rows": rows, "details": details, "target": str(run_dir)}


def attack_row(cell: Cell, attack: str, result: AmiaResult, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Members: the D^α samples that reached an α step when the log tells them, else every D^α sample."""
    kind = "alpha-used" if "alpha-used" in result.metrics else "alpha"
    m = result.metrics[kind]
    n = m.n_members + m.n_nonmembers
    lo, hi = wilson(round(m.accuracy * n), n)
    acc = result.target_accuracy
    theta = result.metrics.get("theta")
    row = {"cell": cell.id, "attack": attack, "status": "done", "members": kind, "n_members": m.n_members,
           "n_nonmembers": m.n_nonmembers, "accuracy": m.accuracy, "accuracy_lo": lo, "accuracy_hi": hi,
           "paper_accuracy": cell.paper.get("accuracy") if attack == "ml-leaks" else None, "f1": m.f1,
           "paper_f1": cell.paper.get("f1") if attack == "ml-leaks" else None, "auc": m.auc, "auc_lo": m.auc_low,
           "auc_hi": m.auc_high, "tpr@1%fpr": m.tpr_at_1pct_fpr, "tpr@0.1%fpr": m.tpr_at_01pct_fpr,
           "tp@0.1%fpr": m.tp_at_01pct_fpr, "theta_auc": theta.auc if theta else None,
           "theta_auc_lo": theta.auc_low if theta else None, "theta_auc_hi": theta.auc_high if theta else None,
           "target_theta_accuracy": acc["theta"]["members"] if "theta" in acc else None,
           "target_alpha_accuracy": acc[kind]["members"], "target_nonmember_accuracy": acc[kind]["nonmembers"],
           "gap": (acc["theta"]["members"] if "theta" in acc else acc[kind]["members"]) - acc[kind]["nonmembers"],
           "target_test_accuracy": summary.get("final_test_accuracy")}
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}


COLUMNS = ("cell", "attack", "status", "members", "n_members", "n_nonmembers", "accuracy", "accuracy_lo",
           "accuracy_hi", "paper_accuracy", "f1", "paper_f1", "auc", "auc_lo", "auc_hi", "tpr@1%fpr", "tpr@0.1%fpr",
           "tp@0.1%fpr", "theta_auc", "theta_auc_lo", "theta_auc_hi", "target_theta_accuracy",
           "target_alpha_accuracy", "target_nonmember_accuracy", "gap", "target_test_accuracy", "note")
