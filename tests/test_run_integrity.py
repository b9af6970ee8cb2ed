"""One writer per run and records that cannot lie (issue 17).

  1. A run has one writer: a second command into a busy workdir is one line naming
     the holder; readers refuse a run being written; a lock left by a dead process
     is taken over with a warning; a multi-process run holds one lock.
  2. Nothing is rewritten before the new state is valid: records are written after
     a successful restore; the finished mark is cleared when an extension starts
     (a killed extension is not "finished"); a folder with checkpoints but without
     its records, or with records that do not parse, is refused, never resumed.
  3. The rest of the run contract's weak cases: an empty --workdir, a full disk,
     a rerun of a finished command keeps train/* in metrics.json.
"""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import mnist_sym

from lnrd.tasks import diffusion
from lnrd.tasks import generate
from sgn_jax import runs
from sgn_jax.runs import RunBusyError
from sgn_jax.runs import RunError
from sgn_jax.tasks import classify
from sgn_jax.training import checkpointing
from sgn_jax.training import writers
from test_classification import _env, _main, _tiny
from test_fault_injection import _snapshot
from test_lnrd_pipeline import _digits_npz
from test_lnrd_training import _gmm

REPO = pathlib.Path(__file__).resolve().parents[1]
ONE = jax.devices()[:1]
RECORDS = (runs.CONFIG_FILE, runs.RECORD_FILE)

HOLD = """
import sys, time
from sgn_jax import runs
runs.lock_workdir(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()  # holds the lock until the test kills it (no clock)
"""


def _holder(workdir) -> subprocess.Popen:
  """Another process that holds the lock of `workdir` (until killed)."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=REPO,
                          env=_env(1), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def _records(workdir) -> dict:
  return {name: (pathlib.Path(workdir) / name).read_bytes() for name in RECORDS}


# ---- 1. one writer ---------------------------------------------------------------------


def test_two_commands_into_one_workdir_one_is_refused_naming_the_holder(tmp_path):
  run = tmp_path / "run"
  first = subprocess.Popen(_main(run, "--config.num_epochs=2"), env=_env(1), cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  lock = run / runs.LOCK_FILE
  deadline = time.time() + 1800  # a hang guard only: the loop ends when the lock is taken
  while time.time() < deadline and first.poll() is None:
    if lock.exists() and lock.read_text().strip():
      break
    time.sleep(0.02)
  first.send_signal(signal.SIGSTOP)  # the first command holds the run, whatever its speed
  try:
    second = subprocess.run(_main(run, "--config.num_epochs=1", "--config.seed=5"),
                            env=_env(1), cwd=REPO, capture_output=True, text=True,
                            timeout=1800)
  finally:
    first.send_signal(signal.SIGCONT)
  _, stderr = first.communicate(timeout=1800)
  assert first.returncode == 0, stderr[-3000:]
  assert second.returncode == 2, second.stderr[-3000:]
  error = [l for l in second.stderr.splitlines() if l.startswith("error:")]
  assert len(error) == 1 and "Traceback" not in second.stderr
  assert f"is being written by pid {first.pid}" in error[0], error[0]
  # One run: the first command's records, checkpoints and metrics, nothing of the second.
  assert json.loads((run / "config.json").read_text())["seed"] == 0
  assert json.loads((run / "metrics.json").read_text())["completed"] == 1.0
  assert not lock.exists()


def test_a_busy_workdir_is_refused_before_anything_is_written(tmp_path):
  classify.train_and_evaluate(_tiny(stop_after_steps=3), str(tmp_path))
  before = _snapshot(tmp_path)
  holder = _holder(tmp_path)
  try:
    with pytest.raises(RunBusyError, match=rf"is being written by pid {holder.pid} on host"):
      classify.train_and_evaluate(_tiny(stop_after_steps=3), str(tmp_path))
  finally:
    holder.kill()
    holder.wait()
  after = _snapshot(tmp_path)
  after.pop(runs.LOCK_FILE)  # the dead holder's lock file stays until taken over
  assert after == before


def test_a_dead_writers_lock_is_taken_over_with_a_warning(tmp_path, caplog):
  holder = _holder(tmp_path)
  holder.kill()
  holder.wait()
  assert (tmp_path / runs.LOCK_FILE).exists()
  result = classify.train_and_evaluate(_tiny(stop_after_steps=3), str(tmp_path))
  assert result["step"] == 3
  assert any("no longer running" in r.getMessage() and str(holder.pid) in r.getMessage()
             for r in caplog.records)
  assert not (tmp_path / runs.LOCK_FILE).exists()  # released when the task returned


def test_readers_refuse_a_run_that_is_being_written(tmp_path):
  run = str(tmp_path / "dsm")
  diffusion.train_and_evaluate(_gmm("method=dsm"), run, ONE)
  gen = _gmm("method=dsm,task=generate", **{"generate.run_dir": run})
  holder = _holder(run)  # e.g. an extension of the run in another process
  try:
    with pytest.raises(RunBusyError, match=r"generate.run_dir=.*is being written by pid"):
      generate.train_and_evaluate(gen, str(tmp_path / "out"), ONE)
  finally:
    holder.kill()
    holder.wait()
  assert not (tmp_path / "out").exists()
  generate.train_and_evaluate(gen, str(tmp_path / "out"), ONE)  # the holder is gone


def test_a_run_refused_after_taking_its_lock_leaves_no_folder(tmp_path):
  good = dict(np.load(_digits_npz(tmp_path / "good.npz")))
  np.savez(tmp_path / "bad.npz", **{**good, "train_labels": good["train_labels"] + 10})
  config = mnist_sym.get_config("method=ce,source=npz,epochs=1")
  config.dataset.path = str(tmp_path / "bad.npz")
  with pytest.raises(ValueError, match="outside"):  # found when the data is read
    classify.train_and_evaluate(config, str(tmp_path / "a" / "b"))
  assert not (tmp_path / "a").exists()


# ---- 2. records that cannot lie ----------------------------------------------------------


def test_records_are_written_only_after_a_successful_restore(tmp_path):
  classify.train_and_evaluate(_tiny(stop_after_steps=5), str(tmp_path))
  before = _records(tmp_path)
  wider = _tiny(allow_changes="model.hidden", **{"model.hidden": (64, 64)})
  with pytest.raises(Exception):  # the checkpoint's shapes do not fit the wider net
    classify.train_and_evaluate(wider, str(tmp_path))
  assert _records(tmp_path) == before
  # The run's own command still resumes it.
  assert classify.train_and_evaluate(_tiny(), str(tmp_path))["completed"] == 1.0


def test_a_killed_extension_is_not_finished_for_readers(tmp_path, monkeypatch):
  run = str(tmp_path / "dsm")
  diffusion.train_and_evaluate(_gmm("method=dsm"), run, ONE)
  assert json.loads((tmp_path / "dsm" / "metrics.json").read_text())["completed"] == 1.0
  saves = []

  def die_on_second_save(self, step, state, **kwargs):
    saves.append(step)
    if len(saves) == 2:
      raise KeyboardInterrupt  # the process dies in the middle of the extension
    return original(self, step, state, **kwargs)

  original = checkpointing.Checkpointer.save
  monkeypatch.setattr(checkpointing.Checkpointer, "save", die_on_second_save)
  longer = _gmm("method=dsm", duration_kimg=1.92)  # 30 steps instead of 10
  with pytest.raises(KeyboardInterrupt):
    diffusion.train_and_evaluate(longer, run, ONE)
  monkeypatch.setattr(checkpointing.Checkpointer, "save", original)
  metrics = json.loads((tmp_path / "dsm" / "metrics.json").read_text())
  assert metrics["completed"] == 0.0
  gen = _gmm("method=dsm,task=generate", **{"generate.run_dir": run})
  with pytest.raises(RunError, match="has not finished"):
    generate.train_and_evaluate(gen, str(tmp_path / "out"), ONE)
  # Finishing the extension makes it a finished run again.
  assert diffusion.train_and_evaluate(longer, run, ONE)["completed"] == 1.0
  generate.train_and_evaluate(gen, str(tmp_path / "out"), ONE)


@pytest.mark.parametrize("deleted", [RECORDS, (runs.RECORD_FILE,), (runs.CONFIG_FILE,)])
def test_a_run_without_its_records_is_refused_not_resumed_as_new(tmp_path, deleted):
  classify.train_and_evaluate(_tiny(stop_after_steps=5), str(tmp_path))
  for name in deleted:
    (tmp_path / name).unlink()
  before = _snapshot(tmp_path)
  other = _tiny("rate=0.2,seed=3")
  with pytest.raises(RunError) as e:
    classify.train_and_evaluate(other, str(tmp_path))
  message = str(e.value)
  if len(deleted) == 2:
    assert "holds checkpoints (steps 5)" in message and "config.json, run.json are missing" \
        in message, message
  else:
    assert f"{tmp_path / deleted[0]} is missing" in message, message
  assert "new --workdir" in message
  assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("name", [runs.RECORD_FILE, runs.CONFIG_FILE, runs.METRICS_FILE])
def test_a_record_that_does_not_parse_is_named(tmp_path, name):
  classify.train_and_evaluate(_tiny(stop_after_steps=5), str(tmp_path))
  (tmp_path / name).write_text('{"task": "classify", "seed": ')  # cut off mid-write
  with pytest.raises(RunError, match=rf"{tmp_path / name} is damaged \(it does not parse"):
    if name == runs.METRICS_FILE:
      runs.open_run(str(tmp_path)).finished  # pylint: disable=expression-not-assigned
    else:
      classify.train_and_evaluate(_tiny(stop_after_steps=5), str(tmp_path))


def test_a_damaged_classifier_export_is_named(tmp_path):
  from lnrd import runs as lnrd_runs  # pylint: disable=g-import-not-at-top
  from lnrd.tasks import noisy_classifier  # pylint: disable=g-import-not-at-top
  noisy_classifier.train_and_evaluate(_gmm("task=noisy_classifier"), str(tmp_path), ONE)
  variables = tmp_path / lnrd_runs.EXPORT_DIR / "variables.msgpack"
  variables.write_bytes(variables.read_bytes()[:100])
  with pytest.raises(RunError, match=r"variables.msgpack is damaged"):
    lnrd_runs.load_classifier(str(tmp_path))


# ---- 3. the weak cases -------------------------------------------------------------------


def test_an_empty_workdir_is_refused(tmp_path):
  with pytest.raises(RunError, match=r"--workdir is empty \(an unset variable\?\)"):
    classify.train_and_evaluate(_tiny(), "")
  result = subprocess.run(_main("", "--config.num_epochs=1"), env=_env(1), cwd=tmp_path,
                          capture_output=True, text=True, timeout=1800)
  assert result.returncode == 2 and "--workdir is empty" in result.stderr
  assert os.listdir(tmp_path) == []  # nothing written into the current folder


def test_a_full_disk_names_the_path_and_the_last_good_checkpoint(tmp_path, monkeypatch):
  original = checkpointing.Checkpointer.save

  def full_after_first(self, step, state, **kwargs):
    if step > 4:
      raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    return original(self, step, state, **kwargs)

  monkeypatch.setattr(checkpointing.Checkpointer, "save", full_after_first)
  with pytest.raises(writers.DiskFullError) as e:
    classify.train_and_evaluate(_tiny(checkpoint_every_steps=4, log_every_steps=4),
                                str(tmp_path))
  message = str(e.value)
  assert "the disk is full" in message and "checkpoints/8" in message, message
  assert "The last good checkpoint is step 4" in message and "rerun" in message, message
  assert json.loads((tmp_path / "run.json").read_text())["task"] == "classify"


def test_write_atomic_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
  path = tmp_path / "metrics.json"
  path.write_text('{"completed": 1.0}\n')
  real_replace = os.replace

  def no_space(src, dst):
    raise OSError(errno.ENOSPC, "No space left on device", dst)

  monkeypatch.setattr(os, "replace", no_space)
  with pytest.raises(writers.DiskFullError, match=rf"{path} could not be written"):
    writers.write_metrics_json(str(path), {"completed": 0.0})
  monkeypatch.setattr(os, "replace", real_replace)
  assert path.read_text() == '{"completed": 1.0}\n'
  assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left


def test_rerunning_a_finished_command_keeps_its_train_metrics(tmp_path):
  first = classify.train_and_evaluate(_tiny(), str(tmp_path))
  again = classify.train_and_evaluate(_tiny(), str(tmp_path))
  assert again["steps_this_run"] == 0 and again["completed"] == 1.0
  train = {k: v for k, v in first.items() if k.startswith("train/")}
  assert train and {k: again[k] for k in train} == pytest.approx(train)
  on_disk = json.loads((tmp_path / "metrics.json").read_text())
  assert {k: on_disk[k] for k in train} == pytest.approx(train)
