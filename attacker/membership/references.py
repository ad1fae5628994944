"""Reference models for LiRA and RMIA: trained once per configuration, cached, shared by every attack.

The attacker holds a universe of labelled images: the candidates it asks about (it has to hold them to query the
target) followed by population samples from its own pool. Each of R reference models (the shadow kind of the AMIA
config: a ResNet, or the target's search space searched on the reference's data) trains on a balanced half of the
universe; a searchable reference's members are its D^α half, and its D^θ half is neither IN nor OUT for it. What
the attacks need from the references is only their answers on the universe and who trained on what, so that is
what is cached (``references-<hash>.npz`` beside the attacker's other models, loaded with allow_pickle=False).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attacker.cache import cache_dir, cache_lock
from attacker.membership.shadow import SHADOWS, MembershipKnowledge, ShadowTraining, StageProgress
from fednas.batches import ImageSet
from fednas.storage import atomic_write_bytes


@dataclass(frozen=True)
class ReferenceAnswers:
    posteriors: np.ndarray     # [R, U, K] every reference model's answers on the universe
    inside: np.ndarray         # [R, U] the reference trained on it as a member (IN)
    excluded: np.ndarray       # [R, U] trained on it otherwise (a searchable reference's D^θ): neither IN nor OUT
    seconds: float             # to train them (0 when loaded from the cache)

    @property
    def outside(self) -> np.ndarray:
        return ~self.inside & ~self.excluded


def universe_of(candidates: ImageSet, pool: ImageSet, population: int) -> tuple[ImageSet, int]:
    """Candidates then the first ``population`` pool samples, with positions as ids; returns (universe, n_cand)."""
    take = min(population, len(pool))
    images = torch.cat([candidates.images, pool.images[:take]])
    labels = torch.cat([candidates.labels, pool.labels[:take]])
    return ImageSet(images, labels, np.arange(len(images))), len(candidates)


def reference_key(public: MembershipKnowledge, universe: ImageSet, shadow: str, count: int,
                  training: ShadowTraining, seed: int) -> str:
    """What the references depend on: the universe's pixels and labels, the search space and recipe, the shadow
    kind and training, their number and the seed."""
    h = hashlib.sha256()
    h.update(universe.images.numpy().tobytes())
    h.update(universe.labels.numpy().tobytes())
    h.update(json.dumps({"spec": public.spec.model_dump(mode="json"), "search": public.search.model_dump(mode="json"),
                         "shadow": shadow, "count": count, "training": training.__dict__, "seed": seed},
                        sort_keys=True).encode())
    return h.hexdigest()[:24]


def train_references(public: MembershipKnowledge, universe: ImageSet, shadow: str, count: int,
                     training: ShadowTraining, generator: torch.Generator, device: torch.device,
                     progress: StageProgress = lambda *a: None) -> ReferenceAnswers:
    """``count`` reference models on balanced halves: every example is in the training data of half the models
    (LiRA's design), so each has IN and OUT models from two references on."""
    tick = time.perf_counter()
    n = len(universe)
    keep = (torch.rand(count, n, generator=generator).argsort(0) < count // 2).numpy()   # [R, U], R/2 per column
    if count % 2:
        keep[count - 1] = torch.rand(n, generator=generator).numpy() < 0.5
    answers, inside, excluded = [], np.zeros((count, n), bool), np.zeros((count, n), bool)
    for r in range(count):
        half, rest = torch.as_tensor(np.flatnonzero(keep[r])), torch.as_tensor(np.flatnonzero(~keep[r]))
        trained, held = universe.subset(half), universe.subset(rest)
        model = SHADOWS.get(shadow)(public, trained, held, training, generator, device, progress)
        answers.append(model.box.predict(universe.images.numpy()))
        inside[r, model.members.ids] = True
        excluded[r, trained.ids] = ~inside[r, trained.ids]
        progress("references", r + 1, count)
    return ReferenceAnswers(np.stack(answers), inside, excluded, time.perf_counter() - tick)


def cached_references(public: MembershipKnowledge, universe: ImageSet, shadow: str, count: int,
                      training: ShadowTraining, seed: int, device: torch.device,
                      progress: StageProgress = lambda *a: None, folder: Path | None = None) -> ReferenceAnswers:
    """:func:`train_references` once per configuration; later calls (any attack, any member kind) load them."""
    key = reference_key(public, universe, shadow, count, training, seed)
    path = (folder or cache_dir()) / f"references-{key}.npz"
    with cache_lock(path):
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    return ReferenceAnswers(z["posteriors"], z["inside"], z["excluded"], 0.0)
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)       # damaged: train again
        generator = torch.Generator().manual_seed(int(key[:8], 16) ^ seed)
        refs = train_references(public, universe, shadow, count, training, generator, device, progress)
        buf = io.BytesIO()
        np.savez(buf, posteriors=refs.posteriors, inside=refs.inside, excluded=refs.excluded)
        atomic_write_bytes(path, buf.getvalue())
    return refs
