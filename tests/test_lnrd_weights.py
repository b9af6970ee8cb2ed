"""TDSM's transition-aware weights against exact posteriors of a noisy 2-D mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lnrd import weights
from sgn_jax import noise
from sgn_jax.data import gmm


def _mixture_and_points(seed=0, n=256, sigma=0.7, prior=(0.1, 0.2, 0.3, 0.4)):
  mixture = gmm.GaussianMixture2D(num_classes=4, radius=2.0, std=0.5, weights=prior)
  rng = np.random.default_rng(seed)
  x = rng.normal(scale=2.5, size=(n, 2))
  return mixture, x, sigma


def _exact_clean_given_noisy(mixture, x, sigma, T):
  """NumPy/SciPy: p(y | y~, x_t) = S[y~, y] p_t(x | y) / sum_k S[y~, k] p_t(x | k)."""
  prior = np.asarray(mixture.weights)
  S = T.T * prior[None, :]
  S = S / S.sum(axis=1, keepdims=True)  # S[y~, y] = T[y, y~] pi_y / sum_k T[k, y~] pi_k
  var = mixture.std**2 + sigma**2
  dens = np.stack([stats.multivariate_normal(np.asarray(m), var * np.eye(2)).pdf(x)
                   for m in np.asarray(mixture.means)], axis=1)  # (n, C)
  w = S[None, :, :] * dens[:, None, :]  # [b, y~, y]
  return w / w.sum(axis=2, keepdims=True), S, dens


@pytest.mark.parametrize("kind", ["sym", "asym_pairs"])
def test_both_forms_equal_exact_posterior(kind):
  mixture, x, sigma = _mixture_and_points()
  if kind == "sym":
    T = noise.symmetric_transition(4, 0.4, include_true_class=False)
  else:
    T = np.array([[0.7, 0.3, 0, 0], [0, 0.8, 0.2, 0], [0, 0, 1, 0], [0.25, 0, 0, 0.75]])
  exact, _, dens = _exact_clean_given_noisy(mixture, x, sigma, T)
  prior = np.asarray(mixture.weights)
  consts = weights.transition_constants(T, clean_prior=prior)
  clean_post = dens * prior / (dens * prior).sum(axis=1, keepdims=True)
  noisy_post = clean_post @ T  # exact h~ = T^T q
  # float64 for a 1e-6 comparison; the functions are dtype-generic.
  with jax.enable_x64(True):
    consts64 = {k: jnp.asarray(v, jnp.float64) for k, v in consts.items()}
    consts64["reverse"] = jnp.asarray(noise.reverse_transition(T, prior))
    consts64["reverse_inv"] = jnp.linalg.inv(consts64["reverse"])
    consts64["noisy_prior"] = jnp.asarray(prior @ T)
    paper = weights.paper_weights(jnp.asarray(noisy_post), consts64["reverse"],
                                  consts64["reverse_inv"], consts64["noisy_prior"])
    released = weights.released_weights(jnp.asarray(clean_post), jnp.asarray(T))
    # The paper form divides by h~_y~: its absolute error grows like eps / h~_y~,
    # so compare where the given noisy label is not vanishingly improbable.
    informative = np.broadcast_to((noisy_post > 1e-6)[:, :, None], exact.shape)
    assert informative.mean() > 0.8
    np.testing.assert_allclose(np.asarray(paper)[informative], exact[informative], atol=1e-6)
    np.testing.assert_allclose(np.asarray(released), exact, atol=1e-6)
  # The float32 path used in training agrees to float32 accuracy.
  noisy = np.random.default_rng(1).integers(0, 4, size=len(x))
  got = weights.compute_weights("released", jnp.asarray(clean_post, jnp.float32),
                                jnp.asarray(noisy), consts)
  np.testing.assert_allclose(np.asarray(got), exact[np.arange(len(x)), noisy], atol=2e-5)


def test_gmm_reference_agrees_with_library_mixture():
  # The mixture's own posterior (used by the demo) is the same exact quantity.
  mixture, x, sigma = _mixture_and_points(seed=3, prior=None)
  T = noise.symmetric_transition(4, 0.4, include_true_class=False)
  exact, _, _ = _exact_clean_given_noisy(mixture, x, sigma, T)
  noisy = np.arange(len(x)) % 4
  lib = mixture.clean_given_noisy_posterior(jnp.asarray(x, jnp.float32), jnp.asarray(noisy), T,
                                            sigma)
  np.testing.assert_allclose(np.asarray(lib), exact[np.arange(len(x)), noisy], atol=2e-5)


def test_forms_agree_when_classifier_is_forward_consistent():
  # h~ = T^T q with uniform priors: the paper form equals the released form.
  rng = np.random.default_rng(2)
  c = 10
  T = noise.transition_matrix("asym", c, 0.4, dataset="mnist", convention="tdsm")
  T = 0.9 * T + 0.1 * noise.symmetric_transition(c, 0.4, include_true_class=False)
  q = rng.dirichlet(np.ones(c) * 0.5, size=64).astype(np.float32)
  consts = weights.transition_constants(T)
  paper = weights.paper_weights(jnp.asarray(q @ T), consts["reverse"], consts["reverse_inv"],
                                consts["noisy_prior"])
  released = weights.released_weights(jnp.asarray(q), consts["transition"])
  np.testing.assert_allclose(np.asarray(paper), np.asarray(released), atol=2e-5)


def test_rows_are_convex_after_cleaning():
  rng = np.random.default_rng(4)
  c = 5
  T = noise.symmetric_transition(c, 0.3, include_true_class=False)
  consts = weights.transition_constants(T)
  h = rng.dirichlet(np.ones(c), size=128).astype(np.float32)  # not forward-consistent
  raw = weights.paper_weights(jnp.asarray(h), consts["reverse"], consts["reverse_inv"],
                              consts["noisy_prior"])
  assert float(raw.min()) < 0  # an arbitrary h~ leaves the simplex ...
  cleaned = weights.clean_rows(raw)  # ... the released clamp brings it back
  assert float(cleaned.min()) >= 0 and float(cleaned.max()) <= 1
  np.testing.assert_allclose(np.asarray(cleaned.sum(-1)), 1.0, rtol=1e-5)
  # NaN rows (a zero denominator) become 0, as in the released code.
  assert float(weights.clean_rows(jnp.zeros((2, c))).sum()) == 0.0


def test_weights_for_labels_picks_rows():
  all_w = jnp.arange(2 * 3 * 3, dtype=jnp.float32).reshape(2, 3, 3)
  got = weights.weights_for_labels(all_w, jnp.array([2, 0]))
  np.testing.assert_array_equal(np.asarray(got), np.asarray([all_w[0, 2], all_w[1, 0]]))


def test_singular_reverse_transition_is_refused():
  T = noise.symmetric_transition(10, 0.9, include_true_class=False)  # singular at r = 9/10
  with pytest.raises(noise.SingularTransitionError, match="reverse transition"):
    weights.transition_constants(T)
  with pytest.raises(ValueError, match="'bayes'.*allowed"):
    weights.compute_weights("bayes", jnp.ones((1, 10)) / 10, jnp.zeros(1, jnp.int32),
                            weights.transition_constants(np.eye(10)))
