"""Classification losses as plain jnp functions (usable from any JAX code).

All take logits (..., K) and integer labels (...) and return per-example values;
reduce them yourself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy  -log softmax(logits)[label]  per example.

  logits: (..., K) float; labels: (...) int in [0, K).
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def l2_penalty(params) -> jax.Array:
  """sum_w w^2 over every leaf of `params` (weights, biases, BN scales alike)."""
  leaves = jax.tree.leaves(params)
  return sum(jnp.sum(jnp.square(p.astype(jnp.float32))) for p in leaves) if leaves \
      else jnp.zeros((), jnp.float32)
