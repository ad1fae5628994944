"""Defense cells (the paper's Table 6): the same seeded federation with one defense, attacked from the wire by
ADRA and, on the served model, by AMIA; utility, ε and cost beside each, deltas against ``defense=none``.

The paper's four are ``dp-sgd-alpha-paper`` (its DP_SGD: N(0, 0.01) on the α gradient), ``l2-alpha`` (LR),
``input-noise`` (its DP: N(0, 0.01) on every D^α sample) and ``md`` (its MD: the DMP student of the undefended
run); the project's own are DP-SGD on α with σ = 1, local DP and central DP on the update, SecAgg+, and TLS
(the federation deployed as processes with the on-path proxy: what the proxy could store is what the eavesdropper
got).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from attacker.membership.amia import AmiaConfig
from attacker.membership.evaluate import evaluate_run
from attacker.scoring.stats import wilson
from fednas.registry import Registry
from simulations.reproduce.scenario import Cell, Strict, cell_slug, p_knobs

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]

# defense cell name -> run-config overrides ("md" is applied after training, to the undefended run)
CASES: Registry[Mapping[str, Any]] = Registry("defense case")
CASES.add("none", {})
CASES.add("dp-sgd-alpha-paper", {"defenses": "dp-sgd-alpha-paper"})
CASES.add("dp-sgd-alpha", {"defenses": "dp-sgd-alpha", "dp-noise-multiplier": 1.0, "dp-clip": 1.0})
CASES.add("l2-alpha", {"defenses": "l2-alpha", "l2-alpha-weight": 0.01})
CASES.add("input-noise", {"defenses": "input-noise", "input-noise-std": 0.1})
CASES.add("md", {})
CASES.add("local-dp-update", {"defenses": "local-dp-update", "update-clip": 1.0, "ldp-epsilon": 8.0})
CASES.add("central-dp", {"defenses": "central-dp", "update-clip": 1.0, "central-noise-multiplier": 1.0})
CASES.add("secagg-plus", {"defenses": "secagg-plus"})
CASES.add("tls", {})
POST_TRAINING = ("md",)
DEPLOYED = ("tls",)   # run in the deployment topology (SuperLink, on-path proxy, SuperNodes as processes)


class DefenseSettings(Strict):
    clients: int = Field(4, ge=2)
    run: dict[str, Any] = Field(description="run-config keys of every federation (the defense's are added)")
    amia: dict[str, Any] = Field(default_factory=dict, description="AMIA settings (the paper's ML-Leaks)")
    distill: dict[str, Any] = Field(default_factory=dict, description="MD: distillation settings")

    def model_post_init(self, _: Any) -> None:
        from app.config import parse_app

        parse_app(self.run)
        AmiaConfig.model_validate(self.amia)


def skip(cell: Cell) -> str | None:
    CASES.get(str(cell.knobs["defense"]))
    return None


ADRA_SECONDS_PER_IMAGE = 2.0   # ADRA's fast path at its defaults on one core (`archleak bench adra`: 1.5-2.2 s)


def probe(cell: Cell, settings: DefenseSettings, seed: int, data_root: str) -> dict[str, Any]:
    """A rough estimate of one cell: the federation's local search (timed steps, as an AMIA target's), ADRA on every
    captured α image, and AMIA's shadows. MD distils the undefended run's model: it is estimated as that run (it
    reads that cell, which therefore runs first), TLS as the federation deployed. Within the budget the paper's
    defenses run before the project's own."""
    from app.config import parse_app
    from fednas.data import load_dataset, resolve_data_root, resolve_dataset
    from fednas.federation import make_model
    from simulations.reproduce.amia import attack_seconds, federation_seconds

    name = str(cell.knobs["defense"])
    sizes = p_knobs(int(cell.knobs["p"])) if "p" in cell.knobs else {}
    cfg = parse_app({**settings.run, **sizes, **CASES.get(name), "seed": seed, "data-root": data_root}).federation
    train = federation_seconds(cfg, settings.clients, data_root)
    search = cfg.local_search()
    images = search.alpha_steps * search.alpha_batch_size * settings.clients * cfg.num_server_rounds
    root = resolve_data_root(data_root)[0]
    model = make_model(cfg, load_dataset(resolve_dataset(cfg.dataset, root)[0], str(root)), torch.device("cpu"))
    amia = attack_seconds(settings.amia, "ml-leaks", model)
    return {"estimated_s": train + images * ADRA_SECONDS_PER_IMAGE + amia, "bound": "rough", "rank": rank(cell)}


def rank(cell: Cell) -> int:
    """The order cells run in within the budget: the undefended cell first (MD reads it, the deltas are against
    it), then the paper's defenses, then the project's own."""
    return 0 if str(cell.knobs["defense"]) == "none" else 1 if cell.paper else 2


def run_cell(cell: Cell, settings: DefenseSettings, seed: int, data_root: str, folder: Path, progress: Progress,
             log: Log) -> dict[str, Any]:
    from simulations.defend_eval import run_case

    name = str(cell.knobs["defense"])
    sizes = p_knobs(int(cell.knobs["p"])) if "p" in cell.knobs else {}
    base = {**settings.run, **sizes, "seed": seed, "data-root": data_root}
    progress(f"{cell.id}: federation", 0, 2)
    if name in POST_TRAINING:
        result = _distilled(folder, settings)
    elif name in DEPLOYED:
        log(f"archleak: table6 {name}: the deployment topology with TLS and the on-path proxy")
        result = _deployed_tls(base, settings.clients, folder / "runs" / cell_slug(cell.id))
    else:
        log(f"archleak: table6 {name}: federated search with the tap")
        result = run_case(name, CASES.get(name), base, settings.clients, folder / "runs" / cell_slug(cell.id))
    progress(f"{cell.id}: AMIA", 1, 2)
    amia = _amia(result, settings, seed, data_root)
    progress(cell.id, 2, 2)
    row = defense_row(cell, result, amia, _reference(folder, cell))
    return {"rows": [row], "details": [{"run_dir": result["run_dir"], "config": result["config"],
                                        "wall_s": result["wall_s"], "amia": amia}]}


def _reference(folder: Path, cell: Cell) -> dict[str, Any] | None:
    """The undefended cell's row (deltas are against it); None for the undefended cell itself."""
    if cell.knobs["defense"] == "none":
        return None
    path = folder / "cells" / f"{cell_slug('defense=none')}.json"
    return json.loads(path.read_text())["rows"][0] if path.exists() else None


def _distilled(folder: Path, settings: DefenseSettings) -> dict[str, Any]:
    """MD: the DMP student of the undefended run (the wire, hence the ADRA columns, are that run's)."""
    from simulations.defend_eval import POST_TRAINING as LABELS
    from simulations.defend_eval import post_training_case

    reference = json.loads((folder / "cells" / f"{cell_slug('defense=none')}.json").read_text())["details"][0]
    summary = json.loads((Path(reference["run_dir"]) / "summary.json").read_text())
    reference = {**reference, "epsilon": (summary.get("privacy") or {}).get("max_epsilon")}
    label = next(label for label, served in LABELS.items() if served == "student")
    return post_training_case(label, reference, settings.distill)


def _deployed_tls(base: Mapping[str, Any], clients: int, work: Path) -> dict[str, Any]:
    """TLS: the same federation deployed as processes on loopback, the proxy on path; what the proxy could store
    is what an eavesdropper gets (its report says how many captures, and whether the traffic was inspectable)."""
    from simulations.cli_deploy import APP_DIR
    from simulations.deploy import DeployPlan, LocalDeployment

    run = {k: v for k, v in base.items() if k not in ("interceptor", "threat-model", "attacks")}
    plan = DeployPlan(clients=clients, rounds=int(run.pop("num-server-rounds", 1)), tls=True, interceptor=True,
                      attack="after-run", threat_model=str(base.get("threat-model", "wire")), workdir=work,
                      app_dir=APP_DIR, run_config=run)
    shutil.rmtree(work, ignore_errors=True)
    with LocalDeployment(plan, log=lambda line: None) as deployment:
        outcome = deployment.run()
    if not outcome["completed"]:
        raise RuntimeError(f"the TLS deployment did not complete (exit {outcome['returncode']}): {outcome['log']}")
    run_dir = Path(outcome["runs"][-1])
    proxy = json.loads((work / "intercepted" / "proxy.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"run_dir": str(run_dir), "config": {**run, "num-server-rounds": plan.rounds, "tls": True},
            "wall_s": outcome["wall_s"], "test_accuracy": summary.get("final_test_accuracy"), "epsilon": None,
            "proxy": {"captures": proxy["wire"]["captures"], "inspectable": proxy["inspectable"],
                      "tls_connections": proxy["proxy"]["tls_connections"]}}


def _amia(result: Mapping[str, Any], settings: DefenseSettings, seed: int, data_root: str) -> dict[str, Any]:
    from simulations.targets import load_target

    cfg = AmiaConfig.model_validate({**settings.amia, "seed": seed})
    run_dir = Path(result["run_dir"])
    box = load_target(run_dir, torch.device(cfg.device), data_root, model=result.get("model", "global"),
                      log=lambda line: None)
    amia = evaluate_run(run_dir, cfg, box, data_root=data_root, kinds=("alpha", "theta"), log=lambda line: None)
    return ({kind: m.as_dict() for kind, m in amia.metrics.items()}
            | {"seconds": amia.seconds, "audit": amia.audit, "notes": amia.notes})


def defense_row(cell: Cell, result: Mapping[str, Any], amia: Mapping[str, Any],
                ref: Mapping[str, Any] | None) -> dict[str, Any]:
    adra = _adra_summary(Path(result["run_dir"])) if "proxy" not in result else {}
    rates = (adra.get("intervals") or {}).get("attack", {})
    m, theta = amia["alpha"], amia["theta"]
    n = m["n_members"] + m["n_nonmembers"]
    lo, hi = wilson(round(m["accuracy"] * n), n)
    row: dict[str, Any] = {"cell": cell.id, "defense": cell.knobs["defense"], "status": "done",
                           "test_accuracy": result.get("test_accuracy"), "epsilon": result.get("epsilon"),
                           "adra_n": rates.get("recognised", {}).get("n", 0)}
    for key in ("recognised", "identified", "label"):
        r = rates.get(key, {})
        row.update({key: r["k"] / r["n"] if r.get("n") else None, f"{key}_lo": r.get("low"),
                    f"{key}_hi": r.get("high")})
    row.update(psnr=adra.get("attack", {}).get("psnr"), ssim=adra.get("attack", {}).get("ssim"),
               baseline_recognised=adra.get("baseline", {}).get("recognised"),
               amia_n=n, amia_accuracy=m["accuracy"], amia_accuracy_lo=lo, amia_accuracy_hi=hi, amia_f1=m["f1"],
               amia_auc=m["auc"], amia_auc_lo=m["auc_low"], amia_auc_hi=m["auc_high"], theta_auc=theta["auc"],
               audit_epsilon_lower=(amia.get("audit") or {}).get("epsilon_lower"),
               paper_d_sr=cell.paper.get("d_sr"), paper_d_accuracy=cell.paper.get("d_accuracy"),
               paper_d_f1=cell.paper.get("d_f1"))
    if "proxy" in result:   # nothing reached the attacker: the rates are over no image, as the note says
        seen = result["proxy"]
        if seen["captures"] or seen["inspectable"]:
            raise RuntimeError(f"the on-path proxy read TLS traffic ({seen}): the deployment is not using TLS")
        row["note"] = (f"the on-path proxy relayed {seen['tls_connections']} TLS connections and stored "
                       f"{seen['captures']} captures (inspectable: false); ADRA had nothing to attack")
    for key in ("test_accuracy", "recognised", "identified", "psnr", "ssim", "amia_accuracy", "amia_f1", "amia_auc"):
        row[f"d_{key}"] = (None if ref is None or row.get(key) is None or ref.get(key) is None
                           else row[key] - ref[key])
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}


def _adra_summary(run_dir: Path) -> dict[str, Any]:
    threat = json.loads((run_dir / "config.json").read_text())["config"]["threat-model"]
    summary: dict[str, Any] = json.loads((run_dir / "reconstructions" / threat / "summary.json").read_text())
    adra: dict[str, Any] = summary.get("by_attack", {}).get("adra", summary)
    return adra


COLUMNS = ("cell", "defense", "status", "test_accuracy", "d_test_accuracy", "epsilon", "adra_n", "recognised",
           "recognised_lo", "recognised_hi", "d_recognised", "paper_d_sr", "baseline_recognised", "identified",
           "identified_lo", "identified_hi", "d_identified", "label", "psnr", "d_psnr", "ssim", "d_ssim", "amia_n",
           "amia_accuracy", "amia_accuracy_lo", "amia_accuracy_hi", "d_amia_accuracy", "paper_d_accuracy", "amia_f1",
           "d_amia_f1", "paper_d_f1", "amia_auc", "amia_auc_lo", "amia_auc_hi", "d_amia_auc", "theta_auc",
           "audit_epsilon_lower", "note")
