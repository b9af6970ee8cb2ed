"""Tests of lnrd.sampler: EDM's Algorithm 2 against NumPy, exact denoisers, sharding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrd import sampler
from sgn_jax.data.gmm import GaussianMixture2D, load_gmm
from sgn_jax.training import mesh as mesh_lib

MU = 0.7
STD = 0.5


def gaussian_denoiser(mu=MU, std=STD):
  """Exact D for data N(mu, std^2 I): mu + std^2/(std^2+sigma^2) (x - mu)."""
  def denoise(x, sigma, class_labels):
    del class_labels
    sigma = jnp.reshape(sigma, sigma.shape + (1,) * (x.ndim - 1))
    return mu + std ** 2 / (std ** 2 + sigma ** 2) * (x - mu)
  return denoise


def numpy_gaussian_denoiser(x, sigma, mu=MU, std=STD):
  return mu + std ** 2 / (std ** 2 + sigma ** 2) * (x - mu)


def numpy_edm(latents, denoise, num_steps=18, sigma_min=0.002, sigma_max=80.0,
              rho=7.0, solver="heun", s_churn=0.0, s_min=0.0,
              s_max=float("inf"), s_noise=1.0, noises=None):
  """EDM's Algorithm 2 in float64, written out step by step as in the paper.

  `noises[i]` is the standard normal draw of step i (used only if it churns).
  """
  idx = np.arange(num_steps, dtype=np.float64)
  t = (sigma_max ** (1 / rho) + idx / (num_steps - 1)
       * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
  t = np.append(t, 0.0)
  x = np.asarray(latents, np.float64) * t[0]
  for i in range(num_steps):
    t_cur, t_next = t[i], t[i + 1]
    gamma = min(s_churn / num_steps, np.sqrt(2) - 1) if s_min <= t_cur <= s_max else 0.0
    t_hat = t_cur + gamma * t_cur
    x_hat = x
    if gamma > 0:
      x_hat = x + np.sqrt(t_hat ** 2 - t_cur ** 2) * s_noise * noises[i]
    d_cur = (x_hat - denoise(x_hat, t_hat)) / t_hat
    x = x_hat + (t_next - t_hat) * d_cur
    if solver == "heun" and i < num_steps - 1:
      d_prime = (x - denoise(x, t_next)) / t_next
      x = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
  return x


# --------------------------------------------------------------------------- #
# Time steps.


@pytest.mark.parametrize("num_steps,sigma_min,sigma_max,rho",
                         [(18, 0.002, 80.0, 7.0), (5, 0.01, 10.0, 3.0), (2, 0.002, 80.0, 7.0)])
def test_sigma_steps_closed_form(num_steps, sigma_min, sigma_max, rho):
  steps = sampler.edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)
  assert steps.shape == (num_steps + 1,)
  assert steps.dtype == np.float32
  i = np.arange(num_steps)
  expected = (sigma_max ** (1 / rho) + i / (num_steps - 1)
              * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
  np.testing.assert_allclose(steps[:-1], expected, rtol=1e-6)
  assert steps[0] == np.float32(sigma_max)
  np.testing.assert_allclose(steps[-2], sigma_min, rtol=1e-6)
  assert steps[-1] == 0.0
  assert np.all(np.diff(steps) < 0)


def test_sigma_steps_defaults_and_single_step():
  steps = sampler.edm_sigma_steps()
  assert len(steps) == 19
  assert steps[0] == np.float32(80.0)
  np.testing.assert_allclose(steps[17], 0.002, rtol=1e-6)
  assert steps[18] == 0.0
  np.testing.assert_array_equal(sampler.edm_sigma_steps(1, 0.002, 80.0), [80.0, 0.0])


@pytest.mark.parametrize("kwargs", [dict(num_steps=0), dict(num_steps=-3), dict(num_steps=2.5),
                                    dict(sigma_min=0.0), dict(sigma_min=5.0, sigma_max=1.0),
                                    dict(rho=0.0)])
def test_sigma_steps_invalid(kwargs):
  with pytest.raises(ValueError):
    sampler.edm_sigma_steps(**kwargs)


# --------------------------------------------------------------------------- #
# Deterministic sampler against NumPy.


@pytest.mark.parametrize("solver", ["heun", "euler"])
@pytest.mark.parametrize("shape", [(64, 2), (4, 4, 4, 3)])
def test_deterministic_matches_numpy(solver, shape):
  latents = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  fn = jax.jit(lambda z: sampler.edm_sample(gaussian_denoiser(), z, None, None,
                                            solver=solver))
  got = np.asarray(fn(latents))
  want = numpy_edm(latents, numpy_gaussian_denoiser, solver=solver)
  assert got.shape == shape and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # And the sampler really moved the points towards the data distribution.
  assert abs(np.mean(got) - MU) < 0.3


def test_heun_and_euler_differ_and_short_schedules_match_numpy():
  latents = np.random.default_rng(1).standard_normal((32, 2)).astype(np.float32)
  den = gaussian_denoiser()
  heun = np.asarray(sampler.edm_sample(den, latents, None, None, num_steps=6))
  euler = np.asarray(sampler.edm_sample(den, latents, None, None, num_steps=6, solver="euler"))
  assert np.max(np.abs(heun - euler)) > 1e-2
  np.testing.assert_allclose(
      heun, numpy_edm(latents, numpy_gaussian_denoiser, num_steps=6), rtol=1e-4, atol=1e-5)
  # One step: a single Euler step from sigma_max to 0, i.e. D(80 z; 80). In
  # float32, x + (0 - 80)(x - D)/80 with |x| ~ 80 loses about 80 * 2^-24 * a few.
  one = np.asarray(sampler.edm_sample(den, latents, None, None, num_steps=1))
  np.testing.assert_allclose(one, numpy_gaussian_denoiser(80.0 * latents.astype(np.float64), 80.0),
                             rtol=0, atol=5e-5)


def test_heun_converges_to_exact_ode_solution():
  # The probability-flow ODE of N(mu, s^2 I) from x(80) = 80 z is solved by
  # x(0) = mu + s / sqrt(s^2 + 80^2) (80 z - mu); Heun is 2nd order in the steps.
  z = np.linspace(-2.0, 2.0, 8, dtype=np.float32)[:, None]
  exact = MU + STD / np.sqrt(STD ** 2 + 80.0 ** 2) * (80.0 * z.astype(np.float64) - MU)
  errs = []
  for n in (18, 36, 144):
    x = np.asarray(sampler.edm_sample(gaussian_denoiser(), z, None, None, num_steps=n))
    errs.append(np.max(np.abs(x - exact)))
  assert errs[2] < 1e-3
  assert 3.0 < errs[0] / errs[1] < 5.0, errs  # error ratio ~4 when halving the step


@pytest.mark.parametrize("solver,num_steps,nfe", [("heun", 18, 35), ("euler", 18, 18),
                                                  ("heun", 1, 1)])
def test_number_of_network_evaluations(solver, num_steps, nfe):
  sigmas = []

  def counting(x, sigma, y):
    sigmas.append(float(sigma[0]))
    return gaussian_denoiser()(x, sigma, y)

  with jax.disable_jit():
    sampler.edm_sample(counting, jnp.zeros((2, 2)), None, None, solver=solver,
                       num_steps=num_steps)
  assert len(sigmas) == nfe
  assert min(sigmas) > 0  # never evaluated at t_N = 0
  if solver == "heun" and num_steps == 18:
    t = sampler.edm_sigma_steps()
    np.testing.assert_allclose(sigmas[0::2], t[:-1], rtol=1e-6)
    np.testing.assert_allclose(sigmas[1::2], t[1:-1], rtol=1e-6)


def test_invalid_arguments():
  den = gaussian_denoiser()
  z = jnp.zeros((2, 2))
  with pytest.raises(ValueError):
    sampler.edm_sample(den, z, None, None, solver="rk4")
  with pytest.raises(ValueError):
    sampler.edm_sample(den, z, None, None, num_steps=0)
  with pytest.raises(ValueError):  # churn without a key
    sampler.edm_sample(den, z, None, None, s_churn=10.0)


# --------------------------------------------------------------------------- #
# Stochastic sampler.


def _churn_noises(key, shape, num_steps):
  return [np.asarray(jax.random.normal(jax.random.fold_in(key, i), shape), np.float64)
          for i in range(num_steps)]


@pytest.mark.parametrize("churn", [dict(s_churn=40.0, s_min=0.05, s_max=50.0, s_noise=1.003),
                                   dict(s_churn=100.0)])  # gamma clamped to sqrt(2)-1
def test_stochastic_matches_numpy_with_same_noise(churn):
  shape = (16, 2)
  latents = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
  key = jax.random.PRNGKey(3)
  got = np.asarray(jax.jit(lambda z, k: sampler.edm_sample(
      gaussian_denoiser(), z, None, k, **churn))(latents, key))
  want = numpy_edm(latents, numpy_gaussian_denoiser, noises=_churn_noises(key, shape, 18), **churn)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  det = numpy_edm(latents, numpy_gaussian_denoiser)
  assert np.max(np.abs(got - det)) > 1e-2  # the churn really changed something


def test_stochastic_statistics_reproducible_and_key_dependent():
  # 64 steps: with 18 the discretisation error alone inflates the std of this
  # Gaussian by ~5.5% (deterministic Heun) to ~13% (churn 40, gamma clamped at
  # sqrt(2)-1); EDM's ImageNet setting uses these churn values with 256 steps.
  shape = (4096, 4)
  latents = jax.random.normal(jax.random.PRNGKey(0), shape)
  fn = jax.jit(lambda z, k: sampler.edm_sample(gaussian_denoiser(), z, None, k, num_steps=64,
                                               s_churn=40.0, s_min=0.05, s_max=50.0,
                                               s_noise=1.003))
  a = np.asarray(fn(latents, jax.random.PRNGKey(1)))
  b = np.asarray(fn(latents, jax.random.PRNGKey(1)))
  c = np.asarray(fn(latents, jax.random.PRNGKey(2)))
  np.testing.assert_array_equal(a, b)
  assert np.mean(np.abs(a - c)) > 0.05
  for samples in (a, c):
    # 16384 values: standard error of the mean 0.004, of the std about 0.003.
    assert abs(samples.mean() - MU) < 0.03, samples.mean()
    assert abs(samples.std() / STD - 1) < 0.05, samples.std()


def test_churn_outside_window_is_deterministic():
  latents = np.random.default_rng(4).standard_normal((8, 2)).astype(np.float32)
  den = gaussian_denoiser()
  det = sampler.edm_sample(den, latents, None, None)
  # No t_i lies in [100, 200]: no churn, no key needed.
  off = sampler.edm_sample(den, latents, None, None, s_churn=40.0, s_min=100.0, s_max=200.0)
  np.testing.assert_array_equal(np.asarray(det), np.asarray(off))


def test_churn_gammas():
  t = sampler.edm_sigma_steps(18)
  g = sampler.churn_gammas(t, 18, 40.0, 0.05, 50.0)
  inside = (t[:-1] >= 0.05) & (t[:-1] <= 50.0)
  np.testing.assert_allclose(g[inside], 40.0 / 18 if 40.0 / 18 < np.sqrt(2) - 1 else np.sqrt(2) - 1)
  assert np.all(g[~inside] == 0) and inside.any() and (~inside).any()
  np.testing.assert_allclose(sampler.churn_gammas(t, 18, 1.0, 0.0, np.inf), 1 / 18)
  # The window [s_min, s_max] is closed at both ends.
  g = sampler.churn_gammas(t, 18, 1.0, float(t[5]), float(t[2]))
  np.testing.assert_array_equal(np.nonzero(g)[0], [2, 3, 4, 5])


# --------------------------------------------------------------------------- #
# Class-conditional 2-D Gaussian mixture with the exact denoiser.


def gmm_denoiser(mixture):
  def denoise(x, sigma, y):
    return x + (sigma ** 2)[:, None] * mixture.score(x, y, sigma)
  return denoise


def test_gmm_class_conditional_samples_near_their_mean():
  mixture = GaussianMixture2D(num_classes=4)
  labels = sampler.class_balanced_labels(500, 4)
  latents = jax.random.normal(jax.random.PRNGKey(5), (labels.shape[0], 2))
  x = np.asarray(jax.jit(lambda z, y: sampler.edm_sample(gmm_denoiser(mixture), z, y, None))(
      latents, labels))
  means = np.asarray(mixture.means)
  nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
  assert np.mean(nearest == labels) > 0.99
  z = np.asarray(latents)
  for c in range(4):
    xc = x[labels == c]
    np.testing.assert_allclose(xc.mean(0), means[c], atol=0.08)
    # Each class's ODE is linear: x ~ std * z up to the 18-step Heun error
    # (about +5.5% for this Gaussian, see the convergence test).
    ratio = xc.std(0) / z[labels == c].std(0)
    assert np.all((ratio > mixture.std) & (ratio < 1.1 * mixture.std)), ratio
  # The dataset helper agrees with the mixture used above.
  ds = load_gmm(num_classes=4, num_train=8, num_test=8)
  assert ds.num_classes == 4


# --------------------------------------------------------------------------- #
# Sharded sampler.


def _param_gaussian(params, x, sigma, y):
  del y
  sigma = sigma[:, None]
  return params["mu"] + params["std"] ** 2 / (params["std"] ** 2 + sigma ** 2) * (x - params["mu"])


def _param_gmm(params, x, sigma, y):
  means = params["means"]
  var = params["std"] ** 2 + sigma ** 2
  return x - (sigma ** 2 / var)[:, None] * (x - means[y])


@pytest.mark.parametrize("churn", [{}, dict(s_churn=40.0, s_min=0.05, s_max=50.0, s_noise=1.003)])
def test_sharded_matches_single_device(churn):
  mesh = mesh_lib.create_mesh()
  assert mesh.shape["data"] == 8
  mixture = GaussianMixture2D(num_classes=4)
  params = {"means": mixture.means, "std": jnp.float32(mixture.std)}
  labels = sampler.class_balanced_labels(4, 4)
  latents = jax.random.normal(jax.random.PRNGKey(6), (16, 2))
  key = jax.random.PRNGKey(7)
  sample = sampler.make_sharded_sampler(_param_gmm, mesh, num_steps=10, **churn)
  out = sample(params, latents, labels, key)
  assert isinstance(out.sharding, jax.sharding.NamedSharding)
  assert out.sharding.spec == mesh_lib.data_sharded(mesh).spec
  assert len(out.sharding.device_set) == 8
  single = sampler.edm_sample(lambda x, s, y: _param_gmm(params, x, s, y),
                              latents, jnp.asarray(labels), key, num_steps=10, **churn)
  np.testing.assert_allclose(np.asarray(out), np.asarray(single), rtol=1e-5, atol=1e-6)


def test_sharded_without_labels_and_batch_checks():
  mesh = mesh_lib.create_mesh()
  params = {"mu": jnp.float32(MU), "std": jnp.float32(STD)}
  latents = np.random.default_rng(8).standard_normal((8, 2)).astype(np.float32)
  sample = sampler.make_sharded_sampler(_param_gaussian, mesh, num_steps=8, solver="euler")
  out = np.asarray(sample(params, latents, None, None))
  want = numpy_edm(latents, numpy_gaussian_denoiser, num_steps=8, solver="euler")
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError):
    sample(params, latents[:6], None, None)
  with pytest.raises(ValueError):
    sampler.make_sharded_sampler(_param_gaussian, mesh, solver="dpm")
  with pytest.raises(ValueError):
    sampler.make_sharded_sampler(_param_gaussian, mesh, num_steps=0)


# --------------------------------------------------------------------------- #
# Affine score and labels helper.


def test_affine_denoiser():
  den_a = lambda x, s, y: 2.0 * x + y[:, None]
  den_b = lambda x, s, y: x - s[:, None]
  x = jnp.asarray([[1.0, -2.0], [0.5, 3.0]])
  sigma = jnp.asarray([0.5, 2.0])
  y = jnp.asarray([1, 3])
  np.testing.assert_array_equal(np.asarray(sampler.affine_denoiser(den_a, den_b, 0.0)(x, sigma, y)),
                                np.asarray(den_a(x, sigma, y)))
  # 1.5 * (2x + y) - 0.5 * (x - sigma), by hand:
  want = np.asarray([[1.5 * 3.0 - 0.5 * 0.5, 1.5 * -3.0 - 0.5 * -2.5],
                     [1.5 * 4.0 - 0.5 * -1.5, 1.5 * 9.0 - 0.5 * 1.0]])
  np.testing.assert_allclose(np.asarray(sampler.affine_denoiser(den_a, den_b, 0.5)(x, sigma, y)),
                             want, rtol=1e-6)


def test_affine_denoiser_inside_the_sampler():
  # The sampler consumes the combination like any denoiser: compare with NumPy.
  den = sampler.affine_denoiser(gaussian_denoiser(0.7, 0.5), gaussian_denoiser(-0.3, 0.5), 0.25)
  latents = np.random.default_rng(9).standard_normal((8, 2)).astype(np.float32)
  got = np.asarray(sampler.edm_sample(den, latents, None, None, num_steps=8))
  np_den = lambda x, s: (1.25 * numpy_gaussian_denoiser(x, s, 0.7, 0.5)
                         - 0.25 * numpy_gaussian_denoiser(x, s, -0.3, 0.5))
  np.testing.assert_allclose(got, numpy_edm(latents, np_den, num_steps=8), rtol=1e-4, atol=1e-5)
  # Equal spreads: the combination is the exact D of N(1.25*0.7 - 0.25*(-0.3), 0.5^2) = N(0.95, .).
  np.testing.assert_allclose(
      got, numpy_edm(latents, lambda x, s: numpy_gaussian_denoiser(x, s, 0.95, 0.5), num_steps=8),
      rtol=1e-4, atol=1e-5)


def test_class_balanced_labels():
  labels = sampler.class_balanced_labels(3, 4)
  np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
  assert labels.dtype == np.int32
  with pytest.raises(ValueError):
    sampler.class_balanced_labels(0, 4)
