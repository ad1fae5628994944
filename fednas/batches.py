"""In-memory image sets and seeded batch sampling (no DataLoader: everything already sits in RAM)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ImageSet:
    """Images (uint8 [N, C, H, W]), labels and the dataset-level sample ids they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: np.ndarray

    @classmethod
    def take(cls, images: torch.Tensor, labels: torch.Tensor, ids: np.ndarray) -> ImageSet:
        index = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        return cls(images[index], labels[index], np.asarray(ids, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, positions: torch.Tensor | np.ndarray) -> ImageSet:
        """The samples at ``positions`` (indices into this set, in that order), with their ids."""
        index = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        return ImageSet(self.images[index], self.labels[index], self.ids[index.numpy()])

    def batch(self, positions: torch.Tensor, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and labels for the given positions, on ``device``."""
        x = self.images[positions].to(device=device, dtype=torch.float32) / 255.0
        return x, self.labels[positions].to(device)


class BatchSampler:
    """Endless shuffled batches without replacement within an epoch (the last short batch is dropped)."""

    def __init__(self, size: int, batch_size: int, generator: torch.Generator) -> None:
        if size < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the split ({size} samples)")
        self.size = size
        self.batch_size = batch_size
        self.generator = generator
        self._order = torch.empty(0, dtype=torch.int64)
        self._next = 0

    def __next__(self) -> torch.Tensor:
        if self._next + self.batch_size > len(self._order):
            self._order = torch.randperm(self.size, generator=self.generator)
            self._next = 0
        batch = self._order[self._next:self._next + self.batch_size]
        self._next += self.batch_size
        return batch

    def __iter__(self) -> BatchSampler:
        return self

    def batches_per_epoch(self) -> int:
        return self.size // self.batch_size
