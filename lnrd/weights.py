"""Transition-aware weights w(x_t, y~, y, t) = p_t(Y = y | Y~ = y~, x_t) of TDSM.

Under class-conditional label noise p(x | y~) = sum_y S[y~, y] p(x | y), where
S[y~, y] = p(Y = y | Y~ = y~) is the reverse transition and T[y, y~] = p(Y~ = y~ | Y = y)
the forward one. TDSM (Na et al., ICLR 2024) trains a clean-label score network
s(x_t, y, t) through the mixture sum_y w_y s(x_t, y, t), with the weights

  paper form      w[y~, y] = S[y~, y] n_y~ / h~(x_t)_y~ * sum_i S^-1[y, i] h~(x_t)_i / n_i
                  (h~ a time-dependent classifier of the NOISY label, n the
                  noisy-label priors; p(x|y)/p(x) = sum_i S^-1[y, i] p(x|y~=i)/p(x)),
  released form   w[y~, y] = T[y, y~] q_y / sum_k T[k, y~] q_k
                  (q = softmax of a classifier trained with forward correction,
                  an estimate of the clean posterior p_t(y | x_t); Bayes' rule).

Both are exact when the classifier is, and they coincide when h~ = T^T q and
the priors are the ones S was built with. An estimated classifier can make the
paper form leave [0, 1]; `clean_rows` clamps to [0, 1], renormalises the rows
and replaces NaN by 0 exactly as the released code does. Weights are targets:
they never carry gradient (callers wrap them in `jax.lax.stop_gradient`).

Every function computes the weights of ALL noisy labels at once by vmapping a
per-label row over the label axis; `weights_for_labels` then picks each
example's row. Shapes: B examples, C classes; matrices are [y~, y].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sgn_jax import noise

WEIGHT_FORMS = ("paper", "released")


def paper_weights(noisy_posterior: jax.Array, reverse: jax.Array, reverse_inv: jax.Array,
                  noisy_prior: jax.Array) -> jax.Array:
  """Paper form, all noisy labels: W[b, y~, y] = S[y~,y] n_y~/h~_b,y~ * sum_i S^-1[y,i] h~_b,i/n_i.

  Args:
    noisy_posterior: h~(x_t, t), (B, C) probabilities of the noisy label.
    reverse: S (C, C), rows sum to one.
    reverse_inv: S^-1 (C, C) (precomputed once; see `transition_constants`).
    noisy_prior: n (C,), the noisy-label class frequencies.

  Returns:
    (B, C, C) weights, not yet clamped. Row y~ divides by h~_y~: where the given
    noisy label is very improbable its absolute rounding error grows like
    eps / h~_y~ (the released form has no such division by a small number).
  """
  noisy_posterior, reverse, reverse_inv, noisy_prior = (
      jnp.asarray(a) for a in (noisy_posterior, reverse, reverse_inv, noisy_prior))
  density_ratio = (noisy_posterior / noisy_prior) @ reverse_inv.T  # (B, C): p(x|y)/p(x)

  def row(noisy_label):  # (B, C) weights given Y~ = noisy_label
    scale = noisy_prior[noisy_label] / noisy_posterior[:, noisy_label]
    return reverse[noisy_label][None, :] * scale[:, None] * density_ratio

  labels = jnp.arange(reverse.shape[0])
  return jnp.moveaxis(jax.vmap(row)(labels), 0, 1)


def released_weights(clean_posterior: jax.Array, transition: jax.Array) -> jax.Array:
  """Released-code form, all noisy labels: W[b, y~, y] = T[y,y~] q_b,y / sum_k T[k,y~] q_b,k.

  Args:
    clean_posterior: q (B, C), softmax of the forward-corrected classifier.
    transition: T (C, C), T[y, y~] = p(y~ | y) (known, or the learned VolMinNet T).

  Returns:
    (B, C, C) weights; rows sum to one wherever the denominator is positive.
  """
  clean_posterior, transition = jnp.asarray(clean_posterior), jnp.asarray(transition)

  def row(noisy_label):
    unnormalised = clean_posterior * transition[:, noisy_label][None, :]
    return unnormalised / unnormalised.sum(axis=-1, keepdims=True)

  labels = jnp.arange(transition.shape[0])
  return jnp.moveaxis(jax.vmap(row)(labels), 0, 1)


def clean_rows(weights: jax.Array) -> jax.Array:
  """clamp(w, 0, 1), renormalise over the clean-label axis (last), NaN -> 0 (released code)."""
  clamped = jnp.clip(weights, 0.0, 1.0)
  normalised = clamped / clamped.sum(axis=-1, keepdims=True)
  return jnp.nan_to_num(normalised, nan=0.0, posinf=0.0, neginf=0.0)


def weights_for_labels(all_weights: jax.Array, noisy_labels: jax.Array) -> jax.Array:
  """Each example's row: (B, C, C), (B,) -> (B, C) = W[b, y~_b, :]."""
  return jnp.take_along_axis(all_weights, noisy_labels[:, None, None], axis=1)[:, 0]


def transition_constants(transition, clean_prior=None) -> dict[str, np.ndarray]:
  """T, S, S^-1 and the noisy prior n = T^T pi as float32 arrays, checked once on the host.

  Raises `sgn_jax.noise.SingularTransitionError` (naming the condition number)
  when S cannot be inverted, before any training starts.
  """
  transition = noise.check_transition(transition)
  c = transition.shape[0]
  prior = np.full(c, 1.0 / c) if clean_prior is None else np.asarray(clean_prior, np.float64)
  prior = prior / prior.sum()
  reverse = noise.reverse_transition(transition, prior)
  noise.check_invertible(reverse, what="reverse transition S")
  return dict(
      transition=transition.astype(np.float32),
      reverse=reverse.astype(np.float32),
      reverse_inv=np.linalg.inv(reverse).astype(np.float32),
      noisy_prior=(prior @ transition).astype(np.float32),
  )


def compute_weights(form: str, probs: jax.Array, noisy_labels: jax.Array,
                    constants: dict) -> jax.Array:
  """The cleaned (B, C) weights of each example's own noisy label.

  Args:
    form: 'paper' (probs = h~, noisy-label posterior) or 'released'
      (probs = q, clean posterior of a forward-corrected classifier).
    probs: (B, C) classifier probabilities.
    noisy_labels: (B,) int.
    constants: `transition_constants(...)` (T may be replaced by a learned one).
  """
  if form == "paper":
    all_weights = paper_weights(probs, constants["reverse"], constants["reverse_inv"],
                                constants["noisy_prior"])
  elif form == "released":
    all_weights = released_weights(probs, constants["transition"])
  else:
    raise ValueError(f"weight form {form!r} is not known; allowed: {list(WEIGHT_FORMS)}")
  return clean_rows(weights_for_labels(all_weights, noisy_labels))
