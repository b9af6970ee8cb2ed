"""The loss of TDSM's time-dependent noisy-label classifier: forward correction, VolMinNet's T.

Pure functions (the networks are in `lnrd.networks.time_classifiers`, the
train step that uses these in `lnrd.time_classifier`):

* `forward_corrected_nll`: -log((softmax(logits) @ T)[y~] + tiny), the loss
  of the authors' `EDMClassifierLoss` / `EDMClassifierWithVMLoss`.
* VolMinNet-style learned transition (`EDMPrecond_classifier_with_transition_
  matrix` + `EDMClassifierWithVMLoss`): `init_volmin_theta`,
  `volmin_transition`, `volmin_regularizer`, weighted by `VOLMIN_WEIGHT`.
  The authors' optimiser of theta is `lnrd.time_classifier.volmin_optimizer`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sgn_jax import noise_estimation

# Weight of the VolMinNet regulariser in the authors' `EDMClassifierWithVMLoss`
# (added, as a scalar, to every per-example loss).
VOLMIN_WEIGHT = 1e-4

# Constant inside the log of the authors' `EDMClassifierWithVMLoss`.
DEFAULT_TINY = 1e-12


def forward_corrected_nll(logits: jax.Array, noisy_labels: jax.Array,
                          transition: jax.Array,
                          tiny: float = DEFAULT_TINY) -> jax.Array:
  """Forward-corrected negative log-likelihood of noisy labels, per example.

      loss_b = -log( sum_y softmax(logits_b)[y] * T[y, y~_b] + tiny )

  with T[y, y~] = p(y~ | y) (rows = clean class). Computed in log space,
  -logaddexp(logsumexp_y(log_softmax_y + log T[y, y~]), log tiny), so large
  logit gaps do not underflow. Entries T == 0 contribute nothing (and get zero
  gradient). With T = I and tiny -> 0 this is the softmax cross-entropy.

  Args:
    logits: (B, K) clean-class logits.
    noisy_labels: (B,) integer noisy labels y~.
    transition: (K, K) row-stochastic matrix T.
    tiny: constant inside the log (authors: 1e-12); 0 disables it.

  Returns:
    (B,) per-example losses.
  """
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  t_cols = jnp.asarray(transition, jnp.float32)[:, noisy_labels].T  # (B, K)
  pos = t_cols > 0
  log_t = jnp.where(pos, jnp.log(jnp.where(pos, t_cols, 1.0)), -jnp.inf)
  z = logp + log_t
  zmax = jnp.max(z, axis=-1, keepdims=True)
  zmax = jax.lax.stop_gradient(jnp.where(jnp.isfinite(zmax), zmax, 0.0))
  log_q = jnp.log(jnp.sum(jnp.exp(z - zmax), axis=-1)) + zmax[:, 0]
  if tiny > 0:
    log_q = jnp.logaddexp(log_q, math.log(tiny))
  return -log_q


def init_volmin_theta(num_classes: int, init: float = -2.0) -> jax.Array:
  """Initial transition logits theta_0 = init * ones((K, K)) (authors: -2).

  The authors keep theta as the parameter `transition_matrix` of their
  `EDMPrecond_classifier_with_transition_matrix` wrapper (outside the
  classifier network) and train it with the same Adam optimiser. Its diagonal
  is unused (masked in `volmin_transition`).
  """
  return jnp.full((num_classes, num_classes), init, jnp.float32)


def volmin_transition(theta: jax.Array) -> jax.Array:
  """VolMinNet transition matrix from logits theta (authors' formula).

      A = I + (1 - I) * sigmoid(theta)           # diagonal fixed to 1
      T[i, :] = A[i, :] / max(sum_j |A[i, j]|, 1e-12)

  (`torch.nn.functional.normalize(A, p=1, dim=1)`), so rows sum to 1. At
  theta = c everywhere: T_ii = 1 / (1 + (K - 1) s), T_ij = s / (1 + (K - 1) s),
  s = sigmoid(c) (c = -2, K = 10: 0.4824 and 0.0575).

  Args:
    theta: (K, K) unconstrained logits.

  Returns:
    (K, K) row-stochastic T with T[y, y~] = p(y~ | y)
    (`sgn_jax.noise_estimation.volmin_transition`).
  """
  return noise_estimation.volmin_transition(theta)


def volmin_regularizer(transition: jax.Array) -> jax.Array:
  """Volume regulariser logdet(T) (`torch.logdet`: NaN if det(T) < 0).

  The authors' `EDMClassifierWithVMLoss` adds `VOLMIN_WEIGHT * logdet(T)`
  (1e-4) to every per-example forward-corrected NLL, i.e. the batch-mean
  objective is mean_b NLL_b + 1e-4 * logdet(T).

  Args:
    transition: (K, K) matrix.

  Returns:
    Scalar log-determinant.
  """
  sign, logabs = jnp.linalg.slogdet(jnp.asarray(transition, jnp.float32))
  return jnp.where(sign > 0, logabs, jnp.where(sign == 0, -jnp.inf, jnp.nan))
