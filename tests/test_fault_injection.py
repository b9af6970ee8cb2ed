"""The run contract under bad inputs: every case is refused clearly, before any compute,
and nothing a run wrote earlier is lost or overwritten.

  1. TDSM checks the classifier export it loads (classes, input shape, labels/noise, T).
  2. Rerunning in a workdir resumes only the same run (differences listed; an explicit
     `allow_changes` is recorded).
  3. A refused command writes nothing; generate/evaluate/discover never write into the
     run they read, and read only finished runs of the right task.
  4. Checkpoints recover: an unreadable latest checkpoint falls back to an older one;
     none readable is one clear error; SIGINT saves and exits like SIGTERM.
  5. User errors are one message without a traceback (exit status 2), through main.py.
  6. Array inputs are checked before compute: dtype and value range, NaN/Inf, labels,
     lengths; labels without information are refused where T^-1 is needed.
  7. Density/Coverage with ties agree with the prdc reference.
  8. task=evaluate with 2 processes x 4 devices equals 1 process x 8 devices.
"""

import json
import os
import pathlib
import signal
import subprocess

import jax
import numpy as np
import pytest

from configs import mnist_sym
from lnrd.tasks import diffusion
from lnrd.tasks import generate
from lnrd.tasks import noisy_classifier
from sgn_jax import errors
from sgn_jax import noise
from sgn_jax.runs import RunError
from sgn_jax.tasks import classify
from sgn_jax.tasks import common
from test_classification import _env, _main, _signal_once_training, _tiny
from test_classification import _two_processes_of_four_devices
from test_lnrd_pipeline import _digits_npz
from test_lnrd_training import _gmm

REPO = pathlib.Path(__file__).resolve().parents[1]
ONE = jax.devices()[:1]


def _snapshot(folder) -> dict:
  """{relative path: bytes} of every file under `folder`."""
  folder = pathlib.Path(folder)
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file()}


@pytest.fixture(scope="module")
def classifier_4(tmp_path_factory):
  """A finished time-dependent classifier on the 4-class mixture, 40% symmetric noise."""
  workdir = str(tmp_path_factory.mktemp("cls4"))
  noisy_classifier.train_and_evaluate(_gmm("task=noisy_classifier"), workdir, ONE)
  return workdir


# ---- 1. TDSM checks the classifier it loads -------------------------------------------


def test_tdsm_refuses_a_classifier_of_other_classes(tmp_path, classifier_4):
  config = _gmm("method=tdsm", **{"tdsm.classifier_dir": classifier_4,
                                  "dataset.gmm.num_classes": 6, "num_classes": 6})
  with pytest.raises(RunError, match=r"tdsm.classifier_dir=.*it has 4 classes, this run 6"):
    diffusion.train_and_evaluate(config, str(tmp_path), ONE)
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "run.json").exists()


def test_tdsm_refuses_a_classifier_trained_at_another_noise_rate(tmp_path, classifier_4):
  config = _gmm("method=tdsm,rate=0.2", **{"tdsm.classifier_dir": classifier_4})
  with pytest.raises(RunError, match=r"trained on other labels: gmm2d with sym noise at rate "
                     r"0.4 .* this run trains on gmm2d with sym noise at rate 0.2"):
    diffusion.train_and_evaluate(config, str(tmp_path), ONE)


def test_tdsm_refuses_a_classifier_of_another_input_shape(tmp_path):
  from test_lnrd_eval_pieces import _write_tiny_export  # pylint: disable=g-import-not-at-top
  _write_tiny_export(str(tmp_path / "cnn"))  # a 32x32x1 image classifier
  config = _gmm("method=tdsm", **{"tdsm.classifier_dir": str(tmp_path / "cnn")})
  with pytest.raises(RunError, match=r"input shape is \(32, 32, 1\), this run's \(2,\)"):
    diffusion.train_and_evaluate(config, str(tmp_path / "run"), ONE)


def test_known_transition_needs_labels_with_information(tmp_path):
  # 4 classes, TDSM convention: symmetric noise at 0.75 = (C-1)/C leaves no information.
  with pytest.raises(noise.SingularTransitionError, match="noise.rate|singular"):
    noisy_classifier.train_and_evaluate(_gmm("task=noisy_classifier,rate=0.75"),
                                        str(tmp_path / "a"), ONE)
  with pytest.raises(noise.SingularTransitionError, match="without information.*noise.rate"):
    noisy_classifier.train_and_evaluate(_gmm("task=noisy_classifier,rate=0.8"),
                                        str(tmp_path / "b"), ONE)
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---- 2. safe resume -------------------------------------------------------------------


def test_resume_with_another_rate_seed_or_learning_rate_is_refused(tmp_path):
  workdir = str(tmp_path)
  classify.train_and_evaluate(_tiny(stop_after_steps=5), workdir)
  before = _snapshot(tmp_path)
  changed = _tiny("rate=0.2,seed=3", **{"optim.learning_rate": 0.1})
  with pytest.raises(RunError) as e:
    classify.train_and_evaluate(changed, workdir)
  message = str(e.value)
  for text in ("noise.rate: 0.4 -> 0.2", "seed: 0 -> 3", "optim.learning_rate: 0.05 -> 0.1",
               "new --workdir", "--config.allow_changes="):
    assert text in message, message
  assert _snapshot(tmp_path) == before  # nothing written


def test_resume_with_another_model_width_is_refused_not_an_orbax_dump(tmp_path):
  classify.train_and_evaluate(_tiny(stop_after_steps=5), str(tmp_path))
  with pytest.raises(RunError, match=r"model.hidden: \[32, 32\] -> \[64, 64\]"):
    classify.train_and_evaluate(_tiny(**{"model.hidden": (64, 64)}), str(tmp_path))


def test_durations_may_change_and_explicit_changes_are_recorded(tmp_path):
  classify.train_and_evaluate(_tiny(stop_after_steps=5), str(tmp_path))
  longer = _tiny("epochs=3", stop_after_steps=5, log_every_steps=4)  # allowed: no error
  assert classify.train_and_evaluate(longer, str(tmp_path))["step"] == 10
  lr = _tiny("epochs=3", allow_changes="optim.learning_rate",
             **{"optim.learning_rate": 0.02})
  assert classify.train_and_evaluate(lr, str(tmp_path))["completed"] == 1.0
  record = json.loads((tmp_path / "run.json").read_text())
  assert record["resumed"][-1]["allowed_changes"] == {"optim.learning_rate": [0.05, 0.02]}
  assert json.loads((tmp_path / "config.json").read_text())["optim"]["learning_rate"] == 0.02


def test_changed_training_labels_under_a_run_are_refused(tmp_path):
  data = _digits_npz(tmp_path / "d.npz")
  config = mnist_sym.get_config("method=ce,source=npz,epochs=1")
  config.dataset.path = data
  config.batch_size, config.stop_after_steps = 64, 1
  classify.train_and_evaluate(config, str(tmp_path / "run"))
  other = _digits_npz(tmp_path / "other.npz", seed=5)  # same place in the config, new data
  config.dataset.path = other
  with pytest.raises(RunError, match=r"training labels \(their sha256\) differ"):
    classify.train_and_evaluate(config, str(tmp_path / "run"))


# ---- 3. refused commands write nothing; consumers read what they should ----------------


def test_a_refused_command_does_not_touch_a_finished_run(tmp_path):
  run = tmp_path / "run"
  done = subprocess.run(_main(run, "--config.num_epochs=1"), env=_env(1), cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  before = _snapshot(run)
  refused = subprocess.run(_main(run, "--config.noise.rate=1.5"), env=_env(1), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert refused.returncode == 2 and "noise.rate" in refused.stderr
  assert "Traceback" not in refused.stderr
  assert _snapshot(run) == before


def test_generate_refuses_to_write_into_the_run_it_reads(tmp_path):
  run = str(tmp_path / "dsm")
  diffusion.train_and_evaluate(_gmm("method=dsm"), run, ONE)
  before = _snapshot(run)
  gen = _gmm("method=dsm,task=generate", **{"generate.run_dir": run})
  with pytest.raises(RunError, match="is the run it reads"):
    generate.train_and_evaluate(gen, run, ONE)
  with pytest.raises(RunError, match="is the run it reads"):
    generate.train_and_evaluate(gen, os.path.join(run, "samples_here"), ONE)
  assert _snapshot(run) == before


def test_consumers_refuse_unfinished_runs_and_runs_of_another_task(tmp_path, classifier_4):
  run = str(tmp_path / "dsm")
  diffusion.train_and_evaluate(_gmm("method=dsm", stop_after_steps=3), run, ONE)
  gen = _gmm("method=dsm,task=generate", **{"generate.run_dir": run})
  with pytest.raises(RunError, match="has not finished.*rerun its command"):
    generate.train_and_evaluate(gen, str(tmp_path / "out"), ONE)
  gen = _gmm("method=dsm,task=generate", **{"generate.run_dir": classifier_4})
  with pytest.raises(RunError, match="task='noisy_classifier' run; expected 'diffusion'"):
    generate.train_and_evaluate(gen, str(tmp_path / "out2"), ONE)
  # A task never writes into a workdir that holds a run of another task.
  with pytest.raises(RunError, match="holds a task='noisy_classifier' run"):
    diffusion.train_and_evaluate(_gmm("method=dsm"), classifier_4, ONE)


# ---- 4. checkpoints that recover ----------------------------------------------------------


def _truncate_checkpoint(step_dir: pathlib.Path) -> None:
  """Cuts every array file of a checkpoint to half its size (a torn write)."""
  files = [p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 64
           and "metadata" not in p.name and not p.name.startswith("_")]
  assert files
  for p in files:
    p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])


def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  config = _tiny(checkpoint_every_steps=8, stop_after_steps=20)
  classify.train_and_evaluate(config, str(tmp_path))  # checkpoints 8, 16, 20
  _truncate_checkpoint(tmp_path / "checkpoints" / "20")
  config.stop_after_steps = 0
  with caplog.at_level("WARNING"):
    final = classify.train_and_evaluate(config, str(tmp_path))
  assert final["completed"] == 1.0 and final["steps_this_run"] == 64 - 16
  assert any("checkpoint at step 20" in r.getMessage() and "cannot be restored" in
             r.getMessage() for r in caplog.records)
  assert any(p.name.startswith("20.") for p in (tmp_path / "checkpoints_unreadable").iterdir())


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
  from sgn_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  config = _tiny(checkpoint_every_steps=8, stop_after_steps=10)
  classify.train_and_evaluate(config, str(tmp_path))
  for step in (8, 10):
    _truncate_checkpoint(tmp_path / "checkpoints" / str(step))
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"no checkpoint in .*checkpoints can be restored \(step 10: .*step 8"):
    classify.train_and_evaluate(config, str(tmp_path))


def test_sigint_saves_and_exits_like_sigterm(tmp_path):
  flags = ("--config.num_epochs=200", "--config.checkpoint_every_steps=1000")
  returncode, stderr = _signal_once_training(tmp_path, signal.SIGINT, *flags)
  assert returncode == 0, stderr[-3000:]
  assert "SIGINT received" in stderr and "Traceback" not in stderr
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  step = int(metrics["step"])
  assert metrics["completed"] == 0.0 and 0 < step < 1000
  assert (tmp_path / "checkpoints" / str(step)).is_dir()  # saved there, not at an interval


# ---- 5. one-message user errors --------------------------------------------------------


@pytest.mark.parametrize("flags,needles", [
    (("--config.optim.learning_rat=0.1",),
     ["--config.optim.learning_rat", "did you mean --config.optim.learning_rate"]),
    (("--config.method=tdsm",),
     ["method='tdsm' is not a classification method", ":method=tdsm"]),
    (("--config.num_epochs=0",), ["num_epochs=0 must be a positive integer"]),
])
def test_user_errors_are_one_message_without_a_traceback(tmp_path, flags, needles):
  result = subprocess.run(_main(tmp_path / "w", *flags), env=_env(1), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  error = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(error) == 1, result.stderr[-3000:]
  for needle in needles:
    assert needle in error[0], error[0]
  assert not (tmp_path / "w").exists()


def test_method_argument_errors_list_every_method(tmp_path):
  result = subprocess.run(_main(tmp_path, config="configs/mnist_sym.py:method=tdsmm"),
                          env=_env(1), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  for needle in ("method='tdsmm' is not known", "'sgn'", "'tdsm'", "'dsm'", ":method="):
    assert needle in result.stderr, result.stderr[-2000:]


def test_an_unwritable_workdir_is_named(tmp_path):
  (tmp_path / "file").write_text("not a folder")
  result = subprocess.run(_main(tmp_path / "file" / "run"), env=_env(1), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "--workdir=" in result.stderr and "cannot be written" in result.stderr


def test_internal_errors_keep_their_traceback():
  with pytest.raises(ZeroDivisionError):
    with errors.user_input():
      raise ZeroDivisionError("not the user's")
  with pytest.raises(ValueError) as e:
    with errors.user_input():
      raise ValueError("the user's")
  assert isinstance(e.value, errors.UserError)


# ---- 6. input validation before compute -------------------------------------------------


@pytest.mark.parametrize("change,needle", [
    (lambda a: a.update(train_images=a["train_images"].astype(np.float32)), "float32 with "
     "values in [0, 230]; float images must lie in [0, 1]"),
    (lambda a: a["test_images"].__setitem__(
        slice(None), a["test_images"].astype(np.float32) / 255 * np.nan), "NaN/Inf"),
    (lambda a: a.update(test_images=a["test_images"].astype(np.float32) / 255.0), None),
    (lambda a: a.update(train_labels=a["train_labels"] + 10), "outside [0, 10)"),
    (lambda a: a.update(test_labels=a["test_labels"][:-3]), "test images but"),
    (lambda a: a.update(train_images=a["train_images"].astype(np.int64) * 2), "[0, 255]"),
])
def test_array_inputs_are_checked_before_compute(tmp_path, change, needle):
  good = dict(np.load(_digits_npz(tmp_path / "good.npz")))
  arrays = {k: v.copy() for k, v in good.items()}
  if needle and "NaN" in needle:
    arrays["test_images"] = arrays["test_images"].astype(np.float32) / 255.0
    arrays["test_images"][0, 0, 0] = np.nan
  else:
    change(arrays)
  np.savez(tmp_path / "bad.npz", **arrays)
  config = mnist_sym.get_config("method=ce,source=npz,epochs=1")
  config.dataset.path = str(tmp_path / "bad.npz")
  config.batch_size, config.stop_after_steps = 64, 1
  if needle is None:  # floats in [0, 1] are accepted (as uint8)
    assert classify.train_and_evaluate(config, str(tmp_path / "ok"))["step"] == 1
    return
  with pytest.raises(ValueError) as e:
    classify.train_and_evaluate(config, str(tmp_path / "w"))
  assert needle in str(e.value) and isinstance(e.value, errors.UserError)
  assert not (tmp_path / "w").exists()


def test_labels_without_information_are_warned_about_where_no_inverse_is_needed(caplog):
  config = _tiny("rate=0.8")  # 4 classes, TDSM convention: beyond (C-1)/C
  with caplog.at_level("WARNING"):
    common.prepare_splits(config)
  assert any("without information" in r.getMessage() for r in caplog.records)


# ---- 7. Density/Coverage with ties -----------------------------------------------------


@pytest.mark.parametrize("kind", ["duplicated", "quantised"])
def test_density_coverage_with_ties_match_prdc(kind):
  prdc = pytest.importorskip("prdc")
  from lnrd.metrics import density_coverage  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  base = rng.normal(size=(100, 8))
  # Real features against themselves: each ball of radius r_i (the k-th neighbour) holds
  # k of the k + 1 points at distance <= r_i strictly inside, so density is exactly 1
  # (it was (k + 1) / k = 1.2 when the boundary counted).
  itself = density_coverage.density_coverage(base.astype(np.float32), base.astype(np.float32),
                                             k=5)
  assert float(itself["density"]) == pytest.approx(1.0, abs=1e-6)
  assert float(itself["coverage"]) == 1.0
  if kind == "duplicated":
    real = np.concatenate([base, base])  # every point twice
  else:
    real = rng.integers(0, 4, size=(300, 3)).astype(np.float64)  # many equal distances
  fake = real[rng.permutation(len(real))[:150]]
  ours = density_coverage.density_coverage(real.astype(np.float32), real.astype(np.float32), k=5)
  assert float(ours["density"]) == pytest.approx(
      prdc.compute_prdc(real, real, nearest_k=5)["density"], abs=1e-6)
  ref = prdc.compute_prdc(real, fake, nearest_k=5)
  got = density_coverage.density_coverage(real.astype(np.float32), fake.astype(np.float32), k=5)
  assert float(got["density"]) == pytest.approx(ref["density"], abs=1e-6)
  assert float(got["coverage"]) == pytest.approx(ref["coverage"], abs=1e-6)


# ---- 8. multi-process evaluation -------------------------------------------------------


def test_evaluate_two_processes_equal_one(tmp_path):
  from test_lnrd_eval_pieces import _write_tiny_export  # pylint: disable=g-import-not-at-top
  data = _digits_npz(tmp_path / "d.npz")
  run = tmp_path / "dsm"
  config = mnist_sym.get_config("method=dsm,source=npz,kimg=0.032")
  config.dataset.path = data
  config.network.overrides = {"model_channels": 8, "channel_mult": (1, 1), "num_blocks": 1,
                              "attn_resolutions": ()}
  config.augment.p, config.batch_size, config.snapshot_every_kimg = 0.0, 16, 100.0
  diffusion.train_and_evaluate(config, str(run), ONE)
  _write_tiny_export(str(tmp_path / "features"))
  flags = ("--config.dataset.path=" + data, f"--config.evaluate.run_dir={run}",
           "--config.evaluate.per_class=3", "--config.evaluate.batch_size=8",
           "--config.evaluate.num_real=100", "--config.evaluate.feature_batch_size=16",
           "--config.evaluate.metrics=('fid','density_coverage','cw_density_coverage')",
           "--config.evaluate.feature_nets=('classifier',)",
           f"--config.evaluate.feature_classifier_dir={tmp_path / 'features'}",
           "--config.sample.num_steps=3")
  cfg = "configs/mnist_sym.py:task=evaluate,method=dsm,source=npz"
  single = subprocess.run(_main(tmp_path / "one", *flags, config=cfg), env=_env(8), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  procs, outputs = _two_processes_of_four_devices(tmp_path / "two", *flags, config=cfg,
                                                  timeout=600)
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "process 1 of 2; 4 local devices, 8 global devices" in outputs[1]
  one = json.loads((tmp_path / "one" / "metrics.json").read_text())
  two = json.loads((tmp_path / "two" / "metrics.json").read_text())
  keys = [k for k in one if k.startswith("classifier/")]
  assert len(keys) == 5
  for key in keys:
    assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), key
  for i in range(4):  # 30 samples in batches of 8: the same samples either way
    a = np.load(tmp_path / "one" / "samples" / f"batch_{i:05d}.npz")["samples"]
    b = np.load(tmp_path / "two" / "samples" / f"batch_{i:05d}.npz")["samples"]
    np.testing.assert_allclose(a, b, atol=1e-4)
