"""Corrector -> TDSM: labels files, the corrector's labels and T, the one-config pipeline,
and task=evaluate end to end on tiny MNIST-shaped data."""

import json
import os

import jax
import numpy as np
import pytest

from configs import mnist_sym
from lnrd import evaluation
from lnrd import runs as lnrd_runs
from lnrd.tasks import common as lnrd_common
from lnrd.tasks import evaluate
from lnrd.tasks import pipeline
from sgn_jax import corrector
from sgn_jax import noise
from sgn_jax.tasks import common
from sgn_jax.training import mesh as mesh_lib

ONE = jax.devices()[:1]


def _digits_npz(path, n_train=512, n_test=256, seed=0):
  """MNIST-shaped images whose class is written in a bright 7x7 block (learnable at once)."""
  rng = np.random.default_rng(seed)

  def make(n):
    labels = rng.integers(0, 10, n).astype(np.int64)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
      row, col = divmod(int(c), 4)
      images[i, 7 * row:7 * row + 7, 7 * col:7 * col + 7] = 230
    return images, labels
  train_images, train_labels = make(n_train)
  test_images, test_labels = make(n_test)
  np.savez(path, train_images=train_images, train_labels=train_labels,
           test_images=test_images, test_labels=test_labels)
  return str(path)


def test_soft_confusion_transition_matches_a_loop():
  rng = np.random.default_rng(1)
  probs = rng.dirichlet(np.ones(4) * 0.3, size=200)
  predicted = rng.integers(0, 4, 200)
  got = corrector.soft_confusion_transition(probs, predicted, floor=0.0)
  want = np.zeros((4, 4))
  for i in range(4):
    for j in range(4):
      want[i, j] = sum(p[i] for p, y in zip(probs, predicted) if y == j) / probs[:, i].sum()
  np.testing.assert_allclose(got, want, rtol=1e-12)
  floored = corrector.soft_confusion_transition(probs, predicted, floor=0.1)
  np.testing.assert_allclose(floored, 0.9 * want + 0.1 / 4, rtol=1e-12)
  np.testing.assert_allclose(floored.sum(1), 1.0, rtol=1e-12)
  # confident, correct posteriors: T^ = I
  onehot = np.eye(4)[predicted]
  np.testing.assert_allclose(corrector.soft_confusion_transition(onehot, predicted, 0.0),
                             np.eye(4), atol=0)


def test_moment_transition_recovers_the_correctors_confusion():
  """Corrector errors independent of the label noise given y: R = O T^-1 recovers
  p(y^ | y) from the corrected and noisy labels alone (the clean ones are unseen)."""
  rng = np.random.default_rng(2)
  n, c = 400_000, 4
  clean = rng.integers(0, c, n)
  T = noise.transition_matrix("sym", c, 0.4, convention="tdsm")
  given = noise.sample_noisy_labels(clean, T, seed=3)
  confusion = np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.8, 0.2, 0.0],
                        [0.0, 0.0, 1.0, 0.0], [0.05, 0.0, 0.0, 0.95]])
  predicted = noise.sample_noisy_labels(clean, confusion, seed=4)
  estimate = corrector.moment_transition(given, predicted, T, floor=0.0)
  np.testing.assert_allclose(estimate, confusion, atol=0.01)
  # the soft confusion of over-confident (one-hot) posteriors cannot see these errors
  naive = corrector.soft_confusion_transition(np.eye(c)[predicted], predicted, 0.0)
  assert np.max(np.abs(naive - confusion)) > 0.15
  with pytest.raises(noise.SingularTransitionError):
    corrector.moment_transition(given, predicted, np.full((c, c), 1 / c))


def test_labels_file_replaces_the_noise_draw(tmp_path):
  data = _digits_npz(tmp_path / "d.npz")
  config = mnist_sym.get_config("source=npz,rate=0.4,method=ce")
  config.dataset.path = data
  drawn = common.prepare_splits(config)
  assert np.mean(drawn.train_labels != drawn.train_clean_labels) > 0.3
  labels = drawn.train_clean_labels.copy()
  labels[:10] = (labels[:10] + 1) % 10
  T = np.full((10, 10), 0.01) + 0.9 * np.eye(10)
  np.savez(tmp_path / "l.npz", labels=labels, transition=T)
  config.noise.labels_file = str(tmp_path / "l.npz")
  given = common.prepare_splits(config)
  np.testing.assert_array_equal(given.train_labels, labels)
  np.testing.assert_allclose(given.transition, T)
  assert given.noise_summary["realised_noise_rate"] == pytest.approx(10 / 512)


@pytest.mark.parametrize("content, message", [
    ({"labels": np.zeros(5, np.int64)}, "has 5 labels but the training set has 512"),
    ({"labels": np.full(512, 10)}, r"\[0, 10\)|range|num_classes"),
    ({"labels": np.zeros(512, np.int64), "transition": np.ones((10, 10))}, "sum"),
    ({"y": np.zeros(512, np.int64)}, "has no array 'labels'"),
])
def test_bad_labels_files_are_named(tmp_path, content, message):
  np.savez(tmp_path / "l.npz", **content)
  with pytest.raises(ValueError, match=message):
    noise.load_labels_file(tmp_path / "l.npz", 512, 10)
  with pytest.raises(FileNotFoundError, match="sgn_jax.corrector"):
    noise.load_labels_file(tmp_path / "missing.npz", 512, 10)


def _tiny_pipeline_config(data, arg):
  config = mnist_sym.get_config(f"task=pipeline,source=npz,rate=0.4,kimg=0.032,"
                                f"classifier_kimg=0.128,{arg}")
  config.dataset.path = data
  config.network.overrides = {"model_channels": 8, "channel_mult": (1, 1), "num_blocks": 1,
                              "attn_resolutions": ()}
  config.augment.p = 0.0
  config.network.dropout = 0.0
  config.batch_size = 16
  config.classifier.batch_size = 32
  config.classifier.eval_batch_size = 256
  config.classifier.eval_every_kimg = 10.0
  config.optim.warmup_kimg = 0.01
  config.classifier.optim.warmup_kimg = 0.01
  config.log_every_steps = 1
  config.snapshot_every_kimg = 100.0
  config.sample.num_steps = 2
  config.pipeline.corrector_epochs = 2
  e = config.evaluate
  e.per_class, e.batch_size, e.feature_batch_size, e.num_real = 2, 8, 64, 200
  e.metrics = ("fid", "density_coverage", "cw_density_coverage", "cas")
  e.feature_nets = ("classifier",)
  e.cas.epochs, e.cas.batch_size = 1, 16
  return config


@pytest.fixture(scope="module")
def corrected_tdsm(tmp_path_factory):
  """corrector (CE, 2 epochs) -> its labels and T -> classifier -> TDSM -> evaluate, once."""
  root = tmp_path_factory.mktemp("pipeline")
  data = _digits_npz(root / "d.npz")
  workdir = str(root / "run")
  config = _tiny_pipeline_config(data, "method=tdsm,corrector=ce")
  # the pipeline's own classifier serves as the (clean-ish) feature net of the test
  config.evaluate.feature_classifier_dir = os.path.join(workdir, "classifier")
  results = pipeline.train_and_evaluate(config, workdir, ONE)
  return data, workdir, config, results


def test_corrector_pipeline_runs_every_stage_and_resumes(corrected_tdsm):
  data, workdir, config, results = corrected_tdsm
  assert set(results) == {"corrector", "classifier", "diffusion", "evaluate"}

  report = results["corrector"]
  saved = np.load(os.path.join(workdir, "corrector", corrector.LABELS_FILE))
  clean = np.load(data)["train_labels"]
  assert saved["labels"].shape == (512,)
  assert report["corrected_accuracy"] == pytest.approx(np.mean(saved["labels"] == clean))
  assert report["corrected_accuracy"] > report["given_label_accuracy"]  # it corrects
  np.testing.assert_allclose(saved["probs"].sum(1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(saved["labels"], saved["probs"].argmax(1))
  np.testing.assert_allclose(saved["transition"].sum(1), 1.0, rtol=1e-9)
  # the later stages trained on those labels with that T
  for stage in ("classifier", "diffusion"):
    with open(os.path.join(workdir, stage, "config.json")) as f:
      assert json.load(f)["noise"]["labels_file"].endswith(corrector.LABELS_FILE)
  with open(os.path.join(workdir, "classifier", "time_classifier", "meta.json")) as f:
    np.testing.assert_allclose(json.load(f)["transition"], saved["transition"], rtol=1e-6)

  metrics = results["evaluate"]
  assert metrics["num_samples"] == 20 and metrics["method"] == "tdsm"
  for key in ("classifier/fid", "classifier/density", "classifier/coverage",
              "classifier/cw_density", "classifier/cw_coverage", "cas/accuracy"):
    assert np.isfinite(metrics[key]), key
  assert 0.0 <= metrics["classifier/coverage"] <= 1.0
  out = os.path.join(workdir, "evaluate")
  assert os.path.exists(os.path.join(out, "samples.png"))
  assert len(os.listdir(os.path.join(out, "samples"))) == 3  # batches of 8 + 8 + 4
  with open(os.path.join(out, "metrics.json")) as f:
    assert json.load(f)["cas/accuracy"] == pytest.approx(metrics["cas/accuracy"])

  # Started again: every stage is found finished, nothing is retrained.
  assert pipeline.train_and_evaluate(config, workdir, ONE) == {"corrector": report}


def test_a_stage_stopped_early_ends_the_pipeline_run(tmp_path):
  """A preempted (or budget-stopped) stage is not followed by the stages that need it."""
  config = _tiny_pipeline_config(_digits_npz(tmp_path / "d.npz"), "method=tdsm")
  config.stop_after_steps = 1  # the classifier's 4 steps stop after the first
  workdir = tmp_path / "run"
  results = pipeline.train_and_evaluate(config, str(workdir), ONE)
  assert set(results) == {"classifier"} and results["classifier"]["completed"] == 0.0
  assert results["classifier"]["step"] == 1
  assert not (workdir / "diffusion").exists()


def test_evaluate_resumes_from_saved_sample_batches(tmp_path, corrected_tdsm):
  """A killed evaluation samples only the missing batches, and gets the same samples."""
  _, workdir, config, _ = corrected_tdsm
  run_dir = os.path.join(workdir, "diffusion")
  mesh = mesh_lib.create_mesh(ONE)
  model = lnrd_runs.load_diffusion(run_dir, mesh=mesh)
  settings = lnrd_common.sampler_settings(config)
  labels = np.repeat(np.arange(10), 2).astype(np.int32)
  key = jax.random.PRNGKey(config.evaluate.seed)
  folder = str(tmp_path / "samples")
  first = evaluation.sample_in_batches(model, labels, key, mesh, settings, 8, folder)
  os.remove(os.path.join(folder, "batch_00002.npz"))  # "killed" before the last batch
  calls = []
  original = model.sample
  model.sample = lambda *a, **k: calls.append(len(a[0])) or original(*a, **k)
  second = evaluation.sample_in_batches(model, labels, key, mesh, settings, 8, folder)
  assert calls == [4]  # only the missing batch (rows 16..19) was sampled again
  np.testing.assert_array_equal(second, first)
  # the pipeline's own evaluation drew the same samples (same seed, batches, sampler)
  with np.load(os.path.join(workdir, "evaluate", "samples", "batch_00001.npz")) as saved:
    np.testing.assert_array_equal(saved["samples"], first[8:16])
  with pytest.raises(ValueError, match="other labels"):
    evaluation.sample_in_batches(model, labels[::-1].copy(), key, mesh, settings, 8, folder)


def test_rows_split_over_processes_merge_back_in_order():
  for n, num in ((10, 3), (7, 7), (5, 8), (1003, 4)):
    x = np.arange(n) * 10
    parts = []
    for p in range(num):
      rows = evaluation.split_rows(n, num, p)
      part = np.full(-(-n // num), -1)  # padded like the all-gather
      part[:len(rows)] = x[rows]
      parts.append(part)
    assert sorted(np.concatenate([evaluation.split_rows(n, num, p) for p in range(num)])) == \
        list(range(n))
    np.testing.assert_array_equal(evaluation.merge_rows(parts, n), x)


def test_evaluate_config_errors_name_the_key(tmp_path):
  config = mnist_sym.get_config("task=evaluate,method=dsm")
  with pytest.raises(ValueError, match="evaluate.run_dir"):
    evaluate.validate_config(config)
  config.evaluate.run_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="checkpoints"):
    evaluate.validate_config(config)
  os.makedirs(tmp_path / "checkpoints")
  config.evaluate.metrics = ("fid", "precision")
  with pytest.raises(ValueError, match="precision"):
    evaluate.validate_config(config)
  config.evaluate.metrics = ("density_coverage",)
  config.evaluate.feature_nets = ("classifier",)
  with pytest.raises(ValueError, match="feature_classifier_dir"):
    evaluate.validate_config(config)
  pipe = mnist_sym.get_config("task=pipeline,method=tdsm,corrector=sgm")
  with pytest.raises(ValueError, match="pipeline.corrector='sgm'"):
    pipeline.validate_config(pipe)
  pipe = mnist_sym.get_config("task=pipeline,method=tdsm,corrector=sgn,rate=0,assumed_rate=0.05")
  with pytest.raises(ValueError, match="noise.assumed_rate=0.05 .*pipeline.corrector='sgn'"):
    pipeline.validate_config(pipe)
  pipe = mnist_sym.get_config("task=pipeline,method=tdsm")
  pipe.matmul_precision = "fp32"
  with pytest.raises(ValueError, match="matmul_precision='fp32'"):
    pipeline.validate_config(pipe)
