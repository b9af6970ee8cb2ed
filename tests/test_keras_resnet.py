"""Tests for the Keras-layout ResNet-50 ("resnet50_keras"), its HDF5 weight loader and
the Caffe input normalisation, against Keras itself (CPU, no network).

A Keras `ResNet50(weights=None)` on 64x64 inputs gets deterministic random
weights (BN moving statistics included), is saved in the legacy HDF5 layout
(the layout of keras-applications' ImageNet files) and as Keras 3
`.weights.h5`, loaded into the Flax module, and both networks are compared in
inference mode.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
h5py = pytest.importorskip("h5py")

from sgn_jax.data import device_data  # pylint: disable=g-import-not-at-top
from sgn_jax.data import streaming  # pylint: disable=g-import-not-at-top
from sgn_jax.models import KerasResNet50  # pylint: disable=g-import-not-at-top
from sgn_jax.models import ResNet50  # pylint: disable=g-import-not-at-top
from sgn_jax.models import get_model  # pylint: disable=g-import-not-at-top
from sgn_jax.models import keras_resnet  # pylint: disable=g-import-not-at-top
from sgn_jax.models import pretrained  # pylint: disable=g-import-not-at-top

HW = 64  # smallest convenient input: 2x2 after conv5
CLASSES = 7
REL_TOL = 1e-4


def _randomize(model, seed=0):
  """Deterministic random weights, including BN moving mean / variance (which a fresh
  Keras model has at 0 / 1, where a swapped mapping would go unnoticed)."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    weights = layer.get_weights()
    if not weights:
      continue
    if isinstance(layer, keras.layers.BatchNormalization):
      c = weights[0].shape
      new = [rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.2, c), rng.normal(0.0, 0.2, c),
             rng.uniform(0.5, 2.0, c)]
    else:  # Conv2D / Dense: kernel, bias
      kernel, bias = weights
      fan_in = int(np.prod(kernel.shape[:-1]))
      new = [rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape),
             rng.normal(0.0, 0.1, bias.shape)]
    layer.set_weights([w.astype(np.float32) for w in new])


def _save_legacy_h5(model, path):
  """The legacy Keras 2 HDF5 layout (root `layer_names`, per-layer `weight_names`)."""
  try:
    from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
  except ImportError:  # Keras 2 / tf.keras: save_weights(".h5") writes that layout
    model.save_weights(path)
    return
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.fixture(scope="module")
def keras_net(tmp_path_factory):
  """Keras ResNet50 with a 7-class top (logits), its notop sub-model, saved files and
  reference outputs on random inputs."""
  folder = tmp_path_factory.mktemp("keras_resnet")
  top = keras.applications.ResNet50(weights=None, include_top=True,
                                    input_shape=(HW, HW, 3), classes=CLASSES,
                                    classifier_activation=None)
  _randomize(top)
  notop = keras.Model(top.input, top.get_layer("avg_pool").output)
  x = (np.random.default_rng(1).normal(size=(2, HW, HW, 3)) * 60.0).astype(np.float32)
  files = {"notop": str(folder / "notop.h5"), "top": str(folder / "top.h5"),
           "keras3": str(folder / "notop.weights.h5")}
  _save_legacy_h5(notop, files["notop"])
  _save_legacy_h5(top, files["top"])
  notop.save_weights(files["keras3"])
  return dict(files=files, x=x, folder=folder,
              features=np.asarray(notop(x, training=False)),
              logits=np.asarray(top(x, training=False)))


def _template(model):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, HW, HW, 3)),
                                           train=False))


def _apply_fn(model):
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


def _assert_close(got, want):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape and got.dtype == np.float32
  rel = np.max(np.abs(got - want)) / np.max(np.abs(want))
  assert rel <= REL_TOL, f"max abs difference relative to max |value|: {rel:.3g}"


def test_param_counts_match_keras_applications():
  n = lambda tree: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))
  top = _template(KerasResNet50())
  assert n(top["params"]) == 25_583_592 and n(top["batch_stats"]) == 53_120
  notop = _template(KerasResNet50(head=False))
  assert n(notop["params"]) == 23_534_592 and n(notop["batch_stats"]) == 53_120


def test_registry_and_calling_convention():
  model = get_model("resnet50_keras", 14)
  assert isinstance(model, keras_resnet.KerasResNet) and model.num_outputs == 14
  x = jnp.zeros((2, HW, HW, 3), jnp.bfloat16)
  v = _template(model)
  out, state = jax.eval_shape(
      lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), v)
  assert out.shape == (2, 14) and out.dtype == jnp.float32
  assert jax.tree.structure(state["batch_stats"]) == jax.tree.structure(v["batch_stats"])
  low = get_model("resnet50_keras", 14, head=False, dtype=jnp.bfloat16)
  feats = jax.eval_shape(lambda v: low.apply(v, x, train=False), v)
  assert feats.shape == (2, 2048) and feats.dtype == jnp.bfloat16


def test_stride_sits_on_the_first_1x1_convolution():
  """Keras v1 (not torchvision's v1.5): in conv3..5's first block the 1x1 convolution
  halves the size and the 3x3 keeps it."""
  model = KerasResNet50(head=False)
  v = _template(model)
  _, inter = jax.eval_shape(lambda v: model.apply(
      v, jnp.zeros((1, HW, HW, 3)), train=False, capture_intermediates=True,
      mutable=["intermediates"]), v)
  inter = inter["intermediates"]
  for stage, size in ((2, 16), (3, 8), (4, 4), (5, 2)):
    block = inter[f"conv{stage}_block1"]
    for conv in ("0_conv", "1_conv", "2_conv", "3_conv"):
      assert block[conv]["__call__"][0].shape[1:3] == (size, size), (stage, conv)


def test_features_match_keras_legacy_h5(keras_net):
  """The notop file into head=False: the pooled 2048-d features agree with Keras."""
  model = KerasResNet50(head=False)
  variables = pretrained.load_keras_resnet50(keras_net["files"]["notop"], _template(model))
  _assert_close(_apply_fn(model)(variables, keras_net["x"]), keras_net["features"])


def test_logits_match_keras_with_top_kept(keras_net):
  model = KerasResNet50(num_outputs=CLASSES)
  variables = pretrained.load_keras_resnet50(keras_net["files"]["top"], _template(model),
                                             head="keep")
  _assert_close(_apply_fn(model)(variables, keras_net["x"]), keras_net["logits"])


def test_head_drop_keeps_the_fresh_head(keras_net):
  """The authors' start: ImageNet backbone, new Dense head (notop file, or the file with
  its 1000-class top ignored)."""
  template = _template(KerasResNet50(num_outputs=14))
  rng = np.random.default_rng(3)
  head = {"kernel": rng.normal(size=(2048, 14)).astype(np.float32),
          "bias": rng.normal(size=(14,)).astype(np.float32)}
  fresh = {"params": {**template["params"], "classifier": head},
           "batch_stats": template["batch_stats"]}
  for name in ("notop", "top"):
    loaded = pretrained.load_keras_resnet50(keras_net["files"][name], fresh, head="drop")
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(loaded["params"]["classifier"][leaf],
                                    fresh["params"]["classifier"][leaf])
    with h5py.File(keras_net["files"]["notop"]) as f:
      np.testing.assert_array_equal(loaded["params"]["conv4_block2"]["2_bn"]["scale"],
                                    f["conv4_block2_2_bn/conv4_block2_2_bn/gamma"][()])
      np.testing.assert_array_equal(loaded["batch_stats"]["conv1_bn"]["var"],
                                    f["conv1_bn/conv1_bn/moving_variance"][()])


def test_keras3_weights_h5_and_nested_model_load_the_same_values(keras_net):
  """Keras 3's `.weights.h5`, and a legacy file of the authors' structure (ResNet50 as
  one layer of a model with new Dense heads), read like the flat legacy file."""
  template = _template(KerasResNet50(head=False))
  want = pretrained.load_keras_resnet50(keras_net["files"]["notop"], template)
  got = pretrained.load_keras_resnet50(keras_net["files"]["keras3"], template)
  jax.tree.map(np.testing.assert_array_equal, got, want)

  base = keras.applications.ResNet50(weights=None, include_top=False,
                                     input_shape=(HW, HW, 3), pooling="avg")
  flat = pretrained.read_keras_weights(keras_net["files"]["notop"])
  for layer in base.layers:
    if layer.weights:
      order = (("gamma", "beta", "moving_mean", "moving_variance")
               if isinstance(layer, keras.layers.BatchNormalization) else ("kernel", "bias"))
      layer.set_weights([flat[layer.name][k] for k in order])
  inputs = keras.layers.Input((HW, HW, 3))
  feats = keras.layers.Flatten()(base(inputs))
  wrapper = keras.Model(inputs, [keras.layers.Dense(13)(feats), keras.layers.Dense(13)(feats)])
  path = str(keras_net["folder"] / "nested.h5")
  _save_legacy_h5(wrapper, path)
  nested = pretrained.read_keras_weights(path)
  heads = sorted(set(nested) - set(flat))
  assert len(heads) == 2 and all(set(nested[h]) == {"kernel", "bias"} for h in heads)
  for layer, weights in flat.items():
    for name, value in weights.items():
      np.testing.assert_array_equal(nested[layer][name], value)
  with pytest.raises(ValueError, match="not used by the model: .*dense"):
    pretrained.load_keras_resnet50(path, template)


def _copy_without(src, dst, layer):
  """A copy of a legacy .h5 without `layer` (its group and its `layer_names` entry)."""
  with h5py.File(src) as fin, h5py.File(dst, "w") as fout:
    names = [n for n in fin.attrs["layer_names"]
             if (n.decode() if isinstance(n, bytes) else n) != layer]
    fout.attrs["layer_names"] = np.asarray(names, dtype=h5py.string_dtype())
    for name in names:
      fin.copy(fin[name], fout, name=name)


def test_missing_layer_and_shape_errors_name_the_weights(keras_net, tmp_path):
  template = _template(KerasResNet50(head=False))
  damaged = str(tmp_path / "damaged.h5")
  _copy_without(keras_net["files"]["notop"], damaged, "conv4_block2_2_bn")
  with pytest.raises(ValueError) as e:
    pretrained.load_keras_resnet50(damaged, template)
  msg = str(e.value)
  for weight in ("gamma", "beta", "moving_mean", "moving_variance"):
    assert f"conv4_block2_2_bn/{weight}" in msg
  assert "missing from the file" in msg and "conv4_block2/2_bn" in msg
  # The file's top into a model without a head: its "predictions" weights are unused
  # (head="drop" ignores them on purpose).
  with pytest.raises(ValueError, match=r"not used by the model: \['predictions/bias', "
                     r"'predictions/kernel'\]"):
    pretrained.load_keras_resnet50(keras_net["files"]["top"], template, head="keep")
  # head="keep" with another number of classes: a shape mismatch, named.
  with pytest.raises(ValueError, match=r"shape mismatch: .*predictions/kernel.*\(2048, 7\)"):
    pretrained.load_keras_resnet50(keras_net["files"]["top"], _template(KerasResNet50()),
                                   head="keep")
  with pytest.raises(ValueError, match="head must be 'drop' or 'keep'"):
    pretrained.load_keras_resnet50(keras_net["files"]["notop"], template, head="new")


def test_file_format_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="resnet50_weights_tf_dim_ordering_tf_kernels"):
    pretrained.read_keras_weights(tmp_path / "absent.h5")
  not_h5 = tmp_path / "model.h5"
  not_h5.write_bytes(b"PK\x03\x04 not hdf5")
  with pytest.raises(ValueError, match="not an HDF5 file.*save_weights"):
    pretrained.read_keras_weights(not_h5)
  other = tmp_path / "other.h5"
  with h5py.File(other, "w") as f:
    f["x"] = np.zeros(3)
  with pytest.raises(ValueError, match="holds no Keras weights.*legacy Keras 2.*Keras 3"):
    pretrained.read_keras_weights(other)


def test_load_pretrained_variables_picks_the_loader_and_checks_the_model(keras_net, tmp_path):
  h5 = keras_net["files"]["notop"]
  keras_vars = _template(KerasResNet50(head=False))
  want = pretrained.load_keras_resnet50(h5, keras_vars)
  for name in ("resnet50_keras", None):
    got = pretrained.load_pretrained_variables(h5, keras_vars, name)
    jax.tree.map(np.testing.assert_array_equal, got, want)
  torch_vars = _template(ResNet50(head=False))
  for name in ("resnet50", None):  # by name, or by the variables' layout
    with pytest.raises(ValueError, match="resnet50_keras"):
      pretrained.load_pretrained_variables(h5, torch_vars, name)
  with pytest.raises(ValueError, match="set model.name='resnet50_keras'"):
    pretrained.load_keras_resnet50(h5, torch_vars)
  with pytest.raises(ValueError, match="torchvision state dict.*'resnet50'"):
    pretrained.load_pretrained_variables(str(tmp_path / "w.npz"), keras_vars, "resnet50_keras")
  with pytest.raises(ValueError, match=r"Unknown pretrained weights file type.*\.h5"):
    pretrained.load_pretrained_variables(str(tmp_path / "w.bin"), keras_vars)
  with pytest.raises(ValueError, match="No pretrained weights load into model 'wrn'"):
    pretrained.load_pretrained_variables(h5, keras_vars, "wrn")
  with pytest.raises(FileNotFoundError, match="storage.googleapis.com"):
    pretrained.load_pretrained_variables(str(tmp_path / "absent.h5"), keras_vars)


# ----------------------------------------------------------------------------
# Caffe normalisation (streaming.Preprocess(mode="caffe")).

def _images(seed=0, n=3, hw=20):
  return np.random.default_rng(seed).integers(0, 256, (n, hw, hw, 3), dtype=np.uint8)


def test_caffe_normalisation_equals_keras_preprocess_input():
  images = _images()
  want = keras.applications.resnet50.preprocess_input(images.astype(np.float32))
  np.testing.assert_allclose(streaming.device_normalize(images, streaming.CLOTHING1M_CAFFE),
                             want, rtol=0, atol=1e-4)
  # The host pipeline: decode -> (no resize) -> crop of the whole image -> normalise.
  whole = streaming.Preprocess(crop_size=images.shape[1], resize=None, mean=None, std=None,
                               mode="caffe")
  for image, expected in zip(images, want):
    encoded = tf.io.encode_png(image)
    np.testing.assert_allclose(streaming.eval_transform(encoded, whole), expected,
                               rtol=0, atol=1e-4)
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_allclose(
        streaming.train_transform(encoded, seed, whole, flip=False), expected,
        rtol=0, atol=1e-4)
  raw = streaming.eval_transform(tf.io.encode_png(images[0]), whole, normalize=False)
  np.testing.assert_array_equal(raw, images[0])  # uint8 crops for the device as before


def test_standardize_stays_the_default_and_unchanged():
  assert streaming.CLOTHING1M.mode == streaming.WEBVISION.mode == "standardize"
  assert streaming.PREPROCESS["clothing1m"] is streaming.CLOTHING1M
  image = _images(1, n=1)[0]
  whole = streaming.Preprocess(crop_size=image.shape[0], resize=None,
                               mean=streaming.CLOTHING1M_MEAN, std=streaming.CLOTHING1M_STD)
  mean = np.float32(streaming.CLOTHING1M_MEAN) * np.float32(255.0)
  std = np.float32(streaming.CLOTHING1M_STD) * np.float32(255.0)
  want = (image.astype(np.float32) - mean) / std
  np.testing.assert_array_equal(streaming.eval_transform(tf.io.encode_png(image), whole), want)
  np.testing.assert_allclose(streaming.device_normalize(image, whole), want, rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_allclose(
      streaming.device_normalize(image, whole),
      device_data.normalize(image, streaming.CLOTHING1M_MEAN, streaming.CLOTHING1M_STD),
      rtol=1e-5, atol=1e-5)


def test_preprocess_mode_errors():
  with pytest.raises(ValueError, match=r"mode='bgr' is not known; allowed: \['standardize', "
                     r"'caffe'\]"):
    streaming.Preprocess(crop_size=224, resize=None, mean=(0.5,) * 3, std=(0.5,) * 3,
                         mode="bgr")
  with pytest.raises(ValueError, match="takes no mean / std.*mean=None"):
    streaming.Preprocess(crop_size=224, resize=None, mean=(0.5,) * 3, std=None, mode="caffe")
  with pytest.raises(ValueError, match="needs a per-channel mean and std"):
    streaming.Preprocess(crop_size=224, resize=None, mean=None, std=None)
