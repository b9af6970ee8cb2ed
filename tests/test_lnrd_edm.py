"""EDM parameterisations against their formulas (NumPy) and analytic Gaussian cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrd import edm


def _numpy_coefficients(kind, sigma, sd=0.5, beta_d=19.9, beta_min=0.1, m=1000):
  if kind == "edm":
    return (sd**2 / (sigma**2 + sd**2), sigma * sd / np.sqrt(sigma**2 + sd**2),
            1 / np.sqrt(sigma**2 + sd**2), np.log(sigma) / 4)
  if kind == "vp":
    t = (np.sqrt(beta_min**2 + 2 * beta_d * np.log(1 + sigma**2)) - beta_min) / beta_d
    return np.ones_like(sigma), -sigma, 1 / np.sqrt(sigma**2 + 1), (m - 1) * t
  return np.ones_like(sigma), sigma, np.ones_like(sigma), np.log(0.5 * sigma)


@pytest.mark.parametrize("kind", edm.PRECONDITIONINGS)
def test_coefficients_match_formulas(kind):
  sigma = np.exp(np.random.default_rng(0).normal(size=64)).astype(np.float64)
  ours = edm.get_preconditioning(kind).coefficients(jnp.asarray(sigma))
  for got, want in zip(ours, _numpy_coefficients(kind, sigma)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-6)


def test_edm_loss_weight_makes_unit_target_variance():
  # lambda(sigma) c_out(sigma)^2 = 1: EDM's effective training target has unit weight.
  p = edm.get_preconditioning("edm", sigma_data=0.7)
  sigma = jnp.geomspace(0.002, 80.0, 50)
  _, c_out, _, _ = p.coefficients(sigma)
  np.testing.assert_allclose(np.asarray(p.loss_weight(sigma) * c_out**2), 1.0, rtol=1e-5)


def test_vp_sigma_inverse_and_sampling_ranges():
  p = edm.get_preconditioning("vp")
  t = jnp.linspace(1e-5, 1.0, 33)
  np.testing.assert_allclose(np.asarray(p.vp_sigma_inv(p.vp_sigma(t))), np.asarray(t),
                             rtol=1e-3, atol=1e-5)
  lo, hi = p.sampling_range
  np.testing.assert_allclose(hi, np.sqrt(np.exp(0.5 * 19.9 + 0.1) - 1), rtol=1e-5)
  assert lo < 0.01
  assert edm.get_preconditioning("ve").sampling_range == (0.02, 100.0)
  assert edm.get_preconditioning("edm").sampling_range == (0.002, 80.0)


def test_sigma_distributions():
  key = jax.random.PRNGKey(0)
  n = 200_000
  log_sigma = np.log(np.asarray(edm.get_preconditioning("edm").sample_sigma(key, (n,))))
  assert abs(log_sigma.mean() - (-1.2)) < 4 * 1.2 / np.sqrt(n)
  assert abs(log_sigma.std() - 1.2) < 0.01
  ve = np.asarray(edm.get_preconditioning("ve").sample_sigma(key, (n,)))
  u = np.log(ve / 0.02) / np.log(100 / 0.02)
  assert ve.min() >= 0.02 - 1e-6 and ve.max() <= 100 + 1e-3
  assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
  vp = edm.get_preconditioning("vp")
  t = np.asarray(vp.vp_sigma_inv(vp.sample_sigma(key, (n,))))
  assert abs(t.mean() - (1 + 1e-5) / 2) < 0.005


def test_precondition_wraps_raw_network():
  p = edm.get_preconditioning("edm")
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 4, 2))
  sigma = jnp.array([0.1, 1.0, 10.0])
  seen = {}

  def raw(x_in, c_noise, labels):
    seen["x_in"], seen["c_noise"], seen["labels"] = x_in, c_noise, labels
    return jnp.ones_like(x_in)

  out = edm.precondition(raw, x, sigma, p, "L")
  c_skip, c_out, c_in, c_noise = _numpy_coefficients("edm", np.asarray(sigma))
  np.testing.assert_allclose(np.asarray(seen["x_in"]), np.asarray(x) * c_in[:, None, None, None],
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(seen["c_noise"]), c_noise, rtol=1e-5)
  assert seen["labels"] == "L"
  want = c_skip[:, None, None, None] * np.asarray(x) + c_out[:, None, None, None]
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5)


def test_dsm_loss_of_exact_gaussian_denoiser():
  # Data N(0, s^2 I_d): D(x_t) = s^2/(s^2+sigma^2) x_t and
  # E ||D - x||^2 = d s^2 sigma^2 / (s^2 + sigma^2); with EDM's lambda and s = s_d
  # the expected weighted loss is exactly d (for every sigma).
  s, d, n = 0.5, 6, 100_000
  p = edm.get_preconditioning("edm", sigma_data=s)
  key_x, key_loss = jax.random.split(jax.random.PRNGKey(2))
  x = s * jax.random.normal(key_x, (n, d))

  def denoise(x_t, sigma, labels):
    del labels
    return (s**2 / (s**2 + sigma**2))[:, None] * x_t

  loss, sigma = edm.dsm_loss(denoise, key_loss, x, None, p)
  assert loss.shape == (n,) and sigma.shape == (n,)
  np.testing.assert_allclose(float(loss.mean()), d, rtol=0.02)
  # A wrong denoiser (identity) has a strictly larger loss.
  worse, _ = edm.dsm_loss(lambda x_t, sg, y: x_t, key_loss, x, None, p)
  assert float(worse.mean()) > 1.5 * d


def test_score_denoiser_round_trip():
  x = jax.random.normal(jax.random.PRNGKey(3), (5, 2))
  sigma = jnp.linspace(0.1, 2.0, 5)
  score = -x / (1 + sigma[:, None] ** 2)
  d = edm.denoiser_from_score(score, x, sigma)
  np.testing.assert_allclose(np.asarray(edm.score_from_denoiser(d, x, sigma)), np.asarray(score),
                             rtol=1e-5, atol=1e-6)


def test_bad_arguments():
  with pytest.raises(ValueError, match="'vq'.*allowed"):
    edm.get_preconditioning("vq")
  with pytest.raises(ValueError, match="sigma_dat"):
    edm.get_preconditioning("edm", sigma_dat=0.5)
