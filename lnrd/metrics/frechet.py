"""Fréchet distance between Gaussians fitted to features (FID), with streaming statistics.

For features x with mean mu and covariance Sigma (per set),

  FID = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^{1/2}).

Statistics are accumulated as sufficient statistics (n, sum x, sum x x^T) in
float64, so batches (possibly padded, with a mask) and processes can be merged
by summation; the mean and unbiased (ddof=1) covariance follow at the end:

  mu = S1 / n,    Sigma = (S2 - n mu mu^T) / (n - 1).

The matrix square-root trace uses the symmetric form

  Tr((Sigma_1 Sigma_2)^{1/2}) = Tr((Sigma_1^{1/2} Sigma_2 Sigma_1^{1/2})^{1/2}),

where both square roots are of symmetric positive semi-definite matrices and are
taken with eigendecompositions (tiny negative eigenvalues clipped to zero).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class FeatureStatistics(NamedTuple):
  """Sufficient statistics of a feature set (float64 NumPy arrays).

  Attributes:
    count: number of rows n, shape ().
    sum: sum_i x_i, shape (D,).
    outer: sum_i x_i x_i^T, shape (D, D).
  """
  count: np.ndarray
  sum: np.ndarray
  outer: np.ndarray


def zeros(dim: int) -> FeatureStatistics:
  """Empty statistics for D = `dim` features (the identity of `merge`)."""
  return FeatureStatistics(np.zeros((), np.float64), np.zeros((dim,), np.float64),
                           np.zeros((dim, dim), np.float64))


def statistics_of(features, mask=None) -> FeatureStatistics:
  """Statistics (n, sum x, sum x x^T) of one batch, accumulated in float64.

  Args:
    features: (B, D) array (any float dtype; converted to float64).
    mask: optional boolean (B,); rows with False (padding) count zero times.

  Returns:
    FeatureStatistics of the selected rows.
  """
  x = np.asarray(features, np.float64).reshape(len(features), -1)
  if mask is not None:
    x = x[np.asarray(mask, bool).reshape(-1)]
  return FeatureStatistics(np.asarray(float(len(x)), np.float64), x.sum(axis=0), x.T @ x)


def from_sums(count, total, outer) -> FeatureStatistics:
  """FeatureStatistics from device sums (e.g. the output of `batch_sums`)."""
  return FeatureStatistics(np.asarray(count, np.float64), np.asarray(total, np.float64),
                           np.asarray(outer, np.float64))


def merge(a: FeatureStatistics, b: FeatureStatistics) -> FeatureStatistics:
  """Statistics of the union of two disjoint sets: the element-wise sum."""
  return FeatureStatistics(a.count + b.count, a.sum + b.sum, a.outer + b.outer)


def mean_and_covariance(stats: FeatureStatistics) -> tuple[np.ndarray, np.ndarray]:
  """Mean mu = S1 / n and unbiased covariance (S2 - n mu mu^T) / (n - 1) (as np.cov).

  Raises:
    ValueError: with fewer than two rows.
  """
  n = float(stats.count)
  if n < 2:
    raise ValueError(f"need at least 2 feature rows, got {n:g}")
  mu = stats.sum / n
  sigma = (stats.outer - n * np.outer(mu, mu)) / (n - 1.0)
  return mu, 0.5 * (sigma + sigma.T)


def _split64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float64 -> (hi, lo) float32 pair with hi + lo ~= x to ~48 mantissa bits."""
  x = np.asarray(x, np.float64)
  hi = x.astype(np.float32)
  lo = (x - hi.astype(np.float64)).astype(np.float32)
  return hi, lo


def merge_across_processes(stats: FeatureStatistics) -> FeatureStatistics:
  """Sum the statistics of all JAX processes (identity on a single process).

  Uses `jax.experimental.multihost_utils.process_allgather`. Each float64 array
  travels as a float32 (hi, lo) pair so precision survives even when JAX runs
  without x64; the gathered parts are summed in float64 on the host.
  """
  if jax.process_count() == 1:
    return stats
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  parts = [_split64(leaf) for leaf in stats]
  gathered = multihost_utils.process_allgather(parts, tiled=False)
  leaves = []
  for hi, lo in gathered:
    hi = np.asarray(hi, np.float64)
    lo = np.asarray(lo, np.float64)
    leaves.append((hi + lo).sum(axis=0))
  return FeatureStatistics(*leaves)


@jax.jit
def batch_sums(features: jax.Array, mask: jax.Array | None = None):
  """On-device (n, sum x, sum x x^T) of one batch, rows with mask False excluded.

  Meant for sharded evaluation loops: products are in the features' dtype
  (float32 is fine); convert with `from_sums` and accumulate on the host in
  float64 with `merge`.

  Args:
    features: (B, D).
    mask: optional boolean (B,).

  Returns:
    (count (), sum (D,), outer (D, D)).
  """
  x = features.reshape(features.shape[0], -1)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  if mask is None:
    w = jnp.ones((x.shape[0],), x.dtype)
  else:
    w = mask.reshape(-1).astype(x.dtype)
  xw = x * w[:, None]
  outer = jnp.einsum("bi,bj->ij", xw, x, precision=jax.lax.Precision.HIGHEST)
  return w.sum(), xw.sum(axis=0), outer


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
  """Square root of a symmetric PSD matrix by eigendecomposition (negatives clipped)."""
  w, v = np.linalg.eigh(0.5 * (m + m.T))
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) in float64.

  Tr((S1 S2)^{1/2}) is computed as sum_k sqrt(lambda_k) over the eigenvalues of
  the symmetric PSD matrix S1^{1/2} S2 S1^{1/2} (clipped at zero).
  """
  mu1 = np.asarray(mu1, np.float64).reshape(-1)
  mu2 = np.asarray(mu2, np.float64).reshape(-1)
  s1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size,) * 2:
    raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
  r1 = _sqrt_psd(s1)
  m = r1 @ s2 @ r1
  lam = np.linalg.eigvalsh(0.5 * (m + m.T))
  tr_covmean = np.sqrt(np.clip(lam, 0.0, None)).sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_statistics(a: FeatureStatistics, b: FeatureStatistics) -> float:
  """Fréchet distance between the Gaussians fitted to two sets of statistics."""
  mu1, s1 = mean_and_covariance(a)
  mu2, s2 = mean_and_covariance(b)
  return frechet_distance(mu1, s1, mu2, s2)


def fid(real_features, fake_features) -> float:
  """FID between two feature arrays (N, D) and (M, D) (one-shot; usable with `classwise`)."""
  return fid_from_statistics(statistics_of(real_features), statistics_of(fake_features))
