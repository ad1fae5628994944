"""Membership inference (AMIA): shadow models and attacks that see only a black box's posteriors; member
sets (ground truth) and metrics on the scoring side."""
