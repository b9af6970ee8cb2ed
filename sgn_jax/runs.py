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

CONFIG_FILE = "config.json"
RECORD_FILE = "run.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"


class RunError(ValueError):
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


def start_run(workdir: str, config: Mapping[str, Any], record: Mapping[str, Any]) -> None:
  """Writes WORKDIR/config.json and WORKDIR/run.json (process 0), after validation.

  `config` is the run's resolved config as a plain nested dict; `record` the
  facts of the run (task first); the library version and the time are added.
  """
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  full = {"task": record["task"], **dict(record), "library_version": sgn_jax.__version__,
          "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
  (path / CONFIG_FILE).write_text(
      json.dumps(_jsonable(config), indent=2, sort_keys=True, default=str) + "\n")
  (path / RECORD_FILE).write_text(record_text(full))


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
