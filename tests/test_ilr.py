"""Tests for sgn_jax.ilr: Helmert basis, clr/ilr, inverses, targets, geometry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from sgn_jax import ilr


def _random_simplex(rng, shape, k):
  x = rng.gamma(0.5, size=(*shape, k)) + 1e-3
  return (x / x.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k", [2, 3, 10, 100])
def test_helmert_matches_scipy_and_is_orthonormal(k):
  h = ilr.helmert(k)
  assert h.shape == (k - 1, k) and h.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(h), scipy.linalg.helmert(k), atol=1e-7)
  h64 = np.asarray(ilr._helmert_np(k))  # pylint: disable=protected-access
  np.testing.assert_allclose(h64, scipy.linalg.helmert(k), atol=1e-14)
  np.testing.assert_allclose(h64 @ h64.T, np.eye(k - 1), atol=1e-12)
  np.testing.assert_allclose(h64.sum(axis=1), 0.0, atol=1e-12)
  np.testing.assert_allclose(h64.T @ h64, np.eye(k) - 1.0 / k, atol=1e-12)


def test_helmert_rejects_one_class():
  with pytest.raises(ValueError, match="num_classes=1"):
    ilr.helmert(1)


def test_clr_sums_to_zero_and_from_log_agrees():
  rng = np.random.default_rng(0)
  p = _random_simplex(rng, (5,), 7)
  c = ilr.clr(p)
  np.testing.assert_allclose(np.asarray(c).sum(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(ilr.clr_from_log(np.log(p)), c, atol=1e-5)
  # clr is scale invariant: unnormalised inputs / shifted logits give the same.
  np.testing.assert_allclose(ilr.clr(3.0 * p), c, atol=1e-5)
  np.testing.assert_allclose(ilr.clr_from_log(np.log(p) + 2.5), c, atol=1e-5)
  np.testing.assert_allclose(ilr.ilr_from_log(np.log(p)), ilr.ilr(p), atol=1e-5)


@pytest.mark.parametrize("k", [2, 10, 100])
def test_round_trip(k):
  rng = np.random.default_rng(k)
  p = _random_simplex(rng, (4, 3), k)
  z = ilr.ilr(p)
  assert z.shape == (4, 3, k - 1)
  np.testing.assert_allclose(ilr.ilr_inverse(z), p, rtol=2e-4, atol=1e-7)
  np.testing.assert_allclose(jnp.exp(ilr.ilr_inverse_log(z)), p, rtol=2e-4, atol=1e-7)
  np.testing.assert_allclose(ilr.ilr_inverse_log(z), np.log(p), atol=2e-4)
  # and the other way round: ilr(ilr_inverse(z)) == z
  z2 = np.random.default_rng(1).normal(size=(6, k - 1)).astype(np.float32)
  np.testing.assert_allclose(ilr.ilr_from_log(ilr.ilr_inverse_log(z2)), z2, atol=1e-4)


def test_ilr_inverse_is_closure_of_exp_clr():
  rng = np.random.default_rng(3)
  z = rng.normal(size=(5, 6)).astype(np.float32)
  c = np.asarray(z) @ scipy.linalg.helmert(7)
  expected = np.exp(c) / np.exp(c).sum(-1, keepdims=True)
  np.testing.assert_allclose(ilr.ilr_inverse(z), expected, rtol=1e-5)


def test_aitchison_distance_preserved():
  rng = np.random.default_rng(4)
  p, q = _random_simplex(rng, (8,), 10), _random_simplex(rng, (8,), 10)
  d_ilr = jnp.linalg.norm(ilr.ilr(p) - ilr.ilr(q), axis=-1)
  np.testing.assert_allclose(d_ilr, ilr.aitchison_distance(p, q), rtol=1e-5)
  # reference from numpy
  cp = np.log(p) - np.log(p).mean(-1, keepdims=True)
  cq = np.log(q) - np.log(q).mean(-1, keepdims=True)
  np.testing.assert_allclose(ilr.aitchison_distance(p, q), np.linalg.norm(cp - cq, axis=-1),
                             rtol=1e-5)


def test_finite_gradients_near_simplex_boundary():
  k = 10
  p = jnp.asarray([1.0 - 1e-7] + [1e-7 / (k - 1)] * (k - 1), jnp.float32)
  w = jnp.arange(1.0, k)

  g = jax.grad(lambda p: jnp.sum(w * ilr.ilr(p)))(p)
  assert np.all(np.isfinite(g))
  log_p = jnp.log(p)
  g = jax.grad(lambda lp: jnp.sum(w * ilr.ilr_from_log(lp)))(log_p)
  assert np.all(np.isfinite(g))
  # far outside the float32 probability range, log-space stays exact
  log_p = jnp.asarray([0.0] + [-200.0] * (k - 1))
  z = ilr.ilr_from_log(log_p)
  assert np.all(np.isfinite(z))
  g = jax.grad(lambda z: jnp.sum(ilr.ilr_inverse_log(z)))(z)
  assert np.all(np.isfinite(g))
  g = jax.grad(lambda z: ilr.ilr_inverse(z)[1])(z)
  assert np.all(np.isfinite(g))
  g = jax.grad(lambda lp: ilr.aitchison_distance(jnp.exp(lp), jnp.full(k, 1.0 / k)))(
      jnp.log(p))
  assert np.all(np.isfinite(g))
  g = jax.grad(lambda p: ilr.aitchison_distance(p, p))(p)
  np.testing.assert_array_equal(g, 0.0)


def test_label_smoothing_sums_to_one():
  onehot = jax.nn.one_hot(jnp.asarray([0, 3, 9]), 10)
  ls = ilr.label_smoothing(onehot, 0.1)
  np.testing.assert_allclose(ls.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(ls[1], [0.01, 0.01, 0.01, 0.91] + [0.01] * 6, rtol=1e-6)
  with pytest.raises(ValueError, match="1.5"):
    ilr.label_smoothing(onehot, 1.5)


@pytest.mark.parametrize("k,gamma", [(2, 0.1), (10, 0.001), (100, 0.01), (10, 0.999)])
def test_ilr_targets_closed_form(k, gamma):
  labels = np.arange(k) if k <= 10 else np.asarray([0, 1, 50, 99])
  t = ilr.ilr_targets(labels, k, gamma)
  assert t.shape == (len(labels), k - 1) and t.dtype == jnp.float32
  ls = (1 - gamma) * np.eye(k)[labels] + gamma / k
  ref = (np.log(ls) - np.log(ls).mean(-1, keepdims=True)) @ scipy.linalg.helmert(k).T
  np.testing.assert_allclose(t, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ilr.ilr(ilr.label_smoothing(jax.nn.one_hot(labels, k), gamma)), ref,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ilr.ilr_inverse(t), ls, rtol=1e-4, atol=1e-7)


def test_ilr_targets_jit_vmap_and_bad_gamma():
  f = jax.jit(lambda y, g: ilr.ilr_targets(y, 10, g))
  np.testing.assert_allclose(f(jnp.asarray([1, 2]), 0.01), ilr.ilr_targets([1, 2], 10, 0.01),
                             rtol=1e-6)
  v = jax.vmap(lambda y: ilr.ilr_targets(y, 10, 0.01))(jnp.asarray([[1, 2], [3, 4]]))
  assert v.shape == (2, 2, 9)
  for bad in (0.0, 1.0, -0.2, 1.5):
    with pytest.raises(ValueError, match=f"gamma={bad}"):
      ilr.ilr_targets([0], 10, bad)


def test_jit_vmap_grad_of_transforms():
  rng = np.random.default_rng(5)
  p = _random_simplex(rng, (3, 4), 5)
  np.testing.assert_allclose(jax.jit(ilr.ilr)(p), ilr.ilr(p), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(ilr.ilr)(p), ilr.ilr(p), rtol=1e-6, atol=1e-6)
  z = ilr.ilr(p)
  np.testing.assert_allclose(jax.jit(ilr.ilr_inverse)(z), ilr.ilr_inverse(z), rtol=1e-6)
  g = jax.jit(jax.grad(lambda z: jnp.sum(ilr.ilr_inverse_log(z)[..., 0])))(z)
  assert g.shape == z.shape and np.all(np.isfinite(g))


def test_float64_precision_under_x64():
  with jax.enable_x64(True):
    rng = np.random.default_rng(6)
    p = rng.dirichlet(np.ones(10), size=4)
    z = ilr.ilr(p)
    assert z.dtype == jnp.float64
    np.testing.assert_allclose(ilr.ilr_inverse(z), p, rtol=1e-12)
