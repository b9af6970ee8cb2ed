"""Density and Coverage (Naeem et al., 2020, "Reliable Fidelity and Diversity Metrics").

For real features x_1..x_N and fake features y_1..y_M, let r_i be the distance
from x_i to its k-th nearest real neighbour (itself excluded). Then

  Density  = 1 / (k M) sum_j sum_i 1[ ||y_j - x_i|| < r_i ],
  Coverage = 1 / N sum_i 1[ min_j ||y_j - x_i|| < r_i ].

A sample counts only strictly inside a ball, as in the reference `prdc` package
the paper used: with duplicated or quantised features (ties at the radius), real
features scored against themselves give density 1 (k of the k + 1 points within
distance r_i of x_i, itself included, are strictly inside), not (k + 1) / k.

Pairwise distances are computed in chunks of `chunk` rows against all N real
points, so memory is O(chunk * N) instead of O(N^2) or O(M N). Comparisons are
made on squared distances (||a||^2 + ||b||^2 - 2 a.b, clipped at zero); a distance
within float32 rounding of a radius (`TIE_TOLERANCE`) counts as on the boundary.

`classwise` averages any such metric over classes (CW-Density, CW-Coverage,
CW-FID, ...).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


# Relative tolerance (of ||a||^2 + ||b||^2) under which a squared distance counts as
# equal to a radius: float32 rounding of the expanded distance.
TIE_TOLERANCE = 1e-5


def _sq_dists(a: jax.Array, b: jax.Array, b_sq: jax.Array) -> jax.Array:
  """Squared Euclidean distances (len(a), len(b))."""
  a_sq = jnp.sum(a * a, axis=1)
  ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * ab, 0.0)


def _chunked(x: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
  """Pad rows to a multiple of `chunk`; return (n_chunks, chunk, D) and a validity mask."""
  n = x.shape[0]
  n_chunks = -(-n // chunk)
  pad = n_chunks * chunk - n
  xp = jnp.pad(x, ((0, pad), (0, 0)))
  valid = jnp.arange(n_chunks * chunk) < n
  return xp.reshape(n_chunks, chunk, -1), valid.reshape(n_chunks, chunk)


def knn_radii_sq(real: jax.Array, k: int = 5, chunk: int = 1024) -> jax.Array:
  """Squared distance of each real point to its k-th nearest real neighbour (self excluded).

  Each point's own (zero) distance is the smallest of its row, so the radius is
  the (k + 1)-th smallest distance of the row, as in the reference `prdc`.
  """
  n = real.shape[0]
  if not 1 <= k < n:
    raise ValueError(f"k must be in [1, {n - 1}], got {k}")
  r_sq = jnp.sum(real * real, axis=1)
  chunks, _ = _chunked(real, min(chunk, n))

  def body(_, c):
    d = _sq_dists(c, real, r_sq)
    neg_top, _ = jax.lax.top_k(-d, k + 1)
    return None, -neg_top[:, k]

  _, radii = jax.lax.scan(body, None, chunks)
  return radii.reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("k", "chunk"))
def density_coverage(real: jax.Array, fake: jax.Array, k: int = 5,
                     chunk: int = 1024) -> dict[str, jax.Array]:
  """Density and Coverage of `fake` (M, D) with respect to `real` (N, D).

  Args:
    real: (N, D) real features (N > k).
    fake: (M, D) generated features.
    k: number of nearest neighbours for the real radii (5 in the paper).
    chunk: rows per distance block (memory O(chunk * N)).

  Returns:
    {'density': scalar, 'coverage': scalar} (JAX arrays).
  """
  real = jnp.asarray(real)
  fake = jnp.asarray(fake)
  if not jnp.issubdtype(real.dtype, jnp.floating):
    real = real.astype(jnp.float32)
  fake = fake.astype(real.dtype)
  real = real.reshape(real.shape[0], -1)
  fake = fake.reshape(fake.shape[0], -1)
  n, m = real.shape[0], fake.shape[0]
  radii = knn_radii_sq(real, k, chunk)
  r_sq = jnp.sum(real * real, axis=1)
  chunks, valid = _chunked(fake, min(chunk, m))

  def body(carry, inp):
    count, min_d = carry
    c, v = inp
    d = _sq_dists(c, real, r_sq)                                   # (chunk, N)
    # Ties with the radius (duplicated or quantised features) differ only by float32
    # rounding of ||a||^2 + ||b||^2 - 2 a.b, which depends on where a column sits in the
    # matmul: a distance within TIE_TOLERANCE of the radius counts as on it (outside).
    d = d + TIE_TOLERANCE * (jnp.sum(c * c, axis=1)[:, None] + r_sq[None, :])
    inside = (d < radii[None, :]) & v[:, None]
    count = count + jnp.sum(inside, dtype=jnp.int32)
    min_d = jnp.minimum(min_d, jnp.min(jnp.where(v[:, None], d, jnp.inf), axis=0))
    return (count, min_d), None

  init = (jnp.zeros((), jnp.int32), jnp.full((n,), jnp.inf, real.dtype))
  (count, min_d), _ = jax.lax.scan(body, init, (chunks, valid))
  density = count.astype(real.dtype) / (k * m)
  coverage = jnp.mean((min_d < radii).astype(real.dtype))
  return {"density": density, "coverage": coverage}


def classwise(metric_fn: Callable, real, real_labels, fake, fake_labels,
              num_classes: int):
  """Average of `metric_fn(real[real_labels == c], fake[fake_labels == c])` over classes c.

  CW-M = (1 / C) sum_{c < C} M(real_c, fake_c). `metric_fn` may return a scalar
  or a dict of scalars (each entry is averaged). Runs on the host (class subsets
  have data-dependent sizes); every class must be present in both sets.

  Returns:
    A float, or a dict of floats, with the class average.
  """
  real = np.asarray(real)
  fake = np.asarray(fake)
  real_labels = np.asarray(real_labels).reshape(-1)
  fake_labels = np.asarray(fake_labels).reshape(-1)
  per_class = []
  for c in range(num_classes):
    rc, fc = real[real_labels == c], fake[fake_labels == c]
    if len(rc) == 0 or len(fc) == 0:
      raise ValueError(f"class {c} has {len(rc)} real and {len(fc)} fake samples")
    per_class.append(metric_fn(rc, fc))
  if isinstance(per_class[0], dict):
    return {key: float(np.mean([float(r[key]) for r in per_class])) for key in per_class[0]}
  return float(np.mean([float(r) for r in per_class]))
