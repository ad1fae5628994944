"""Every random stream of the project, derived from the one run seed: the list is here and nowhere else.

A use of randomness names its stream: ``generator(seed, CLIENT_STREAM, round, partition)`` gives an independent
torch generator, ``numpy_rng(seed, PARTITION_STREAM)`` a numpy one. Library code takes generators as arguments
and never touches a global random state; :func:`seeded_init` confines the one exception (``nn.Module``
constructors draw from PyTorch's global generator) to a block and restores the global state afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

# torch streams (derive_seed / generator)
MODEL_STREAM = 1         # the round-0 supernet, identical on the server and every client
CLIENT_STREAM = 2        # a client's batches in one round: (round, partition)
SAMPLING_STREAM = 3      # the server's client sampling per round
ATTACK_STREAM = 4        # the eavesdropper: its own θ_r and each capture's attack
DEFENSE_STREAM = 5       # defenses' noise: its own stream, so defended clients see the same batches
AMIA_STREAM = 7          # shadows and the membership attack model
DISTILL_STREAM = 8       # the DMP student's init and batches
BENCH_WEIGHTS_STREAM = 7     # bench adra: θ trained on public images before a capture (never in a run with AMIA)
BENCH_WARMUP_STREAM = 9      # bench fednas: warm-up steps
BENCH_TIMED_STREAM = 10      # bench fednas: timed steps
METHOD_STREAM = 11       # search methods: (0) ENAS controller / SMASH hypernetwork init, (1, round) SMASH candidates,
                         # (2, stage) a PDARTS stage's fresh supernet and α
# numpy streams (numpy_rng)
PARTITION_STREAM = 0x5EA4C4   # the population hold-back and the clients' partition
MEMBERSHIP_STREAM = 0xA31A    # the population halves (attacker's public half, non-members) and query sets


def derive_seed(seed: int, *stream: int) -> int:
    """An independent 63-bit seed for one named use of the run seed."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint64)[0] >> 1)


def generator(seed: int, *stream: int) -> torch.Generator:
    """A torch generator for one named use of the run seed."""
    return torch.Generator().manual_seed(derive_seed(seed, *stream))


def numpy_rng(seed: int, *stream: int) -> np.random.Generator:
    """A numpy generator for one named use of the seed (``stream`` starts with one of the numpy streams)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


@contextlib.contextmanager
def seeded_init(gen: torch.Generator) -> Iterator[None]:
    """Seed PyTorch's global generator from ``gen`` inside the block and restore it afterwards: nn.Module
    constructors draw their initial weights from the global generator, library code must not touch it."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def kaiming_init_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every weight of ``module`` in place (Kaiming-uniform) and zero every bias, from ``generator``."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim > 1:
                nn.init.kaiming_uniform_(p, a=5 ** 0.5, generator=generator)
            else:
                nn.init.zeros_(p)
