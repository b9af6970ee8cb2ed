"""The estimators of `sgn_jax.noise_estimation` recover a known T on synthetic data.

Data: the 4-class 2-D Gaussian mixture of `sgn_jax.data.gmm` (means on a circle of
radius 2, std 0.5, Bayes error ~0.5%), 20,000 points, 30% noise (symmetric TDSM
convention, or pair flips i -> i+1). Error = `transition_error`, the mean over rows
of the L1 row distance. Bounds are stated per test with the value measured when
they were set (seeded, so deterministic up to float round-off).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lnrd import time_classifier as tc
from sgn_jax import corrector
from sgn_jax import noise
from sgn_jax import noise_estimation as ne
from sgn_jax.data.gmm import GaussianMixture2D

C = 4
N = 20_000


def _pair(c, rate):
  """i -> i + 1 (mod c) with probability rate."""
  return (1 - rate) * np.eye(c) + rate * np.roll(np.eye(c), 1, axis=1)


TRANSITIONS = {"sym": noise.transition_matrix("sym", C, 0.3, convention="tdsm"),
               "pair": _pair(C, 0.3)}


@pytest.fixture(scope="module")
def mixture():
  gmm = GaussianMixture2D(C)
  x, clean = gmm.sample(jax.random.PRNGKey(0), N)
  return gmm, np.asarray(x), np.asarray(clean)


def _noisy(clean, kind, seed=1):
  return noise.sample_noisy_labels(clean, TRANSITIONS[kind], seed=seed)


class _MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = nn.silu(nn.Dense(64)(x))
    return nn.Dense(C)(x)


def _train(x, noisy, *, learned, lr_theta=1e-3, lam=tc.VOLMIN_WEIGHT, steps=2000):
  """Adam (lr 1e-3, batch 256) on -log((softmax(f) @ T)[y~]) (+ lam logdet T when
  `learned`, T = VolMinNet's from theta_0 = -2, theta at `lr_theta`); returns
  (noisy posteriors softmax(f) @ T on x, learned T or None)."""
  model = _MLP()
  params = {"net": model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))["params"]}
  if learned:
    params["theta"] = tc.init_volmin_theta(C)
  tx = optax.multi_transform({"net": optax.adam(1e-3), "theta": optax.adam(lr_theta)},
                             {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()})
  x, noisy = jnp.asarray(x), jnp.asarray(noisy)

  def transition(p):
    return ne.volmin_transition(p["theta"]) if learned else jnp.eye(C)

  def loss_fn(p, xb, yb):
    t = transition(p)
    nll = tc.forward_corrected_nll(model.apply({"params": p["net"]}, xb), yb, t).mean()
    return nll + lam * tc.volmin_regularizer(t) if learned else nll

  def step(carry, idx):
    p, s = carry
    updates, s = tx.update(jax.grad(loss_fn)(p, x[idx], noisy[idx]), s, p)
    return (optax.apply_updates(p, updates), s), None

  idx = jax.random.randint(jax.random.PRNGKey(100), (steps, 256), 0, x.shape[0])
  params, _ = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), idx)[0])(params, tx.init(params))
  probs = jax.nn.softmax(model.apply({"params": params["net"]}, x)) @ transition(params)
  learned_t = np.asarray(transition(params), np.float64) if learned else None
  return np.asarray(probs, np.float64), learned_t


def test_transition_error_is_the_mean_l1_row_distance():
  a = np.eye(3)
  b = np.array([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8]])
  assert ne.transition_error(b, a) == pytest.approx((0.4 + 0.0 + 0.4) / 3)
  assert ne.transition_error(a, a) == 0.0


# ----------------------------------------------------------------------------- anchors


@pytest.mark.parametrize("kind", sorted(TRANSITIONS))
@pytest.mark.parametrize("quantile", [0.97, None])
def test_anchor_points_recover_T_from_exact_posteriors(mixture, kind, quantile):
  """Exact p(y~|x) = p(y|x) @ T of the mixture (an independent reference): the 97th
  percentile example of each class is deep inside it, p(y=i|x) ~ 1, so its noisy
  posterior is row i of T. Bound 0.01 (measured < 1e-5)."""
  gmm, x, _ = mixture
  T = TRANSITIONS[kind]
  probs = np.asarray(gmm.noisy_label_posterior(x, T), np.float64)
  estimate = ne.anchor_transition(probs, quantile=quantile)
  noise.check_transition(estimate)
  assert ne.transition_error(estimate, T) < 0.01
  averaged = ne.anchor_transition(probs, quantile=quantile, num_anchors=20)
  assert ne.transition_error(averaged, T) < 0.01


def test_anchor_points_from_a_trained_classifier(mixture):
  """Posteriors of a small MLP trained with cross-entropy on the 30% pair-noisy labels
  (2,000 Adam steps): the classifier's calibration error passes into T^. Bound 0.12
  (measured 0.071); the identity (the plain noisy-label classifier's implicit T) is
  at 0.6."""
  _, x, clean = mixture
  probs, _ = _train(x, _noisy(clean, "pair"), learned=False)
  estimate = ne.anchor_transition(probs, quantile=0.97)
  T = TRANSITIONS["pair"]
  assert ne.transition_error(estimate, T) < 0.12
  assert ne.transition_error(np.eye(C), T) == pytest.approx(0.6)


def test_anchor_indices_follow_patrinis_filter():
  """Patrini et al.'s `est(filter_outlier=True)`: zero the values >= the 97th
  percentile ('higher'), then arg-max."""
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(5) * 0.5, size=300)
  for i in range(5):
    eta = probs[:, i].copy()
    eta[eta >= np.percentile(eta, 97, method="higher")] = 0.0
    assert ne.anchor_indices(probs, 0.97)[i, 0] == np.argmax(eta)
    assert ne.anchor_indices(probs, None)[i, 0] == np.argmax(probs[:, i])
  top = ne.anchor_indices(probs, None, num_anchors=3)
  assert top.shape == (5, 3)
  np.testing.assert_array_equal(top[0], np.argsort(-probs[:, 0], kind="stable")[:3])
  with pytest.raises(ValueError, match="rows must sum to 1"):
    ne.anchor_transition(2.0 * probs)
  with pytest.raises(ValueError, match="nonnegative"):
    ne.anchor_transition(np.log(probs))


def test_anchor_rows_mix_where_classes_overlap():
  """Without anchor points (overlapping classes: neighbouring means 0.71 apart, std
  0.5) row i is a mixture of rows of T: the diagonal comes out smaller than the
  truth's 0.70 (measured 0.56-0.57, error 0.27), even from exact posteriors."""
  gmm = GaussianMixture2D(C, radius=0.5)
  x, _ = gmm.sample(jax.random.PRNGKey(0), N)
  T = TRANSITIONS["sym"]
  estimate = ne.anchor_transition(np.asarray(gmm.noisy_label_posterior(x, T), np.float64))
  assert np.all(np.diag(estimate) < 0.62)


# ----------------------------------------------------------------------------- no clean labels


def test_moment_transition_recovers_the_labels_T():
  """Corrected labels with a known confusion, given labels with 40% symmetric noise,
  independent given y; n = 200,000. Bound 0.03 (measured 0.005); the corrector's
  `moment_transition` is this estimate mixed with the uniform matrix."""
  rng = np.random.default_rng(2)
  n = 200_000
  clean = rng.integers(0, C, n)
  T = noise.transition_matrix("sym", C, 0.4, convention="tdsm")
  given = noise.sample_noisy_labels(clean, T, seed=3)
  confusion = np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.8, 0.2, 0.0],
                        [0.0, 0.0, 1.0, 0.0], [0.05, 0.0, 0.0, 0.95]])
  predicted = noise.sample_noisy_labels(clean, confusion, seed=4)
  estimate = ne.moment_transition(predicted, given, T)
  assert ne.transition_error(estimate, confusion) < 0.03
  np.testing.assert_allclose(corrector.moment_transition(given, predicted, T, floor=0.1),
                             0.9 * estimate + 0.1 / C, rtol=1e-12)
  with pytest.raises(noise.SingularTransitionError):
    ne.moment_transition(predicted, given, np.full((C, C), 1 / C))


def test_soft_confusion_recovers_T_with_calibrated_posteriors(mixture):
  """Exact clean posteriors of the (nearly separable) mixture as soft clean labels.
  Bound 0.03 (measured 0.015); the corrector's estimate is this plus its floor."""
  gmm, x, clean = mixture
  probs = np.asarray(gmm.class_posterior(x), np.float64)
  noisy = _noisy(clean, "pair")
  estimate = ne.soft_confusion_transition(probs, noisy)
  assert ne.transition_error(estimate, TRANSITIONS["pair"]) < 0.03
  np.testing.assert_allclose(corrector.soft_confusion_transition(probs, noisy, floor=0.1),
                             0.9 * estimate + 0.1 / C, rtol=1e-12)


# ----------------------------------------------------------------------------- trusted subset


@pytest.mark.parametrize("kind", sorted(TRANSITIONS))
def test_confusion_transition_from_a_trusted_subset(mixture, kind):
  """Counts of (clean, noisy) on 5,000 trusted examples (~1,250 per class). Bound
  0.05 (measured 0.038 sym, 0.016 pair; sampling error ~ sqrt(0.21 / 1250) per
  entry)."""
  _, _, clean = mixture
  noisy = _noisy(clean, kind)
  trusted = slice(0, 5000)
  estimate = ne.confusion_transition(clean[trusted], noisy[trusted], C)
  assert ne.transition_error(estimate, TRANSITIONS[kind]) < 0.05
  np.testing.assert_array_equal(
      estimate, noise.empirical_transition(clean[trusted], noisy[trusted], C))


def test_confusion_transition_smoothing():
  clean = np.array([0, 0, 0, 1])
  noisy = np.array([0, 0, 1, 1])
  got = ne.confusion_transition(clean, noisy, 3, smoothing=1.0)
  np.testing.assert_allclose(got, [[3 / 6, 2 / 6, 1 / 6], [1 / 4, 2 / 4, 1 / 4],
                                   [1 / 3, 1 / 3, 1 / 3]])
  np.testing.assert_allclose(ne.confusion_transition(clean, noisy, 3)[2], [0, 0, 1])
  with pytest.raises(ValueError, match="smoothing"):
    ne.confusion_transition(clean, noisy, 3, smoothing=-1.0)


def test_gold_transition_from_a_trusted_subset(mixture):
  """Mean exact noisy posterior over 1,000 trusted examples (~250 per class). Bound
  0.03 (measured 0.015)."""
  gmm, x, clean = mixture
  T = TRANSITIONS["pair"]
  probs = np.asarray(gmm.noisy_label_posterior(x[:1000], T), np.float64)
  assert ne.transition_error(ne.gold_transition(clean[:1000], probs), T) < 0.03


# ----------------------------------------------------------------------------- VolMinNet


def test_volmin_readout_is_the_classifiers_and_inverts():
  theta = tc.init_volmin_theta(C)
  t = np.asarray(ne.volmin_transition(theta))
  np.testing.assert_allclose(t, tc.volmin_transition(theta), rtol=0, atol=0)
  s = 1 / (1 + np.exp(2.0))
  np.testing.assert_allclose(np.diag(t), 1 / (1 + 3 * s), rtol=1e-6)  # 0.737
  np.testing.assert_allclose(jax.jit(ne.volmin_transition)(theta), t, rtol=1e-6)
  for T in (TRANSITIONS["sym"], 0.9 * TRANSITIONS["pair"] + 0.1 / C):
    np.testing.assert_allclose(ne.volmin_transition(ne.volmin_theta(T)), T, atol=1e-6)
  # zeros are reached up to the clipping
  np.testing.assert_allclose(ne.volmin_transition(ne.volmin_theta(TRANSITIONS["pair"])),
                             TRANSITIONS["pair"], atol=1e-5)


def test_volmin_recovers_T_only_when_theta_outpaces_the_network(mixture):
  """VolMinNet on 30% pair noise, 2,000 steps (`experiments/volmin_gmm.py` has the grid).

  With the authors' settings (theta_0 = -2, lam = 1e-4, theta in the network's Adam
  at lr 1e-3) the network absorbs the flips first and T drifts to the identity:
  diagonal 0.737 -> 0.888 (measured; 1.000 after 20k steps), error 0.47. With
  theta's rate 10x the network's (1e-2) T gets there first: diagonal 0.698, error 0.015 (bound
  0.05)."""
  _, x, clean = mixture
  T = TRANSITIONS["pair"]
  noisy = _noisy(clean, "pair")
  _, authors = _train(x, noisy, learned=True, lr_theta=1e-3)
  assert np.diag(authors).mean() > 0.85 and ne.transition_error(authors, T) > 0.35
  _, fast = _train(x, noisy, learned=True, lr_theta=1e-2)
  assert ne.transition_error(fast, T) < 0.05
