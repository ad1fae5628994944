"""One tiny finished search (1 round, captures stored, not attacked), shared by the command-line smoke tests."""

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_root, mnist_or_digits):
    from simulations.simulate import simulate

    return simulate({"dataset": mnist_or_digits, "data-root": str(data_root),
                     "output-dir": str(tmp_path_factory.mktemp("tiny-runs")), "num-server-rounds": 1,
                     "theta-steps": 1, "theta-batch-size": 8, "eval-samples": 16, "channels": 4, "nodes": 2,
                     "samples-per-client": 60, "interceptor": "capture"})
