"""User errors of issue 17 (item 4, part): each is ONE `error: ...` line (exit status 2, no
traceback) naming the value, what is allowed and what to do, raised before any compute,
with nothing written earlier lost.

  a. --config= naming a missing file, a file that is not Python or has no get_config
  b. a key given twice in the config argument (`:rate=0.2,rate=0.4`)
  c. a stray positional argument
  d. --config.method=X on a config built for another method
  e. a NaN learning rate, network widths of zero
  f. npz inputs: zero-byte, truncated, complex-valued (dataset, labels file, stored
     evaluation batches, Inception weights)
  g. an empty test split
  h. corrupt manual archives (a truncated MNIST .gz) and corrupt TFDS records
  i. the Inception weights checked at validation, before any sampling
  j. task=generate into a folder that holds another run's samples
"""

import pathlib
import re
import shutil
import subprocess

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs import mnist_sym
from configs import tiny_test
from lnrd import evaluation
from lnrd.tasks import diffusion
from lnrd.tasks import evaluate
from lnrd.tasks import generate
from lnrd.tasks import noisy_classifier
from lnrd.tasks import pipeline
from sgn_jax import errors
from sgn_jax import noise
from sgn_jax.data import array_source
from sgn_jax.data import dataset as dataset_lib
from sgn_jax.data import loading
from sgn_jax.runs import RunError
from sgn_jax.tasks import classify
from sgn_jax.tasks import cli
from test_classification import _env, _main
from test_lnrd_pipeline import _digits_npz
from test_lnrd_training import _gmm

REPO = pathlib.Path(__file__).resolve().parents[1]
ONE = jax.devices()[:1]


def _one_error_line(stderr: str) -> str:
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def _parse(capsys, *args):
  """`cli.parse_flags` of main.py's flags on `args`: (exit status, the one error line)."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  with pytest.raises(SystemExit) as exit_info:
    cli.parse_flags(["main.py", *args, "--workdir=/nonexistent/w"], values)
  return exit_info.value.code, _one_error_line(capsys.readouterr().err)


def _snapshot(folder) -> dict:
  folder = pathlib.Path(folder)
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file()}


# ---- a, c: through main.py (one subprocess each) --------------------------------------


@pytest.mark.parametrize("config,extra,needles", [
    ("missing.py", (), ["missing.py: no such file", "configs/mnist_sym.py"]),
    ("configs/../README.md", (), ["README.md is not a Python file", "get_config"]),
    ("configs/tiny_test.py", ("extra",), ["unexpected argument 'extra'", "--config=FILE.py"]),
])
def test_main_refuses_a_bad_config_file_or_a_stray_argument_in_one_line(
    tmp_path, config, extra, needles):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("earlier results")
  command = _main(workdir, *extra, config=config)
  if config == "missing.py":
    command[2] = "--config=missing.py"  # relative to the working directory
  result = subprocess.run(command, env=_env(1), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  error = _one_error_line(result.stderr)
  for needle in needles:
    assert needle in error, error
  assert _snapshot(workdir) == {"keep.txt": b"earlier results"}


def test_a_config_file_that_is_not_python_or_has_no_get_config(tmp_path, capsys):
  (tmp_path / "text.py").write_text("hello world\n")
  (tmp_path / "empty.py").write_text("X = 1\n")
  (tmp_path / "binary.npz").write_bytes(b"PK\x03\x04\x00\x00garbage\x00")
  code, error = _parse(capsys, f"--config={tmp_path / 'text.py'}")
  assert code == 2 and "text.py is not a Python file (line 1" in error
  code, error = _parse(capsys, f"--config={tmp_path / 'empty.py'}:rate=0.2")
  assert code == 2 and "empty.py defines no get_config" in error
  code, error = _parse(capsys, f"--config={tmp_path / 'binary.npz'}")
  assert code == 2 and "binary.npz is not a Python file" in error
  code, error = _parse(capsys, f"--config={tmp_path / 'absent.py'}")
  assert code == 2 and "absent.py: no such file" in error and "configs/mnist_sym.py" in error
  code, error = _parse(capsys, f"--config={tmp_path}")
  assert code == 2 and "is a folder, not a config file" in error


# ---- b. a key given twice ------------------------------------------------------------------


def test_a_config_argument_given_twice_is_refused_naming_the_key(capsys):
  with pytest.raises(ValueError, match=r"config argument 'rate' is given twice \(rate=0.2, "
                     r"rate=0.4\)"):
    mnist_sym.get_config("rate=0.2,rate=0.4")
  with pytest.raises(ValueError, match="'method' is given twice"):
    mnist_sym.get_config("method=ce,rate=0.1,method=sgn")
  code, error = _parse(capsys, f"--config={REPO / 'configs/mnist_sym.py'}:rate=0.2,rate=0.4")
  assert code == 2 and "'rate' is given twice" in error and "give each key once" in error


# ---- c. a stray positional argument ----------------------------------------------------------


def test_a_stray_positional_argument_is_refused_naming_it(capsys):
  code, error = _parse(capsys, f"--config={REPO / 'configs/tiny_test.py'}", "rate=0.2", "more")
  assert code == 2
  assert "unexpected argument 'rate=0.2' (and 1 more)" in error
  assert "after the colon of --config" in error


# ---- d. --config.method=X on a config built for another method --------------------------------


def test_config_method_override_to_another_method_is_refused():
  config = tiny_test.get_config()  # built for CE (tiny_test's default)
  classify.validate_config(config)
  config.method = "sgn"  # what --config.method=sgn does
  with pytest.raises(ValueError, match=r"method='sgn', but this config was built for "
                     r"method='ce'.*:method=sgn"):
    classify.validate_config(config)
  classify.validate_config(tiny_test.get_config("method=sgn"))  # the way to choose it
  sgn = mnist_sym.get_config()  # SGN's file default; CE is one argument away
  sgn.method = "ce"
  with pytest.raises(ValueError, match="built for method='sgn'"):
    classify.validate_config(sgn)


# ---- e. NaN learning rate, zero widths -------------------------------------------------------


@pytest.mark.parametrize("key,value,needle", [
    ("optim.learning_rate", float("nan"), "optim.learning_rate=nan must be a finite number > 0"),
    ("optim.learning_rate", float("inf"), "optim.learning_rate=inf must be a finite number"),
    ("model.hidden", (32, 0), "model.hidden=(32, 0) must be positive integers"),
])
def test_classification_refuses_nan_learning_rate_and_zero_widths(key, value, needle):
  config = tiny_test.get_config()
  section, leaf = key.split(".")
  config[section][leaf] = value
  with pytest.raises(ValueError) as e:
    classify.validate_config(config)
  assert needle in str(e.value)
  cnn = mnist_sym.get_config("method=ce")
  cnn.model.channels = (32, 0)
  with pytest.raises(ValueError, match=r"model.channels=\(32, 0\) must be positive"):
    classify.validate_config(cnn)


def test_diffusion_and_classifier_refuse_nan_learning_rate_and_zero_widths():
  config = mnist_sym.get_config("method=dsm")
  diffusion.validate_config(config)
  config.network.model_channels = 0
  with pytest.raises(ValueError, match="network.model_channels=0 must be a positive integer"):
    diffusion.validate_config(config)
  config = mnist_sym.get_config("method=dsm")
  config.network.overrides = {"channel_mult": (1, 0)}
  with pytest.raises(ValueError, match=r"network.overrides.channel_mult=\(1, 0\)"):
    diffusion.validate_config(config)
  config = mnist_sym.get_config("method=dsm")
  config.optim.learning_rate = float("nan")
  with pytest.raises(ValueError, match="optim.learning_rate=nan"):
    diffusion.validate_config(config)
  config = mnist_sym.get_config("task=noisy_classifier")
  config.classifier.optim.learning_rate = float("nan")
  with pytest.raises(ValueError, match="classifier.optim.learning_rate=nan"):
    noisy_classifier.validate_config(config)
  config = mnist_sym.get_config("task=noisy_classifier")
  config.classifier.kwargs = {"emb_channels": -4}
  with pytest.raises(ValueError, match="classifier.kwargs.emb_channels=-4"):
    noisy_classifier.validate_config(config)


# ---- f. npz inputs: zero-byte, truncated, complex ---------------------------------------------


def _write(path: pathlib.Path, arrays: dict, kind: str) -> str:
  """`arrays` as an npz at `path`, spoilt as `kind` says (zero | truncated | complex)."""
  if kind == "zero":
    path.write_bytes(b"")
    return str(path)
  if kind == "complex":
    first = next(iter(arrays))
    arrays = {**arrays, first: arrays[first].astype(np.complex64)}
  np.savez(path, **arrays)
  if kind == "truncated":
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # cut in the middle
  return str(path)


NEEDLES = {"zero": "is empty (0 bytes)", "truncated": "was cut off",
           "complex": "holds complex values in"}


@pytest.mark.parametrize("kind", ["zero", "truncated", "complex"])
def test_a_bad_dataset_npz_is_one_error_naming_the_file(tmp_path, kind):
  good = dict(np.load(_digits_npz(tmp_path / "good.npz", n_train=64, n_test=32)))
  path = _write(tmp_path / "bad.npz", good, kind)
  config = mnist_sym.get_config("method=ce,source=npz,epochs=1")
  config.dataset.path = path
  config.batch_size, config.stop_after_steps = 32, 1
  with pytest.raises(ValueError) as e:
    classify.train_and_evaluate(config, str(tmp_path / "w"))
  assert isinstance(e.value, errors.UserError)
  assert path in str(e.value) and NEEDLES[kind] in str(e.value), str(e.value)
  assert "\n" not in str(e.value)
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("kind", ["zero", "truncated", "complex"])
def test_a_bad_labels_file_is_one_error_naming_it(tmp_path, kind):
  arrays = {"labels": np.zeros(64, np.int64), "transition": np.eye(10)}
  if kind == "complex":
    arrays = {"transition": np.eye(10), "labels": np.zeros(64, np.int64)}  # T complex
  path = _write(tmp_path / "labels.npz", arrays, kind)
  with pytest.raises(ValueError) as e:
    noise.load_labels_file(path, 64, 10)
  assert isinstance(e.value, errors.UserError)
  assert f"noise.labels_file={path!r}" in str(e.value) and NEEDLES[kind] in str(e.value)
  if kind == "complex":
    assert "'transition'" in str(e.value)


class _NeverSample:
  def sample(self, *args, **kwargs):
    raise AssertionError("sampled before the stored batches were checked")


@pytest.mark.parametrize("kind", ["zero", "truncated", "complex"])
def test_a_damaged_stored_evaluation_batch_is_named_before_any_sampling(tmp_path, kind):
  folder = tmp_path / "samples"
  folder.mkdir()
  labels = np.arange(8) % 4
  _write(folder / "batch_00001.npz", {"samples": np.zeros((4, 2), np.float32),
                                      "labels": labels[4:]}, kind)
  with pytest.raises(errors.UserError) as e:
    evaluation.sample_in_batches(_NeverSample(), labels, jax.random.PRNGKey(0), None, None, 4,
                                 str(folder))
  assert "batch_00001.npz" in str(e.value) and NEEDLES[kind] in str(e.value)
  assert "delete it and run the same command again" in str(e.value)


def test_an_npz_with_a_corrupted_member_is_named(tmp_path):
  np.savez_compressed(tmp_path / "a.npz", labels=np.arange(10_000) % 10)
  data = bytearray((tmp_path / "a.npz").read_bytes())
  data[len(data) // 3] ^= 0xFF  # a flipped byte inside the compressed array
  (tmp_path / "a.npz").write_bytes(bytes(data))
  with pytest.raises(errors.UserError, match=r"noise.labels_file=.*a.npz' is damaged"):
    noise.load_labels_file(tmp_path / "a.npz", 10_000, 10)


# ---- g. an empty test split ----------------------------------------------------------------


def test_an_empty_test_split_is_refused_before_any_compute(tmp_path):
  good = dict(np.load(_digits_npz(tmp_path / "good.npz", n_train=64, n_test=32)))
  good["test_images"], good["test_labels"] = good["test_images"][:0], good["test_labels"][:0]
  np.savez(tmp_path / "no_test.npz", **good)
  config = mnist_sym.get_config("method=ce,source=npz,epochs=1")
  config.dataset.path = str(tmp_path / "no_test.npz")
  config.batch_size, config.stop_after_steps = 32, 1
  with pytest.raises(ValueError) as e:
    classify.train_and_evaluate(config, str(tmp_path / "w"))
  assert isinstance(e.value, errors.UserError)
  assert "no_test.npz" in str(e.value) and "the test split is empty (0 examples)" in str(e.value)
  assert not (tmp_path / "w").exists()


# ---- h. corrupt manual archives and TFDS records --------------------------------------------


def _truncated_mnist_archives(shared_data, folder: pathlib.Path) -> pathlib.Path:
  folder.mkdir()
  for name, _ in dataset_lib.DATASETS["mnist"].manual_files:
    shutil.copyfile(shared_data / "mnist" / name, folder / name)
  archive = folder / "train-images-idx3-ubyte.gz"
  data = archive.read_bytes()
  archive.write_bytes(data[:len(data) // 2])
  return archive


def test_a_truncated_manual_archive_is_named_with_what_to_do(tmp_path, shared_data, capsys):
  from sgn_jax.data import prepare  # pylint: disable=g-import-not-at-top
  archive = _truncated_mnist_archives(shared_data, tmp_path / "manual")
  status = prepare.main(["--dataset=mnist", f"--data_dir={tmp_path / 'tfds'}",
                         f"--manual_dir={tmp_path / 'manual'}"])
  error = _one_error_line(capsys.readouterr().err)
  assert status == 1
  assert str(archive) in error and "delete it and download it again" in error
  # The idx source reads the same archives with NumPy: the same one-line refusal.
  with pytest.raises(ValueError) as e:
    array_source.load_idx(tmp_path / "manual", "mnist")
  assert str(archive) in str(e.value) and "download it again" in str(e.value)


def test_a_truncated_tfds_record_file_is_named_with_what_to_do(tmp_path, mnist_tfds_dir):
  source = pathlib.Path(mnist_tfds_dir) / "mnist"
  shutil.copytree(source, tmp_path / "mnist")
  record = next((tmp_path / "mnist").glob("*/mnist-train.tfrecord-*"))
  data = record.read_bytes()
  record.write_bytes(data[:len(data) // 2])
  spec = loading.DatasetSpec(name="mnist", source="tfds", data_dir=str(tmp_path))
  with pytest.raises(ValueError) as e:
    loading.load_dataset(spec)
  message = str(e.value)
  assert str(record) in message and "delete the folder" in message and "\n" not in message


# ---- i. Inception weights checked at validation -----------------------------------------------


def _evaluate_config(tmp_path, weights):
  run = tmp_path / "run"
  (run / "checkpoints").mkdir(parents=True, exist_ok=True)
  config = mnist_sym.get_config("task=evaluate,method=dsm")
  config.evaluate.run_dir = str(run)
  config.evaluate.metrics = ("fid",)
  config.evaluate.feature_nets = ("inception",)
  config.evaluate.inception_weights = weights
  return config


def test_missing_or_unreadable_inception_weights_fail_at_validation(tmp_path):
  config = _evaluate_config(tmp_path, str(tmp_path / "absent.npz"))
  with pytest.raises(FileNotFoundError, match=r"evaluate.inception_weights=.*absent.npz.*no "
                     "such file"):
    evaluate.validate_config(config)
  for kind in ("zero", "truncated"):
    path = _write(tmp_path / f"{kind}.npz", {"params/x": np.zeros(3, np.float32)}, kind)
    with pytest.raises(ValueError, match=re.escape(NEEDLES[kind])):
      evaluate.validate_config(_evaluate_config(tmp_path, path))
  # A whole npz that holds no Inception variables: refused when loaded, before sampling.
  path = _write(tmp_path / "other.npz", {"params/x": np.zeros(3, np.float32)}, "whole")
  config = _evaluate_config(tmp_path, path)
  evaluate.validate_config(config)
  with pytest.raises(ValueError, match="cannot be loaded as FID Inception weights"):
    evaluate.load_inception_variables(config)
  # The pipeline checks them before it trains anything.
  pipe = mnist_sym.get_config("task=pipeline,method=tdsm")
  pipe.evaluate.inception_weights = str(tmp_path / "absent.npz")
  with pytest.raises(FileNotFoundError, match="evaluate.inception_weights"):
    pipeline.validate_config(pipe)


# ---- j. generate into a folder that holds another run's samples --------------------------------


def test_generate_refuses_a_folder_with_another_runs_samples(tmp_path):
  run_a = str(tmp_path / "dsm_a")
  diffusion.train_and_evaluate(_gmm("method=dsm"), run_a, ONE)
  run_b = str(tmp_path / "dsm_b")
  shutil.copytree(run_a, run_b)
  out = tmp_path / "samples"
  gen = _gmm("method=dsm,task=generate", **{"generate.run_dir": run_a,
                                            "generate.per_class": 2})
  generate.train_and_evaluate(gen, str(out), ONE)
  before = _snapshot(out)
  other = _gmm("method=dsm,task=generate", **{"generate.run_dir": run_b,
                                              "generate.per_class": 2})
  with pytest.raises(RunError, match=r"holds a generate run made with another config.*"
                     r"generate.run_dir: .* -> .*allow_changes=generate.run_dir"):
    generate.train_and_evaluate(other, str(out), ONE)
  assert _snapshot(out) == before
  generate.train_and_evaluate(gen, str(out), ONE)  # the same command again is fine
