"""Client-side defenses (DP-SGD on α, L2 on α, input noise, distillation, SecAgg+) and their accounting."""
