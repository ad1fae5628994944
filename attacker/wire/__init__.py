"""What crossed the wire: captures (one client's exchange in one round), the simulation tap, the Fleet API
decoder of the deployed proxy, and captures made without a federation (benchmarks, tests)."""
