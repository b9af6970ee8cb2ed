"""Transition-aware weighted denoising score matching (TDSM) and its estimators.

With weights w_y = p_t(Y = y | Y~ = y~, x_t) (see `lnrd.weights`), TDSM fits the
clean-label denoiser D(x_t; sigma, y) through the noisy-label mixture

  L = lambda(sigma) || D_bar - x ||^2,   D_bar = sum_y w_y D(x_t; sigma, y),

whose gradient is 2 lambda (D_bar - x)^T sum_y w_y dD(y)/dtheta. Evaluating all C
labels with gradient costs C network passes per example, so the estimator is a
choice (`ESTIMATORS`); every one batches its label evaluations with `jax.vmap`
over a label axis inside one jitted step (no Python loop over classes):

  exact     all C labels, gradient through all of them (C passes with gradient).
  official  the released code: gradient through the given label y~ only, the
            others forward-only (stop-gradient); labels with w_y <= tau are
            dropped WITHOUT renormalising (the released behaviour, which for
            CIFAR-100 symmetric noise at high sigma silently leaves 0.6 D(y~)).
            Costs 1 pass with gradient + C forward passes (static shapes: the
            skipped labels are masked, not skipped).
  topk      the k heaviest labels per example, weights renormalised over them,
            gradient through all k (k passes with gradient).
  sampled   y_1..y_m ~ w (with gradient) and z_1..z_m ~ w (forward only),
            independent: value lambda (D_z - x)^T (D_y - x) and gradient
            2 lambda (D_z - x)^T dD_y/dtheta, with D_y, D_z the means over the
            draws, are unbiased for the exact loss and its gradient. With m = 1
            it costs one pass with gradient plus a forward pass over the rows
            where z != y only (few: the weights are confident over most of the
            sigma range), whatever C: the default.

`official`, `topk` and `exact` report the plain value lambda ||D_bar - x||^2 of
their own D_bar; `sampled` reports the unbiased (possibly negative per example)
estimate. All return per-example losses (B,).

Gradient through the weights (`weight_grad`). By default the weights are
targets: stop-gradient inside `weighted_denoising_loss` and `tdsm_loss` (the
authors' behaviour), so the loss has zero gradient w.r.t. whatever produced them
(a classifier's parameters, T). With `weight_grad=True` it flows into them:

  exact     d/dw_y of lambda ||D_bar - x||^2 = 2 lambda (D_bar - x)^T D(y), all C
            labels: the exact gradient of the exact loss.
  official  the same for the labels it keeps (y~ and w_y > tau); dropped labels get
            none (the mask is piecewise constant): the gradient of its own value.
  topk      through the k renormalised weights it keeps: the gradient of its value.
  sampled   its value does not depend on w given the draws, so the weights' share is
            the score-function (REINFORCE) term lambda v grad sum log w(drawn) over
            the 2m drawn labels (v the reported value): unbiased for the gradient of
            the exact loss w.r.t. whatever produced rows of w that sum to one (a
            classifier's softmax through `lnrd.weights.compute_weights`), and
            noisier than `exact`'s.

The denoiser's own gradient is the same with or without `weight_grad`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lnrd import edm

ESTIMATORS = ("exact", "official", "topk", "sampled")


@dataclasses.dataclass(frozen=True)
class TDSMSettings:
  """The estimator of the TDSM loss and its knobs (see `weighted_denoising_loss`).

  estimator: one of ESTIMATORS; tau: `official`'s skip threshold; top_k: `topk`'s
  k; num_samples: `sampled`'s m; residual_capacity: `sampled`'s sub-batch fraction
  for the rows whose residual label differs (0: always the whole batch).
  """
  estimator: str = "sampled"
  tau: float = 0.01
  top_k: int = 2
  num_samples: int = 1
  residual_capacity: float = 0.25

  def check(self, num_classes: int) -> "TDSMSettings":
    """Raises ValueError naming the bad `tdsm.*` value; returns self."""
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"tdsm.estimator={self.estimator!r} is not known; allowed: "
                       f"{list(ESTIMATORS)}")
    if self.estimator == "topk" and not 1 <= self.top_k <= num_classes:
      raise ValueError(f"tdsm.top_k={self.top_k} must be in [1, num_classes={num_classes}]")
    if self.estimator == "sampled" and self.num_samples < 1:
      raise ValueError(f"tdsm.num_samples={self.num_samples} must be >= 1")
    if not 0.0 <= self.residual_capacity <= 1.0:
      raise ValueError(f"tdsm.residual_capacity={self.residual_capacity} must be in [0, 1]")
    return self


def _expand_weight(w: jax.Array, ndim: int) -> jax.Array:
  """(K, B) -> (K, B, 1, ..., 1) against (K, B, ...) denoiser outputs of rank `ndim`."""
  return w.reshape(w.shape + (1,) * (ndim - w.ndim))


def denoise_labels(denoise: Callable, x_t: jax.Array, sigma: jax.Array,
                   label_sets: jax.Array, *, takes_rows: bool | None = None) -> jax.Array:
  """D(x_t; sigma, y) for K label sets at once: (K, B) int labels -> (K, B, ...).

  The network sees one batch of K*B inputs: the B rows repeated K times (rows
  i + k B, selected with `rows=` from a denoiser that closes over per-example
  inputs), each copy with its own labels and its own dropout. This is what
  `jax.vmap` over the label axis computes, without the transposes XLA inserts to
  fold a mapped axis into the convolutions' and normalisations' batch (on a CPU
  those made the vmapped step ~2x slower); K = 1 calls the denoiser directly.
  `takes_rows`: see `weighted_denoising_loss`.
  """
  num_sets, batch = label_sets.shape
  if num_sets == 1:
    return denoise(x_t, sigma, label_sets[0])[None]
  rows = jnp.tile(jnp.arange(batch), num_sets)
  out = _denoise_rows(denoise, x_t[rows], sigma[rows], label_sets.reshape(-1), rows,
                      takes_rows)
  return out.reshape((num_sets, batch) + out.shape[1:])


def _squared_error(denoised: jax.Array, clean: jax.Array) -> jax.Array:
  sq = jnp.square(denoised - clean)
  return sq.reshape(sq.shape[0], -1).sum(axis=1)


def weighted_denoising_loss(denoise: Callable, key: jax.Array, x_t: jax.Array,
                            sigma: jax.Array, clean: jax.Array, noisy_labels: jax.Array,
                            weights: jax.Array, precond: edm.Preconditioning, *,
                            estimator: str = TDSMSettings.estimator,
                            tau: float = TDSMSettings.tau, top_k: int = TDSMSettings.top_k,
                            num_samples: int = TDSMSettings.num_samples,
                            residual_capacity: float = TDSMSettings.residual_capacity,
                            weight_grad: bool = False, takes_rows: bool | None = None
                            ) -> jax.Array:
  """Per-example TDSM loss (B,) at given x_t and sigma with weights (B, C).

  Args:
    denoise: `denoise(x_t, sigma, labels) -> D` with int labels (B,); if it closes
      over per-example inputs (augment labels), it must also take `rows=` (the
      batch rows evaluated: a sub-batch, or the batch repeated per label set).
    key: PRNG key (used by `sampled` only).
    x_t, sigma, clean: the noisy input, its noise levels (B,) and the data x.
    noisy_labels: the given labels y~ (B,).
    weights: w (B, C), rows convex; constants (stop-gradient here) unless
      `weight_grad`.
    precond: gives lambda(sigma).
    estimator: one of ESTIMATORS.
    tau: `official`'s skip threshold.
    top_k: `topk`'s number of labels.
    num_samples: `sampled`'s m.
    residual_capacity: `sampled`'s forward-only pass is needed only where the
      residual label differs from the gradient label (z != y; where they agree,
      D(z) = D(y) is already known). When at most this fraction of the m*B draws
      differ, only those rows are evaluated (a sub-batch of static size, like the
      released code's candidate sub-batches); otherwise the whole batch. The
      result is the same either way; 0 always evaluates the whole batch.
    weight_grad: let the gradient flow into `weights` (module docstring: what it is
      per estimator); False (default): the authors' stop-gradient.
    takes_rows: whether `denoise` takes `rows=`; None reads its signature (a
      `rows` parameter), which misses a `**kwargs` wrapper: declare it then.
  """
  weights = weights.astype(jnp.float32)
  if not weight_grad:
    weights = jax.lax.stop_gradient(weights)
  clean = clean.astype(jnp.float32)
  lam = precond.loss_weight(sigma)
  num_classes = weights.shape[1]
  batch = x_t.shape[0]
  nd = x_t.ndim + 1
  if estimator == "exact":
    labels = jnp.broadcast_to(jnp.arange(num_classes)[:, None], (num_classes, batch))
    outs = denoise_labels(denoise, x_t, sigma, labels, takes_rows=takes_rows)
    mixed = jnp.sum(_expand_weight(weights.T, nd) * outs, axis=0)
    return lam * _squared_error(mixed, clean)
  if estimator == "official":
    labels = jnp.broadcast_to(jnp.arange(num_classes)[:, None], (num_classes, batch))
    others = jax.lax.stop_gradient(denoise_labels(denoise, x_t, sigma, labels,
                                                  takes_rows=takes_rows))
    given = denoise(x_t, sigma, noisy_labels)
    is_given = jax.nn.one_hot(noisy_labels, num_classes, dtype=bool)
    kept = jnp.where(is_given | (weights > tau), weights, 0.0)
    off = jnp.where(is_given, 0.0, kept)
    w_given = jnp.sum(jnp.where(is_given, weights, 0.0), axis=1)
    mixed = (_expand_weight(w_given, nd - 1) * given
             + jnp.sum(_expand_weight(off.T, nd) * others, axis=0))
    return lam * _squared_error(mixed, clean)
  if estimator == "topk":
    if not 1 <= top_k <= num_classes:
      raise ValueError(f"top_k={top_k} must be in [1, num_classes={num_classes}]")
    top_w, top_labels = jax.lax.top_k(weights, top_k)  # (B, k)
    top_w = top_w / jnp.maximum(top_w.sum(axis=1, keepdims=True), 1e-12)
    outs = denoise_labels(denoise, x_t, sigma, top_labels.T, takes_rows=takes_rows)
    mixed = jnp.sum(_expand_weight(top_w.T, nd) * outs, axis=0)
    return lam * _squared_error(mixed, clean)
  if estimator == "sampled":
    if num_samples < 1:
      raise ValueError(f"num_samples={num_samples} must be >= 1")
    logits = jnp.log(jnp.maximum(jax.lax.stop_gradient(weights), 0.0))
    draws = jax.random.categorical(key, logits[None], axis=-1, shape=(2 * num_samples, batch))
    grad_labels, residual_labels = draws[:num_samples], draws[num_samples:]
    d_grad_all = denoise_labels(denoise, x_t, sigma, grad_labels,
                                takes_rows=takes_rows)  # (m, B, ...)
    d_grad = d_grad_all.mean(axis=0)
    d_res = jax.lax.stop_gradient(_residual_denoised(
        denoise, x_t, sigma, grad_labels, residual_labels, d_grad_all,
        residual_capacity, takes_rows=takes_rows).mean(axis=0))
    residual = (d_res - clean).reshape(batch, -1)
    grad_part = (d_grad - clean).reshape(batch, -1)
    # value: lambda r_z.(D_y - x); gradient: 2 lambda r_z . dD_y.
    value = jnp.sum(residual * grad_part, axis=1)
    extra = jnp.sum(residual * (grad_part - jax.lax.stop_gradient(grad_part)), axis=1)
    if weight_grad:  # zero-valued; gradient lambda v grad log p(draws)
      extra = extra + _score_function_term(jax.lax.stop_gradient(value), weights, draws)
    return lam * (value + extra)
  raise ValueError(f"estimator {estimator!r} is not known; allowed: {list(ESTIMATORS)}")


def _score_function_term(value: jax.Array, weights: jax.Array, draws: jax.Array) -> jax.Array:
  """value * (log p - stop_gradient(log p)) per example, p = prod over the draws
  (K, B) of w_b,draw / sum_c w_b,c: zero, with gradient value * grad log p."""
  drawn = jnp.take_along_axis(weights, draws.T, axis=1)  # (B, K)
  total = weights.sum(axis=1, keepdims=True)
  ok = (drawn > 0) & (total > 0)
  log_p = jnp.where(ok, jnp.log(jnp.where(ok, drawn, 1.0)) - jnp.log(jnp.where(ok, total, 1.0)),
                    0.0).sum(axis=1)
  return value * (log_p - jax.lax.stop_gradient(log_p))


def _takes_rows(denoise: Callable, takes_rows: bool | None) -> bool:
  if takes_rows is not None:
    return bool(takes_rows)
  try:
    return "rows" in inspect.signature(denoise).parameters
  except (TypeError, ValueError):  # no signature (a builtin, some C extensions)
    return False


def _denoise_rows(denoise, x, sigma, labels, rows, takes_rows: bool | None = None):
  """`denoise` on a subset of the batch's rows.

  Denoisers that close over per-example inputs of the full batch (e.g. EDM's
  augment labels) take a `rows=` keyword and select them; plain ones do not.
  `takes_rows` declares which (None: read the signature).
  """
  if _takes_rows(denoise, takes_rows):
    return denoise(x, sigma, labels, rows=rows)
  return denoise(x, sigma, labels)


def _residual_denoised(denoise, x_t, sigma, grad_labels, residual_labels, d_grad_all,
                       capacity: float, *, takes_rows: bool | None = None) -> jax.Array:
  """D(x_t; sigma, z) for the residual draws z (m, B), reusing D(y) where z == y.

  With confident weights (most of the sigma range) z == y for most examples, so
  the forward-only pass runs on a small static-size sub-batch of the rows with
  z != y (`lax.cond` falls back to the full batch when more than `capacity` of
  the rows differ). No gradient flows through the result.
  """
  m, batch = residual_labels.shape
  rows_total = m * batch
  known = jax.lax.stop_gradient(d_grad_all).reshape((rows_total,) + x_t.shape[1:])
  flat_z = residual_labels.reshape(-1)

  def full(_):
    return jax.lax.stop_gradient(denoise_labels(denoise, x_t, sigma, residual_labels,
                                                takes_rows=takes_rows))

  size = int(np.ceil(capacity * rows_total))
  if size <= 0 or size >= rows_total:
    return full(None)
  differs = flat_z != grad_labels.reshape(-1)

  def subset(_):
    idx = jnp.nonzero(differs, size=size, fill_value=rows_total)[0]  # padding: out of range
    safe = jnp.minimum(idx, rows_total - 1)
    rows = safe % batch
    out = jax.lax.stop_gradient(_denoise_rows(denoise, x_t[rows], sigma[rows], flat_z[safe],
                                              rows, takes_rows))
    return known.at[idx].set(out, mode="drop").reshape((m, batch) + x_t.shape[1:])

  return jax.lax.cond(differs.sum() <= size, subset, full, None)


def tdsm_loss(denoise: Callable, weight_fn: Callable, key: jax.Array, clean: jax.Array,
              noisy_labels: jax.Array, precond: edm.Preconditioning, *,
              sigma: jax.Array | None = None, noise: jax.Array | None = None,
              weight_grad: bool = False, return_aux: bool = False,
              takes_rows: bool | None = None, **estimator_kwargs):
  """TDSM at x_t = x + sigma n: weights at (x_t, sigma), then the estimator's loss.

  sigma and n are drawn from `key` unless given (the draws are then exactly the
  ones the default path makes: `key` is split into sigma, noise and estimator keys
  whatever is given).

  Args:
    denoise: `denoise(x_t, sigma, labels) -> D`.
    weight_fn: `weight_fn(x_t, sigma, noisy_labels) -> (B, C)` convex weights: a
      function, or a pytree with that call (`lnrd.weights.WeightModel`: the
      classifier's parameters and T as leaves, to differentiate or vmap over).
    key: PRNG key.
    clean, noisy_labels: data x (B, ...) and its given labels (B,).
    precond: sigma distribution and lambda.
    sigma: noise levels (B,); None: drawn from `precond`.
    noise: n with the shape of `clean`; None: drawn N(0, I).
    weight_grad: gradient through the weights into `weight_fn`'s parameters
      (module docstring: what it is per estimator). False: stop-gradient (the
      authors' behaviour): the loss is then constant in them.
    return_aux: return `(mean loss, aux)` instead (for
      `jax.value_and_grad(..., has_aux=True)`).
    takes_rows: whether `denoise` takes `rows=` (see `weighted_denoising_loss`).
    **estimator_kwargs: estimator, tau, top_k, num_samples, residual_capacity
      (`weighted_denoising_loss`).

  Returns:
    (per-example loss (B,), sigma (B,), weights (B, C)); with `return_aux`,
    (mean loss, dict(per_example=(B,), sigma=(B,), noise=n, weights=(B, C))).
  """
  sigma_key, noise_key, estimator_key = jax.random.split(key, 3)
  sigma, noise, x_t = edm.noisy_input(sigma_key, noise_key, clean, precond, sigma, noise)
  weights = weight_fn(x_t, sigma, noisy_labels)
  if not weight_grad:
    weights = jax.lax.stop_gradient(weights)
  loss = weighted_denoising_loss(denoise, estimator_key, x_t, sigma, clean, noisy_labels,
                                 weights, precond, weight_grad=weight_grad,
                                 takes_rows=takes_rows, **estimator_kwargs)
  if return_aux:
    return loss.mean(), dict(per_example=loss, sigma=sigma, noise=noise, weights=weights)
  return loss, sigma, weights
