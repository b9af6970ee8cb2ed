"""Tests for the SGN Gaussian likelihoods and loss in sgn_jax.losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sgn_jax import ilr, losses

LOG_2PI = np.log(2 * np.pi)


def _inputs(seed, batch, dim):
  rng = np.random.default_rng(seed)
  t, mean, r = (rng.normal(size=(batch, dim)) for _ in range(3))
  log_var = 0.5 * rng.normal(size=(batch, dim))
  return t, mean, r, log_var


def _scipy_nll(t, mean, cov):
  return -stats.multivariate_normal(mean, cov).logpdf(t)


def _rank_one_cov(r, parameterization):
  if parameterization == "scale":
    s = np.eye(len(r)) + np.outer(r, r)
    return s @ s.T
  return np.eye(len(r)) + np.outer(r, r)


@pytest.mark.parametrize("parameterization", ["scale", "covariance"])
@pytest.mark.parametrize("dim", [1, 9, 99])
def test_rank_one_nll_matches_scipy_float64(parameterization, dim):
  t, mean, r, _ = _inputs(dim, 4, dim)
  with jax.enable_x64(True):
    got = losses.gaussian_nll_identity_plus_rank_one(t, mean, r, parameterization=parameterization)
    assert got.shape == (4,) and got.dtype == jnp.float64
    ref = [_scipy_nll(t[i], mean[i], _rank_one_cov(r[i], parameterization)) for i in range(4)]
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    # the authors' (D, 1) layout of r gives the same
    got2 = losses.gaussian_nll_identity_plus_rank_one(t, mean, r[..., None],
                                                      parameterization=parameterization)
    np.testing.assert_allclose(got2, got, rtol=1e-12)


@pytest.mark.parametrize("parameterization", ["scale", "covariance"])
def test_rank_one_nll_matches_scipy_float32(parameterization):
  t, mean, r, _ = _inputs(0, 8, 9)
  got = losses.gaussian_nll_identity_plus_rank_one(
      t.astype(np.float32), mean.astype(np.float32), r.astype(np.float32),
      parameterization=parameterization)
  assert got.dtype == jnp.float32
  ref = [_scipy_nll(t[i], mean[i], _rank_one_cov(r[i], parameterization)) for i in range(8)]
  np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_rank_one_scale_form_is_covariance_form_with_rescaled_r():
  # S Sᵀ = I + (2 + ρ) r rᵀ: the covariance form with r' = √(2 + ρ)·r.
  t, mean, r, _ = _inputs(1, 5, 9)
  with jax.enable_x64(True):
    rho = np.sum(r * r, -1, keepdims=True)
    a = losses.gaussian_nll_identity_plus_rank_one(t, mean, r, parameterization="scale")
    b = losses.gaussian_nll_identity_plus_rank_one(t, mean, np.sqrt(2 + rho) * r,
                                                   parameterization="covariance")
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_rank_one_bad_parameterization_named():
  with pytest.raises(ValueError, match="'cholesky'"):
    losses.gaussian_nll_identity_plus_rank_one(np.zeros(3), np.zeros(3), np.zeros(3),
                                               parameterization="cholesky")


@pytest.mark.parametrize("dim", [1, 9])
def test_isotropic_nll_matches_scipy(dim):
  t, mean, _, log_var = _inputs(2, 4, dim)
  lv = log_var[:, 0]
  with jax.enable_x64(True):
    got = losses.gaussian_nll_isotropic(t, mean, lv)
    got_keepdim = losses.gaussian_nll_isotropic(t, mean, lv[:, None])
    ref = [_scipy_nll(t[i], mean[i], np.exp(lv[i]) * np.eye(dim)) for i in range(4)]
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    np.testing.assert_allclose(got_keepdim, ref, rtol=1e-10)
  got32 = losses.gaussian_nll_isotropic(*(x.astype(np.float32) for x in (t, mean, lv)))
  np.testing.assert_allclose(got32, ref, rtol=1e-4)


def test_diagonal_nll_matches_scipy():
  t, mean, _, log_var = _inputs(3, 4, 9)
  with jax.enable_x64(True):
    got = losses.gaussian_nll_diagonal(t, mean, log_var)
    ref = [_scipy_nll(t[i], mean[i], np.diag(np.exp(log_var[i]))) for i in range(4)]
    np.testing.assert_allclose(got, ref, rtol=1e-10)
  got32 = losses.gaussian_nll_diagonal(*(x.astype(np.float32) for x in (t, mean, log_var)))
  np.testing.assert_allclose(got32, ref, rtol=1e-4)


# ------------------------------------------------------------------------------------------ #
# sgn_shift / sgn_loss
# ------------------------------------------------------------------------------------------ #
K = 10
GAMMA = 0.01
ALPHA = 0.995


def _batch(seed=0, batch=6, k=K):
  rng = np.random.default_rng(seed)
  mean = rng.normal(size=(batch, k - 1)).astype(np.float32)
  ema = rng.normal(size=(batch, k - 1)).astype(np.float32)
  r = (0.5 * rng.normal(size=(batch, k - 1))).astype(np.float32)
  labels = rng.integers(0, k, size=batch)
  return mean, r, labels, ema


def _scale(covariance, r):
  if covariance == "rank_one":
    return r
  if covariance == "isotropic":
    return r[:, 0]
  return r


def _nll(covariance, target, mean, scale):
  if covariance == "rank_one":
    return losses.gaussian_nll_identity_plus_rank_one(target, mean, scale)
  if covariance == "isotropic":
    return losses.gaussian_nll_isotropic(target, mean, scale)
  return losses.gaussian_nll_diagonal(target, mean, scale)


def test_sgn_shift_formula_and_limits():
  _, _, labels, ema = _batch()
  t = ilr.ilr_targets(labels, K, GAMMA)
  for e in (0.0, 0.37, 12.5, 600.0):
    np.testing.assert_allclose(losses.sgn_shift(t, ema, ALPHA, e), (1 - ALPHA**e) * (t - ema),
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(losses.sgn_shift(t, ema, ALPHA, 0.0), 0.0)
  np.testing.assert_array_equal(losses.sgn_shift(t, ema, 1.0, 50.0), 0.0)
  with pytest.raises(ValueError, match="alpha=1.5"):
    losses.sgn_shift(t, ema, 1.5, 1.0)


@pytest.mark.parametrize("covariance", ["rank_one", "isotropic", "diagonal"])
def test_sgn_loss_is_nll_of_shifted_target(covariance):
  mean, r, labels, ema = _batch()
  scale = _scale(covariance, r)
  t = ilr.ilr_targets(labels, K, GAMMA)
  kw = dict(num_classes=K, gamma=GAMMA, alpha=ALPHA, covariance=covariance)
  e = 37.25
  delta = (1 - ALPHA**e) * (t - ema)
  got = losses.sgn_loss(mean, scale, labels, ema, epoch=e, **kw)
  assert got.shape == (6,)
  np.testing.assert_allclose(got, _nll(covariance, t - delta, mean, scale), rtol=1e-5)
  # same thing: NLL of t under N(μ + Δ, Σ)
  np.testing.assert_allclose(got, _nll(covariance, t, mean + delta, scale), rtol=1e-5)
  # epoch 0: no shift
  np.testing.assert_allclose(losses.sgn_loss(mean, scale, labels, ema, epoch=0.0, **kw),
                             _nll(covariance, t, mean, scale), rtol=1e-6)
  # label_correction=False: no shift at any epoch, ema_mean unused
  np.testing.assert_allclose(
      losses.sgn_loss(mean, scale, labels, None, epoch=e, label_correction=False, **kw),
      _nll(covariance, t, mean, scale), rtol=1e-6)
  # α^e → 0: the target becomes the EMA network's mean
  np.testing.assert_allclose(losses.sgn_loss(mean, scale, labels, ema, epoch=1e5, **kw),
                             _nll(covariance, ema, mean, scale), rtol=1e-5)


def test_sgn_loss_matches_scipy_full_pipeline():
  mean, r, labels, ema = _batch(1)
  e = 3.5
  with jax.enable_x64(True):
    got = losses.sgn_loss(mean.astype(np.float64), r.astype(np.float64), labels,
                          ema.astype(np.float64), num_classes=K, gamma=GAMMA, alpha=ALPHA,
                          epoch=e)
    assert got.dtype == jnp.float64
  from scipy.linalg import helmert  # pylint: disable=g-import-not-at-top
  ls = (1 - GAMMA) * np.eye(K)[labels] + GAMMA / K
  t = (np.log(ls) - np.log(ls).mean(-1, keepdims=True)) @ helmert(K).T
  target = t - (1 - ALPHA**e) * (t - ema)
  ref = [_scipy_nll(target[i], mean[i], _rank_one_cov(r[i].astype(np.float64), "scale"))
         for i in range(len(labels))]
  np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_sgn_loss_stop_gradient_on_ema_mean():
  mean, r, labels, ema = _batch()
  kw = dict(num_classes=K, gamma=GAMMA, alpha=ALPHA, epoch=20.0)
  g_ema = jax.grad(lambda em: jnp.sum(losses.sgn_loss(mean, r, labels, em, **kw)))(ema)
  np.testing.assert_array_equal(g_ema, 0.0)
  g_mean, g_r = jax.grad(lambda m, rr: jnp.sum(losses.sgn_loss(m, rr, labels, ema, **kw)),
                         argnums=(0, 1))(mean, r)
  assert np.all(np.isfinite(g_mean)) and np.any(g_mean != 0)
  assert np.all(np.isfinite(g_r)) and np.any(g_r != 0)


@pytest.mark.parametrize("covariance", ["rank_one", "isotropic", "diagonal"])
def test_sgn_loss_without_reweighting_is_squared_error(covariance):
  mean, r, labels, ema = _batch(2)
  e = 9.0
  t = ilr.ilr_targets(labels, K, GAMMA)
  target = t - (1 - ALPHA**e) * (t - ema)
  expected = 0.5 * np.sum((target - mean) ** 2, -1) + 0.5 * (K - 1) * LOG_2PI
  kw = dict(num_classes=K, gamma=GAMMA, alpha=ALPHA, epoch=e, covariance=covariance,
            loss_reweighting=False)
  np.testing.assert_allclose(losses.sgn_loss(mean, _scale(covariance, r), labels, ema, **kw),
                             expected, rtol=1e-5)
  # the scale head is ignored
  np.testing.assert_allclose(losses.sgn_loss(mean, None, labels, ema, **kw), expected, rtol=1e-5)
  g = jax.grad(lambda s: jnp.sum(losses.sgn_loss(mean, s, labels, ema, **kw)))(
      jnp.asarray(_scale(covariance, r)))
  np.testing.assert_array_equal(g, 0.0)


def test_sgn_loss_jit_vmap_grad():
  mean, r, labels, ema = _batch(3, batch=8)

  @jax.jit
  def f(mean, r, labels, ema, epoch, alpha, gamma):
    return losses.sgn_loss(mean, r, labels, ema, num_classes=K, gamma=gamma, alpha=alpha,
                           epoch=epoch)

  eager = losses.sgn_loss(mean, r, labels, ema, num_classes=K, gamma=GAMMA, alpha=ALPHA,
                          epoch=4.2)
  np.testing.assert_allclose(f(mean, r, labels, ema, 4.2, ALPHA, GAMMA), eager, rtol=1e-6)
  per_ex = jax.vmap(lambda m, s, y, em: losses.sgn_loss(
      m, s, y, em, num_classes=K, gamma=GAMMA, alpha=ALPHA, epoch=4.2))(mean, r, labels, ema)
  np.testing.assert_allclose(per_ex, eager, rtol=1e-6)
  # grad agrees with finite differences on one coordinate
  loss = lambda m: jnp.sum(f(m, r, labels, ema, 4.2, ALPHA, GAMMA))  # pylint: disable=unnecessary-lambda-assignment
  g = jax.jit(jax.grad(loss))(jnp.asarray(mean))
  eps = 1e-2
  bump = np.zeros_like(mean)
  bump[2, 3] = eps
  fd = (loss(mean + bump) - loss(mean - bump)) / (2 * eps)
  np.testing.assert_allclose(g[2, 3], fd, rtol=1e-2, atol=1e-3)


def test_sgn_loss_bf16_inputs_compute_in_float32():
  mean, r, labels, ema = _batch(4)
  got = losses.sgn_loss(jnp.asarray(mean, jnp.bfloat16), jnp.asarray(r, jnp.bfloat16), labels,
                        jnp.asarray(ema, jnp.bfloat16), num_classes=K, gamma=GAMMA, alpha=ALPHA,
                        epoch=1.0)
  assert got.dtype == jnp.float32 and np.all(np.isfinite(got))


def test_sgn_loss_errors_name_the_value():
  mean, r, labels, ema = _batch()
  kw = dict(num_classes=K, alpha=ALPHA, epoch=1.0)
  with pytest.raises(ValueError, match="'full'"):
    losses.sgn_loss(mean, r, labels, ema, gamma=GAMMA, covariance="full", **kw)
  for bad in (0.0, 1.0, 1.2, -0.1):
    with pytest.raises(ValueError, match=f"gamma={bad}"):
      losses.sgn_loss(mean, r, labels, ema, gamma=bad, **kw)
  with pytest.raises(ValueError, match="num_classes=5"):
    losses.sgn_loss(mean, r, labels, ema, gamma=GAMMA, num_classes=5, alpha=ALPHA, epoch=1.0)
  with pytest.raises(ValueError, match="ema_mean"):
    losses.sgn_loss(mean, r, labels, None, gamma=GAMMA, **kw)


def test_sgn_predict_probs():
  _, _, labels, _ = _batch()
  t = ilr.ilr_targets(labels, K, GAMMA)
  probs = losses.sgn_predict_probs(t)
  assert probs.shape == (6, K)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(np.argmax(probs, -1), labels)
  np.testing.assert_allclose(probs, (1 - GAMMA) * np.eye(K)[labels] + GAMMA / K, rtol=1e-4)


def test_existing_losses_unchanged():
  logits = jnp.asarray([[2.0, 0.0, -1.0]])
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, jnp.asarray([0])),
                             -jax.nn.log_softmax(logits)[:, 0], rtol=1e-6)
  np.testing.assert_allclose(losses.l2_penalty({"a": jnp.ones(3), "b": 2 * jnp.ones(2)}), 11.0)


def test_sgn_shift_alpha_checked_when_concrete_and_nan_when_traced():
  t = jnp.ones((2, 3))
  ema = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="alpha must be in"):
    losses.sgn_shift(t, ema, 1.5, 2.0)
  shift = jax.vmap(lambda a: losses.sgn_shift(t, ema, a, 2.0))(jnp.array([0.5, 1.5, 0.0]))
  np.testing.assert_allclose(shift[0], (1 - 0.5**2) * np.ones((2, 3)), rtol=1e-6)
  assert np.isnan(np.asarray(shift[1])).all() and np.isnan(np.asarray(shift[2])).all()
  traced_ok = jax.jit(lambda a: losses.sgn_shift(t, ema, a, 2.0))(0.9)
  np.testing.assert_allclose(traced_ok, (1 - 0.9**2) * np.ones((2, 3)), rtol=1e-6)
