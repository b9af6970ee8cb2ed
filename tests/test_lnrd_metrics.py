"""Sliced Wasserstein distance against its closed form for Gaussians and a NumPy loop."""

import numpy as np
import pytest

from lnrd.metrics import sliced_wasserstein as sw


def test_shifted_gaussians_have_closed_form_distance():
  # P = N(0, I_2), Q = N(mu, I_2): W_2 of every 1-D projection is |mu . theta|,
  # so SW_2^2 = E (mu . theta)^2 = |mu|^2 / d.
  rng = np.random.default_rng(0)
  mu = np.array([1.5, -0.5])
  x = rng.normal(size=(20_000, 2))
  y = rng.normal(size=(20_000, 2)) + mu
  got = sw.sliced_wasserstein(x, y, num_projections=2000)
  assert got == pytest.approx(np.linalg.norm(mu) / np.sqrt(2), rel=0.03)
  assert sw.sliced_wasserstein(x, x) == 0.0


def test_matches_a_numpy_loop_over_projections():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 3)) * 2
  theta = np.random.default_rng(5).normal(size=(3, 16))
  theta /= np.linalg.norm(theta, axis=0)
  want = np.sqrt(np.mean([np.mean((np.sort(x @ t) - np.sort(y @ t)) ** 2) for t in theta.T]))
  assert sw.sliced_wasserstein(x, y, num_projections=16, seed=5) == pytest.approx(want, rel=1e-12)


def test_classwise_and_errors():
  rng = np.random.default_rng(2)
  ref = rng.normal(size=(400, 2))
  ref_labels = np.repeat([0, 1], 200)
  ref[ref_labels == 1] += 3.0
  samples, labels = ref.copy(), ref_labels.copy()
  out = sw.classwise_sliced_wasserstein(samples, labels, ref, ref_labels, 2)
  assert out["mean"] == 0.0 and set(out) == {"class_0", "class_1", "mean"}
  swapped = sw.classwise_sliced_wasserstein(samples, 1 - labels, ref, ref_labels, 2)
  assert swapped["mean"] > 1.5  # labels swapped: each class lands on the other's points
  with pytest.raises(ValueError, match="dimension mismatch"):
    sw.sliced_wasserstein(np.zeros((3, 2)), np.zeros((3, 3)))
