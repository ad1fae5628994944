"""The eavesdropper and the membership attacker, split by role (each subpackage imports only those above it):

- ``wire``: what crossed the wire (the simulation tap, the Fleet-API decoder, the capture store);
- ``reconstruct``: Δα / Δθ → images; takes a ``WireView`` and ``PublicKnowledge``, never ground truth;
- ``scoring``: where ground truth enters (the evaluation-only log, the oracle, metrics, gallery);
- ``interceptor``: the eavesdropper at run time (worker service, on-path proxy, deployed runs);
- ``membership``: AMIA, which sees only a black box's answers (it stands apart from the others).
"""
