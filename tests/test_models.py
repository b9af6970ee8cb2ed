"""Tests for sgn_jax.models: shapes, parameter counts, BatchNorm, dtype, registry."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgn_jax.models import MLP
from sgn_jax.models import MODELS
from sgn_jax.models import SmallCNN
from sgn_jax.models import WideResNet
from sgn_jax.models import WideResNetBlock
from sgn_jax.models import get_model
from sgn_jax.models import wrn28_2

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)
# WRN-10-1 (one block per group) keeps the tests that really compute fast.
wrn10_1 = functools.partial(WideResNet, depth=10, width=1)


def _init(model, shape, batch=2, seed=0):
  x = jax.random.normal(jax.random.key(seed), (batch, *shape), jnp.float32)
  return model.init(jax.random.key(seed + 1), x, train=False), x


def _n_params(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def _abstract_init(model, shape):
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))


# ----------------------------------------------------------------------------
# Independent parameter-count formulas (sum over layers).

def cnn_param_formula(in_hw=28, in_c=1, channels=(32, 64), k=5, hidden=128,
                      classes=10):
  total, c_in, hw = 0, in_c, in_hw
  for c in channels:
    total += k * k * c_in * c + c        # conv kernel + bias
    c_in, hw = c, hw // 2                # 2x2 max pool
  total += hw * hw * c_in * hidden + hidden
  total += hidden * classes + classes
  return total


def wrn_param_formula(depth, width, classes, in_c=3):
  n = (depth - 4) // 6
  total = 3 * 3 * in_c * 16              # input conv, no bias
  c_in = 16
  for c in (16 * width, 32 * width, 64 * width):
    for _ in range(n):
      total += 2 * c_in                  # BN1 scale + bias
      total += 3 * 3 * c_in * c          # conv1
      total += 2 * c                     # BN2
      total += 3 * 3 * c * c             # conv2
      if c_in != c:                      # 1x1 projection shortcut
        total += c_in * c
      c_in = c
  total += 2 * c_in                      # final BN
  total += c_in * classes + classes      # dense
  return total


def test_formula_matches_published_wrn28_2():
  assert wrn_param_formula(28, 2, 10) == 1_467_610


def test_small_cnn_param_count():
  v = _abstract_init(SmallCNN(), MNIST)
  assert _n_params(v) == cnn_param_formula() == 454_922
  assert "batch_stats" not in v
  v = _abstract_init(SmallCNN(channels=(8, 16), kernel_size=3, hidden=32,
                              num_outputs=7), MNIST)
  assert _n_params(v) == cnn_param_formula(channels=(8, 16), k=3, hidden=32,
                                           classes=7)


def test_wrn28_2_param_count():
  v = _abstract_init(wrn28_2(num_outputs=10), CIFAR)
  assert _n_params(v) == 1_467_610
  v = _abstract_init(wrn28_2(num_outputs=100), CIFAR)
  assert _n_params(v) == wrn_param_formula(28, 2, 100) == 1_479_220
  # The UB shortcut variant has exactly the same parameters.
  v = _abstract_init(wrn28_2(shortcut_on_preact=True), CIFAR)
  assert _n_params(v) == 1_467_610


def test_wrn10_1_param_count_and_layout():
  v = _abstract_init(wrn10_1(num_outputs=10), CIFAR)
  assert _n_params(v) == wrn_param_formula(10, 1, 10)
  # Width 1: group 1 keeps 16 channels -> identity shortcut; groups 2, 3 project.
  assert "shortcut" not in v["params"]["group1_block1"]
  assert "shortcut" in v["params"]["group2_block1"]
  assert "shortcut" in v["params"]["group3_block1"]
  # Convs without bias; running statistics only for BN layers.
  assert set(v["params"]["init_conv"]) == {"kernel"}
  assert set(v["batch_stats"]["final_bn"]) == {"mean", "var"}


def test_wrn_init_statistics():
  """He-normal (truncated) kernels: std ~ sqrt(2 / fan_in); dense bias zero."""
  # A WRN-28-2 group-3 block (128 channels), initialised alone for speed.
  v = WideResNetBlock(features=128).init(jax.random.key(0),
                                         jnp.zeros((1, 4, 4, 128)))
  k = np.asarray(v["params"]["conv2"]["kernel"])  # 3x3x128x128
  fan_in = 3 * 3 * 128
  assert abs(k.std() / np.sqrt(2 / fan_in) - 1) < 0.02
  # Truncated at 2 std of the underlying normal (std / 0.8796...).
  assert np.abs(k).max() <= 2 * np.sqrt(2 / fan_in) / 0.87962566 + 1e-6
  v, _ = _init(wrn10_1(num_outputs=10), CIFAR)
  np.testing.assert_array_equal(v["params"]["classifier"]["bias"], 0)
  d = np.asarray(v["params"]["classifier"]["kernel"])  # 64x10
  assert 0.7 < d.std() / np.sqrt(2 / 64) < 1.3


# ----------------------------------------------------------------------------
# Shapes.

@pytest.mark.parametrize("model,shape,feat", [
    (SmallCNN(num_outputs=10), MNIST, 128),
    (SmallCNN(num_outputs=10), CIFAR, 128),
    (wrn10_1(num_outputs=10), CIFAR, 64),
    (wrn10_1(num_outputs=10, width=2), MNIST, 128),
    (MLP(num_outputs=3), (2,), 128),
    (MLP(hidden=(16, 8), num_outputs=3), (2,), 8),
])
def test_output_and_feature_shapes(model, shape, feat):
  v, x = _init(model, shape, batch=3)
  y, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
  assert y.shape == (3, model.num_outputs) and y.dtype == jnp.float32
  y = model.apply(v, x, train=False)
  assert y.shape == (3, model.num_outputs) and y.dtype == jnp.float32
  assert np.all(np.isfinite(y))
  backbone = model.clone(head=False)
  vb, _ = _init(backbone, shape, batch=3)
  assert "classifier" not in vb["params"]
  f = backbone.apply(vb, x, train=False)
  assert f.shape == (3, feat)


def test_wrn28_2_shapes_abstract():
  model = wrn28_2(num_outputs=100)
  v = _abstract_init(model, CIFAR)
  y = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v,
                     jax.ShapeDtypeStruct((4, *CIFAR), jnp.float32))
  assert y.shape == (4, 100) and y.dtype == jnp.float32
  f = jax.eval_shape(
      lambda x: model.clone(head=False).init_with_output(
          jax.random.key(0), x, train=False)[0],
      jax.ShapeDtypeStruct((4, *CIFAR), jnp.float32))
  assert f.shape == (4, 128)


# ----------------------------------------------------------------------------
# BatchNorm behaviour.

def test_batchnorm_train_uses_batch_statistics_and_updates_running_stats():
  model = wrn10_1(num_outputs=5)
  v, x = _init(model, CIFAR, batch=4)
  x2 = x.at[1:].set(3.0 * x[1:] + 1.0)  # same example 0, different batch-mates
  y1, upd1 = model.apply(v, x, train=True, mutable=["batch_stats"])
  y2, _ = model.apply(v, x2, train=True, mutable=["batch_stats"])
  assert not np.allclose(y1[0], y2[0], atol=1e-4)
  # Running statistics moved away from the initial (mean 0, var 1).
  old = v["batch_stats"]["final_bn"]
  new = upd1["batch_stats"]["final_bn"]
  assert not np.allclose(old["mean"], new["mean"])
  assert not np.allclose(old["var"], new["var"])
  # momentum 0.9: new = 0.9 * old + 0.1 * batch mean of the BN input.
  bn_in = model.apply(v, x, train=True, mutable=["batch_stats", "intermediates"],
                      capture_intermediates=lambda m, _: m.name == "group3_block1")
  h = bn_in[1]["intermediates"]["group3_block1"]["__call__"][0]
  np.testing.assert_allclose(new["mean"], 0.1 * np.asarray(h).mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)


def test_batchnorm_eval_is_independent_of_batch():
  model = wrn10_1(num_outputs=5)
  v, x = _init(model, CIFAR, batch=4)
  _, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
  v = {"params": v["params"], **upd}
  x2 = x.at[1:].set(3.0 * x[1:] + 1.0)
  y1 = model.apply(v, x, train=False)
  y2 = model.apply(v, x2, train=False)
  y_single = model.apply(v, x[:1], train=False)
  np.testing.assert_allclose(y1[0], y2[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y1[0], y_single[0], rtol=1e-5, atol=1e-5)
  # Eval mode cannot change the statistics even when asked for them.
  _, upd2 = model.apply(v, x2, train=False, mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, upd2["batch_stats"],
               v["batch_stats"])


def test_batchnorm_statistics_are_global_under_sharded_jit():
  """With the batch sharded over devices under jax.jit, BN uses the statistics
  of the whole (global) batch: same result as on one device."""
  n_dev = len(jax.devices())
  if n_dev < 2:
    pytest.skip("needs several (fake) devices")
  block = WideResNetBlock(features=4, strides=2)
  x = jax.random.normal(jax.random.key(0), (2 * n_dev, 8, 8, 3)) * 2.0 + 0.5
  v = block.init(jax.random.key(1), x, train=False)
  apply = jax.jit(lambda v, x: block.apply(v, x, train=True,
                                           mutable=["batch_stats"]))
  y_ref, s_ref = apply(v, x)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  y, s = apply(v, jax.device_put(x, sharding))
  assert len(y.sharding.device_set) == n_dev
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                 atol=1e-6), s, s_ref)


def test_models_without_batchnorm_have_no_batch_stats():
  for model, shape in [(SmallCNN(), MNIST), (MLP(num_outputs=2), (2,))]:
    v, x = _init(model, shape)
    assert set(v) == {"params"}
    y_train, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
    assert not upd
    np.testing.assert_allclose(y_train, model.apply(v, x, train=False))


def test_wrn_dropout_uses_dropout_rng():
  model = wrn10_1(num_outputs=5, dropout_rate=0.5)
  v, x = _init(model, CIFAR)
  with pytest.raises(Exception, match="dropout"):
    model.apply(v, x, train=True, mutable=["batch_stats"])
  ya, _ = model.apply(v, x, train=True, mutable=["batch_stats"],
                      rngs={"dropout": jax.random.key(0)})
  yb, _ = model.apply(v, x, train=True, mutable=["batch_stats"],
                      rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(ya, yb)
  np.testing.assert_array_equal(model.apply(v, x, train=False),
                                model.apply(v, x, train=False))


# ----------------------------------------------------------------------------
# Numerical reference for one pre-activation block (eval-mode BN).

def _np_conv_same(x, w, stride):
  """NHWC x HWIO convolution with TensorFlow 'SAME' padding, in float64 numpy."""
  n, h, wd, _ = x.shape
  kh, kw, _, cout = w.shape
  out_h, out_w = -(-h // stride), -(-wd // stride)
  pad_h = max((out_h - 1) * stride + kh - h, 0)
  pad_w = max((out_w - 1) * stride + kw - wd, 0)
  xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                  (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
  y = np.zeros((n, out_h, out_w, cout))
  for i in range(out_h):
    for j in range(out_w):
      patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
      y[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
  return y


def _np_bn_eval(x, p, s, eps=1e-5):
  return (x - s["mean"]) / np.sqrt(s["var"] + eps) * p["scale"] + p["bias"]


def _np_block(x, params, stats, stride, shortcut_on_preact):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  s = jax.tree.map(lambda a: np.asarray(a, np.float64), stats)
  x = np.asarray(x, np.float64)
  a = np.maximum(_np_bn_eval(x, p["bn1"], s["bn1"]), 0)
  y = _np_conv_same(a, p["conv1"]["kernel"], stride)
  y = np.maximum(_np_bn_eval(y, p["bn2"], s["bn2"]), 0)
  y = _np_conv_same(y, p["conv2"]["kernel"], 1)
  if "shortcut" in p:
    src = a if shortcut_on_preact else x
    return y + _np_conv_same(src, p["shortcut"]["kernel"], stride)
  return y + x


def _randomize(tree, key, positive=False):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  new = [jax.random.normal(k, l.shape) * 0.5 + (1.0 if positive else 0.0)
         for k, l in zip(keys, leaves)]
  if positive:
    new = [jnp.abs(l) + 0.1 for l in new]
  return jax.tree.unflatten(treedef, new)


@pytest.mark.parametrize("cin,features,stride,preact", [
    (3, 4, 2, True),    # projection shortcut on the pre-activation, stride 2
    (3, 4, 2, False),   # Uncertainty Baselines variant (raw input)
    (4, 4, 1, True),    # identity shortcut
])
def test_block_matches_numpy_reference(cin, features, stride, preact):
  block = WideResNetBlock(features=features, strides=stride,
                          shortcut_on_preact=preact)
  x = jax.random.normal(jax.random.key(0), (2, 7, 8, cin))  # odd H: SAME pads
  v = block.init(jax.random.key(1), x, train=False)
  # Non-trivial BN parameters and running statistics.
  params = dict(v["params"])
  for i, bn in enumerate(("bn1", "bn2")):
    params[bn] = _randomize(params[bn], jax.random.key(10 + i))
  stats = {bn: {"mean": _randomize(v["batch_stats"][bn]["mean"],
                                   jax.random.key(3)),
                "var": _randomize(v["batch_stats"][bn]["var"],
                                  jax.random.key(4), positive=True)}
           for bn in ("bn1", "bn2")}
  y = block.apply({"params": params, "batch_stats": stats}, x, train=False)
  ref = _np_block(x, params, stats, stride, preact)
  assert y.shape == ref.shape == (2, -(-7 // stride), -(-8 // stride), features)
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------
# dtype, jit + grad.

@pytest.mark.parametrize("model,shape", [
    (wrn10_1(num_outputs=10, dtype=jnp.bfloat16), CIFAR),
    (SmallCNN(dtype=jnp.bfloat16), MNIST),
    (MLP(num_outputs=4, dtype=jnp.bfloat16), (2,)),
])
def test_bfloat16_compute_float32_params(model, shape):
  v, x = _init(model, shape)
  for leaf in jax.tree.leaves(v):
    assert leaf.dtype == jnp.float32
  y, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
  assert y.dtype == jnp.float32 and np.all(np.isfinite(y))
  for leaf in jax.tree.leaves(upd):
    assert leaf.dtype == jnp.float32
  feats = model.clone(head=False).apply(v, x, train=False)
  assert feats.dtype == jnp.bfloat16 and np.all(np.isfinite(feats))
  # Compare with float32 compute: close but not identical.
  y32 = model.clone(dtype=jnp.float32).apply(v, x, train=False)
  y16 = model.apply(v, x, train=False)
  np.testing.assert_allclose(y16, y32, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("model,shape", [
    (wrn10_1(num_outputs=10), CIFAR),
    (SmallCNN(), MNIST),
    (MLP(num_outputs=3), (2,)),
])
def test_jit_grad_finite(model, shape):
  v, x = _init(model, shape, batch=4)
  labels = jnp.arange(4) % model.num_outputs

  @jax.jit
  def loss_and_grad(params, batch_stats, x):
    def loss_fn(params):
      logits, upd = model.apply({"params": params, "batch_stats": batch_stats},
                                x, train=True, mutable=["batch_stats"])
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1)), upd
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, _), grads = loss_and_grad(v["params"], v.get("batch_stats", {}), x)
  assert np.isfinite(loss)
  leaves = jax.tree.leaves(grads)
  assert leaves and all(np.all(np.isfinite(g)) for g in leaves)
  assert any(np.any(g != 0) for g in leaves)
  assert jax.tree.structure(grads) == jax.tree.structure(v["params"])


# ----------------------------------------------------------------------------
# Constructor validation and registry.

@pytest.mark.parametrize("depth", [27, 8, 4, 0])
def test_bad_depth_raises(depth):
  with pytest.raises(ValueError, match=f"depth={depth}"):
    WideResNet(depth=depth)


def test_get_model():
  assert set(MODELS) >= {"cnn", "wrn", "mlp", "wrn28_2"}
  m = get_model("wrn", 100, depth=16, width=4)
  assert isinstance(m, WideResNet)
  assert (m.depth, m.width, m.num_outputs) == (16, 4, 100)
  m = get_model("wrn28_2", 10)
  assert isinstance(m, WideResNet) and (m.depth, m.width) == (28, 2)
  m = get_model("cnn", 10, hidden=64, head=False)
  assert isinstance(m, SmallCNN) and m.hidden == 64 and not m.head
  m = get_model("mlp", 3, hidden=(8,))
  assert isinstance(m, MLP) and m.num_outputs == 3
  assert isinstance(m, nn.Module)


def test_get_model_errors():
  with pytest.raises(ValueError, match="resnet9000.*cnn"):
    get_model("resnet9000", 10)
  with pytest.raises(TypeError, match="widht"):
    get_model("wrn", 10, widht=2)
  with pytest.raises(TypeError, match="depth"):   # fixed by the alias
    get_model("wrn28_2", 10, depth=16)
  with pytest.raises(TypeError, match="parent"):
    get_model("mlp", 10, parent=None)
  with pytest.raises(ValueError, match="depth=21"):
    get_model("wrn", 10, depth=21)
