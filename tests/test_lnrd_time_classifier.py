"""Tests for lnrd.time_classifier (TDSM time-dependent noisy-label classifiers)."""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrd import edm
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


# ---- VolMinNet's optimiser (the authors' classifier loop) -----------------------------


def _authors_volmin_lr(lr, cur_nimg):
  """tdsm@6a57a54 training/classifier_loop.py:117-126 (cur_nimg before the step)."""
  if cur_nimg < 1_500_000:
    return lr
  if cur_nimg < 3_000_000:
    return lr * 0.1
  if cur_nimg < 7_500_000:
    return lr * 0.01
  return lr


@pytest.mark.parametrize("batch_size", [512, 1024, 1000])
def test_volmin_learning_rate_matches_the_authors_loop(batch_size):
  schedule = tc.volmin_learning_rate(1e-3, boundaries_kimg=(1500.0, 3000.0, 7500.0),
                                     factors=(1.0, 0.1, 0.01, 1.0), batch_size=batch_size)
  last = 10_000_000 // batch_size
  steps = sorted({0, 1, last} | {s + d for b in (1_500_000, 3_000_000, 7_500_000)
                                 for s in (b // batch_size,) for d in (-1, 0, 1, 2)})
  got = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32)))
  expected = [_authors_volmin_lr(1e-3, s * batch_size) for s in steps]
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  with pytest.raises(ValueError, match="one more than boundaries_kimg"):
    tc.volmin_learning_rate(1e-3, boundaries_kimg=(1.0, 2.0), factors=(1.0, 0.1),
                            batch_size=8)
  with pytest.raises(ValueError, match="strictly increasing"):
    tc.volmin_learning_rate(1e-3, boundaries_kimg=(2.0, 1.0), factors=(1.0, 0.1, 0.01),
                            batch_size=8)


def test_transition_freeze_step_follows_the_authors_condition():
  # The authors freeze theta before the first step with cur_nimg > 7.5M.
  for batch_size in (512, 1000, 1024):
    step = tc.transition_freeze_step(7500.0, batch_size)
    assert (step - 1) * batch_size <= 7_500_000 < step * batch_size
  assert tc.transition_freeze_step(0.0, 512) is None


def test_volmin_optimizer_freezes_theta_while_the_net_trains():
  """From the freeze step on theta (and its Adam moments) stay bit-identical while
  the network keeps changing; before it both change."""
  batch, num_classes, freeze_kimg = 8, 3, 0.028  # freeze from step 28 // 8 + 1 = 4
  model = tc.get_time_classifier("mlp", num_classes, hidden=8, num_layers=1)
  tx = tc.volmin_optimizer(1e-2, batch_size=batch, lr_kimg=(0.016,), lr_factors=(1.0, 0.5),
                           freeze_transition_kimg=freeze_kimg, warmup_kimg=0.0, beta1=0.9,
                           beta2=0.999, eps=1e-8)
  state = tc.init_state(model, tx, (2,), num_classes, jax.random.PRNGKey(0),
                        learned_transition=True)
  precond = edm.Preconditioning(kind="edm", sigma_data=1.0)
  step = jax.jit(tc.make_train_step(model, tx, precond=precond,
                                    transition=np.eye(num_classes)))
  rng = np.random.default_rng(0)
  batch_data = {"image": rng.normal(size=(batch, 2)).astype(np.float32),
                "label": rng.integers(0, num_classes, batch).astype(np.int32)}
  history = [jax.device_get(state.params)]
  for i in range(7):
    state, metrics = step(state, batch_data, jax.random.PRNGKey(i))
    history.append(jax.device_get(state.params))
  assert np.isfinite(float(metrics["loss"]))
  freeze = tc.transition_freeze_step(freeze_kimg, batch)
  assert freeze == 4
  net_changed = lambda a, b: any(np.any(x != y) for x, y in zip(
      jax.tree.leaves(a["net"]), jax.tree.leaves(b["net"])))
  for i in range(1, len(history)):  # history[i]: after step i - 1
    assert net_changed(history[i - 1], history[i])
    same = np.array_equal(history[i - 1]["theta"], history[i]["theta"])
    assert same == (i - 1 >= freeze), i
