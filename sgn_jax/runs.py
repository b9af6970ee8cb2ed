"""The run folder: what a run is, what it wrote, and how other code reads it.

A task writes into its workdir, once its config has been validated:

  config.json    the resolved config (for people and for rerunning)
  run.json       the run record: the facts that define the run (task, method,
                 dataset and input shape, classes, noise, seed, transition matrix,
                 a checksum of the training labels, the library version) and
                 what is needed to rebuild its model without its config
                 (written by the task through `start_run`)
  checkpoints/   orbax checkpoints of the train state (`sgn_jax.training.checkpointing`)
  metrics.json   final metrics, flat `name -> number` ("completed": 1 when finished)
  metrics.jsonl  the metric history

Other runs and research code read a run only through `open_run`:

    run = runs.open_run("/runs/tdsm", tasks=("diffusion",), finished=True)
    run.record["num_classes"], run.config["batch_size"], run.checkpoint_steps()
    tree = run.restore(mesh=mesh)        # the saved train state as a dict of arrays
    tree["ema_params"]

`lnrd.runs` builds on it for the TDSM runs (the time-dependent classifier's
export, a diffusion run's EMA network).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from absl import logging
from etils import epath

import sgn_jax
from sgn_jax import errors
from sgn_jax.training import writers

CONFIG_FILE = "config.json"
RECORD_FILE = "run.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"


class RunError(errors.UserError, ValueError):
  """A run folder is unfinished, of the wrong task, or does not match."""


class RunNotFoundError(RunError, FileNotFoundError):
  """A run folder, or a file a run should have written, is missing."""


def labels_checksum(labels) -> str:
  """sha256 of int32 labels: identifies the exact training labels of a run."""
  return hashlib.sha256(np.ascontiguousarray(np.asarray(labels, np.int32)).tobytes()).hexdigest()


def _jsonable(value):
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def _normalised(config: Mapping[str, Any]) -> dict[str, Any]:
  """A config as it reads back from config.json (tuples -> lists, numbers as JSON has them)."""
  return json.loads(json.dumps(_jsonable(config), default=str))


def _matches(key: str, prefixes: Sequence[str]) -> bool:
  return any(p == "" or key == p or key.startswith(p + ".") for p in prefixes)


def _show(value) -> str:
  text = json.dumps(value, default=str)
  return text if len(text) <= 60 else text[:57] + "..."


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], *,
                   compare: Sequence[str] = ("",), may_change: Sequence[str] = ()
                   ) -> dict[str, tuple[Any, Any]]:
  """{dotted key: (old, new)} of the keys under `compare` (prefixes; "" = all) that
  differ between two configs, leaving out those under `may_change`."""
  a, b = writers.flatten(_normalised(old)), writers.flatten(_normalised(new))
  changes = {}
  for key in sorted(set(a) | set(b)):
    if not _matches(key, compare) or _matches(key, may_change):
      continue
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      changes[key] = (a.get(key, "<absent>"), b.get(key, "<absent>"))
  return changes


def check_workdir(workdir: str, what: str = "--workdir") -> None:
  """The workdir can be made and written to (RunError naming it otherwise)."""
  if "://" in workdir:  # a bucket: checked by its first write
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise RunError(f"{what}={workdir!r} is a file, not a folder: choose a folder for the run")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise RunError(f"{what}={workdir!r} cannot be written: {parent} is a file, not a folder; "
                   "choose another --workdir")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise RunError(f"{what}={workdir!r} cannot be written ({parent} is not writable): "
                   "choose a writable folder with --workdir")


def check_resume(workdir: str, task: str, config: Mapping[str, Any], *,
                 compare: Sequence[str] = (), may_change: Sequence[str] = (),
                 allow_changes: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
  """Before any compute: may `config` (a plain dict) run as `task` in `workdir`?

  A workdir that holds no run is fine. One that holds a run of another task is
  refused (RunError). One that holds a run of `task` is resumed only if the keys
  under `compare` (prefixes) that define the run are unchanged, apart from those
  under `may_change` (durations, intervals, logging, evaluation sizes, data
  locations) and those the user allows explicitly (`allow_changes`, recorded in
  run.json); otherwise RunError lists every differing key with its old and new
  value. Returns the allowed changes.
  """
  check_workdir(workdir)
  config_path = os.path.join(workdir, CONFIG_FILE)
  record_path = os.path.join(workdir, RECORD_FILE)
  if not os.path.exists(config_path) and not os.path.exists(record_path):
    return {}
  record = _read_json(record_path) if os.path.exists(record_path) else {}
  old_config = _read_json(config_path) if os.path.exists(config_path) else {}
  old_task = record.get("task") or old_config.get("task")
  if old_task != task:
    raise RunError(f"--workdir={workdir!r} holds a task={old_task!r} run; a task={task!r} "
                   "run would overwrite its files: use a new --workdir")
  changes = config_changes(old_config, config, compare=compare, may_change=may_change)
  allowed = {k: v for k, v in changes.items() if _matches(k, allow_changes)}
  refused = {k: v for k, v in changes.items() if k not in allowed}
  if refused:
    lines = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
    keys = ",".join(refused)
    raise RunError(
        f"--workdir={workdir!r} holds a {task} run made with another config, and resuming it "
        f"would make one run of two: {lines}. Use a new --workdir, or resume with these "
        f"changes on purpose with --config.allow_changes={keys} (recorded in run.json)")
  return allowed


def _same(a, b) -> bool:
  if isinstance(a, list) and isinstance(b, list) and a and isinstance(a[0], (list, float)):
    try:
      return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-6))
    except ValueError:
      return False
  return a == b


FACTS = ("num_classes", "input_shape", "data_shape", "transition", "labels_checksum")


def start_run(workdir: str, config: Mapping[str, Any], record: Mapping[str, Any],
              allowed_changes: Mapping[str, tuple[Any, Any]] | None = None) -> None:
  """Writes WORKDIR/config.json and WORKDIR/run.json (process 0) once the task has
  validated its config and loaded its data (after `check_resume`).

  `config` is the run's resolved config as a plain nested dict; `record` the
  facts of the run (task first); the library version and the time are added.
  When resuming, the facts of the new record (classes, shapes, transition,
  training-label checksum) must equal the old ones (RunError otherwise: the data
  changed under the run), and the allowed config changes are appended to the
  record's "resumed" history. Nothing is written when a check fails.
  """
  record_path = os.path.join(workdir, RECORD_FILE)
  full = {"task": record["task"], **dict(record), "library_version": sgn_jax.__version__,
          "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
  if os.path.exists(record_path):
    old = _read_json(record_path)
    new = _normalised(full)
    for key in FACTS:
      if key in old and key in new and not _same(old[key], new[key]):
        what = ("the training labels (their sha256)" if key == "labels_checksum" else key)
        raise RunError(
            f"--workdir={workdir!r}: {what} differ from the run being resumed "
            f"({_show(old[key])} -> {_show(new[key])}): the data or noise changed under it. "
            "Use a new --workdir")
    full["created"] = old.get("created", old.get("written"))
    full["resumed"] = list(old.get("resumed", [])) + [dict(
        time=full["written"], allowed_changes={k: list(v) for k, v in
                                               (allowed_changes or {}).items()})]
  else:
    full["created"] = full["written"]
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / CONFIG_FILE).write_text(
      json.dumps(_jsonable(config), indent=2, sort_keys=True, default=str) + "\n")
  (path / RECORD_FILE).write_text(record_text(full))


def check_not_inside(workdir: str, run_dir: str, what: str) -> None:
  """A task that reads the run in `run_dir` must not write into it (RunError)."""
  if not run_dir or "://" in workdir:
    return
  out, run = os.path.realpath(workdir), os.path.realpath(run_dir)
  if out == run or out.startswith(run + os.sep):
    raise RunError(f"--workdir={workdir!r} is the run it reads ({what}={run_dir!r}): its "
                   "outputs would replace the run's files; use another --workdir")


def record_text(record: Mapping[str, Any]) -> str:
  """JSON with one top-level key per line, each value compact (matrices stay short)."""
  items = (f"  {json.dumps(str(k))}: {json.dumps(_jsonable(v), default=str)}"
           for k, v in record.items())
  return "{\n" + ",\n".join(items) + "\n}\n"


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


@dataclasses.dataclass(frozen=True)
class Run:
  """A run folder as written by a task (see the module doc).

  Attributes:
    workdir: the folder.
    record: run.json (the facts of the run; {} for a run written before records).
    config: config.json as a plain nested dict.
  """
  workdir: str
  record: dict
  config: dict

  @property
  def task(self) -> str:
    return self.record.get("task") or self.config.get("task", "")

  @property
  def metrics(self) -> dict:
    """metrics.json ({} when the run has not finished a call yet)."""
    path = os.path.join(self.workdir, METRICS_FILE)
    return _read_json(path) if os.path.exists(path) else {}

  @property
  def finished(self) -> bool:
    """True when its last call finished the run (metrics.json "completed" is 1)."""
    metrics = self.metrics
    return bool(metrics) and metrics.get("completed", 1.0) == 1.0

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.workdir, CHECKPOINT_DIR)

  def checkpoint_steps(self) -> list[int]:
    """Steps of the saved checkpoints, ascending."""
    if not os.path.isdir(self.checkpoint_dir):
      return []
    return sorted(int(p) for p in os.listdir(self.checkpoint_dir) if p.isdigit())

  def restore(self, mesh=None, step: int | None = None) -> dict:
    """The saved train state of `step` (default: the latest) as a dict of arrays
    (step, params, model_state, opt_state, ema_params, ema_model_state, rng,
    extra), replicated on `mesh` (default: the first local device)."""
    from sgn_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
    steps = self.checkpoint_steps()
    if not steps:
      raise RunNotFoundError(f"{self.workdir!r} has no checkpoint in {self.checkpoint_dir}; "
                     "train it first (rerun its command with this workdir)")
    if step is not None and step not in steps:
      raise RunError(f"{self.workdir!r} has no checkpoint at step {step}; available: {steps}")
    return checkpointing.restore_tree(self.checkpoint_dir, steps[-1] if step is None else step,
                                      mesh)


def open_run(workdir: str, *, tasks: Sequence[str] | None = None, finished: bool = False,
             what: str = "run_dir") -> Run:
  """The run in `workdir`; RunError naming `what` (the config key that pointed
  here) when it is not a run, not one of `tasks`, or (with `finished`) unfinished."""
  if not workdir:
    raise RunError(f"{what} is empty: give the workdir of a run")
  config_path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isdir(workdir) or not os.path.exists(config_path):
    raise RunNotFoundError(f"{what}={workdir!r} is not a run folder ({config_path} not found)")
  record_path = os.path.join(workdir, RECORD_FILE)
  record = _read_json(record_path) if os.path.exists(record_path) else {}
  run = Run(workdir=workdir, record=record, config=_read_json(config_path))
  if tasks is not None and run.task not in tasks:
    raise RunError(f"{what}={workdir!r} is a task={run.task!r} run; expected "
                   f"{' or '.join(repr(t) for t in tasks)}")
  if finished and not run.finished:
    raise RunError(f"{what}={workdir!r} has not finished (metrics.json "
                   f"{'says completed=0' if run.metrics else 'is missing'}); rerun its "
                   "command with that workdir to finish it")
  logging.info("reading the %s run in %s", run.task, workdir)
  return run
