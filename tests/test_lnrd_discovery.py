"""Noisy-label discovery (lnrd.discovery): own-label weights, ranking metrics, the task."""

import json
import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import mnist_sym
from lnrd import discovery
from lnrd import runs as lnrd_runs
from lnrd import time_classifier
from lnrd.tasks import discover
from sgn_jax import noise
from sgn_jax.tasks import common

ONE = jax.devices()[:1]


def _random_transition(rng, c):
  t = rng.uniform(0.0, 1.0, (c, c)) + np.eye(c) * c
  return t / t.sum(1, keepdims=True)


def _random_probs(rng, b, c):
  logits = rng.normal(size=(b, c)) * 2.0
  p = np.exp(logits)
  return p / p.sum(1, keepdims=True)


# ---- own-label weight -----------------------------------------------------------


def test_own_label_weight_hand_value():
  t = np.array([[0.8, 0.2], [0.3, 0.7]])
  q = np.array([[0.6, 0.4], [0.6, 0.4]])
  w = np.asarray(discovery.own_label_weight(q, np.array([0, 1]), t))
  # y~=0: 0.8*0.6 / (0.8*0.6 + 0.3*0.4) = 0.8;  y~=1: 0.7*0.4 / (0.2*0.6 + 0.7*0.4) = 0.7
  np.testing.assert_allclose(w, [0.8, 0.7], rtol=1e-6)


def test_own_label_weight_matches_numpy_and_paper_form():
  rng = np.random.default_rng(0)
  b, c = 32, 6
  t, q = _random_transition(rng, c), _random_probs(rng, b, c)
  labels = rng.integers(0, c, b)
  numerator = t[labels, labels] * q[np.arange(b), labels]
  denominator = (t[:, labels].T * q).sum(1)  # sum_k p(y~ | k) p(k | x)
  expected = numerator / denominator
  got = np.asarray(discovery.own_label_weight(q, labels, t))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Paper form with h~ = T^T q and a uniform prior gives the same weights.
  paper = np.asarray(discovery.own_label_weight(q @ t, labels, t, form="paper"))
  np.testing.assert_allclose(paper, expected, rtol=1e-4, atol=1e-5)
  # Inside jit (T a constant) as suspect_scores uses it.
  jitted = jax.jit(lambda p, y: discovery.own_label_weight(p, y, t))(q, labels)
  np.testing.assert_allclose(np.asarray(jitted), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="weight form 'bogus'.*released"):
    discovery.own_label_weight(q, labels, t, form="bogus")


def test_confidence_is_forward_corrected():
  rng = np.random.default_rng(1)
  t, q = _random_transition(rng, 4), _random_probs(rng, 9, 4)
  labels = rng.integers(0, 4, 9)
  got = np.asarray(discovery.noisy_label_confidence(q, labels, t))
  np.testing.assert_allclose(got, (q @ t)[np.arange(9), labels], rtol=1e-5)
  own = np.asarray(discovery.noisy_label_confidence(q, labels, t, noisy_target=True))
  np.testing.assert_allclose(own, q[np.arange(9), labels], rtol=1e-6)


# ---- ranking metrics ----------------------------------------------------------------


def test_ranking_metrics_hand_example():
  scores = np.array([0.5, 0.1, 0.1, 0.9, 0.3])
  flipped = np.array([0, 1, 0, 0, 1], bool)
  # Order (ties by index): 1, 2, 4, 0, 3.
  np.testing.assert_array_equal(discovery.suspect_order(scores), [1, 2, 4, 0, 3])
  assert discovery.precision_at_k(scores, flipped, 1) == 1.0
  assert discovery.precision_at_k(scores, flipped, 2) == 0.5
  assert discovery.precision_at_k(scores, flipped, 3) == pytest.approx(2 / 3)
  assert discovery.recall_at_k(scores, flipped, 2) == 0.5
  assert discovery.recall_at_k(scores, flipped, 3) == 1.0
  assert discovery.average_precision(scores, flipped) == pytest.approx((1 + 2 / 3) / 2)
  # The tie at 0.1 is broken by index: example 1 comes before example 2.
  assert discovery.precision_at_k(scores, np.array([0, 0, 1, 0, 0], bool), 1) == 0.0
  assert np.isnan(discovery.average_precision(scores, np.zeros(5, bool)))
  assert np.isnan(discovery.recall_at_k(scores, np.zeros(5, bool), 2))
  for k in (0, 6, 1.5):
    with pytest.raises(ValueError, match="k=.*must be an integer in \\[1, 5\\]"):
      discovery.precision_at_k(scores, flipped, k)
  with pytest.raises(ValueError, match="is_flipped has shape"):
    discovery.precision_at_k(scores, flipped[:4], 1)


def test_ranking_metrics_match_numpy_on_random_data():
  rng = np.random.default_rng(2)
  n = 500
  scores = np.round(rng.uniform(size=n), 2)  # many ties
  flipped = rng.uniform(size=n) < 0.3
  order = np.lexsort((np.arange(n), scores))  # by score, then by index
  for k in (1, 7, 100, 499, 500):
    assert discovery.precision_at_k(scores, flipped, k) == pytest.approx(flipped[order[:k]].mean())
    assert discovery.recall_at_k(scores, flipped, k) == pytest.approx(
        flipped[order[:k]].sum() / flipped.sum())
  ranks = np.flatnonzero(flipped[order]) + 1
  expected_ap = np.mean(np.arange(1, len(ranks) + 1) / ranks)
  assert discovery.average_precision(scores, flipped) == pytest.approx(expected_ap)
  # A perfect ranking has AP 1; a reversed one is worse than chance.
  assert discovery.average_precision(np.where(flipped, 0.0, 1.0), flipped) == 1.0
  assert discovery.average_precision(np.where(flipped, 1.0, 0.0), flipped) < flipped.mean()


# ---- a classifier with known posteriors ------------------------------------------------


def _class_images(labels, rng):
  """28x28 uint8 images whose brightness encodes the class: 30 + 20 c (+- 3)."""
  base = 30 + 20 * np.asarray(labels)[:, None, None]
  return np.clip(base + rng.integers(-3, 4, (len(labels), 28, 28)), 0, 255).astype(np.uint8)


class BrightnessClassifier:
  """Clean posterior from the mean brightness of the central 28x28 (the padded image)."""
  noisy_target = False
  input_shape = (32, 32, 1)
  learned = False

  def __init__(self, transition, sharpness=8.0):
    self.transition = np.asarray(transition)
    self.sharpness = sharpness

  def probs(self, x_t, sigma):
    del sigma
    m = x_t[:, 2:30, 2:30, 0].mean(axis=(1, 2))
    guess = ((m + 1.0) * 127.5 - 30.0) / 20.0
    classes = jnp.arange(self.transition.shape[0])
    return jax.nn.softmax(-self.sharpness * (classes[None, :] - guess[:, None]) ** 2, axis=-1)


def test_flipped_examples_rank_first_and_scores_do_not_depend_on_batching():
  rng = np.random.default_rng(3)
  c, n = 10, 90
  clean = np.arange(n) % c
  t = noise.transition_matrix("sym", c, 0.4, convention="tdsm")
  flipped = rng.uniform(size=n) < 0.3
  given = np.where(flipped, (clean + rng.integers(1, c, n)) % c, clean)
  images = _class_images(clean, rng)[..., None]
  classifier = BrightnessClassifier(t)
  scores = discovery.suspect_scores(classifier, images, given, (0.002, 0.05, 0.2),
                                    jax.random.PRNGKey(0), batch_size=16)
  assert scores.weight.shape == scores.confidence.shape == (n,)
  assert scores.weight_per_sigma.shape == (3, n)
  np.testing.assert_array_equal(scores.prediction, clean)
  f = int(flipped.sum())
  assert discovery.precision_at_k(scores.weight, flipped, f) == 1.0
  assert discovery.average_precision(scores.confidence, flipped) == 1.0
  assert scores.weight[flipped].max() < 0.5 < scores.weight[~flipped].min()
  # The weight at each sigma is the released formula at that sigma's posterior.
  x = np.pad(images.astype(np.float32) / 127.5 - 1, ((0, 0), (2, 2), (2, 2), (0, 0)),
             constant_values=-1.0)
  q = np.asarray(classifier.probs(jnp.asarray(x), None))
  expected = t[given, given] * q[np.arange(n), given] / (q @ t)[np.arange(n), given]
  np.testing.assert_allclose(scores.weight_per_sigma[0], expected, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(scores.confidence, (q @ t)[np.arange(n), given], rtol=1e-3,
                             atol=1e-4)
  # Batch size (padding of the last batch) and a mesh of 8 devices change nothing.
  from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  for batch_size, mesh in ((7, None), (24, mesh_lib.create_mesh())):
    again = discovery.suspect_scores(classifier, images, given, (0.002, 0.05, 0.2),
                                     jax.random.PRNGKey(0), batch_size=batch_size, mesh=mesh)
    np.testing.assert_allclose(again.weight, scores.weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(again.prediction, scores.prediction)
  # The noise draw matters at a large sigma: another key gives other weights there.
  other = discovery.suspect_scores(classifier, images, given, (2.0,), jax.random.PRNGKey(1), 32)
  same = discovery.suspect_scores(classifier, images, given, (2.0,), jax.random.PRNGKey(0), 32)
  assert not np.allclose(other.weight, same.weight)
  with pytest.raises(ValueError, match="sigmas=.*positive"):
    discovery.suspect_scores(classifier, images, given, (0.0,), batch_size=8)
  with pytest.raises(ValueError, match="input shape"):
    discovery.suspect_scores(classifier, np.repeat(images, 3, axis=-1), given, batch_size=8)


# ---- the task end to end -------------------------------------------------------------


def _npz_dataset(path, n_train=96, seed=0):
  rng = np.random.default_rng(seed)
  train_labels = (np.arange(n_train) % 10).astype(np.int64)
  test_labels = np.arange(20) % 10
  np.savez(path, train_images=_class_images(train_labels, rng), train_labels=train_labels,
           test_images=_class_images(test_labels, rng), test_labels=test_labels)
  return str(path)


def _export_tiny_cnn(folder, transition):
  """A randomly initialised TimeCNN written as `lnrd.runs.export_classifier` writes it."""
  kwargs = {"noise_channels": 16, "emb_channels": 16, "augment_dim": 0}
  module = time_classifier.get_time_classifier("cnn", 10, **kwargs)
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)), jnp.ones((1,)))
  export = os.path.join(folder, lnrd_runs.EXPORT_DIR)
  os.makedirs(export)
  with open(os.path.join(export, "variables.msgpack"), "wb") as f:
    f.write(flax.serialization.to_bytes(jax.device_get(variables)))
  meta = dict(arch="cnn", num_classes=10, kwargs=kwargs, transition=np.asarray(transition).tolist(),
              learned=False, noisy_target=False, input_shape=[32, 32, 1], precond={}, step=1)
  with open(os.path.join(export, "meta.json"), "w") as f:
    json.dump(meta, f)
  return str(folder)


def _config(npz, classifier_dir, rate, **discover):
  config = mnist_sym.get_config(f"source=npz,method=tdsm,rate={rate}")
  config.dataset.path = npz
  config.task = "discover"
  config.discover = ml_collections.ConfigDict(dict(
      classifier_dir=classifier_dir, sigmas=(0.002, 0.05, 0.2), top_k=(10, 500), grid_count=16,
      batch_size=32, **discover))
  return config


def _read(workdir):
  with open(os.path.join(workdir, "discovery.json")) as f:
    report = json.load(f)
  with open(os.path.join(workdir, "suspects.json")) as f:
    suspects = json.load(f)["suspects"]
  return report, suspects


def test_task_with_an_exported_classifier(tmp_path):
  npz = _npz_dataset(tmp_path / "data.npz")
  t = noise.transition_matrix("sym", 10, 0.4, convention="tdsm")
  cls_dir = _export_tiny_cnn(tmp_path / "cls", t)
  workdir = str(tmp_path / "out")
  metrics = discover.train_and_evaluate(_config(npz, cls_dir, 0.4), workdir, ONE)
  report, suspects = _read(workdir)
  splits = common.prepare_splits(_config(npz, cls_dir, 0.4))
  flipped = splits.train_labels != splits.train_clean_labels
  assert report["num_examples"] == 96 and report["num_flipped"] == int(flipped.sum()) > 0
  assert report["transition_source"] == "classifier" and report["weight_form"] == "released"
  # k = 500 is clipped to N; the number of flipped examples is added.
  assert report["top_k"] == sorted({10, 96, int(flipped.sum())})
  for name in ("weight", "confidence"):
    assert set(report["precision_at_k"][name]) == {str(k) for k in report["top_k"]}
    assert report["precision_at_k"][name]["96"] == pytest.approx(flipped.mean())
    assert report["recall_at_k"][name]["96"] == 1.0
    assert 0.0 <= report["average_precision"][name] <= 1.0
  assert -1.0 <= report["spearman_weight_confidence"] <= 1.0
  assert metrics["precision_at_10/weight"] == report["precision_at_k"]["weight"]["10"]
  # 16 suspects, lowest weight first, consistent with the data and with precision@10.
  assert len(suspects) == 16
  weights = [s["weight"] for s in suspects]
  assert weights == sorted(weights) and len({s["index"] for s in suspects}) == 16
  for s in suspects:
    assert s["given_label"] == splits.train_labels[s["index"]]
    assert s["flipped"] == bool(flipped[s["index"]])
  assert report["precision_at_k"]["weight"]["10"] == pytest.approx(
      np.mean([s["flipped"] for s in suspects[:10]]))
  grid = np.asarray(Image.open(os.path.join(workdir, "suspects.png")))
  assert grid.shape == (4 * 30 + 2, 4 * 30 + 2)  # 4 x 4 cells of 28 + 2 padding
  first = suspects[0]["index"]
  np.testing.assert_array_equal(grid[2:30, 2:30], splits.train_images[first][..., 0])


def test_task_ranks_flipped_labels_first(tmp_path, monkeypatch):
  npz = _npz_dataset(tmp_path / "data.npz")
  t = noise.transition_matrix("sym", 10, 0.4, convention="tdsm")
  cls_dir = _export_tiny_cnn(tmp_path / "cls", t)  # files for the checks; probs replaced
  monkeypatch.setattr(lnrd_runs, "load_classifier",
                      lambda path, what="": BrightnessClassifier(t))
  workdir = str(tmp_path / "out")
  discover.train_and_evaluate(_config(npz, cls_dir, 0.4), workdir)
  report, suspects = _read(workdir)
  f = report["num_flipped"]
  assert report["precision_at_k"]["weight"][str(f)] == 1.0
  assert report["average_precision"]["weight"] == 1.0
  assert all(s["flipped"] for s in suspects[:min(f, 16)])
  assert all(s["prediction"] == s["clean_label"] for s in suspects)


def test_clean_data_uses_the_assumed_symmetric_transition(tmp_path, monkeypatch):
  npz = _npz_dataset(tmp_path / "data.npz")
  cls_dir = _export_tiny_cnn(tmp_path / "cls", np.eye(10))  # a clean-label classifier: T = I
  classifier = BrightnessClassifier(np.eye(10), sharpness=1.0)
  monkeypatch.setattr(lnrd_runs, "load_classifier", lambda path, what="": classifier)
  workdir = str(tmp_path / "out")
  discover.train_and_evaluate(_config(npz, cls_dir, 0.0), workdir, ONE)
  report, suspects = _read(workdir)
  assert report["num_flipped"] == 0 and report["transition_source"] == "assumed_symmetric"
  t = np.asarray(report["transition"])
  np.testing.assert_allclose(np.diag(t), 0.95)
  np.testing.assert_allclose(t[0, 1:], 0.05 / 9, rtol=1e-5)
  assert report["average_precision"]["weight"] is None
  assert report["precision_at_k"]["weight"]["10"] == 0.0
  # With T = I every own-label weight would be 1; with the assumed T they follow
  # w = 0.95 q / (0.95 q + 0.05/9 (1 - q)) (q ~ 0.4 here: the posterior is soft).
  assert max(s["weight"] for s in suspects) < 0.999
  # Another assumed rate gives lower weights.
  discover.train_and_evaluate(_config(npz, cls_dir, 0.0, assumed_rate=0.2),
                              str(tmp_path / "out20"), ONE)
  _, suspects20 = _read(str(tmp_path / "out20"))
  assert suspects20[0]["weight"] < suspects[0]["weight"]


def test_noise_assumed_rate_sets_the_assumed_transition(tmp_path, monkeypatch):
  """noise.assumed_rate (the rate the classifier was trained with) is the assumed rate;
  discover.assumed_rate away from its default must then agree with it."""
  npz = _npz_dataset(tmp_path / "data.npz")
  cls_dir = _export_tiny_cnn(tmp_path / "cls", np.eye(10))
  monkeypatch.setattr(lnrd_runs, "load_classifier",
                      lambda path, what="": BrightnessClassifier(np.eye(10), sharpness=1.0))
  config = _config(npz, cls_dir, 0.0)
  config.noise.assumed_rate = 0.1
  assert discover.discover_settings(config).assumed_rate == 0.1
  config.discover.assumed_rate = 0.1  # the same value twice is fine
  discover.train_and_evaluate(config, str(tmp_path / "out"), ONE)
  report, _ = _read(str(tmp_path / "out"))
  assert report["transition_source"] == "assumed_symmetric"
  np.testing.assert_allclose(np.diag(report["transition"]), 0.9)
  config.discover.assumed_rate = 0.2
  with pytest.raises(ValueError, match="discover.assumed_rate=0.2 and noise.assumed_rate=0.1"):
    discover.train_and_evaluate(config, str(tmp_path / "conflict"), ONE)


def test_bad_discover_configs(tmp_path):
  npz = _npz_dataset(tmp_path / "data.npz")
  with pytest.raises(ValueError, match="discover.classifier_dir.*task=noisy_classifier"):
    discover.train_and_evaluate(_config(npz, "", 0.4), str(tmp_path / "a"))
  with pytest.raises(FileNotFoundError, match="discover.classifier_dir=.*task=noisy_classifier"):
    discover.train_and_evaluate(_config(npz, str(tmp_path / "missing"), 0.4),
                                str(tmp_path / "b"))
  cls_dir = _export_tiny_cnn(tmp_path / "cls", np.eye(10))
  for key, value, match in (("sigmas", (), "discover.sigmas"), ("top_k", (0,), "discover.top_k"),
                            ("assumed_rate", 0.0, "discover.assumed_rate"),
                            ("grid_count", -1, "discover.grid_count")):
    config = _config(npz, cls_dir, 0.0)
    config.discover[key] = value
    with pytest.raises(ValueError, match=match):
      discover.train_and_evaluate(config, str(tmp_path / "c"))
  config = _config(npz, cls_dir, 0.0)
  config.discover.bogus = 1
  with pytest.raises(ValueError, match="discover.bogus is not known"):
    discover.train_and_evaluate(config, str(tmp_path / "d"))
  # Without a discover block at all the defaults apply, and the directory is still required.
  config = _config(npz, cls_dir, 0.0)
  del config["discover"]
  with pytest.raises(ValueError, match="discover.classifier_dir"):
    discover.train_and_evaluate(config, str(tmp_path / "e"))
