"""Inception Score (Salimans et al., 2016).

For class probabilities p(y|x_i) of N samples, split contiguously into
`num_splits` parts (part s = rows [s N // S, (s + 1) N // S), as the TF and
torch-fidelity implementations without shuffling); in each part P_s

  p_s(y) = mean_{i in P_s} p(y|x_i),
  IS_s = exp( mean_{i in P_s} KL(p(y|x_i) || p_s(y)) )
       = exp( mean_i sum_y p(y|x_i) (log p(y|x_i) - log p_s(y)) ),

and the result is (mean_s IS_s, std_s IS_s) (population std, ddof=0).
Terms with p(y|x_i) = 0 contribute 0. Uniform predictions give IS = 1; one-hot
predictions spread evenly over C classes give IS = C.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _split_scores(log_p: jax.Array, num_splits: int) -> jax.Array:
  """Per-split IS_s from log-probabilities (N, C)."""
  n = log_p.shape[0]
  scores = []
  for s in range(num_splits):
    lp = log_p[s * n // num_splits:(s + 1) * n // num_splits]
    p = jnp.exp(lp)
    log_py = jnp.log(jnp.mean(p, axis=0))
    kl = jnp.sum(jnp.where(p > 0, p * (lp - log_py[None, :]), 0.0), axis=1)
    scores.append(jnp.exp(jnp.mean(kl)))
  return jnp.stack(scores)


def inception_score(probs_or_logits, num_splits: int = 10,
                    from_logits: bool = False) -> tuple[jax.Array, jax.Array]:
  """Inception Score (mean, std) over contiguous splits.

  Args:
    probs_or_logits: (N, C) class probabilities (rows summing to 1), or logits
      when `from_logits`.
    num_splits: number of contiguous splits S (1 <= S <= N).
    from_logits: apply log_softmax to the input first.

  Returns:
    (mean_s IS_s, std_s IS_s) as scalar JAX arrays.
  """
  x = jnp.asarray(probs_or_logits)
  if x.ndim != 2:
    raise ValueError(f"expected (N, C) input, got shape {x.shape}")
  if not 1 <= num_splits <= x.shape[0]:
    raise ValueError(f"num_splits must be in [1, {x.shape[0]}], got {num_splits}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  if from_logits:
    log_p = jax.nn.log_softmax(x, axis=-1)
  else:
    log_p = jnp.where(x > 0, jnp.log(jnp.where(x > 0, x, 1.0)), -jnp.inf)
  scores = _split_scores(log_p, num_splits)
  return jnp.mean(scores), jnp.std(scores)
