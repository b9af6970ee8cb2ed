"""Tests for lnrd.time_classifier (TDSM time-dependent noisy-label classifiers)."""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrd import time_classifier as tc

GOLDEN = (pathlib.Path(__file__).parent / "data" /
          "tdsm_mnist_classifier_golden.npz")


def _num_params(name, num_classes, shape):
  model = tc.get_time_classifier(name, num_classes)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros(shape), jnp.ones((shape[0],))))
  n = sum(int(np.prod(l.shape)) for l in jax.tree.leaves(shapes["params"]))
  return n, set(shapes)


@pytest.mark.parametrize("name,num_classes,shape,expected,colls", [
    ("cnn", 10, (2, 32, 32, 1), 388_218, {"params"}),
    ("resnet18", 10, (2, 32, 32, 3), 11_996_298, {"params", "batch_stats"}),
    ("resnet34", 100, (2, 32, 32, 3), 22_150_628, {"params", "batch_stats"}),
])
def test_param_counts_match_authors(name, num_classes, shape, expected, colls):
  # Numbers from `sum(p.numel() for p in net.parameters())` of the authors'
  # EDMPrecond_classifier (default augment_dim=9); BN statistics excluded.
  n, got_colls = _num_params(name, num_classes, shape)
  assert n == expected
  assert got_colls == colls


def test_augment_dim_zero_removes_map_augment():
  model = tc.get_time_classifier("cnn", 10, augment_dim=0)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)), jnp.ones((1,))))
  n = sum(int(np.prod(l.shape)) for l in jax.tree.leaves(shapes["params"]))
  assert n == 388_218 - 9 * 128


def _golden():
  data = np.load(GOLDEN)
  sd = {k[len("sd/"):]: data[k] for k in data.files if k.startswith("sd/")}
  x = np.transpose(data["x_nchw"], (0, 2, 3, 1))
  return data, sd, x


def test_golden_mnist_logits_and_transition():
  """Fixture: the authors' EDMPrecond_classifier_with_transition_matrix
  (ClassifierSong_MNIST, random float16-exact weights, non-zero biases), eval
  mode, noisy inputs at sigma in [0.002, 80]; with and without augment labels."""
  data, sd, x = _golden()
  variables = tc.torch_state_dict_to_params(sd, "cnn", 10, x)
  theta = variables.pop("volmin_theta")
  model = tc.get_time_classifier("cnn", 10)
  logits = model.apply(variables, x, data["sigma"])
  np.testing.assert_allclose(logits, data["logits"], atol=1e-4, rtol=0)
  logits_aug = model.apply(variables, x, data["sigma"],
                           augment_labels=data["augment_labels"])
  np.testing.assert_allclose(logits_aug, data["logits_aug"], atol=1e-4, rtol=0)
  assert np.abs(data["logits_aug"] - data["logits"]).max() > 1e-3
  np.testing.assert_allclose(tc.volmin_transition(theta), data["transition"],
                             atol=1e-6, rtol=0)


def test_converter_rejects_unused_and_missing_keys():
  _, sd, x = _golden()
  extra = dict(sd, **{"model.foo.weight": np.zeros(3)})
  with pytest.raises(ValueError, match="foo.weight"):
    tc.torch_state_dict_to_params(extra, "cnn", 10, x)
  missing = {k: v for k, v in sd.items() if k != "model.map_layer1.bias"}
  with pytest.raises(ValueError, match="map_layer1.bias"):
    tc.torch_state_dict_to_params(missing, "cnn", 10, x)
  with pytest.raises(ValueError):
    tc.torch_state_dict_to_params(sd, "mlp", 10, x)


def _np_forward_nll(logits, labels, t, tiny):
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  q = p @ t
  return -np.log(q[np.arange(len(labels)), labels] + tiny)


def test_forward_corrected_nll_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, size=7)
  t = rng.uniform(size=(5, 5))
  t /= t.sum(1, keepdims=True)
  got = tc.forward_corrected_nll(logits, labels, t)
  np.testing.assert_allclose(got, _np_forward_nll(logits, labels, t, 1e-12),
                             rtol=1e-5, atol=1e-6)
  # T = I: softmax cross-entropy.
  ce = -jax.nn.log_softmax(logits)[np.arange(7), labels]
  np.testing.assert_allclose(
      tc.forward_corrected_nll(logits, labels, np.eye(5), tiny=0.0), ce,
      rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      tc.forward_corrected_nll(logits, labels, np.eye(5)),
      _np_forward_nll(logits, labels, np.eye(5), 1e-12), rtol=1e-5, atol=1e-6)


def test_forward_corrected_nll_stable_for_large_gaps():
  logits = jnp.array([[0.0, -200.0, -300.0]])
  labels = jnp.array([1])
  loss0 = tc.forward_corrected_nll(logits, labels, jnp.eye(3), tiny=0.0)
  np.testing.assert_allclose(loss0, [200.0], rtol=1e-6)
  loss = tc.forward_corrected_nll(logits, labels, jnp.eye(3))
  np.testing.assert_allclose(loss, [-math.log(1e-12)], rtol=1e-6)
  g = jax.grad(lambda z: tc.forward_corrected_nll(
      z, labels, jnp.eye(3), tiny=0.0).sum())(logits)
  np.testing.assert_allclose(g, [[1.0, -1.0, 0.0]], atol=1e-6)


def test_volmin_transition_and_regularizer():
  theta = tc.init_volmin_theta(10)
  assert theta.shape == (10, 10)
  np.testing.assert_allclose(theta, -2.0)
  t = np.asarray(tc.volmin_transition(theta))
  s = 1.0 / (1.0 + math.exp(2.0))  # sigmoid(-2) = 0.11920
  diag, off = 1.0 / (1.0 + 9 * s), s / (1.0 + 9 * s)  # 0.48243, 0.05751
  np.testing.assert_allclose(np.diag(t), diag, rtol=1e-6)
  np.testing.assert_allclose(t[~np.eye(10, dtype=bool)], off, rtol=1e-6)
  np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
  assert diag > 8 * off
  rng = np.random.default_rng(1)
  theta_r = -2.0 + rng.normal(size=(6, 6))
  t_r = np.asarray(tc.volmin_transition(theta_r))
  np.testing.assert_allclose(t_r.sum(1), 1.0, rtol=1e-6)
  sign, logabs = np.linalg.slogdet(t_r.astype(np.float64))
  assert sign > 0
  np.testing.assert_allclose(tc.volmin_regularizer(t_r), logabs, rtol=1e-5)
  assert np.isnan(tc.volmin_regularizer(np.array([[0.0, 1.0], [1.0, 0.0]])))


def test_preconditioning():
  x = jnp.ones((3, 2))
  sigma = jnp.array([0.5, 1.0, 2.0])
  xin, c_noise = tc.edm_classifier_precond(x, sigma, 0.5)
  np.testing.assert_allclose(xin[:, 0], 1 / np.sqrt(0.25 + sigma ** 2),
                             rtol=1e-6)
  np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-6)


@pytest.mark.parametrize("name,shape", [("cnn", (3, 32, 32, 1)),
                                        ("mlp", (3, 2))])
def test_sigma_is_wired_and_jittable(name, shape):
  model = tc.get_time_classifier(name, 4)
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  sigmas = jnp.array([0.01, 0.5, 20.0])
  perm = np.array([2, 0, 1])

  @jax.jit
  def run(x, s):  # a single compilation: init plus three batched calls
    v = model.init(jax.random.PRNGKey(0), x, s)
    return (model.apply(v, x, s), model.apply(v, x[perm], s[perm]),
            model.apply(v, jnp.broadcast_to(x[:1], x.shape), s))

  out, out_perm, out_same = run(x, sigmas)
  assert out.shape == (3, 4)
  # Each example uses its own sigma: permuting (x, sigma) permutes the logits.
  np.testing.assert_allclose(out_perm, out[perm], rtol=1e-5, atol=1e-5)
  # Same x, different sigmas: different logits.
  assert np.abs(out_same[0] - out_same[2]).max() > 1e-4


def test_time_embedding_changes_output_beyond_precond():
  # Zero every per-stage time projection: outputs then depend on sigma only
  # through c_in; with it intact they must differ.
  model = tc.get_time_classifier("mlp", 3)
  x = jnp.ones((2, 2))
  sigma = jnp.array([0.1, 3.0])
  v = jax.jit(model.init)(jax.random.PRNGKey(0), x, sigma)
  p = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.zeros_like(a) if "dense_" in jax.tree_util.keystr(
          path) else a, v["params"])
  f = jax.jit(model.apply)
  full = f(v, x, sigma)
  no_t = f({"params": p}, x, sigma)
  assert np.abs(full - no_t).max() > 1e-4


def test_time_resnet_train_updates_batch_stats():
  # A two-stage TimeResNet on 8x8 inputs keeps compile time small; the
  # full-size ResNet-18/34 are checked by the parameter counts above.
  model = tc.TimeResNet(num_classes=10, stage_sizes=(1, 1), pool_window=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  sigma = jnp.array([0.1, 10.0])

  @jax.jit
  def init_and_train_step(x, s):  # one compilation for both calls
    v = model.init(jax.random.PRNGKey(1), x, s)
    return v, model.apply(v, x, s, train=True, mutable=["batch_stats"])

  v, (logits, new_state) = init_and_train_step(x, sigma)
  assert set(v["params"]) >= {"dense_1", "dense_2", "layer2_0"}
  assert "shortcut_conv" in v["params"]["layer2_0"]
  assert logits.shape == (2, 10)
  old = v["batch_stats"]["bn1"]["mean"]
  assert np.abs(new_state["batch_stats"]["bn1"]["mean"] - old).max() > 0


def test_registry_unknown_name():
  assert set(tc.TIME_CLASSIFIERS) == {"cnn", "resnet18", "resnet34", "mlp"}
  with pytest.raises(ValueError, match="resnet18"):
    tc.get_time_classifier("vgg", 10)
  assert tc.get_time_classifier("cnn", 10).sigma_data == 0.5
