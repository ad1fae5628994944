"""ADRA cells (the paper's Tables 1 and 2): MNIST test images through a client's real α and θ step, attacked by
each variant, scored with intervals beside the label-only baseline.

A cell's knobs are ``activation``, ``batch-size`` and ``p`` (the paper's network size, mapped to a supernet by
:func:`fednas.search_space.spec_for_paper_p`). Variants (registry :data:`VARIANTS`): the paper's attack as
written (``attack-preset = paper``, architecture-only by definition) and the project's strongest, in both
threat models; ``theta-wire`` is the Δθ inversion on the same captures (what the weights leak, as a control).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from pydantic import Field

from attacker.reconstruct.settings import AttackSettings
from attacker.scoring.stats import mean_ci, wilson
from fednas.batches import ImageSet
from fednas.registry import Registry
from fednas.search import evaluate
from fednas.search_space import spec_for_paper_p
from simulations.bench_adra import Case, CaseSetup, run_attack, setup_case
from simulations.bench_similarity import pair_stats
from simulations.reproduce.scenario import Cell, Strict, beyond_scale, p_knobs

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Variant:
    threat: str
    method: str
    settings: Mapping[str, Any]
    description: str


VARIANTS: Registry[Variant] = Registry("ADRA variant")
VARIANTS.add("paper", Variant("architecture-only", "adra", {"attack-preset": "paper"},
                              "the paper's ADRA as written (Eq. 5 L2, own θ_r ~ U(-0.25, 0.25), pixels from noise, "
                              "κ denoising)"))
VARIANTS.add("adra-own-weights", Variant("architecture-only", "adra", {},
                                         "the project's ADRA (cosine match, learned prior, L-BFGS) in the paper's "
                                         "threat model (Δα only, the attacker's own random θ)"))
VARIANTS.add("adra-wire", Variant("wire", "adra", {},
                                  "the project's ADRA on the wire (Δα with the broadcast θ)"))
VARIANTS.add("theta-wire", Variant("wire", "theta", {},
                                   "Δθ inversion on the same captures (control: what the weights leak)"))


class AdraSettings(Strict):
    images: int = Field(ge=1, description="n per cell: images attacked (rounded up to whole batches of B)")
    first_image: int = Field(0, alias="first-image", ge=0, description="first MNIST test index")
    train_steps: int = Field(0, alias="train-steps", ge=0,
                             description="θ steps on public data before the capture (0: round-0 weights)")
    variants: list[str] = Field(min_length=1)
    attack: dict[str, Any] = Field(default_factory=dict, description="attack-setting overrides (after presets)")
    max_p: int = Field(256, alias="max-p", ge=2, description="larger P: not run on this scale (the size is said)")

    def model_post_init(self, _: Any) -> None:
        for name in self.variants:
            VARIANTS.get(name)


def variant_settings(variant: Variant, overrides: Mapping[str, Any]) -> AttackSettings:
    base = AttackSettings.model_validate({**variant.settings, "threat-model": variant.threat})
    return AttackSettings.model_validate({**base.model_dump(by_alias=True), **overrides,
                                          "attack-preset": "none"})


def _case(cell: Cell) -> tuple[Case, dict[str, Any]]:
    knobs = p_knobs(int(cell.knobs["p"]))
    alpha = spec_for_paper_p(int(cell.knobs["p"])).alpha_count()
    return Case("wire", int(cell.knobs.get("batch-size", 1)), str(cell.knobs.get("activation", "elu")), alpha), knobs


def _indices(cell: Cell, settings: AdraSettings) -> range:
    b = int(cell.knobs.get("batch-size", 1))
    n = math.ceil(settings.images / b) * b
    return range(settings.first_image, settings.first_image + n)


def probe(cell: Cell, settings: AdraSettings, data_root: str, seed: int, budget_s: float = math.inf
          ) -> dict[str, Any]:
    """Seconds the cell would take, measured on round-0 weights before they are spent. First a lower bound from
    one capture per variant (batching never makes an iteration cheaper than one row's); when it already exceeds
    ``budget_s`` that bound is the answer. Otherwise one full batch of captures is attacked for 1 and for 3
    iterations by each variant: the difference is the cost of an iteration, the rest a batch's fixed cost.
    ``not_applicable``: what a variant's attack answered when it refused the probe's captures (the cell would only
    say so, so the runner takes it after the cells that can give numbers)."""
    lower = _estimate(cell, settings, data_root, seed, probe_captures=1, stop_above=budget_s)
    if lower["estimated_s"] > budget_s:
        return lower | {"bound": "lower"}
    return _estimate(cell, settings, data_root, seed, probe_captures=0) | {"bound": "measured"}


def _estimate(cell: Cell, settings: AdraSettings, data_root: str, seed: int, probe_captures: int,
              stop_above: float = math.inf) -> dict[str, Any]:
    """Estimated seconds from ``probe_captures`` captures (0: a full attack batch; fewer: a lower bound); the
    variants are probed in turn until the sum passes ``stop_above`` (the rest would only add to it)."""
    case, knobs = _case(cell)
    captures = len(_indices(cell, settings)) // case.batch_size
    total, parts, setups, refused = 0.0, {}, {}, {}
    for name in settings.variants:
        variant = VARIANTS.get(name)
        full = variant_settings(variant, settings.attack)
        k = min(full.attack_batch, captures)
        probe_k = min(probe_captures or k, k)
        ids = range(settings.first_image, settings.first_image + probe_k * case.batch_size)
        if variant.threat not in setups:
            tick = time.perf_counter()
            setups[variant.threat] = setup_case(replace(case, threat=variant.threat), ids, full, data_root, 0,
                                                seed, knobs)
            total += (time.perf_counter() - tick) * (captures + settings.train_steps) / probe_k
        seconds = []
        warm = run_attack(setups[variant.threat], full.model_copy(update={"attack_iterations": 1,
                                                                         "inversion_iterations": 1}),
                          variant.method, seed)
        if "not_applicable" in warm:
            refused[name] = warm["not_applicable"]
        for iters in (1, 3):   # after a warm-up: loading the oracle and the prior is not a batch's cost
            quick = full.model_copy(update={"attack_iterations": iters, "inversion_iterations": iters})
            tick = time.perf_counter()
            run_attack(setups[variant.threat], quick, variant.method, seed)
            seconds.append(time.perf_counter() - tick)
        per_iter = max(seconds[1] - seconds[0], 0.0) / 2
        iters = full.inversion_iterations if variant.method == "theta" else full.attack_iterations
        parts[name] = (per_iter * iters + max(seconds[0] - per_iter, 0.0)) * math.ceil(captures / k)
        total += parts[name]
        if total > stop_above:
            break
    return {"estimated_s": total, "per_variant_s": parts} | ({"not_applicable": refused} if refused else {})


def not_run_reason(cell: Cell, settings: AdraSettings) -> str | None:
    return beyond_scale(int(cell.knobs["p"]), settings.max_p)


def run_cell(cell: Cell, settings: AdraSettings, data_root: str, seed: int, progress: Progress) -> dict[str, Any]:
    """Every variant on the cell's captures: one row per variant with rates, intervals and the controls."""
    case, knobs = _case(cell)
    indices = _indices(cell, settings)
    rows, details, setups = [], [], {}
    shared: dict[str, Any] = {}
    for done, name in enumerate(settings.variants):
        progress(f"{cell.id}: {name}", done, len(settings.variants))
        variant = VARIANTS.get(name)
        attack = variant_settings(variant, settings.attack)
        if variant.threat not in setups:
            setups[variant.threat] = setup_case(replace(case, threat=variant.threat), indices,
                                                attack, data_root, settings.train_steps, seed, knobs)
        setup = setups[variant.threat]
        if not shared:   # the same weights and the same client updates under every threat model
            shared = {"weights_test_accuracy": round(weights_accuracy(setup), 4), **update_cosines(setup)}
        result = run_attack(setup, attack, variant.method, seed, keep_rows=True)
        rows.append(variant_row(cell, name, result) | shared)
        details.append({k: v for k, v in result.items() if k != "rows"}
                       | {"variant": name, "settings": attack.model_dump(by_alias=True)})
    progress(cell.id, len(settings.variants), len(settings.variants))
    return {"rows": rows, "details": details, "knobs": knobs}


def update_cosines(setup: CaseSetup) -> dict[str, float | None]:
    """Mean cosine of the captured Δα between images of one class and of different classes (B = 1 only): when
    same-class updates are nearly parallel, Δα carries the label and little of the image."""
    if setup.case.batch_size != 1 or len(setup.targets) < 2:
        return {"same_class_cosine": None, "different_class_cosine": None}
    deltas = torch.stack([torch.cat([t.alpha_delta[g].flatten() for g in sorted(t.alpha_delta)])
                          for t in setup.targets])
    labels = torch.as_tensor([int(setup.data.test_labels[g[0]]) for g in setup.groups])
    if len(set(labels.tolist())) == len(labels):   # no two images of one class
        return {"same_class_cosine": None, "different_class_cosine": None}
    stats = pair_stats(deltas, labels)
    return {"same_class_cosine": round(stats["same_class_mean"], 6),
            "different_class_cosine": round(stats["different_class_mean"], 6)}


def weights_accuracy(setup: CaseSetup, n: int = 1000) -> float:
    """The attacked weights' test accuracy on the last ``n`` MNIST test images (never attacked)."""
    data = setup.data
    ids = torch.arange(len(data.test_labels) - n, len(data.test_labels))
    images = ImageSet(data.test_images[ids], data.test_labels[ids], ids.numpy())
    accuracy = evaluate(setup.model, images)["accuracy"]   # type: ignore[arg-type]
    setup.model.train()
    return float(accuracy)


def variant_row(cell: Cell, name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"cell": cell.id, "variant": name, "threat": VARIANTS.get(name).threat,
                           "alpha_entries": result["alpha_entries"]}
    if "not_applicable" in result:
        return row | {"status": "not applicable", "note": result["not_applicable"]}
    images = result["rows"]
    n = len(images)
    row.update(status="done", n=n)
    for key in ("recognised", "identified"):
        k = sum(bool(r[key]) for r in images)
        base = sum(bool(r["baseline"][key]) for r in images)
        lo, hi = wilson(k, n)
        b_lo, b_hi = wilson(base, n)
        row.update({key: k / n, f"{key}_lo": lo, f"{key}_hi": hi, f"{key}_k": k, f"baseline_{key}": base / n,
                    f"baseline_{key}_lo": b_lo, f"baseline_{key}_hi": b_hi})
    row["label"] = sum(bool(r["label_correct"]) for r in images) / n
    for key in ("psnr", "ssim", "mse"):
        mean, lo, hi = mean_ci([r[key] for r in images])
        row.update({key: mean, f"{key}_lo": lo, f"{key}_hi": hi})
    row["baseline_ssim"] = mean_ci([r["baseline"]["ssim"] for r in images])[0]
    row["truth_match"] = result.get("truth_match")
    row["attack_match"] = result.get("attack_match")
    row["paper_sr"] = cell.paper.get("sr") if name == "paper" else None
    row["paper_mse"] = cell.paper.get("mse") if name == "paper" else None
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}


COLUMNS = ("cell", "variant", "threat", "status", "n", "alpha_entries", "weights_test_accuracy", "recognised",
           "recognised_lo", "recognised_hi", "recognised_k", "paper_sr", "baseline_recognised",
           "baseline_recognised_lo", "baseline_recognised_hi", "identified", "identified_lo", "identified_hi",
           "baseline_identified", "baseline_identified_lo", "baseline_identified_hi", "label", "psnr", "psnr_lo",
           "psnr_hi", "ssim", "ssim_lo", "ssim_hi", "baseline_ssim", "mse", "mse_lo", "mse_hi", "paper_mse",
           "truth_match", "attack_match", "same_class_cosine", "different_class_cosine", "note")
