r"""Estimating the label-noise transition matrix T from data.

`sgn_jax.noise` models and samples label noise; this module estimates it. Every
estimator returns a row-stochastic ``C × C`` matrix in the library's convention

    T[i, j] = p(Ỹ = j | Y = i)      (row = clean class, column = noisy label),

float64 NumPy, except the VolMinNet read-out, which is jax.numpy and jit-able (it
sits inside a training step). All functions are pure and take arrays.

Which estimator needs what:

================================  ==========================  =========================
estimator                         needs                       assumption
================================  ==========================  =========================
`anchor_transition`               p(ỹ | x) on noisy data      anchor points exist and
                                  (a classifier trained on    the posteriors are
                                  the noisy labels)           calibrated
`confusion_transition`            a trusted subset: clean     the subset is drawn like
                                  AND noisy labels            the rest
`gold_transition`                 a trusted subset's clean    calibrated posteriors
                                  labels and p(ỹ | x) on it   (Hendrycks et al. 2018)
`soft_confusion_transition`       p(y | x) and labels         calibrated p(y | x)
`moment_transition`               two label sets, one with    their errors independent
                                  a known T                   given the clean class
`volmin_transition`               VolMinNet's learned theta   see "VolMinNet" below
================================  ==========================  =========================

`transition_error` is the figure of merit used in the tests: the mean over rows of
the L1 distance between rows, ``(1/C) Σ_i Σ_j |T̂[i, j] − T[i, j]|`` (the
``learned_transition_error`` of `lnrd.tasks.noisy_classifier`).

Anchor points (Patrini et al., CVPR 2017, "forward correction"). If ``x_i`` is an
anchor point of class ``i``, ``p(Y = i | x_i) = 1``, then
``p(Ỹ = j | x_i) = Σ_y p(y | x_i) T[y, j] = T[i, j]``: row ``i`` of T is the
noisy posterior at ``x_i``. Patrini's estimate takes for ``x_i`` the example with
the highest ``p̂(ỹ = i | x)`` or, against outliers of an over-confident network,
the highest below the 97th percentile (`quantile=0.97`, their `filter_outlier`,
used as is by T-revision and VolMinNet's baselines). Where no example is an
anchor (overlapping classes), row ``i`` is a mixture of rows of T and has a
smaller diagonal than the truth.

VolMinNet (Li et al., ICML 2021). T is parametrised by logits ``θ`` (`C × C`):

    A = I + (1 − I) ⊙ sigmoid(θ),   T[i, :] = A[i, :] / Σ_j A[i, j]

so the diagonal is fixed before normalisation and ``T[i, j] / T[i, i] =
sigmoid(θ[i, j]) < 1``: every row is diagonally dominant, and θ's diagonal is
unused. TDSM's code (`lnrd.classifier_loss.init_volmin_theta`) starts from
``θ = −2``: ``T_ii = 1 / (1 + (C − 1)·0.1192)`` (0.737 for C = 4, 0.484
for C = 10). The classifier ``f`` and θ are trained together on the noisy labels
with ``−log (softmax(f(x)) @ T)[ỹ] + λ·log det T`` (λ = 1e-4). `volmin_transition`
reads T out of θ (`lnrd.classifier_loss.volmin_transition` calls it); `volmin_theta`
is its inverse, to start θ from another estimate (e.g. `anchor_transition`).

Why the learned T can stay near, or drift to, the identity. The likelihood term
alone does not identify T: any ``(f, T)`` with ``softmax(f(x)) @ T = p(ỹ | x)`` is
optimal, ``T = I`` with ``f`` = the noisy posterior included; only ``λ·log det T``
prefers the true (smallest-volume) T along that flat valley. Which point training
reaches is a race. The network (thousands of weights) fits the noisy posterior
within a few hundred steps, while under Adam each entry of θ moves by at most
about the learning rate per step, and TDSM trains θ in the network's optimiser at
the network's rate (1e-3). Whatever noise T does not yet represent, ``f`` absorbs;
after that θ's entries that should be 0 are still pushed down (no ``f`` can undo
spurious mass in T) while those that should grow are not pushed up (``f`` already
explains the flips), and λ = 1e-4 is far too weak to pull back: T drifts toward I.
A larger λ is not the cure: it drags T past the truth (the volume term then wins
over the likelihood). Measured on the 2-D Gaussian mixture (30% noise, true
diagonal 0.70; MLP 2-64-64-C, Adam 1e-3, batch 256, 20,000 points;
`experiments/volmin_gmm.py`), mean learned diagonal / `transition_error`:

==========================  ==============  ==============  ==============
setting                     4-class sym     4-class pair    3-class sym
==========================  ==============  ==============  ==============
θ₀ = −2 (T_ii at start)     0.737           0.737           0.808
authors (λ 1e-4), 2k steps  0.701 / 0.022   0.888 / 0.473   0.788 / 0.175
authors, 20k steps          0.698 / 0.027   1.000 / 0.600   0.739 / 0.079
λ 1e-2, 2k steps            0.686 / 0.032   0.856 / 0.406   0.747 / 0.094
λ 1e-1, 2k steps            0.493 / 0.415   0.636 / 0.128   0.563 / 0.273
λ 1e-1, 20k steps           0.362 / 0.675   0.496 / 0.408   0.413 / 0.575
θ's Adam lr 1e-2 (10× net)  0.696 / 0.025   0.698 / 0.015   0.705 / 0.015
θ₀ = anchors of CE clf.     0.700 / 0.025   0.700 / 0.010   0.710 / 0.026
θ₀ = −6 (T_ii ≈ 0.99)       0.992 / 0.584   0.998 / 0.598   0.995 / 0.589
anchors of CE clf., alone   0.714 / 0.045   0.733 / 0.071   0.740 / 0.080
==========================  ==============  ==============  ==============

So with the authors' settings VolMinNet "recovers" T only where θ₀ = −2 already
sits next to it (4 classes, 30% symmetric: T_ii 0.737 vs 0.70); it recovers T
(error <= 0.03 in 2k steps) when θ learns about 10× faster than the network, or
starts from an anchor estimate (`volmin_theta(anchor_transition(...))`); an
identity-biased start stays there. The clean accuracy of ``argmax f`` was
0.99-1.00 in every row: a wrong T here costs calibration, not accuracy.
`lnrd.classifier_loss`'s VolMinNet, trained by `lnrd.time_classifier`, is the TDSM
authors' (same θ₀, formula, sign, λ and shared Adam); this is a property of the
method, not a bug there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sgn_jax import noise

__all__ = [
    "anchor_indices",
    "anchor_transition",
    "confusion_transition",
    "gold_transition",
    "moment_transition",
    "soft_confusion_transition",
    "transition_error",
    "volmin_theta",
    "volmin_transition",
]


def _posteriors(probs, name: str) -> np.ndarray:
  """(n, C) float64 rows of probabilities (finite, >= 0, summing to 1 within 1e-3)."""
  arr = np.asarray(probs, np.float64)
  if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
    raise ValueError(f"{name} must have shape (n, C) with n >= 1 and C >= 2, got {arr.shape}")
  if not np.all(np.isfinite(arr)) or np.any(arr < 0):
    raise ValueError(f"{name} must be finite and nonnegative")
  worst = float(np.max(np.abs(arr.sum(axis=1) - 1.0)))
  if worst > 1e-3:
    raise ValueError(f"{name} rows must sum to 1 (posteriors, not logits); the worst is off "
                     f"by {worst:.3g}")
  return arr


def _labels(labels, name: str, n: int, c: int) -> np.ndarray:
  arr = np.asarray(labels)
  if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{name} must be an integer array of shape ({n},), got {arr.dtype} "
                     f"{arr.shape}")
  if n and (arr.min() < 0 or arr.max() >= c):
    raise ValueError(f"{name} must lie in [0, {c}), got [{arr.min()}, {arr.max()}]")
  return arr.astype(np.int64)


def _normalise_rows(counts: np.ndarray) -> np.ndarray:
  """Rows divided by their sums; a row without mass becomes the identity row."""
  mass = counts.sum(axis=1, keepdims=True)
  return np.where(mass > 0, counts / np.where(mass > 0, mass, 1.0), np.eye(counts.shape[0]))


def transition_error(estimate, truth) -> float:
  """Mean L1 row error ``(1/C) Σ_i Σ_j |T̂[i, j] − T[i, j]|`` of two ``C × C`` matrices.

  Args:
    estimate: (C, C) estimated T.
    truth: (C, C) reference T.

  Returns:
    The error, a float in [0, 2].
  """
  estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
  if estimate.shape != truth.shape or estimate.ndim != 2:
    raise ValueError(f"shapes differ or are not 2-D: {estimate.shape} vs {truth.shape}")
  return float(np.abs(estimate - truth).sum(axis=1).mean())


# -----------------------------------------------------------------------------
# Without clean labels.


def anchor_indices(noisy_posteriors, quantile: float | None = 0.97,
                   num_anchors: int = 1) -> np.ndarray:
  """The anchor examples of each class, as Patrini et al.'s `est` picks them.

  For class ``i`` the examples are ranked by ``p̂(ỹ = i | x)``. `quantile=None`:
  the `num_anchors` highest. `quantile=q`: Patrini's outlier filter — the values
  at or above the q-th percentile (numpy ``method="higher"``) are set to 0 and the
  `num_anchors` highest of the rest are taken (the example just below the top
  ``1 − q`` fraction).

  Args:
    noisy_posteriors: (n, C) ``p̂(ỹ | x_n)`` of a classifier trained on the noisy
      labels.
    quantile: in (0, 1], or None (no filter).
    num_anchors: examples per class (>= 1, at most n).

  Returns:
    (C, num_anchors) int64 example indices, best first.
  """
  probs = _posteriors(noisy_posteriors, "noisy_posteriors")
  n, _ = probs.shape
  if not 1 <= int(num_anchors) <= n:
    raise ValueError(f"num_anchors={num_anchors} must be in [1, n={n}]")
  if quantile is not None and not 0.0 < quantile <= 1.0:
    raise ValueError(f"quantile={quantile} must be in (0, 1] or None")
  scores = probs.T.copy()  # (C, n)
  if quantile is not None:
    threshold = np.percentile(scores, 100.0 * quantile, axis=1, method="higher")
    scores[scores >= threshold[:, None]] = 0.0
  # stable sort of -score: ties keep the lowest index first, as np.argmax does
  return np.argsort(-scores, axis=1, kind="stable")[:, :int(num_anchors)]


def anchor_transition(noisy_posteriors, quantile: float | None = 0.97,
                      num_anchors: int = 1) -> np.ndarray:
  """Anchor-point estimate (Patrini et al. 2017): ``T̂[i, :] = p̂(ỹ | x_anchor(i))``.

  Row ``i`` is the (mean) noisy posterior of the anchor examples of class ``i``
  (`anchor_indices`), renormalised. Exact when the anchors have
  ``p(y = i | x) = 1`` and the posteriors are exact; a classifier's posteriors
  pass their calibration error straight into T̂.

  Args:
    noisy_posteriors: (n, C) ``p̂(ỹ | x_n)``, e.g. softmax outputs of a network
      trained with cross-entropy on the noisy labels.
    quantile: Patrini's outlier filter (0.97 in their and VolMinNet's code), or
      None for the plain arg-max.
    num_anchors: anchors averaged per class.

  Returns:
    (C, C) float64 row-stochastic T̂.
  """
  probs = _posteriors(noisy_posteriors, "noisy_posteriors")
  rows = probs[anchor_indices(probs, quantile, num_anchors)].mean(axis=1)  # (C, C)
  return rows / rows.sum(axis=1, keepdims=True)


def soft_confusion_transition(clean_posteriors, labels) -> np.ndarray:
  """``T̂[i, j] = Σ_n p(i | x_n)·1[ỹ_n = j] / Σ_n p(i | x_n)``: soft clean labels.

  The confusion of `labels` against the classifier's clean posteriors used as
  soft clean labels (the corrector's `soft_confusion` estimate of its own
  labels' noise, where `labels` = its arg-max predictions). Needs no T, but is
  only as good as the posteriors' calibration: over-confident one-hot posteriors
  that agree with `labels` give T̂ = I. A class no posterior mass reaches keeps
  the identity row.

  Args:
    clean_posteriors: (n, C) ``p(y | x_n)``.
    labels: (n,) integer labels whose T is wanted.

  Returns:
    (C, C) float64 row-stochastic T̂.
  """
  probs = np.asarray(clean_posteriors, np.float64)
  if probs.ndim != 2:
    raise ValueError(f"clean_posteriors must be (n, C), got shape {probs.shape}")
  n, c = probs.shape
  labels = _labels(labels, "labels", n, c)
  counts = probs.T @ np.eye(c)[labels]  # (C, C): [i, j] = Σ_n p(i|x_n) 1[ỹ_n = j]
  return _normalise_rows(counts)


def moment_transition(labels, reference_labels, reference_transition) -> np.ndarray:
  """T of `labels` from a second label set whose T is known (method of moments).

  With ``a`` = `labels` (whose ``T_a[y, j] = p(a = j | y)`` is wanted) and ``b`` =
  `reference_labels` with known ``T_b`` = `reference_transition`, and ``a``, ``b``
  independent given the clean class ``y``, the observed confusion is

      O[j, k] = p(b = k | a = j) = Σ_y R[j, y] T_b[y, k],   R[j, y] = p(y | a = j),

  so ``R = O T_b⁻¹`` (rows clipped at 0 and renormalised) and by Bayes
  ``T_a[y, j] = R[j, y] p(a = j) / Σ_j' R[j', y] p(a = j')``. The corrector
  (`sgn_jax.corrector`) uses it with ``a`` = its predicted labels and ``b`` = the
  given noisy labels with their noise T. A clean class no estimate reaches keeps
  the identity row.

  Args:
    labels: (n,) integer labels ``a``.
    reference_labels: (n,) integer labels ``b``.
    reference_transition: (C, C) ``T_b``, invertible and informative
      (`noise.check_invertible`, `noise.check_informative`).

  Returns:
    (C, C) float64 row-stochastic ``T̂_a``.

  Raises:
    noise.SingularTransitionError: ``T_b`` (numerically) singular or
      uninformative.
  """
  T = noise.check_transition(reference_transition)
  c = T.shape[0]
  noise.check_invertible(T, "the noise transition matrix")
  noise.check_informative(T, "the noise transition matrix")
  observed = noise.empirical_transition(labels, reference_labels, c)  # [j, k] = p(b=k | a=j)
  reverse = np.clip(observed @ np.linalg.inv(T), 0.0, None)
  reverse /= np.maximum(reverse.sum(axis=1, keepdims=True), 1e-12)
  prior = np.bincount(np.asarray(labels), minlength=c) / len(labels)  # p(a = j)
  joint = reverse.T * prior[None, :]  # [y, j] = p(y, a = j)
  return _normalise_rows(joint)


# -----------------------------------------------------------------------------
# With a trusted (clean) subset.


def confusion_transition(clean_labels, noisy_labels, num_classes: int,
                         smoothing: float = 0.0) -> np.ndarray:
  """Empirical T of a trusted subset: ``(#{y = i, ỹ = j} + α) / (#{y = i} + C·α)``.

  With ``α`` = `smoothing` = 0 this is `noise.empirical_transition` (a clean class
  absent from the subset keeps the identity row); ``α > 0`` is Laplace (add-α)
  smoothing, which gives such a class the uniform row and keeps every entry
  positive. Each row's standard error is about ``sqrt(T[i, j](1 − T[i, j]) / n_i)``.

  Args:
    clean_labels: (n,) trusted clean labels.
    noisy_labels: (n,) the noisy labels of the same examples.
    num_classes: C.
    smoothing: α >= 0.

  Returns:
    (C, C) float64 row-stochastic T̂.
  """
  if not np.isfinite(smoothing) or smoothing < 0:
    raise ValueError(f"smoothing={smoothing} must be finite and >= 0")
  if smoothing == 0:
    return noise.empirical_transition(clean_labels, noisy_labels, num_classes)
  c = int(num_classes)
  clean = _labels(clean_labels, "clean_labels", np.shape(clean_labels)[0], c)
  noisy = _labels(noisy_labels, "noisy_labels", clean.shape[0], c)
  counts = np.bincount(clean * c + noisy, minlength=c * c).reshape(c, c) + float(smoothing)
  return counts / counts.sum(axis=1, keepdims=True)


def gold_transition(clean_labels, noisy_posteriors) -> np.ndarray:
  """Gold loss correction (Hendrycks et al. 2018): ``T̂[i, :] = mean p̂(ỹ | x)`` over the
  trusted examples of clean class ``i``.

  ``E[p(ỹ | x) | y = i] = Σ_y' E[p(y' | x) | y = i] T[y', :]``, which is ``T[i, :]``
  when the clean classes are separable (``p(y | x)`` one-hot); overlap pulls the
  rows toward each other. Unlike `confusion_transition` it uses the classifier
  trained on all noisy data, so a small trusted subset suffices. A class absent
  from the subset keeps the identity row.

  Args:
    clean_labels: (m,) clean labels of the trusted subset.
    noisy_posteriors: (m, C) ``p̂(ỹ | x)`` on the same examples.

  Returns:
    (C, C) float64 row-stochastic T̂.
  """
  probs = _posteriors(noisy_posteriors, "noisy_posteriors")
  m, c = probs.shape
  clean = _labels(clean_labels, "clean_labels", m, c)
  return _normalise_rows(np.eye(c)[clean].T @ probs)


# -----------------------------------------------------------------------------
# VolMinNet's learned T.


def volmin_transition(theta) -> jax.Array:
  """VolMinNet's T from its logits θ (the authors' formula; jit-able).

      A = I + (1 − I) ⊙ sigmoid(θ)           # diagonal fixed to 1
      T[i, :] = A[i, :] / max(Σ_j |A[i, j]|, 1e-12)

  (`torch.nn.functional.normalize(A, p=1, dim=1)`), so rows sum to 1. At θ = c
  everywhere: ``T_ii = 1 / (1 + (C − 1) s)``, ``T_ij = s / (1 + (C − 1) s)``,
  ``s = sigmoid(c)`` (c = −2, C = 10: 0.4824 and 0.0575).

  Args:
    theta: (C, C) unconstrained logits (the diagonal is unused).

  Returns:
    (C, C) float32 row-stochastic T with ``T[y, ỹ] = p(ỹ | y)``.
  """
  theta = jnp.asarray(theta, jnp.float32)
  eye = jnp.eye(theta.shape[-1], dtype=jnp.float32)
  a = eye + (1.0 - eye) * jax.nn.sigmoid(theta)
  norm = jnp.maximum(jnp.sum(jnp.abs(a), axis=-1, keepdims=True), 1e-12)
  return a / norm


def volmin_theta(transition, eps: float = 1e-6) -> np.ndarray:
  """The θ whose `volmin_transition` is `transition` (e.g. to start VolMinNet at an
  anchor estimate instead of θ = −2).

  ``θ[i, j] = logit(T[i, j] / T[i, i])`` off the diagonal, 0 on it (unused). Only
  diagonally dominant rows (``T[i, j] < T[i, i]``) are reachable; ratios are
  clipped to ``[eps, 1 − eps]``.

  Args:
    transition: (C, C) row-stochastic T with a positive diagonal.
    eps: clipping of the ratios.

  Returns:
    (C, C) float64 θ.
  """
  T = noise.check_transition(transition)
  diag = np.diag(T)
  if np.any(diag <= 0):
    raise ValueError("volmin_theta needs a positive diagonal")
  ratio = np.clip(T / diag[:, None], eps, 1.0 - eps)
  theta = np.log(ratio) - np.log1p(-ratio)
  np.fill_diagonal(theta, 0.0)
  return theta
