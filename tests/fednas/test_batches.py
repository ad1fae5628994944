"""In-memory image sets (fednas.batches)."""

import numpy as np
import torch

from fednas.batches import ImageSet


def test_a_subset_keeps_images_labels_and_ids_together_in_the_order_asked():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).clone()
    data = ImageSet(images, torch.tensor([0, 1, 2, 3, 4]) * 2, np.array([50, 51, 52, 53, 54]))
    for positions in (torch.tensor([3, 0, 4]), np.array([3, 0, 4])):
        part = data.subset(positions)
        assert part.ids.tolist() == [53, 50, 54] and part.labels.tolist() == [6, 0, 8]
        assert part.images[:, 0, 0, 0].tolist() == [3, 0, 4] and len(part) == 3
    assert len(data.subset(np.array([], dtype=np.int64))) == 0
