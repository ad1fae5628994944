"""Federated DARTS: search space, supernet, local search, data, partitions and the Flower apps.

Only ``client_app``, ``server_app``, ``strategy`` and ``records`` import Flower; the rest is plain PyTorch.
"""
