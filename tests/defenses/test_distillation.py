"""DMP: the student trains only on teacher-labelled public data, low-entropy first."""

import numpy as np
import pytest
import torch

from defenses.distillation import (
    DistillConfig,
    distill,
    low_entropy,
    rebuild_student,
    soft_labels,
    student_meta,
)
from fednas.batches import ImageSet
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet


def test_low_entropy_keeps_the_most_confident_rows_of_each_predicted_class():
    probs = torch.tensor([[0.6, 0.4], [0.99, 0.01], [0.7, 0.3], [0.9, 0.1], [0.45, 0.55], [0.2, 0.8]])
    assert low_entropy(probs, 0.5).tolist() == [1, 3, 5]       # class 0: 2 of 4, class 1: 1 of 2
    assert low_entropy(probs, 0.75).tolist() == [1, 2, 3, 4, 5]  # class 0: 3 of 4, class 1: both


@pytest.fixture(scope="module")
def teacher_and_reference():
    spec = SupernetSpec(cells=1, nodes=1, channels=4, image_size=12, num_classes=4)
    teacher = build_supernet(spec, (0.5,), (0.25,), torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher.alphas["normal"].normal_(generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8, generator=g)
    labels = torch.full((40,), -1)  # unlabelled: any use of a true label would fail
    return teacher, ImageSet(images, labels, np.arange(1000, 1040))


@pytest.mark.parametrize("kind", ["searched", "resnet"])
def test_student_sees_only_teacher_labels_of_low_entropy_public_samples(teacher_and_reference, kind):
    teacher, reference = teacher_and_reference
    cfg = DistillConfig(student=kind, keep_fraction=0.5, epochs=2, batch_size=5)
    seen_ids, seen_targets = [], []
    result = distill(teacher, reference, cfg, torch.Generator().manual_seed(3), torch.device("cpu"),
                     on_batch=lambda ids, y: (seen_ids.append(ids), seen_targets.append(y)))
    probs = soft_labels(teacher, reference.images, 1.0, torch.device("cpu"))
    kept = reference.ids[low_entropy(probs, 0.5)]
    assert set(np.concatenate(seen_ids)) == set(kept) == set(result.reference_ids)
    by_id = dict(zip(reference.ids.tolist(), probs, strict=True))
    for ids, targets in zip(seen_ids, seen_targets, strict=True):
        expected = torch.stack([by_id[int(i)] for i in ids])
        assert torch.allclose(targets, expected)  # the teacher's soft labels, never true ones (there are none)
    if kind == "searched":
        assert torch.equal(result.student.alphas["normal"], teacher.alphas["normal"])
        assert not result.student.alphas["normal"].requires_grad
    rebuilt = rebuild_student(student_meta(result.student, kind, teacher), result.student.state_dict(),
                              torch.device("cpu"))
    x = reference.images[:3].float() / 255
    assert torch.equal(rebuilt(x), result.student.eval()(x))


def test_unknown_student_is_a_clear_error():
    from fednas.schema import ConfigError, parse_config

    with pytest.raises(ConfigError, match="unknown student kind 'vgg'; known: searched, resnet"):
        parse_config(DistillConfig, {"student": "vgg"})
