"""Log-ratio transforms of compositional data (the probability simplex).

Used by SGN (Englesson & Azizpour, ICLR 2024) to turn classification into
regression: a label ``y`` becomes the point ``t = ilr(LS(y))`` of ``R^{K-1}``
and a regression output ``μ ∈ R^{K-1}`` becomes the class probabilities
``ilr⁻¹(μ)``.

Notation (``K ≥ 2`` classes, compositions on the LAST axis):

* ``clr(p) = log p − mean(log p)``: centred log-ratio, in the sum-zero
  hyperplane of ``R^K``.
* ``H``: the ``(K−1)×K`` Helmert sub-matrix; its rows are an orthonormal basis
  of that hyperplane (``H Hᵀ = I_{K−1}``, ``H 1 = 0``, ``Hᵀ H = I − 11ᵀ/K``).
* ``ilr(p) = clr(p) Hᵀ``: isometric log-ratio, an isometry from the simplex
  with the Aitchison geometry onto ``R^{K−1}``.
* ``ilr⁻¹(z) = softmax(z H)``: the closure of ``exp(clr)``.

All functions are pure ``jnp``: safe under ``jit``, ``vmap`` and ``grad``. The
``*_from_log`` variants take log-probabilities and never form ``log(p)`` of a
rounded probability; use them (or `ilr_targets`) when probabilities can be
close to 0 or 1. Probabilities given to `clr` / `ilr` must be strictly
positive (as in the authors' code, there is no clipping).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


# --------------------------------------------------------------------------- #
# Helpers.
# --------------------------------------------------------------------------- #
def concrete_float(x) -> float | None:
  """float(x) when x is a concrete scalar, None when it is traced."""
  try:
    return float(x)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
          jax.errors.TracerBoolConversionError, TypeError):
    return None


def _float_dtype(x) -> jnp.dtype:
  """The floating dtype to compute in: x's own if at least float32, else float32."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def check_num_classes(num_classes) -> int:
  k = int(num_classes)
  if k < 2:
    raise ValueError(f"need at least 2 classes, got num_classes={num_classes!r}")
  return k


def check_gamma(gamma, *, name: str = "gamma") -> None:
  """Raises ValueError unless 0 < gamma < 1 (skipped when gamma is traced)."""
  g = concrete_float(gamma)
  if g is not None and not 0.0 < g < 1.0:
    raise ValueError(f"{name} must be in the open interval (0, 1), got {name}={gamma!r}")


# --------------------------------------------------------------------------- #
# Helmert basis.
# --------------------------------------------------------------------------- #
@functools.lru_cache(maxsize=None)
def _helmert_np(k: int) -> np.ndarray:
  """The (k−1)×k Helmert sub-matrix in numpy float64 (cached, read-only)."""
  h = np.zeros((k - 1, k), np.float64)
  for i in range(k - 1):
    h[i, :i + 1] = 1.0
    h[i, i + 1] = -(i + 1.0)
    h[i] /= np.sqrt((i + 1.0) * (i + 2.0))
  h.setflags(write=False)
  return h


def helmert(num_classes: int, dtype=jnp.float32) -> jax.Array:
  """The ``(K−1)×K`` Helmert sub-matrix ``H``.

  Row ``i`` (0-based) is ``[1, …, 1 (i+1 times), −(i+1), 0, …, 0] / √((i+1)(i+2))``.
  Rows are orthonormal and each sums to 0, so ``H Hᵀ = I_{K−1}`` and
  ``Hᵀ H = I_K − 11ᵀ/K``. Equals ``scipy.linalg.helmert(K)`` (its default
  ``full=False`` form). Computed once per ``K`` in float64, returned in ``dtype``
  (float32 by default).
  """
  k = check_num_classes(num_classes)
  return jnp.asarray(_helmert_np(k), dtype=dtype)


# --------------------------------------------------------------------------- #
# clr / ilr and inverses.
# --------------------------------------------------------------------------- #
def clr_from_log(log_p: jax.Array) -> jax.Array:
  """Centred log-ratio from log-probabilities: ``log_p − mean(log_p)`` (last axis).

  Invariant to adding a constant to ``log_p``, so unnormalised logits work too.
  """
  log_p = jnp.asarray(log_p)
  log_p = log_p.astype(_float_dtype(log_p))
  return log_p - jnp.mean(log_p, axis=-1, keepdims=True)


def clr(p: jax.Array) -> jax.Array:
  """Centred log-ratio ``clr(p) = log p − mean(log p)`` over the last axis.

  ``p`` (..., K) must be strictly positive (it need not be normalised:
  ``clr`` is scale invariant).
  """
  p = jnp.asarray(p)
  return clr_from_log(jnp.log(p.astype(_float_dtype(p))))


def ilr_from_log(log_p: jax.Array) -> jax.Array:
  """Isometric log-ratio from log-probabilities: ``clr_from_log(log_p) Hᵀ``.

  log_p: (..., K) → (..., K−1).
  """
  c = clr_from_log(log_p)
  return c @ helmert(c.shape[-1], c.dtype).T


def ilr(p: jax.Array) -> jax.Array:
  """Isometric log-ratio ``ilr(p) = clr(p) Hᵀ`` with ``H`` = `helmert` (K).

  p: (..., K) strictly positive → (..., K−1).
  """
  c = clr(p)
  return c @ helmert(c.shape[-1], c.dtype).T


def ilr_inverse_log(z: jax.Array) -> jax.Array:
  """Log of the inverse ilr: ``log_softmax(z H)``. z: (..., K−1) → (..., K)."""
  z = jnp.asarray(z)
  z = z.astype(_float_dtype(z))
  return jax.nn.log_softmax(z @ helmert(z.shape[-1] + 1, z.dtype), axis=-1)


def ilr_inverse(z: jax.Array) -> jax.Array:
  """Inverse ilr ``ilr⁻¹(z) = softmax(z H)`` = closure of ``exp(clr)``.

  z: (..., K−1) → probabilities (..., K). ``ilr_inverse(ilr(p)) == p / sum(p)``.
  """
  z = jnp.asarray(z)
  z = z.astype(_float_dtype(z))
  return jax.nn.softmax(z @ helmert(z.shape[-1] + 1, z.dtype), axis=-1)


# --------------------------------------------------------------------------- #
# Targets and geometry.
# --------------------------------------------------------------------------- #
def label_smoothing(onehot: jax.Array, gamma) -> jax.Array:
  """Label smoothing ``LS(y) = (1 − γ)·onehot + γ/K`` over the last axis (K).

  Rows that sum to 1 keep summing to 1. ``gamma`` must be in [0, 1] (checked
  when concrete).
  """
  g = concrete_float(gamma)
  if g is not None and not 0.0 <= g <= 1.0:
    raise ValueError(f"gamma must be in [0, 1], got gamma={gamma!r}")
  onehot = jnp.asarray(onehot)
  onehot = onehot.astype(_float_dtype(onehot))
  k = onehot.shape[-1]
  return (1.0 - gamma) * onehot + gamma / k


def ilr_targets(labels: jax.Array, num_classes: int, gamma, dtype=jnp.float32) -> jax.Array:
  """Regression targets ``t = ilr(LS(onehot(labels)))`` in closed form.

  With ``a = log(1 − γ + γ/K)`` (the labelled class) and ``b = log(γ/K)`` (all
  others), ``clr(LS(y)) = (a − b)·(e_y − 1/K)``; the rows of ``H`` sum to 0, so

      t = (a − b)·H[:, y] = log1p((1 − γ)·K/γ) · H[:, y].

  No ``log`` of a rounded probability is taken. labels: (...) int in [0, K);
  returns (..., K−1) in ``dtype``. ``0 < γ < 1`` is required (checked when
  concrete): γ = 0 gives infinite targets, γ = 1 gives t = 0 for every label.
  """
  k = check_num_classes(num_classes)
  check_gamma(gamma)
  h_t = helmert(k, dtype).T                                  # (K, K−1)
  scale = jnp.log1p((1.0 - gamma) * k / gamma).astype(dtype)
  return scale * jnp.take(h_t, jnp.asarray(labels).astype(jnp.int32), axis=0)


def aitchison_distance(p: jax.Array, q: jax.Array) -> jax.Array:
  """Aitchison distance ``‖clr(p) − clr(q)‖₂`` over the last axis (per example).

  Equals ``‖ilr(p) − ilr(q)‖₂`` because ilr is an isometry. The gradient at
  ``p = q`` is taken as 0 (not NaN).
  """
  d = clr(p) - clr(q)
  sq = jnp.sum(jnp.square(d), axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
