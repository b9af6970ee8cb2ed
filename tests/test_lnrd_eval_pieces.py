"""Tests of the evaluation pieces: sharded padded evaluation, CAS, classifier features.

* `lnrd.metrics.sharded_eval`: every example counted exactly once, in order, on
  1 and 8 (fake CPU) devices, for n not a multiple of the batch; streamed FID
  statistics equal np.mean / np.cov.
* `lnrd.metrics.cas`: on real MNIST, a classifier trained on true labels scores
  well above chance, one trained on permuted labels near chance.
* `lnrd.metrics.classifier_features`: the sown TimeCNN features are the
  penultimate layer (W f + b reproduces the logits).
"""

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrd import images as images_lib
from lnrd import time_classifier
from lnrd.metrics import cas
from lnrd.metrics import classifier_features
from lnrd.metrics import frechet
from lnrd.metrics import sharded_eval
from sgn_jax.training import mesh as mesh_lib

N = 1003
BATCH = 64


def _mesh(num_devices):
  if len(jax.devices()) < num_devices:
    pytest.skip(f"needs {num_devices} devices")
  return mesh_lib.create_mesh(jax.devices()[:num_devices])


# ---------------------------------------------------------------------------
# (a) padding and masking


@pytest.mark.parametrize("num_devices", [1, 8])
def test_map_batches_every_example_once_in_order(num_devices):
  mesh = _mesh(num_devices)
  rng = np.random.RandomState(0)
  x = rng.normal(size=(N, 3)).astype(np.float32)
  ids_host = np.arange(N, dtype=np.int32)
  ids_device = jnp.asarray(ids_host + 7)  # a device leaf (gathered inside the step)
  calls = []
  out = sharded_eval.map_batches(
      lambda b: {"id": b["id"] * 1, "id7": b["id7"] - 7, "sq": jnp.sum(b["x"] ** 2, -1)},
      {"id": ids_host, "id7": ids_device, "x": x}, BATCH, mesh,
      progress=lambda done, total: calls.append((done, total)))
  np.testing.assert_array_equal(out["id"], ids_host)
  np.testing.assert_array_equal(out["id7"], ids_host)
  np.testing.assert_allclose(out["sq"], np.sum(x.astype(np.float64) ** 2, -1), rtol=1e-5)
  assert len(calls) == -(-N // BATCH)
  assert calls[-1] == (N, N)
  assert [c[0] for c in calls] == sorted(c[0] for c in calls)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_sum_batches_counts_each_example_once(num_devices):
  mesh = _mesh(num_devices)
  x = np.random.RandomState(1).uniform(size=(N,)).astype(np.float32)
  ids = np.arange(N, dtype=np.int32)

  def sums(batch, mask):
    w = mask.astype(jnp.float32)
    return {"count": jnp.sum(mask.astype(jnp.int32)), "sum": jnp.sum(batch["x"] * w),
            "hits": jnp.zeros((N,), jnp.float32).at[batch["id"]].add(w)}

  total = sharded_eval.sum_batches(sums, {"id": ids, "x": x}, BATCH, mesh)
  assert total["count"] == N and total["count"].dtype == np.int64
  np.testing.assert_allclose(total["sum"], x.astype(np.float64).sum(), rtol=1e-6)
  np.testing.assert_array_equal(total["hits"], np.ones(N))  # every example exactly once


@pytest.mark.parametrize("num_devices", [1, 8])
def test_streamed_fid_statistics_equal_numpy(num_devices):
  mesh = _mesh(num_devices)
  x = np.random.RandomState(2).normal(size=(N, 16)).astype(np.float32)
  stats = sharded_eval.feature_statistics(lambda b: 2.0 * b + 1.0, x, BATCH, mesh)
  features = 2.0 * x.astype(np.float64) + 1.0
  mu, sigma = frechet.mean_and_covariance(stats)
  assert float(stats.count) == N
  np.testing.assert_allclose(mu, features.mean(axis=0), atol=1e-5)
  np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), atol=1e-4)


def test_batch_size_must_split_over_devices():
  with pytest.raises(ValueError, match="batch_size=60"):
    sharded_eval.map_batches(lambda b: b, np.zeros((10,)), 60, _mesh(8))
  with pytest.raises(ValueError, match="leading sizes"):
    sharded_eval.sum_batches(lambda b, m: m.sum(), (np.zeros(3), np.zeros(4)), 8, _mesh(8))


# ---------------------------------------------------------------------------
# (b) Classification Accuracy Score on real MNIST


@pytest.fixture(scope="module")
def mnist(shared_data):
  from sgn_jax.data import array_source  # pylint: disable=g-import-not-at-top
  return array_source.load_idx(shared_data / "mnist", "mnist")


def test_cas_true_labels_above_chance_permuted_near_chance(mnist, tmp_path, monkeypatch):
  # Log-only metric writers: importing TensorFlow for TensorBoard would take seconds.
  from sgn_jax.training import writers  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(writers, "create_writer", lambda workdir: writers.MultiWriter(
      [writers.LoggingWriter(workdir)]))
  images, labels = mnist.train_images[:2000], mnist.train_labels[:2000]
  test_images, test_labels = mnist.test_images[:2000], mnist.test_labels[:2000]
  kwargs = dict(dataset="mnist", arch="cnn", epochs=2, batch_size=64, learning_rate=0.01,
                seed=0, devices=jax.devices()[:1])
  true = cas.classification_accuracy_score(images, labels, test_images, test_labels,
                                           workdir=str(tmp_path / "true"), **kwargs)
  assert true["accuracy"] > 0.8, true
  assert true["num_train"] == 2000 and true["num_test"] == 2000 and true["arch"] == "cnn"
  permuted = np.random.RandomState(0).permutation(labels)
  shuffled = cas.classification_accuracy_score(images, permuted, test_images, test_labels,
                                               workdir=str(tmp_path / "perm"), **kwargs)
  assert shuffled["accuracy"] < 0.3, shuffled
  # Other samples in the same workdir are refused rather than resumed.
  with pytest.raises(ValueError, match="overwrite=True"):
    cas.classification_accuracy_score(images, permuted, test_images, test_labels,
                                      workdir=str(tmp_path / "true"), **kwargs)


def test_cas_rejects_bad_inputs(tmp_path):
  x = np.zeros((8, 28, 28, 1), np.uint8)
  y = np.zeros((8,), np.int32)
  with pytest.raises(ValueError, match="uint8"):
    cas.classification_accuracy_score(x.astype(np.float32), y, x, y, dataset="mnist",
                                      workdir=str(tmp_path))
  with pytest.raises(ValueError, match="dataset='gmm2d'"):
    cas.classification_accuracy_score(x, y, x, y, dataset="gmm2d", workdir=str(tmp_path))
  with pytest.raises(ValueError, match=r"\[0, 10\)"):
    cas.classification_accuracy_score(x, y + 10, x, y, dataset="mnist", workdir=str(tmp_path))
  settings = cas.cas_settings("cifar10", "unused.npz", arch="resnet50", epochs=1, batch_size=8,
                              learning_rate=0.1, weight_decay=2.5e-4)
  assert settings.model == "resnet50" and settings.model_kwargs["cifar_stem"]
  assert settings.dataset.source == "npz" and settings.noise.kind == "none"
  assert settings.val_fraction == 0.0
  # The authors' CAS networks (the defaults) see [-1, 1] inputs: (x / 255 - 0.5) / 0.5.
  settings = cas.cas_settings("cifar10", "unused.npz", arch="resnet50_imagenet_stem",
                              epochs=1, batch_size=8, learning_rate=0.1, weight_decay=2.5e-4)
  assert settings.model == "resnet50" and not settings.model_kwargs["cifar_stem"]
  assert settings.mean == (0.5,) * 3 and settings.std == (0.5,) * 3 and settings.flip
  settings = cas.cas_settings("mnist", "unused.npz", arch="tdsm_cnn", epochs=1, batch_size=8,
                              learning_rate=0.1, weight_decay=2.5e-4)
  assert settings.model == cas.TDSM_CNN_MODEL and settings.mean == (0.5,)
  assert settings.std == (0.5,) and settings.crop_padding == 0 and not settings.flip
  assert cas.CAS_DEFAULTS["mnist"]["arch"] == "tdsm_cnn"
  assert cas.CAS_DEFAULTS["cifar100"]["arch"] == "resnet50_imagenet_stem"
  with pytest.raises(ValueError, match="arch='vgg' is not known.*resnet50_imagenet_stem"):
    cas.cas_settings("mnist", "unused.npz", arch="vgg", epochs=1, batch_size=8,
                     learning_rate=0.1, weight_decay=2.5e-4)


@pytest.mark.parametrize("arch,num_classes,shape,expected", [
    ("tdsm_cnn", 10, (2, 28, 28, 1), 33_738),
    ("resnet50_imagenet_stem", 10, (2, 32, 32, 3), 23_528_522),
    ("resnet50_imagenet_stem", 100, (2, 32, 32, 3), 23_712_932),
])
def test_cas_networks_match_the_authors_parameter_counts(arch, num_classes, shape, expected):
  # `sum(p.numel() for p in net.parameters())` of the authors' ClassifierCAS_CNN_MNIST
  # and ClassifierCAS (torchvision resnet50(num_classes=C), conv1 7x7 stride 2 pad 3).
  from sgn_jax import classification  # pylint: disable=g-import-not-at-top
  from sgn_jax import methods  # pylint: disable=g-import-not-at-top
  settings = cas.cas_settings("mnist" if shape[-1] == 1 else f"cifar{num_classes}",
                              "unused.npz", arch=arch, epochs=1, batch_size=8,
                              learning_rate=0.1, weight_decay=2.5e-4)
  model = classification.build_model(settings.model, num_classes, methods.get_method("ce"),
                                     **settings.model_kwargs)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])) == expected
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape)), variables)
  assert logits.shape == (2, num_classes)
  if arch == "tdsm_cnn":  # the 28x28 digits are padded to the authors' 32x32: 32*8*8 features
    assert variables["params"]["linear"]["kernel"].shape == (32 * 8 * 8, num_classes)


def test_tdsm_cnn_pads_with_black_in_the_model_range():
  from sgn_jax import models  # pylint: disable=g-import-not-at-top
  digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
  model = models.TdsmCasCNN(num_outputs=10)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
  padded = images_lib.to_model_range(jnp.asarray(digits), pad_to=32)  # what the UNet sees
  unpadded = images_lib.to_model_range(jnp.asarray(digits))
  np.testing.assert_allclose(model.apply(variables, unpadded), model.apply(variables, padded),
                             rtol=1e-6, atol=1e-6)


def test_cas_with_the_authors_mnist_cnn(mnist, tmp_path, monkeypatch):
  from sgn_jax.training import writers  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(writers, "create_writer", lambda workdir: writers.MultiWriter(
      [writers.LoggingWriter(workdir)]))
  images, labels = mnist.train_images[:2000], mnist.train_labels[:2000]
  result = cas.classification_accuracy_score(
      images, labels, mnist.test_images[:2000], mnist.test_labels[:2000], dataset="mnist",
      workdir=str(tmp_path), epochs=2, batch_size=64, learning_rate=0.01, seed=0,
      devices=jax.devices()[:1])
  assert result["arch"] == "tdsm_cnn" and result["completed"]
  assert result["accuracy"] > 0.8, result


# ---------------------------------------------------------------------------
# (c) features of the exported time-dependent classifier


def _write_tiny_export(path):
  """A randomly initialised TimeCNN export in the format of lnrd.runs.export_classifier."""
  kwargs = dict(noise_channels=16, emb_channels=32)
  module = time_classifier.get_time_classifier("cnn", 10, **kwargs)
  shapes = jax.eval_shape(lambda: module.init(
      jax.random.PRNGKey(3), jnp.zeros((1, 32, 32, 1)), jnp.ones((1,)), train=False))
  assert "intermediates" not in shapes  # the sow leaves init's variables unchanged
  # Random weights drawn with NumPy (compiling Flax's initialisers takes seconds on CPU).
  rng = np.random.RandomState(3)
  variables = jax.tree.map(
      lambda s: (rng.normal(size=s.shape) / np.sqrt(max(np.prod(s.shape[:-1]), 1))).astype(
          s.dtype), shapes)
  folder = os.path.join(path, "time_classifier")
  os.makedirs(folder)
  with open(os.path.join(folder, "variables.msgpack"), "wb") as f:
    f.write(flax.serialization.to_bytes(jax.device_get(variables)))
  meta = dict(arch="cnn", num_classes=10, kwargs=kwargs, transition=np.eye(10).tolist(),
              learned=False, noisy_target=False, input_shape=[32, 32, 1], precond={}, step=0)
  with open(os.path.join(folder, "meta.json"), "w") as f:
    json.dump(meta, f)
  return module, variables


def test_classifier_features_are_the_penultimate_layer(tmp_path):
  module, variables = _write_tiny_export(str(tmp_path))
  feats = classifier_features.ClassifierFeatures.load(str(tmp_path))
  images = np.random.RandomState(4).randint(0, 256, (13, 28, 28, 1)).astype(np.uint8)
  features, logits = feats.features_and_logits(images)
  assert features.shape == (13, 32 * 8 * 8) and features.dtype == jnp.float32
  # Plain apply (no `mutable`) gives the same logits: the sow changes nothing.
  plain = jax.jit(lambda v, im: module.apply(
      v, images_lib.to_model_range(im, 32), jnp.full((13,), 0.002), train=False))(
          variables, images)
  np.testing.assert_allclose(logits, plain, rtol=1e-5, atol=1e-5)
  dense = variables["params"]["linear"]
  np.testing.assert_allclose(np.asarray(features) @ dense["kernel"] + dense["bias"], logits,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(feats.predict(images), np.argmax(logits, -1))
  # The sharded, padded extraction over 8 devices gives the same rows in order.
  all_features, predicted = feats.extract(images, batch_size=8, mesh=_mesh(8))
  np.testing.assert_allclose(all_features, features, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(predicted, np.argmax(logits, -1))
  with pytest.raises(ValueError, match="uint8"):
    feats(images.astype(np.float32))
