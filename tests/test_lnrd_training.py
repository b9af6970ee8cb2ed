"""lnrd trainers end to end on small data: classifier -> DSM/TDSM -> generate, resume, devices."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import gmm2d
from configs import mnist_sym
from lnrd import diffusion as diffusion_lib
from lnrd import edm
from lnrd import runs as lnrd_runs
from lnrd.tasks import common as lnrd_common
from lnrd.tasks import diffusion
from lnrd.tasks import generate
from lnrd.tasks import noisy_classifier
from sgn_jax.tasks import common
from sgn_jax.training import writers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE = jax.devices()[:1]


def _gmm(arg="", **overrides):
  config = gmm2d.get_config(f"task=diffusion,{arg}" if "task=" not in arg else arg)
  config.dataset.gmm.num_train = 2048
  config.dataset.gmm.num_test = 512
  config.network.hidden = (32, 32)
  config.classifier.kwargs = {"hidden": 32, "num_layers": 2}
  config.batch_size = 64
  config.classifier.batch_size = 64
  config.classifier.eval_batch_size = 256
  config.duration_kimg = 0.64  # 10 steps
  config.classifier.duration_kimg = 0.64
  config.classifier.eval_every_kimg = 0.64
  config.snapshot_every_kimg = 100.0
  config.log_every_steps = 5
  config.checkpoint_every_steps = 5
  config.optim.warmup_kimg = 0.1
  return common.with_overrides(config, **overrides)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cls"))
  metrics = noisy_classifier.train_and_evaluate(_gmm("task=noisy_classifier"), workdir, ONE)
  assert metrics["completed"] == 1.0 and np.isfinite(metrics["train/loss"])
  return workdir


def _history(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["train/loss"] for r in rows if "train/loss" in r]


def test_classifier_export_round_trip(classifier_dir):
  bundle = lnrd_runs.load_classifier(classifier_dir)
  x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
  probs = np.asarray(bundle.probs(x, np.full(7, 0.5, np.float32)))
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  assert bundle.transition.shape == (4, 4) and not bundle.learned
  np.testing.assert_allclose(np.diag(bundle.transition), 0.6, rtol=1e-6)  # 40% symmetric


@pytest.mark.parametrize("estimator", ["sampled", "official", "exact", "topk"])
def test_tdsm_trains_with_each_estimator(tmp_path, classifier_dir, estimator):
  config = _gmm(f"method=tdsm,estimator={estimator}", **{"tdsm.classifier_dir": classifier_dir})
  metrics = diffusion.train_and_evaluate(config, str(tmp_path), ONE)
  assert metrics["completed"] == 1.0 and np.isfinite(metrics["train/loss"])
  assert 0 < metrics["train/weight_of_given_label"] <= 1


def test_tdsm_with_learned_transition_classifier(tmp_path):
  cls_dir = str(tmp_path / "cls")
  noisy_classifier.train_and_evaluate(
      _gmm("task=noisy_classifier", **{"classifier.transition": "learned"}), cls_dir, ONE)
  bundle = lnrd_runs.load_classifier(cls_dir)
  assert bundle.learned
  np.testing.assert_allclose(bundle.transition.sum(1), 1.0, rtol=1e-5)
  config = _gmm("method=tdsm", **{"tdsm.classifier_dir": cls_dir, "tdsm.weight_form": "paper"})
  metrics = diffusion.train_and_evaluate(config, str(tmp_path / "tdsm"), ONE)
  assert np.isfinite(metrics["train/loss"])


def test_resume_is_bit_identical(tmp_path, classifier_dir):
  config = _gmm("method=tdsm", **{"tdsm.classifier_dir": classifier_dir})
  full = str(tmp_path / "full")
  diffusion.train_and_evaluate(config, full, ONE)
  parts = str(tmp_path / "parts")
  first = _gmm("method=tdsm", stop_after_steps=5, **{"tdsm.classifier_dir": classifier_dir})
  assert diffusion.train_and_evaluate(first, parts, ONE)["completed"] == 0.0
  assert diffusion.train_and_evaluate(config, parts, ONE)["completed"] == 1.0
  full_vars = lnrd_runs.load_diffusion(full, mesh=diffusion_mesh()).variables
  part_vars = lnrd_runs.load_diffusion(parts, mesh=diffusion_mesh()).variables
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(full_vars),
               jax.device_get(part_vars))


def diffusion_mesh():
  from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  return mesh_lib.create_mesh(ONE)


def test_one_and_eight_devices_give_the_same_losses(tmp_path, classifier_dir):
  config = _gmm("method=tdsm", log_every_steps=1, **{"tdsm.classifier_dir": classifier_dir})
  diffusion.train_and_evaluate(config, str(tmp_path / "one"), ONE)
  diffusion.train_and_evaluate(config, str(tmp_path / "eight"), jax.devices()[:8])
  one, eight = _history(str(tmp_path / "one")), _history(str(tmp_path / "eight"))
  assert len(one) == 10
  np.testing.assert_allclose(one, eight, rtol=2e-4)


def test_generate_writes_samples_and_affine_mix(tmp_path):
  run_dir = str(tmp_path / "dsm")
  config = _gmm("method=dsm")
  diffusion.train_and_evaluate(config, run_dir, ONE)
  gen = _gmm("method=dsm,task=generate")
  gen.generate.run_dir = run_dir
  gen.generate.per_class = 3
  gen.generate.batch_size = 8
  out = str(tmp_path / "gen")
  result = generate.train_and_evaluate(gen, out, ONE)
  assert result["num_samples"] == 12
  data = np.load(os.path.join(out, "samples.npz"))
  assert data["images"].shape == (12, 2)
  np.testing.assert_array_equal(data["labels"], np.repeat(np.arange(4), 3))
  assert os.path.getsize(os.path.join(out, "samples.png")) > 1000
  # Affine mix with the same network: (1 + lam) D - lam D = D, so the same samples.
  gen.generate.other_run_dir = run_dir
  gen.generate.affine_lambda = 0.7
  mixed = generate.train_and_evaluate(gen, str(tmp_path / "mixed"), ONE)
  assert mixed["num_samples"] == 12
  np.testing.assert_allclose(np.load(os.path.join(tmp_path / "mixed", "samples.npz"))["images"],
                             data["images"], atol=1e-4)


def test_bad_configs_fail_before_compute(tmp_path):
  with pytest.raises(ValueError, match="classifier_dir.*task=noisy_classifier"):
    diffusion.train_and_evaluate(_gmm("method=tdsm"), str(tmp_path), ONE)
  with pytest.raises(FileNotFoundError, match="time_classifier.*not found"):
    diffusion.train_and_evaluate(_gmm("method=tdsm", **{"tdsm.classifier_dir": str(tmp_path)}),
                                 str(tmp_path), ONE)
  with pytest.raises(ValueError, match="tdsm.estimator='mean'"):
    diffusion.validate_config(_gmm("method=tdsm", **{"tdsm.estimator": "mean"}))
  with pytest.raises(ValueError, match="weight_source='exact' needs"):
    config = mnist_sym.get_config("method=tdsm")
    config.tdsm.weight_source = "exact"
    diffusion.validate_config(config)
  with pytest.raises(ValueError, match="noise.rate"):
    diffusion.validate_config(_gmm("method=dsm", **{"noise.rate": 1.2}))
  with pytest.raises(ValueError, match="method='sgn' is not a diffusion method"):
    mnist_sym.get_config("method=sgn,task=diffusion")
  with pytest.raises(ValueError, match="generate.run_dir"):
    generate.train_and_evaluate(_gmm("task=generate"), str(tmp_path), ONE)
  assert not os.listdir(tmp_path) or "checkpoints" not in os.listdir(tmp_path)


def test_mnist_unet_tdsm_step_with_augmentation(tmp_path, shared_data):
  """Real MNIST through the image path: padding to 32x32, EDM augmentation with
  augment labels, a (shrunk) DDPM++ UNet, the CNN classifier, a sample grid."""
  base = ("source=idx,subset=128,kimg=0.064,classifier_kimg=0.064")
  def shrink(config):
    config.dataset.path = str(shared_data / "mnist")
    config.network.overrides = {"model_channels": 8, "channel_mult": (1, 1), "num_blocks": 1,
                                "attn_resolutions": (16,)}
    config.batch_size = 16
    config.classifier.batch_size = 16
    config.classifier.eval_batch_size = 1000
    config.classifier.eval_every_kimg = 1.0
    config.optim.warmup_kimg = 0.1
    config.log_every_steps = 2
    config.snapshot_every_kimg = 0.032
    config.sample.num_steps = 2
    config.sample.grid_per_class = 1
    return config
  cls_dir = str(tmp_path / "cls")
  noisy_classifier.train_and_evaluate(shrink(mnist_sym.get_config(f"task=noisy_classifier,{base}")),
                                      cls_dir, ONE)
  config = shrink(mnist_sym.get_config(f"method=tdsm,{base},classifier_dir={cls_dir}"))
  assert config.augment.p == 0.12 and config.pad_to == 32
  metrics = diffusion.train_and_evaluate(config, str(tmp_path / "tdsm"), ONE)
  assert metrics["step"] == 4 and np.isfinite(metrics["train/loss"])
  grids = sorted(os.listdir(tmp_path / "tdsm" / "samples"))
  assert grids == ["step_00000002.png", "step_00000004.png"]


def test_quick_start_demo_runs(tmp_path):
  workdir = str(tmp_path / "demo")
  cmd = [sys.executable, os.path.join(REPO, "main.py"),
         f"--config={os.path.join(REPO, 'configs/gmm2d.py')}:kimg=6.4,classifier_kimg=6.4",
         "--config.demo.samples_per_class=200", f"--workdir={workdir}"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  subprocess.run(cmd, check=True, cwd=REPO, env=env, capture_output=True, timeout=600)
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["dsm/sw_mean"] > 0 and metrics["tdsm/sw_mean"] > 0
  for name in ("weight_contours.png", "samples.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 10_000


def test_ncsnpp_fourier_constants_are_kept_and_not_trained():
  """NCSN++'s Fourier frequencies live in 'constants' (model_state): carried through the
  train step unchanged, used by the sampler, not counted as parameters."""
  from lnrd import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from sgn_jax.data import device_data  # pylint: disable=g-import-not-at-top
  from sgn_jax.training import ema  # pylint: disable=g-import-not-at-top
  from sgn_jax.training import loop  # pylint: disable=g-import-not-at-top
  from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.create_mesh(ONE)
  model = diffusion_lib.build_network("ncsnpp", (8, 8, 1), 10, model_channels=8,
                                      channel_mult=(1, 1), num_blocks=1, attn_resolutions=(4,))
  precond = edm.get_preconditioning("edm")
  tx = edm.adam_with_warmup(1e-3, warmup_kimg=10.0, batch_size=8)
  state = diffusion_lib.init_state(model, tx, (8, 8, 1), 10, jax.random.PRNGKey(0), mesh)
  assert "constants" in state.model_state
  before = jax.device_get(state.model_state)
  images = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)
  perm = jax.jit(lambda k: device_data.epoch_permutation(k, 0, 32))(jax.random.PRNGKey(1))
  inputs = {"permutation": perm, "train_images": device_data.put_table(images, mesh),
            "train_labels": device_data.put_table(np.arange(32, dtype=np.int32) % 10, mesh)}
  step = diffusion_lib.make_train_step(model, tx, diffusion_lib.dsm_objective(precond),
                                       precond=precond, num_classes=10,
                                       ema_decay=ema.edm_schedule(8, 500.0))
  state, metrics = loop.jit_step(step, device_data.BatchDrawer(8, 4, mesh))(state, inputs)
  assert np.isfinite(float(metrics["loss"]))
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.model_state))
  sample_fn = diffusion_lib.make_sampler(model, precond, 10, mesh,
                                         sampler_lib.SamplerSettings(num_steps=2))
  samples = sampler_lib.sample_for_labels(sample_fn, diffusion_lib.ema_variables(state),
                                          np.arange(8) % 10, jax.random.PRNGKey(2), (8, 8, 1),
                                          mesh)
  assert samples.shape == (8, 8, 8, 1) and np.all(np.isfinite(samples))


def test_paper_weights_with_a_noisy_label_classifier(tmp_path):
  cls_dir = str(tmp_path / "cls")
  noisy_classifier.train_and_evaluate(
      _gmm("task=noisy_classifier", **{"classifier.transition": "none"}), cls_dir, ONE)
  assert lnrd_runs.load_classifier(cls_dir).noisy_target
  config = _gmm("method=tdsm", **{"tdsm.classifier_dir": cls_dir, "tdsm.weight_form": "paper"})
  assert np.isfinite(diffusion.train_and_evaluate(config, str(tmp_path / "t"), ONE)["train/loss"])
  released = _gmm("method=tdsm", **{"tdsm.classifier_dir": cls_dir})
  with pytest.raises(ValueError, match="released.*clean label"):
    diffusion.train_and_evaluate(released, str(tmp_path / "r"), ONE)


def test_logged_loss_averages_every_step_of_the_window(tmp_path):
  # Checkpoints (every 3 steps) check the pending metrics for NaN without dropping
  # them: the one log at step 10 is the mean of all 10 per-step losses.
  every = _gmm("method=dsm", log_every_steps=1)
  diffusion.train_and_evaluate(every, str(tmp_path / "every"), ONE)
  window = _gmm("method=dsm", log_every_steps=10, checkpoint_every_steps=3)
  diffusion.train_and_evaluate(window, str(tmp_path / "window"), ONE)
  per_step = _history(str(tmp_path / "every"))
  assert len(per_step) == 10
  np.testing.assert_allclose(_history(str(tmp_path / "window")), [np.mean(per_step)], rtol=1e-5)


def _log_only_writers(monkeypatch):
  # Log-only metric writers: importing TensorFlow for TensorBoard would take seconds.
  monkeypatch.setattr(writers, "create_writer", lambda workdir: writers.MultiWriter(
      [writers.LoggingWriter(workdir)]))


ASSUMED = "rate=0,assumed_rate=0.05"  # TDSM's clean benchmark: T assumed symmetric at 5%


def _assumed_t():
  t = np.full((4, 4), 0.05 / 3)
  np.fill_diagonal(t, 0.95)
  return t


def test_tdsm_on_clean_labels_with_an_assumed_rate_has_soft_weights(tmp_path, monkeypatch):
  """Clean labels with `noise.assumed_rate`: TDSM's weights use the assumed T, so they
  are not one-hot (with T = I TDSM would be plain DSM). The mixture's exact posteriors
  stand in for the classifier (its own wiring: the next test)."""
  _log_only_writers(monkeypatch)
  workdir = str(tmp_path / "tdsm")
  metrics = diffusion.train_and_evaluate(
      _gmm(f"method=tdsm,{ASSUMED}", **{"tdsm.weight_source": "exact"}), workdir, ONE)
  assert metrics["noise/realised_rate"] == 0.0
  assert 0.5 < metrics["train/weight_of_given_label"] < 0.9999
  with open(os.path.join(workdir, "run.json")) as f:
    record = json.load(f)
  np.testing.assert_allclose(record["transition"], _assumed_t(), rtol=1e-6)
  assert record["noise"]["assumed_rate"] == 0.05 and record["matmul_precision"] == "highest"


def test_classifier_on_clean_labels_with_an_assumed_rate(tmp_path, monkeypatch):
  """The classifier's forward correction and export use the assumed T; it does not fit
  a run on the same labels with T = I (nor the other way round)."""
  _log_only_writers(monkeypatch)
  monkeypatch.setattr(noisy_classifier, "EVAL_SIGMAS", (0.002,))  # fewer compilations
  cls_dir = str(tmp_path / "cls")
  noisy_classifier.train_and_evaluate(_gmm(f"task=noisy_classifier,{ASSUMED}"), cls_dir, ONE)
  classifier = lnrd_runs.load_classifier(cls_dir)
  np.testing.assert_allclose(classifier.transition, _assumed_t(), rtol=1e-6)
  with open(os.path.join(cls_dir, "run.json")) as f:
    facts = json.load(f)
  lnrd_runs.check_classifier_fits(classifier, facts, cls_dir)
  identity = dict(facts, transition=np.eye(4).tolist(),
                  noise=dict(facts["noise"], assumed_rate=0.0))
  with pytest.raises(ValueError, match="transition matrix differs.*assumed_rate=0.05"):
    lnrd_runs.check_classifier_fits(classifier, identity, cls_dir)


def test_matmul_precision_is_checked_and_active_while_tracing(tmp_path):
  with pytest.raises(ValueError, match="matmul_precision='tf32'.*highest"):
    diffusion.train_and_evaluate(_gmm("method=dsm", matmul_precision="tf32"), str(tmp_path), ONE)
  assert not os.listdir(tmp_path)
  seen = []
  traced = lnrd_common.with_matmul_precision(
      lambda config, workdir, devices=None: seen.append(jax.config.jax_default_matmul_precision))
  for value in lnrd_common.MATMUL_PRECISIONS:
    traced(_gmm("method=dsm", matmul_precision=value), str(tmp_path))
  assert seen == list(lnrd_common.MATMUL_PRECISIONS)


@pytest.mark.parametrize("key,value,match", [
    ("volmin_lr_factors", (1.0, 0.1), r"volmin_lr_factors=\(1.0, 0.1\) must hold 4"),
    ("volmin_lr_kimg", (3000.0, 1500.0, 7500.0), "volmin_lr_kimg=.*strictly increasing"),
    ("freeze_transition_kimg", -1.0, "freeze_transition_kimg=-1.0 must be >= 0"),
])
def test_volmin_schedule_keys_are_checked(key, value, match):
  config = _gmm("task=noisy_classifier", **{"classifier.transition": "learned",
                                            f"classifier.{key}": value})
  with pytest.raises(ValueError, match=match):
    noisy_classifier.validate_config(config)
  # Only the learned transition reads them.
  noisy_classifier.validate_config(common.with_overrides(config, **{
      "classifier.transition": "known"}))
  # () keeps the warm-up schedule; any factors then.
  noisy_classifier.validate_config(_gmm("task=noisy_classifier", **{
      "classifier.transition": "learned", "classifier.volmin_lr_kimg": (),
      "classifier.volmin_lr_factors": ()}))
