"""TDSM's pieces composed in a researcher's own JAX code (issue 18).

Gradient through the weights (`weight_grad`), vmap over transition matrices
(traced T), explicit sigma and noise against a NumPy reference, and declared
conditioning. Tiny sizes, float32; self-contained (only lnrd, sgn_jax, jax, flax,
numpy and pytest), so tests/test_installed.py runs this file from an installed
wheel outside the checkout with ml_collections and `configs` unimportable.
"""

import dataclasses

import flax.linen as nn
import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lnrd import diffusion
from lnrd import edm
from lnrd import tdsm_loss
from lnrd import weights
from sgn_jax import noise as noise_lib

C, B, D = 4, 8, 2
SIGMA_DATA = 1.0
PRECOND = edm.get_preconditioning("edm", sigma_data=SIGMA_DATA)
T_SYM = noise_lib.transition_matrix("sym", C, 0.3, convention="tdsm")


class Classifier(nn.Module):
  """A tiny time-dependent classifier: MLP of [x_t, log sigma] -> logits."""
  num_classes: int = C

  @nn.compact
  def __call__(self, x, sigma):
    h = jnp.concatenate([x, jnp.log(sigma)[:, None]], -1)
    return nn.Dense(self.num_classes)(jnp.tanh(nn.Dense(8)(h)))


CLASSIFIER = Classifier()


def _probs(params, x_t, sigma):
  return jax.nn.softmax(CLASSIFIER.apply({"params": params}, x_t, sigma), -1)


def _denoiser(params):
  def denoise(x, sigma, labels):
    h = x @ params["w"] + params["emb"][labels] + sigma[:, None] * params["v"]
    return 0.5 * x + jnp.tanh(h)
  return denoise


def _problem(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 8)
  cls_params = CLASSIFIER.init(k[0], jnp.zeros((1, D)), jnp.ones((1,)))["params"]
  den_params = dict(w=jax.random.normal(k[1], (D, D)) / 2, emb=jax.random.normal(k[2], (C, D)),
                    v=jax.random.normal(k[3], (D,)) / 2)
  clean = jax.random.normal(k[4], (B, D))
  noisy = jax.random.randint(k[5], (B,), 0, C)
  sigma = jnp.exp(jax.random.normal(k[6], (B,)) * 0.5 - 0.3)
  noise = jax.random.normal(k[7], (B, D))
  return cls_params, den_params, clean, noisy, sigma, noise


def _weight_model(cls_params, transition=T_SYM, form="released"):
  return diffusion.WeightModel(form, weights.transition_constants(transition), _probs,
                               params=cls_params)


# ---- (a) gradient through the weights -------------------------------------------------

def _loss_of(estimator, den_params, clean, noisy, sigma, noise, *, weight_grad, key=None):
  """Mean TDSM loss as a function of the weight model (a pytree)."""
  key = jax.random.PRNGKey(7) if key is None else key

  def loss(weight_model):
    return tdsm_loss.tdsm_loss(_denoiser(den_params), weight_model, key, clean, noisy, PRECOND,
                               sigma=sigma, noise=noise, estimator=estimator,
                               weight_grad=weight_grad, return_aux=True,
                               residual_capacity=0.0)[0]  # (no sub-batch: one program)
  return loss


@pytest.mark.parametrize("estimator", ["exact", "official", "topk"])
def test_weight_gradient_is_zero_by_default_and_a_finite_difference_with_weight_grad(estimator):
  cls_params, den_params, clean, noisy, sigma, noise = _problem()
  wm = _weight_model(cls_params)
  flat, unravel = flatten_util.ravel_pytree(cls_params)

  def grad_flat(weight_grad):
    loss = _loss_of(estimator, den_params, clean, noisy, sigma, noise, weight_grad=weight_grad)
    grads = jax.jit(jax.grad(loss))(wm)  # a WeightModel of gradients: params and constants
    return flatten_util.ravel_pytree(grads.params)[0], grads

  # The authors' stop-gradient: exactly zero for the classifier and for T.
  g_off, grads_off = grad_flat(False)
  assert float(jnp.abs(g_off).max()) == 0.0
  assert float(jnp.abs(grads_off.constants["transition"]).max()) == 0.0
  g_on, grads_on = grad_flat(True)
  assert float(jnp.linalg.norm(g_on)) > 1e-3
  assert float(jnp.abs(grads_on.constants["transition"]).max()) > 0  # released form reads T
  if estimator == "topk":
    return  # its value jumps where the k heaviest labels change: no finite difference
  # Central differences along random unit directions. float32: the loss (|L| ~ 10,
  # a sum of ~50 float32 terms) is rounded to ~1e-5 absolute, so with eps = 1e-2 the
  # difference quotient carries ~1e-3 absolute rounding error, and the O(eps^2)
  # truncation of this smooth MLP is smaller still; directional derivatives are O(1),
  # so rtol 2e-2 + atol 5e-3 tests the gradient to ~2%. With weight_grad=False the
  # same check fails (the gradient is 0, the difference quotient is not).
  loss = _loss_of(estimator, den_params, clean, noisy, sigma, noise, weight_grad=True)
  loss_flat = jax.jit(lambda f: loss(dataclasses.replace(wm, params=unravel(f))))
  eps = 1e-2
  fds, dots = [], []
  for i in range(3):
    u = jax.random.normal(jax.random.PRNGKey(100 + i), flat.shape)
    u = u / jnp.linalg.norm(u)
    fds.append(float(loss_flat(flat + eps * u) - loss_flat(flat - eps * u)) / (2 * eps))
    dots.append(float(g_on @ u))
  np.testing.assert_allclose(dots, fds, rtol=2e-2, atol=5e-3)
  assert max(abs(f) for f in fds) > 0.05  # the check can fail: zero would not pass


@pytest.mark.parametrize("estimator", ["exact", "sampled"])
def test_weight_grad_leaves_the_denoisers_gradient_unchanged(estimator):
  cls_params, den_params, clean, noisy, sigma, noise = _problem(1)
  wm = _weight_model(cls_params)

  def grads(weight_grad):
    def loss(p):
      return tdsm_loss.tdsm_loss(_denoiser(p), wm, jax.random.PRNGKey(3), clean, noisy, PRECOND,
                                 sigma=sigma, noise=noise, estimator=estimator,
                                 weight_grad=weight_grad, residual_capacity=0.0)[0].mean()
    return jax.jit(jax.value_and_grad(loss))(den_params)

  (v0, g0), (v1, g1) = grads(False), grads(True)
  np.testing.assert_allclose(float(v1), float(v0), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g0, g1)


def test_sampled_weight_gradient_is_unbiased_for_the_exact_one():
  # `sampled`'s weight gradient is a score-function estimate: its mean over draws
  # equals `exact`'s gradient w.r.t. the classifier (the weights' rows sum to one).
  cls_params, den_params, clean, noisy, sigma, noise = _problem(2)
  wm = _weight_model(cls_params)
  exact = _loss_of("exact", den_params, clean, noisy, sigma, noise, weight_grad=True)
  g_exact = flatten_util.ravel_pytree(jax.jit(jax.grad(exact))(wm).params)[0]

  def sampled_grad(key):
    loss = _loss_of("sampled", den_params, clean, noisy, sigma, noise, weight_grad=True, key=key)
    return flatten_util.ravel_pytree(jax.grad(loss)(wm).params)[0]

  n = 1000
  grads = jax.jit(jax.vmap(sampled_grad))(jax.random.split(jax.random.PRNGKey(5), n))
  se = grads.std(axis=0) / np.sqrt(n)
  mask = se > 1e-6
  z = (grads.mean(axis=0) - g_exact)[mask] / se[mask]
  assert mask.sum() > 20 and float(jnp.abs(z).max()) < 4.5, z
  # The test can fail: a zero gradient (the default) is far outside the band.
  assert float(jnp.abs(g_exact[mask] / se[mask]).max()) > 10


# ---- (b) vmap over transition matrices (traced T) --------------------------------------

def _transitions():
  asym = np.eye(C) * 0.7 + np.roll(np.eye(C), 1, axis=1) * 0.3
  return np.stack([noise_lib.transition_matrix("sym", C, r, convention="tdsm")
                   for r in (0.1, 0.4)] + [asym]).astype(np.float32)


@pytest.mark.parametrize("form", ["released", "paper"])
def test_vmap_over_transition_matrices_equals_the_python_loop(form):
  cls_params, den_params, clean, noisy, sigma, noise = _problem(3)
  transitions = _transitions()

  def per_example(transition):
    wm = diffusion.WeightModel(form, weights.transition_constants(transition), _probs,
                               params=cls_params)
    return tdsm_loss.tdsm_loss(_denoiser(den_params), wm, jax.random.PRNGKey(0), clean, noisy,
                               PRECOND, sigma=sigma, noise=noise, estimator="exact")[0]

  mapped = jax.jit(jax.vmap(per_example))(jnp.asarray(transitions))  # traced T: jnp constants
  assert mapped.shape == (3, B)
  # The loop takes the host path (float64 constants rounded to float32): agreement
  # to float32 accuracy (S^-1 of the paper form is the least accurate part).
  looped = np.stack([np.asarray(per_example(t)) for t in transitions])
  np.testing.assert_allclose(np.asarray(mapped), looped, rtol=2e-5 if form == "released" else 2e-4)
  assert not np.allclose(looped[0], looped[1])  # the three T give different losses


def test_transition_constants_trace_and_match_the_host_path():
  transition = _transitions()[2]
  host = weights.transition_constants(transition, clean_prior=[1, 2, 3, 4])
  assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in host.values())
  traced = jax.jit(lambda t: weights.transition_constants(t, clean_prior=jnp.array([1., 2, 3, 4])))(
      jnp.asarray(transition))
  for k in host:
    np.testing.assert_allclose(np.asarray(traced[k]), host[k], rtol=1e-5, atol=1e-6)
  # A learned T: the gradient reaches it through the paper form's S^-1 too.
  cls_params, den_params, clean, noisy, sigma, noise = _problem(4)

  def loss(t, weight_grad):
    wm = diffusion.WeightModel("paper", weights.transition_constants(t), _probs,
                               params=cls_params)
    return tdsm_loss.tdsm_loss(_denoiser(den_params), wm, jax.random.PRNGKey(0), clean, noisy,
                               PRECOND, sigma=sigma, noise=noise, estimator="exact",
                               weight_grad=weight_grad)[0].mean()

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  assert float(jnp.abs(grad(jnp.asarray(transition), True)).max()) > 0
  assert float(jnp.abs(grad(jnp.asarray(transition), False)).max()) == 0


# ---- (c) fixed sigma and noise against NumPy -------------------------------------------

class LinearDenoiser(nn.Module):
  """EDM's raw network F as one linear map of [x_in, c_noise, one-hot label]."""
  out_dim: int
  label_dim: int = C

  @nn.compact
  def __call__(self, x, noise_labels, class_labels, augment_labels=None, train=False):
    h = nn.Dense(self.out_dim, name="x")(x)
    h = h + nn.Dense(self.out_dim, use_bias=False, name="t")(noise_labels[:, None])
    if class_labels is not None:
      h = h + nn.Dense(self.out_dim, use_bias=False, name="y")(class_labels)
    return h


def _numpy_denoiser(params, x, sigma, labels):
  """D = c_skip x + c_out F(c_in x, c_noise, onehot) with EDM's coefficients, float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x, sigma = np.asarray(x, np.float64), np.asarray(sigma, np.float64)
  sd2 = SIGMA_DATA**2
  c_skip = sd2 / (sigma**2 + sd2)
  c_out = sigma * SIGMA_DATA / np.sqrt(sigma**2 + sd2)
  c_in = 1 / np.sqrt(sigma**2 + sd2)
  c_noise = np.log(sigma) / 4
  f = ((c_in[:, None] * x) @ p["x"]["kernel"] + p["x"]["bias"] + c_noise[:, None] @ p["t"]["kernel"]
       + np.eye(C)[np.asarray(labels)] @ p["y"]["kernel"])
  return c_skip[:, None] * x + c_out[:, None] * f


def _numpy_lambda(sigma):
  sigma = np.asarray(sigma, np.float64)
  return (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2


def _numpy_released_weights(q, noisy, transition):
  w = q * transition[:, noisy].T  # [b, y] = q_b,y T[y, y~_b]
  return w / w.sum(1, keepdims=True)


def _linear_setup(seed=0):
  model = LinearDenoiser(out_dim=D)
  state = diffusion.init_state(model, optax.sgd(0.1), (D,), C, jax.random.PRNGKey(seed))
  denoise_fn = diffusion.make_denoiser(model, PRECOND, C)
  return model, state, lambda p: (lambda x, s, y: denoise_fn({"params": p}, x, s, y))


def test_dsm_and_tdsm_with_given_sigma_and_noise_equal_numpy():
  cls_params, _, clean, noisy, sigma, noise = _problem(5)
  _, state, denoiser = _linear_setup()
  denoise = denoiser(state.params)
  x_t = np.asarray(clean, np.float64) + np.asarray(sigma, np.float64)[:, None] * np.asarray(noise)
  lam = _numpy_lambda(sigma)
  # DSM: the same for any key (the key is only used for what is not given).
  want_dsm = lam * ((_numpy_denoiser(state.params, x_t, sigma, noisy) - np.asarray(clean)) ** 2
                    ).sum(1)
  for seed in (0, 1):
    got, sig = edm.dsm_loss(denoise, jax.random.PRNGKey(seed), clean, noisy, PRECOND,
                            sigma=sigma, noise=noise)
    np.testing.assert_allclose(np.asarray(got), want_dsm, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(sig), np.asarray(sigma))
  mean, aux = edm.dsm_loss(denoise, jax.random.PRNGKey(0), clean, noisy, PRECOND, sigma=sigma,
                           noise=noise, return_aux=True)
  np.testing.assert_allclose(float(mean), want_dsm.mean(), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(aux["noise"]), np.asarray(noise))
  # TDSM (exact estimator): lambda || sum_y w_y D(y) - x ||^2, released weights of q.
  wm = _weight_model(cls_params)
  q = np.asarray(_probs(cls_params, jnp.asarray(x_t, jnp.float32), sigma), np.float64)
  w = _numpy_released_weights(q, np.asarray(noisy), np.asarray(T_SYM, np.float64))
  outs = np.stack([_numpy_denoiser(state.params, x_t, sigma, np.full(B, y)) for y in range(C)])
  want_tdsm = lam * ((np.einsum("by,ybd->bd", w, outs) - np.asarray(clean)) ** 2).sum(1)
  for seed in (0, 1):
    mean, aux = tdsm_loss.tdsm_loss(denoise, wm, jax.random.PRNGKey(seed), clean, noisy, PRECOND,
                                    sigma=sigma, noise=noise, estimator="exact",
                                    return_aux=True)
    np.testing.assert_allclose(np.asarray(aux["per_example"]), want_tdsm, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(aux["weights"]), w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(mean), want_tdsm.mean(), rtol=1e-5)
  # The objectives take the same keywords.
  obj_mean, obj_aux = diffusion.tdsm_objective(
      PRECOND, wm, tdsm_loss.TDSMSettings(estimator="exact"), num_classes=C)(
          denoise, jax.random.PRNGKey(2), clean, noisy, sigma=sigma, noise=noise,
          return_aux=True)
  np.testing.assert_allclose(np.asarray(obj_aux["per_example"]), want_tdsm, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(obj_aux["weight_of_given_label"]),
                             w[np.arange(B), np.asarray(noisy)], rtol=1e-5)
  per_example, sig, ones = diffusion.dsm_objective(PRECOND)(
      denoise, jax.random.PRNGKey(2), clean, noisy, sigma=sigma, noise=noise)
  np.testing.assert_allclose(np.asarray(per_example), want_dsm, rtol=1e-5)
  with pytest.raises(ValueError, match="weights for 4 classes but num_classes=3"):
    diffusion.tdsm_objective(PRECOND, wm, num_classes=3)(denoise, jax.random.PRNGKey(2), clean,
                                                          noisy)
  with pytest.raises(ValueError, match=r"sigma must have shape \(8,\)"):
    edm.dsm_loss(denoise, jax.random.PRNGKey(0), clean, noisy, PRECOND, sigma=sigma[:3])


def test_default_draws_are_unchanged_by_the_new_arguments():
  # Absent sigma and noise are drawn exactly as before: from key's split.
  cls_params, den_params, clean, noisy, _, _ = _problem(6)
  key = jax.random.PRNGKey(11)
  sigma_key, noise_key, _ = jax.random.split(key, 3)
  sigma = PRECOND.sample_sigma(sigma_key, (B,))
  noise = jax.random.normal(noise_key, clean.shape, clean.dtype)
  wm = _weight_model(cls_params)
  drawn = tdsm_loss.tdsm_loss(_denoiser(den_params), wm, key, clean, noisy, PRECOND)
  given = tdsm_loss.tdsm_loss(_denoiser(den_params), wm, key, clean, noisy, PRECOND, sigma=sigma,
                              noise=noise)
  for a, b in zip(drawn, given):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_train_step_with_given_sigma_and_noise_returns_gradients_and_per_example_losses():
  _, _, clean, noisy, sigma, noise = _problem(7)
  model, state, _ = _linear_setup(1)
  step = jax.jit(diffusion.make_train_step(model, optax.sgd(0.1), diffusion.dsm_objective(PRECOND),
                                           precond=PRECOND, num_classes=C, ema_decay=0.9,
                                           with_aux=True))
  batch = {"image": clean, "label": noisy, "sigma": sigma, "noise": noise}
  new_a, metrics_a, aux_a = step(state, batch, jax.random.PRNGKey(0))
  new_b, metrics_b, _ = step(state, batch, jax.random.PRNGKey(1))  # no dropout, no augment
  x_t = np.asarray(clean, np.float64) + np.asarray(sigma, np.float64)[:, None] * np.asarray(noise)
  want = _numpy_lambda(sigma) * ((_numpy_denoiser(state.params, x_t, sigma, noisy)
                                  - np.asarray(clean)) ** 2).sum(1)
  np.testing.assert_allclose(np.asarray(aux_a["per_example"]), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics_a["loss"]), want.mean(), rtol=1e-5)
  assert float(metrics_a["loss"]) == float(metrics_b["loss"])
  jax.tree.map(np.testing.assert_array_equal, new_a.params, new_b.params)
  # The returned gradient is the one the optimiser applied (SGD: params - 0.1 g).
  jax.tree.map(lambda p0, g, p1: np.testing.assert_allclose(p0 - 0.1 * g, p1, rtol=1e-5,
                                                            atol=1e-7),
               state.params, aux_a["grads"], new_a.params)
  # Without with_aux: the plain (state, metrics) step.
  plain = diffusion.make_train_step(model, optax.sgd(0.1), diffusion.dsm_objective(PRECOND),
                                    precond=PRECOND, num_classes=C, ema_decay=0.9)
  assert len(jax.jit(plain)(state, batch, jax.random.PRNGKey(0))) == 2


# ---- (d) declared conditioning ---------------------------------------------------------

class Undeclared(nn.Module):
  """A raw network without `label_dim`: nothing says whether it takes labels."""

  @nn.compact
  def __call__(self, x, noise_labels, class_labels, augment_labels=None, train=False):
    h = x if class_labels is None else jnp.concatenate([x, class_labels], -1)
    return nn.Dense(D)(h)


def test_a_denoiser_without_declared_conditioning_is_refused():
  objective = diffusion.dsm_objective(PRECOND)
  with pytest.raises(ValueError, match=r"Undeclared declares no `label_dim`.*conditional=True"):
    diffusion.make_denoiser(Undeclared(), PRECOND, C)
  with pytest.raises(ValueError, match="declares no `label_dim`"):
    diffusion.make_train_step(Undeclared(), optax.sgd(0.1), objective, precond=PRECOND,
                              num_classes=C, ema_decay=0.9)
  with pytest.raises(ValueError, match="declares no `label_dim`"):
    diffusion.init_state(Undeclared(), optax.sgd(0.1), (D,), C, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="LinearDenoiser.label_dim=4 but num_classes=3"):
    diffusion.make_denoiser(LinearDenoiser(out_dim=D), PRECOND, 3)
  with pytest.raises(ValueError, match="conditional=False but LinearDenoiser.label_dim=4"):
    diffusion.make_denoiser(LinearDenoiser(out_dim=D), PRECOND, C, conditional=False)
  # Declared: conditional=True feeds one-hot labels, False none; label_dim=0 is unconditional.
  _, _, clean, noisy, sigma, _ = _problem(8)
  for conditional in (True, False):
    state = diffusion.init_state(Undeclared(), optax.sgd(0.1), (D,), C, jax.random.PRNGKey(0),
                                 conditional=conditional)
    want = D + C if conditional else D
    assert state.params["Dense_0"]["kernel"].shape == (want, D)
    denoise_fn = diffusion.make_denoiser(Undeclared(), PRECOND, C, conditional=conditional)
    assert denoise_fn({"params": state.params}, clean, sigma, noisy).shape == (B, D)
  diffusion.make_denoiser(LinearDenoiser(out_dim=D, label_dim=0), PRECOND, C)
  diffusion.make_denoiser(Undeclared(), PRECOND, 0)  # no classes: nothing to declare


def test_takes_rows_is_declared_for_wrappers_without_a_signature():
  # A **kwargs wrapper hides `rows`: declared, the sub-batch rows reach it.
  cls_params, den_params, clean, noisy, sigma, noise = _problem(9)
  seen = []

  def denoise(x, sigma, labels, **kwargs):
    seen.append("rows" in kwargs)
    return _denoiser(den_params)(x, sigma, labels)

  wm = _weight_model(cls_params)
  for takes_rows in (None, True):
    seen.clear()
    tdsm_loss.tdsm_loss(denoise, wm, jax.random.PRNGKey(0), clean, noisy, PRECOND, sigma=sigma,
                        noise=noise, estimator="exact", takes_rows=takes_rows)
    assert seen == [bool(takes_rows)]
