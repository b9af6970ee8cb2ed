"""Sliced Wasserstein distance between two point clouds (low-dimensional data).

  SW_2(P, Q)^2 = E_{theta ~ U(S^{d-1})} W_2(theta^T P, theta^T Q)^2,

estimated with `num_projections` random directions; for two samples of equal
size the 1-D W_2 is the root mean squared difference of the sorted projections
(unequal sizes are compared through `num_quantiles` empirical quantiles).
For P = N(a, I), Q = N(b, I): SW_2 = |a - b| / sqrt(d).
"""

from __future__ import annotations

import numpy as np


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, num_projections: int = 256,
                       seed: int = 0, num_quantiles: int = 1000) -> float:
  """SW_2 between samples x (n, d) and y (m, d) (NumPy, float64)."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  y = np.asarray(y, np.float64).reshape(len(y), -1)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
  if len(x) == 0 or len(y) == 0:
    raise ValueError("both samples must be non-empty")
  rng = np.random.default_rng(seed)
  theta = rng.normal(size=(x.shape[1], num_projections))
  theta /= np.linalg.norm(theta, axis=0, keepdims=True)
  px, py = np.sort(x @ theta, axis=0), np.sort(y @ theta, axis=0)
  if len(x) != len(y):
    q = (np.arange(num_quantiles) + 0.5) / num_quantiles
    px, py = np.quantile(px, q, axis=0), np.quantile(py, q, axis=0)
  return float(np.sqrt(np.mean((px - py) ** 2)))


def classwise_sliced_wasserstein(samples: np.ndarray, sample_labels: np.ndarray,
                                 reference: np.ndarray, reference_labels: np.ndarray,
                                 num_classes: int, **kwargs) -> dict[str, float]:
  """SW_2 per class between generated samples of class y and reference points of class y.

  Returns {'class_<y>': distance, ..., 'mean': average over classes}.
  """
  out = {}
  for c in range(num_classes):
    out[f"class_{c}"] = sliced_wasserstein(samples[sample_labels == c],
                                           reference[reference_labels == c], **kwargs)
  out["mean"] = float(np.mean([out[f"class_{c}"] for c in range(num_classes)]))
  return out
