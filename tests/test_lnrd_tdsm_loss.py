"""TDSM loss estimators: exact algebra, the released code's form, unbiasedness of `sampled`."""

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from lnrd import edm
from lnrd import tdsm_loss

C, B, D = 5, 6, 3
PRECOND = edm.get_preconditioning("edm")


def _net_params(key):
  k = jax.random.split(key, 4)
  return dict(w1=jax.random.normal(k[0], (D, 8)) / 2, emb=jax.random.normal(k[1], (C, 8)),
              w2=jax.random.normal(k[2], (8, D)) / 3, v=jax.random.normal(k[3], (8,)))


def _denoiser(params):
  def denoise(x, sigma, labels):
    h = jnp.tanh(x @ params["w1"] + params["emb"][labels] + sigma[:, None] * params["v"])
    return 0.5 * x + h @ params["w2"]
  return denoise


def _problem(seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 5)
  params = _net_params(keys[0])
  clean = jax.random.normal(keys[1], (B, D))
  sigma = jnp.exp(jax.random.normal(keys[2], (B,)) - 0.5)
  x_t = clean + sigma[:, None] * jax.random.normal(keys[3], (B, D))
  w = jax.random.dirichlet(keys[4], jnp.full((C,), 0.7), (B,))
  noisy = jnp.argmax(w, axis=1)
  return params, clean, sigma, x_t, w, noisy


def _loss_fn(estimator, clean, sigma, x_t, w, noisy, **kw):
  def fn(params, key):
    loss = tdsm_loss.weighted_denoising_loss(_denoiser(params), key, x_t, sigma, clean, noisy, w,
                                             PRECOND, estimator=estimator, **kw)
    return loss.mean()
  return fn


def _numpy_exact(params, clean, sigma, x_t, w):
  outs = np.stack([np.asarray(_denoiser(params)(x_t, sigma, jnp.full((B,), y))) for y in range(C)])
  mixed = np.einsum("bc,cbd->bd", np.asarray(w), outs)
  lam = (np.asarray(sigma)**2 + 0.25) / (np.asarray(sigma) * 0.5) ** 2
  return (lam * ((mixed - np.asarray(clean)) ** 2).sum(1)).mean(), outs


def test_exact_matches_numpy_and_topk_with_all_labels():
  params, clean, sigma, x_t, w, noisy = _problem()
  want, _ = _numpy_exact(params, clean, sigma, x_t, w)
  key = jax.random.PRNGKey(0)
  exact = _loss_fn("exact", clean, sigma, x_t, w, noisy)
  np.testing.assert_allclose(float(exact(params, key)), want, rtol=1e-5)
  full_topk = _loss_fn("topk", clean, sigma, x_t, w, noisy, top_k=C)
  np.testing.assert_allclose(float(full_topk(params, key)), want, rtol=1e-5)
  g_exact = jax.grad(exact)(params, key)
  g_topk = jax.grad(full_topk)(params, key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_exact, g_topk)


def test_topk_keeps_heaviest_labels_renormalised():
  params, clean, sigma, x_t, w, noisy = _problem(1)
  _, outs = _numpy_exact(params, clean, sigma, x_t, w)
  w_np = np.asarray(w)
  order = np.argsort(-w_np, axis=1)[:, :2]
  top = np.take_along_axis(w_np, order, 1)
  top = top / top.sum(1, keepdims=True)
  mixed = np.stack([top[b, 0] * outs[order[b, 0], b] + top[b, 1] * outs[order[b, 1], b]
                    for b in range(B)])
  lam = (np.asarray(sigma)**2 + 0.25) / (np.asarray(sigma) * 0.5) ** 2
  want = (lam * ((mixed - np.asarray(clean)) ** 2).sum(1)).mean()
  got = _loss_fn("topk", clean, sigma, x_t, w, noisy, top_k=2)(params, jax.random.PRNGKey(0))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_official_value_and_gradient_follow_released_code():
  params, clean, sigma, x_t, w, noisy = _problem(2)
  key = jax.random.PRNGKey(0)
  want, outs = _numpy_exact(params, clean, sigma, x_t, w)
  official = _loss_fn("official", clean, sigma, x_t, w, noisy, tau=0.0)
  np.testing.assert_allclose(float(official(params, key)), want, rtol=1e-5)  # same forward
  # Gradient: only the given label's pass carries it:
  # 2 lam (D_bar - x)^T w_y~ dD(y~) / B, with D_bar held fixed.
  mixed = jnp.asarray(np.einsum("bc,cbd->bd", np.asarray(w), outs))
  lam = PRECOND.loss_weight(sigma)
  w_given = w[jnp.arange(B), noisy]

  def surrogate(p):
    given = _denoiser(p)(x_t, sigma, noisy)
    return jnp.mean(2 * lam * jnp.sum((mixed - clean) * w_given[:, None] * given, axis=1))

  g_ref = jax.grad(surrogate)(params)
  g_off = jax.grad(official)(params, key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_off, g_ref)
  # ... which is not the exact gradient.
  g_exact = jax.grad(_loss_fn("exact", clean, sigma, x_t, w, noisy))(params, key)
  assert not np.allclose(g_off["w2"], g_exact["w2"], rtol=1e-2)


def test_official_drops_light_labels_without_renormalising():
  params, clean, sigma, x_t, _, _ = _problem(3)
  w = jnp.tile(jnp.array([[0.6] + [0.1] * 4]), (B, 1))
  noisy = jnp.zeros((B,), jnp.int32)
  got = _loss_fn("official", clean, sigma, x_t, w, noisy, tau=0.2)(params, jax.random.PRNGKey(0))
  given = np.asarray(_denoiser(params)(x_t, sigma, noisy))
  lam = (np.asarray(sigma)**2 + 0.25) / (np.asarray(sigma) * 0.5) ** 2
  want = (lam * ((0.6 * given - np.asarray(clean)) ** 2).sum(1)).mean()  # target 0.6 D(y~)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("capacity", [0.0, 0.5])
def test_sampled_is_unbiased_for_exact_value_and_gradient(capacity):
  params, clean, sigma, x_t, w, noisy = _problem(4)
  exact = _loss_fn("exact", clean, sigma, x_t, w, noisy)
  sampled = _loss_fn("sampled", clean, sigma, x_t, w, noisy, num_samples=1,
                     residual_capacity=capacity)
  key = jax.random.PRNGKey(0)
  value_exact = float(exact(params, key))
  g_exact = flatten_util.ravel_pytree(jax.grad(exact)(params, key))[0]
  n = 4000
  keys = jax.random.split(jax.random.PRNGKey(1), n)
  values, grads = jax.jit(jax.vmap(jax.value_and_grad(sampled), in_axes=(None, 0)))(params, keys)
  grads = jax.vmap(lambda g: flatten_util.ravel_pytree(g)[0])(grads)
  # Value: z-score of the Monte Carlo mean.
  z_value = (values.mean() - value_exact) / (values.std() / np.sqrt(n))
  assert abs(float(z_value)) < 4.5
  # Gradient: every coordinate with real spread within 4.5 standard errors (|z| max over ~80).
  se = grads.std(axis=0) / np.sqrt(n)
  mask = se > 1e-6
  z = (grads.mean(axis=0) - g_exact)[mask] / se[mask]
  assert mask.sum() > 40 and float(jnp.abs(z).max()) < 4.5
  # The test can fail: the official (biased) gradient is far outside the band.
  g_off = flatten_util.ravel_pytree(
      jax.grad(_loss_fn("official", clean, sigma, x_t, w, noisy, tau=0.0))(params, key))[0]
  z_off = (grads.mean(axis=0) - g_off)[mask] / se[mask]
  assert float(jnp.abs(z_off).max()) > 10


def test_sampled_with_one_hot_weights_is_plain_dsm():
  params, clean, sigma, x_t, _, _ = _problem(5)
  noisy = jnp.arange(B) % C
  w = jax.nn.one_hot(noisy, C)
  got = tdsm_loss.weighted_denoising_loss(_denoiser(params), jax.random.PRNGKey(0), x_t, sigma,
                                          clean, noisy, w, PRECOND, estimator="sampled")
  want = edm.denoising_error(_denoiser(params)(x_t, sigma, noisy), clean, sigma, PRECOND)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5)


def test_tdsm_loss_draws_sigma_and_weights_without_gradient():
  params, clean, _, _, _, noisy = _problem(6)
  seen = {}

  def weight_fn(x_t, sigma, labels):
    seen["sigma"] = sigma
    return jax.nn.one_hot(labels, C)

  loss, sigma, w = tdsm_loss.tdsm_loss(_denoiser(params), weight_fn, jax.random.PRNGKey(3), clean,
                                       noisy, PRECOND, estimator="exact")
  assert loss.shape == (B,) and sigma.shape == (B,) and w.shape == (B, C)
  assert float(jnp.all(sigma > 0))


def test_bad_estimator_arguments():
  params, clean, sigma, x_t, w, noisy = _problem()
  with pytest.raises(ValueError, match="'mean'.*allowed"):
    _loss_fn("mean", clean, sigma, x_t, w, noisy)(params, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="top_k=9"):
    _loss_fn("topk", clean, sigma, x_t, w, noisy, top_k=9)(params, jax.random.PRNGKey(0))


@pytest.mark.parametrize("num_different", [0, 2, 5])
def test_residual_sub_batch_equals_full_evaluation(num_different):
  # z == y rows reuse D(y); the others are evaluated on a sub-batch of static size
  # (or, when too many differ, on the full batch): all give D(z) for every row.
  params, _, sigma, x_t, _, _ = _problem(7)
  denoise = _denoiser(params)
  y = jnp.array([[0, 1, 2, 3, 4, 0]])
  z = y.at[0, :num_different].set((y[0, :num_different] + 1) % C)
  d_y = tdsm_loss.denoise_labels(denoise, x_t, sigma, y)
  want = tdsm_loss.denoise_labels(denoise, x_t, sigma, z)
  for capacity in (0.0, 0.5, 1.0):
    got = jax.jit(lambda d: tdsm_loss._residual_denoised(  # pylint: disable=protected-access
        denoise, x_t, sigma, y, z, d, capacity))(d_y)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
