"""The attack's fast path: the supernet's double backward with edge-batched cells, frozen channels-last
convolutions and layout-preserving autograd pairs (the same function as the plain supernet, tested)."""
