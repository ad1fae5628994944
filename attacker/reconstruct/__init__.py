"""The reconstruction engines: Δα → images (ADRA), Δθ → images (inversion), both (joint).

Inputs are a threat model's view of one capture (:mod:`attacker.reconstruct.threat`) and public knowledge;
ground truth never reaches this package. Pure objectives, one optimisation loop (:mod:`.loop`).
"""
