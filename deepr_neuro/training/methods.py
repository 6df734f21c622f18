"""The training methods and optimisers, listed once (spec, DEEP R, trainer, sweep and CLI import them).

Pure Python: no NumPy needed, so the model spec and the CLI can import it cheaply.
"""
from __future__ import annotations

# DEEP R variants (DESIGN.md section 3): connections rewired under per-core budgets.
REWIRING_METHODS = ("deepr", "soft-deepr", "global-deepr")
# Baselines users compare against, trained by the same loop on ordinary signed
# weights (no rewiring, no noise):
#   dense          every connection (the network at connectivity 1.0)
#   fixed-sparse   K_c random connections per core, never moved
#   prune-retrain  dense, then keep the K_c largest per core, retrain (Han et al. 2015)
#   l1             dense with L1 shrinkage, then keep the K_c largest per core
BASELINES = ("dense", "fixed-sparse", "prune-retrain", "l1")
METHODS = REWIRING_METHODS + BASELINES
OPTIMIZERS = ("sgd", "adam")


def theta_min_rule(p: float, alpha: float, noise: float, lr: float) -> float:
    """soft-DEEP R's clip, the reference code's rule of thumb: -(1 - p) / (p * beta),
    beta = alpha / T, T = lr sigma^2 / 2 (one formula for the spec check and the trainer)."""
    temperature = lr * noise ** 2 / 2
    beta = alpha / temperature
    return -(1 - p) / (p * beta)
