"""The Flower apps: the one composition root where the federation, the eavesdropper and the defenses meet.

``server_app`` and ``client_app`` only convert Flower Messages and wire the packages below together:
``fednas`` (federated DARTS, the victim), ``attacker`` (the tap and the interceptor) and ``defenses`` (each
defense's plug points). Nothing below this package imports it.
"""
