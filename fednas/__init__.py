"""The victim: federated DARTS, as a federation would run it, with no eavesdropper and no defense in it.

Search space as data (``search_space``: ``PRIMITIVES``, ``Genotype``; ``operations``: the ``OPS`` registry), the
supernet, one client's local search, data and partitions, the server's run and its run folder, every seed stream,
and the searched model as its owner serves it (``target``, ``serve``; ``http_server`` puts it on FastAPI under
uvicorn). Flower appears only in ``records`` (Message conversion and the wire format) and ``strategy`` (the
Message-API FedAvg); the rest is plain PyTorch. The Flower apps that compose the federation with the attacker and
the defenses live in ``app/``.
"""
