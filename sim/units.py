"""The one place where annualized parameters become per-step ones.

Configs and process parameters are annualized (drift and volatility per year, event rates
per year); kernels work per step of length ``dt`` years. Drift and variance scale linearly
in time, volatility with its square root, and an event rate ``lam`` per year gives the
probability ``1 - exp(-lam dt)`` of at least one event in a step.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["per_step_mean", "per_step_vol", "per_step_prob", "per_step_rate"]


def per_step_mean(mu_annual, dt: float):
    """Drift per step: ``mu * dt``."""
    return mu_annual * dt


def per_step_vol(sigma_annual, dt: float):
    """Volatility per step: ``sigma * sqrt(dt)`` (in float32 for float32 or Python-number
    parameters, in float64 for float64 ones: the likelihoods of ``sim.fit``)."""
    return sigma_annual * jnp.sqrt(jnp.asarray(dt, jnp.result_type(sigma_annual, jnp.float32)))


def per_step_rate(rate_annual, dt: float):
    """Expected number of events per step: ``lam * dt``."""
    return rate_annual * dt


def per_step_prob(rate_annual, dt: float):
    """Probability of at least one event per step: ``1 - exp(-lam * dt)``."""
    return -jnp.expm1(-rate_annual * dt)
