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
and replaces NaN by 0 exactly as the released code does.

The functions here are differentiable: gradient flows from the weights into the
classifier's probabilities and into T. Whether it is used is the loss's choice:
`lnrd.tdsm_loss` treats the weights as targets (stop-gradient, the authors'
behaviour) unless asked for `weight_grad=True`. `transition_constants` takes a
concrete T (checked on the host, NumPy) or a traced one (jit/vmap/grad; jnp).

Every function computes the weights of ALL noisy labels at once by vmapping a
per-label row over the label axis; `weights_for_labels` then picks each
example's row. Shapes: B examples, C classes; matrices are [y~, y].

`WeightModel` (a pytree: the transition constants and the classifier's
parameters) turns (x_t, sigma, y~) into the weights (B, C) through a classifier;
`classifier_weights` and `exact_weights` build one. The loss calls it here
directly (`lnrd.diffusion` re-exports the three).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

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


def transition_constants(transition, clean_prior=None) -> dict:
  """T, S, S^-1 and the noisy prior n = T^T pi, for `compute_weights`.

  A concrete T (NumPy, or a concrete jax array) is checked once on the host and
  the constants are computed in float64 and returned as float32 NumPy arrays;
  raises `sgn_jax.noise.SingularTransitionError` (naming the condition number)
  when S cannot be inverted, before any training starts. A traced T or prior
  (inside jit, vmap or grad: a learned T, a vmap over noise rates) goes to
  `transition_constants_jnp`, unchecked.
  """
  if _is_traced(transition) or _is_traced(clean_prior):
    return transition_constants_jnp(transition, clean_prior)
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


def _is_traced(value) -> bool:
  return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def transition_constants_jnp(transition, clean_prior=None) -> dict[str, jax.Array]:
  """`transition_constants` in jnp: traceable and differentiable in T and the prior.

  The same constants, in T's floating dtype (float32 unless x64 is on), with no
  host checks (a singular S gives non-finite S^-1, whose weights `clean_rows`
  turns into 0): check a concrete T with `transition_constants` first. A noisy
  class that is never produced gets a uniform row of S, as
  `sgn_jax.noise.reverse_transition` does.

  Args:
    transition: T (C, C), T[y, y~] = p(y~ | y), rows summing to one.
    clean_prior: pi (C,) (class counts allowed: normalised here); None = uniform.

  Returns:
    dict(transition=T, reverse=S, reverse_inv=S^-1, noisy_prior=T^T pi).
  """
  transition = jnp.asarray(transition)
  if not jnp.issubdtype(transition.dtype, jnp.floating):
    transition = transition.astype(jnp.float32)
  c = transition.shape[0]
  prior = (jnp.full((c,), 1.0 / c, transition.dtype) if clean_prior is None
           else jnp.asarray(clean_prior, transition.dtype))
  prior = prior / prior.sum()
  joint = transition * prior[:, None]  # [y, y~]
  marginal = joint.sum(axis=0)  # p(y~)
  produced = marginal > 0
  reverse = jnp.where(produced[:, None], joint.T / jnp.where(produced, marginal, 1.0)[:, None],
                      1.0 / c)
  return dict(transition=transition, reverse=reverse, reverse_inv=jnp.linalg.inv(reverse),
              noisy_prior=prior @ transition)


def compute_weights(form: str, probs: jax.Array, noisy_labels: jax.Array,
                    constants: dict) -> jax.Array:
  """The cleaned (B, C) weights of each example's own noisy label.

  Args:
    form: 'paper' (probs = h~, noisy-label posterior) or 'released'
      (probs = q, clean posterior of a forward-corrected classifier).
    probs: (B, C) classifier probabilities.
    noisy_labels: (B,) int.
    constants: `transition_constants(...)` (T may be replaced by a learned one;
      the released form reads "transition" only, the paper form "reverse",
      "reverse_inv" and "noisy_prior").
  """
  if form == "paper":
    all_weights = paper_weights(probs, constants["reverse"], constants["reverse_inv"],
                                constants["noisy_prior"])
  elif form == "released":
    all_weights = released_weights(probs, constants["transition"])
  else:
    raise ValueError(f"weight form {form!r} is not known; allowed: {list(WEIGHT_FORMS)}")
  return clean_rows(weights_for_labels(all_weights, noisy_labels))


# ---- the weights of a classifier: what the loss calls --------------------------

@functools.partial(jax.tree_util.register_dataclass, data_fields=("constants", "params"),
                   meta_fields=("form", "probs_fn", "noisy_target"))
@dataclasses.dataclass
class WeightModel:
  """Turns (x_t, sigma, y~) into TDSM's weights (B, C): `form` (released | paper) of
  this module with the transition constants, from the clean posterior q (or h~
  when `noisy_target`: the classifier models the noisy label).

  A pytree whose leaves are `constants` and `params`: differentiate a loss w.r.t.
  it (with `weight_grad=True`), vmap over stacked constants, or pass it through jit.

  Attributes:
    form: 'released' or 'paper'.
    constants: `transition_constants(T)` (the released form reads
      "transition" only: {"transition": T} with a learned T will do; to
      differentiate the paper form w.r.t. T, compute the constants from T inside
      the differentiated function: `transition_constants` traces).
    probs_fn: `probs_fn(x_t, sigma) -> (B, C)`, or `probs_fn(params, x_t, sigma)`
      when `params` is given.
    noisy_target: probs are h~ (paper form only).
    params: the classifier's parameters (any pytree) or None.
  """
  form: str
  constants: dict
  probs_fn: Callable
  noisy_target: bool = False
  params: Any = None

  def __call__(self, x_t, sigma, noisy_labels):
    probs = (self.probs_fn(x_t, sigma) if self.params is None
             else self.probs_fn(self.params, x_t, sigma))
    consts = {k: jnp.asarray(v) for k, v in self.constants.items()}
    if self.form == "paper" and not self.noisy_target:
      probs = probs @ consts["transition"]  # h~ = T^T q
    return compute_weights(self.form, probs, noisy_labels, consts)


def classifier_weights(classifier, form: str, clean_prior=None,
                       transition=None) -> WeightModel:
  """The weights of a time-dependent classifier (`lnrd.runs.ExportedClassifier`, or any
  object with `.probs(x_t, sigma)`, `.transition`, `.noisy_target`), with its T unless
  `transition` is given. ValueError for the released form with a noisy-label
  classifier (it needs the clean posterior)."""
  if form not in WEIGHT_FORMS:
    raise ValueError(f"tdsm.weight_form={form!r}; allowed: {list(WEIGHT_FORMS)}")
  if form == "released" and classifier.noisy_target:
    raise ValueError(
        "tdsm.weight_form='released' needs a classifier of the clean label (trained with "
        "classifier.transition='known' or 'learned'); this one was trained with "
        "transition='none' and models the noisy label: use tdsm.weight_form='paper'")
  used = classifier.transition if transition is None else transition
  consts = transition_constants(np.asarray(used, np.float64), clean_prior)
  return WeightModel(form, consts, classifier.probs, noisy_target=classifier.noisy_target)


def exact_weights(mixture, transition, form: str = "released", clean_prior=None) -> WeightModel:
  """The exact weights of a 2-D Gaussian mixture (`sgn_jax.data.gmm`): an oracle."""
  consts = transition_constants(np.asarray(transition, np.float64), clean_prior)
  return WeightModel(form, consts, lambda x_t, sigma: mixture.class_posterior(x_t, sigma))
