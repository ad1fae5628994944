"""The race's curves and its common start (simulations.race_curves, simulations.race_breaching)."""

import numpy as np
import pytest
import torch

from simulations.race_curves import Step, image_steps, mean_curve, seconds_to_reach, summary


class Recorded:
    def __init__(self, times, snapshots):
        self.times, self.snapshots = times, snapshots


def test_mean_curve_holds_each_images_latest_value_and_charges_a_batch_its_time_per_image():
    steps = [Step(np.array([0.0, 2.0]), np.array([10.0, 20.0]), np.array([0.1, 0.2])),
             Step(np.array([0.0, 1.0, 4.0]), np.array([10.0, 12.0, 30.0]), np.array([0.1, 0.3, 0.5]))]
    curve = mean_curve(steps)
    assert curve["seconds_per_image"] == [0.0, 1.0, 2.0, 4.0]
    assert curve["psnr"] == [10.0, 11.0, 16.0, 25.0]          # the first image stays at 20 after it stopped
    assert seconds_to_reach(curve, 16.0) == 2.0 and seconds_to_reach(curve, 26.0) is None
    assert summary(curve)["best_psnr"] == 25.0 and summary(curve)["start_psnr"] == 10.0
    truth = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    batched = Recorded([0.0, 4.0], [torch.zeros_like(truth), truth.clone()])    # two images in one optimisation
    per_image = image_steps([batched], truth)
    assert [s.seconds.tolist() for s in per_image] == [[0.0, 2.0], [0.0, 2.0]]
    assert all(s.psnr[-1] > 60 for s in per_image)                              # the truth itself at the end


def test_ours_starts_from_the_images_given_to_breaching(data_root, mnist_or_digits):
    """The first L-BFGS evaluation sees exactly the start images that breaching receives as initial data."""
    if mnist_or_digits != "mnist":
        pytest.skip("the race is defined on MNIST test images, and MNIST is not under the data root")
    from simulations.race_breaching import RaceLimits, _ours, _setup, start_images

    targets, ctx, _, labels = _setup(2, str(data_root), {"channels": 4, "nodes": 2}, seed=0)
    for kind in ("noise", "class-mean"):
        ctx["start_kind"] = kind
        start, ctx["labels"] = start_images(targets, ctx["public"], kind, 0)
        trace = _ours(targets, ctx, start, RaceLimits(snapshot_every=1, ours_iterations=2))[0]
        torch.testing.assert_close(trace.snapshots[1], start, atol=1e-6, rtol=0)
        assert trace.labels.tolist() == labels.tolist()       # one sample per update: the analytic label is exact


def test_a_trace_stops_only_after_patience_evaluations_without_improvement():
    """The first evaluation sets the best (a best of +inf must not swallow every later improvement)."""
    from simulations.race_breaching import Trace, _Stop

    trace = Trace(torch.zeros(1, 1, 2, 2), wall_cap_s=1e9, patience=3, min_improvement=1e-3, every=1)
    for loss in (5.0, 4.0, 3.0, 2.0):               # improving: never stops
        trace.observe(loss, lambda: torch.zeros(1, 1, 2, 2))
    with pytest.raises(_Stop):
        for loss in (2.0, 1.9999, 2.5):             # three evaluations without a 0.1% improvement
            trace.observe(loss, lambda: torch.zeros(1, 1, 2, 2))
    assert trace.stopped == "stopped improving" and trace.best == 2.0 and trace.evaluations == 7
