"""Named scenarios, sweeps that reproduce the paper's tables, benchmarks, and the ``archleak`` CLI."""
