"""Exponential moving averages of parameters.

Three schedules (a number, or `step -> decay` for the update after step `step`):
* fixed decay (SGN's authors): ema <- decay * ema + (1 - decay) * params after every step;
* fixed decay with warm-up (`warmup_decay`, TensorFlow's ExponentialMovingAverage
  with `num_updates`): decay_t = min(decay, (1 + t) / (10 + t)), so a short run's
  EMA follows the net instead of keeping its initialisation;
* EDM half-life with ramp-up (TDSM / EDM): the decay per step is
  beta = 0.5 ** (batch_size / max(halflife_nimg, 1e-8)) with
  halflife_nimg = min(halflife_kimg * 1000, nimg * rampup_ratio) when a ramp-up
  ratio is given (nimg = images seen so far).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

# The EMA is "cold" while it still weighs its (random) initialisation by more than this.
COLD_INIT_WEIGHT = 0.5


def ema_update(ema_tree, new_tree, decay):
  """Returns decay * ema_tree + (1 - decay) * new_tree, leaf by leaf.

  Integer leaves (e.g. counters) are taken from `new_tree`.
  """
  def update(e, n):
    if not jnp.issubdtype(jnp.asarray(n).dtype, jnp.inexact):
      return n
    return (decay * e + (1.0 - decay) * n).astype(e.dtype)
  return jax.tree.map(update, ema_tree, new_tree)


def edm_ema_decay(nimg, batch_size, halflife_kimg, rampup_ratio=0.05):
  """EDM's per-step EMA decay beta after `nimg` images (jnp-traceable).

  beta = 0.5 ** (batch_size / max(halflife_nimg, 1e-8)),
  halflife_nimg = halflife_kimg * 1000, capped at nimg * rampup_ratio when
  `rampup_ratio` is not None.
  """
  halflife_nimg = jnp.asarray(halflife_kimg * 1000.0, jnp.float32)
  if rampup_ratio is not None:
    halflife_nimg = jnp.minimum(halflife_nimg, jnp.asarray(nimg, jnp.float32) * rampup_ratio)
  return 0.5 ** (batch_size / jnp.maximum(halflife_nimg, 1e-8))


def edm_schedule(batch_size: int, halflife_kimg: float, rampup_ratio: float | None = 0.05):
  """`step -> decay` of EDM's half-life with ramp-up (`edm_ema_decay`), where the
  update of step s follows nimg = (s + 1) * batch_size images."""
  def decay(step):
    nimg = (jnp.asarray(step, jnp.float32) + 1.0) * batch_size
    return edm_ema_decay(nimg, batch_size, halflife_kimg, rampup_ratio)
  return decay


def as_schedule(ema_decay):
  """`step -> decay` of `ema_decay`: a schedule as it is, a number as a constant."""
  return ema_decay if callable(ema_decay) else (lambda step: ema_decay)


def warmup_decay(decay: float):
  """`step -> min(decay, (1 + step) / (10 + step))` (TF's EMA with `num_updates`):
  the update after step t averages over roughly the last (10 + t) / 9 steps until
  that exceeds 1 / (1 - decay)."""
  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  return schedule


def init_weight(ema_decay, steps: int) -> float:
  """The weight the EMA still gives its initialisation after `steps` updates:
  prod_t decay_t (`ema_decay` a number or a `step -> decay` schedule). The EMA has
  moved less than half-way from its (random) start while this is above 0.5."""
  if steps <= 0:
    return 1.0
  if not callable(ema_decay):
    return float(ema_decay) ** steps
  decays = np.asarray(ema_decay(np.arange(steps, dtype=np.float32)), np.float64)
  decays = np.broadcast_to(decays, (steps,))
  return float(np.exp(np.sum(np.log(np.clip(decays, 1e-300, 1.0)))))


def warn_if_cold(ema_decay, steps: int, *, uses: str, fix: str) -> bool:
  """Logs a warning when after `steps` updates the EMA still weighs its initialisation
  by more than half (`init_weight`): `uses` says what the EMA network is used for,
  `fix` what to change. Returns whether it warned."""
  start = init_weight(ema_decay, steps)
  if start <= COLD_INIT_WEIGHT:
    return False
  logging.warning("%s, but after %d steps the EMA still weighs its random initialisation "
                  "by %.0f%%: %s", uses, steps, 100 * start, fix)
  return True
