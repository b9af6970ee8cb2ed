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
  run.lock       present while a process writes the run (see below)

One writer per run: a task takes the run's lock (`lock_workdir`, called by
`check_resume`) before it looks at the folder, and holds it until it returns
(`one_writer`) or its process ends. The lock is an exclusive `flock` on
WORKDIR/run.lock that names its holder (pid, host, start, command); the kernel
releases it when the process dies, so a lock file left by a dead process is
taken over with a warning. A second command into a busy run, and a reader of it
(`open_run`: generate, evaluate, discover, TDSM's classifier), are refused with
one line naming the holder. In a multi-process run process 0 holds the lock for
the whole group.

Records that cannot lie: config.json and run.json are written atomically, and
for a task that restores a checkpoint only once the restore has succeeded
(`start_run(..., after_restore=True)`, committed by the training loop through
`restored`); the "completed" mark of metrics.json is cleared when an extension
starts and set again only at its end. A folder with checkpoints but without its
records is refused, never resumed as a new run; a record that does not parse is
named.

Other runs and research code read a run only through `open_run`:

    run = runs.open_run("/runs/tdsm", tasks=("diffusion",), finished=True)
    run.record["num_classes"], run.config["batch_size"], run.checkpoint_steps()
    tree = run.restore(mesh=mesh)        # the saved train state as a dict of arrays
    tree["ema_params"]

`lnrd.runs` builds on it for the TDSM runs (the time-dependent classifier's
export, a diffusion run's EMA network).
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import socket
import sys
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
LOCK_FILE = "run.lock"


class RunError(errors.UserError, ValueError):
  """A run folder is unfinished, of the wrong task, or does not match."""


class RunNotFoundError(RunError, FileNotFoundError):
  """A run folder, or a file a run should have written, is missing."""


class RunBusyError(RunError):
  """Another process is writing the run."""


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
  if not str(workdir).strip():
    raise RunError(f"{what} is empty (an unset variable?): name the folder of the run, "
                   f"e.g. {what}=/tmp/runs/mnist")
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


# ---- one writer per run ------------------------------------------------------------------


@dataclasses.dataclass
class _Lock:
  """A held run lock: the locked file's descriptor (None on processes other than 0)
  and the folders this process created for it (removed again if left empty)."""
  workdir: str
  fd: int | None
  created: str | None = None


_HELD: dict[str, _Lock] = {}  # realpath(workdir) -> the lock this process holds
_SCOPES: list[list[str]] = []  # the workdirs locked inside each `one_writer` call
_PENDING: dict[str, tuple[str, dict, str]] = {}  # realpath -> (workdir, config, record text)


def _key(workdir: str) -> str:
  return os.path.realpath(workdir)


def _holder(path: str) -> str:
  """Who holds (or held) the lock file at `path`, in words."""
  try:
    with open(path) as f:
      info = json.loads(f.read() or "{}")
  except (OSError, ValueError):
    return "another process"
  command = " ".join(info.get("command", []))
  if len(command) > 120:
    command = command[:117] + "..."
  return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since "
          f"{info.get('since', '?')}" + (f" ({command})" if command else ""))


def _acquire(workdir: str) -> _Lock:
  """The exclusive flock of WORKDIR/run.lock, the folder made if needed."""
  path = os.path.abspath(workdir)
  created = None
  if not os.path.isdir(path):
    created = path
    while not os.path.exists(os.path.dirname(created)):
      created = os.path.dirname(created)
    os.makedirs(path, exist_ok=True)
  lock_path = os.path.join(path, LOCK_FILE)
  while True:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(lock_path)
      os.close(fd)
      _remove_created(path, created)
      raise RunBusyError(
          f"--workdir={workdir!r} is being written by {holder}: two commands into one run "
          "would mix their checkpoints and records. Wait for it to finish, stop it, or use "
          "another --workdir") from None
    try:  # the holder before us may have removed the file it locked: lock the current one
      current = os.path.samestat(os.fstat(fd), os.stat(lock_path))
    except FileNotFoundError:
      current = False
    if current:
      break
    os.close(fd)
  left = os.read(fd, 1 << 16)
  if left.strip():
    logging.warning("%s was left by %s, which is no longer running (killed?); this run "
                    "takes it over.", lock_path, _holder(lock_path))
  info = dict(pid=os.getpid(), host=socket.gethostname(),
              since=time.strftime("%Y-%m-%dT%H:%M:%S"), command=list(sys.argv))
  os.lseek(fd, 0, os.SEEK_SET)
  os.ftruncate(fd, 0)
  os.write(fd, (json.dumps(info) + "\n").encode())
  os.fsync(fd)
  return _Lock(workdir=path, fd=fd, created=created)


def _remove_created(path: str, created: str | None) -> None:
  """Removes the folders from `created` down to `path` that this process made, if empty."""
  if created is None:
    return
  folder = path
  while True:
    try:
      os.rmdir(folder)
    except OSError:
      return
    if folder == created or len(folder) <= len(created):
      return
    folder = os.path.dirname(folder)


def _release(key: str) -> None:
  lock = _HELD.pop(key, None)
  _PENDING.pop(key, None)
  if lock is None or lock.fd is None:
    return
  lock_path = os.path.join(lock.workdir, LOCK_FILE)
  try:
    if os.path.samestat(os.fstat(lock.fd), os.stat(lock_path)):
      os.unlink(lock_path)
  except OSError:
    pass
  fcntl.flock(lock.fd, fcntl.LOCK_UN)
  os.close(lock.fd)
  _remove_created(lock.workdir, lock.created)


@atexit.register
def _release_all() -> None:
  for key in list(_HELD):
    _release(key)


def _agree(ok: bool) -> bool:
  """Process 0's `ok`, on every process of a multi-process run."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def lock_workdir(workdir: str) -> None:
  """Makes this process (process 0 for a multi-process run) the one writer of
  `workdir` until the enclosing `one_writer` call returns, or the process ends.

  RunBusyError naming the holder when another live process holds it; a lock left
  by a dead process is taken over with a warning. Taking a lock this process
  already holds does nothing. Buckets (`gs://...`) are not locked.
  """
  if "://" in workdir:
    logging.warning("%s is not on a local file system: it cannot be locked; make sure no "
                    "other command writes into it.", workdir)
    return
  key = _key(workdir)
  if key in _HELD:
    return
  message, lock = "", None
  if jax.process_index() == 0:
    try:
      lock = _acquire(workdir)
    except RunBusyError as e:
      message = str(e)
  if not _agree(not message):
    raise RunBusyError(message or f"--workdir={workdir!r} is being written by another "
                       "command (see the message of process 0)")
  _HELD[key] = lock or _Lock(workdir=os.path.abspath(workdir), fd=None)
  if _SCOPES:
    _SCOPES[-1].append(key)


def unlock_workdir(workdir: str) -> None:
  """Releases this process's lock of `workdir` (records not yet committed are dropped)."""
  _release(_key(workdir))


def one_writer(fn):
  """Decorates a task's `train_and_evaluate`: the run locks it takes (`check_resume`)
  are released when it returns or raises."""
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    _SCOPES.append([])
    ok = False
    try:
      result = fn(*args, **kwargs)
      ok = True
      return result
    finally:
      keys = _SCOPES.pop()
      for key in reversed(keys):
        _release(key)
      if ok and keys and jax.process_count() > 1:  # nobody reads the run before it is free
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        multihost_utils.sync_global_devices("sgn_jax.runs.one_writer")
  return wrapped


def check_not_busy(workdir: str, what: str = "run_dir") -> None:
  """RunBusyError when another process writes the run in `workdir` (its lock is held)."""
  if "://" in workdir or _key(workdir) in _HELD:
    return
  lock_path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(lock_path, os.O_RDONLY)
  except OSError:
    return
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    raise RunBusyError(
        f"{what}={workdir!r} is being written by {_holder(lock_path)}: what it holds now "
        "is not a finished run. Wait until that command finishes, then rerun") from None
  finally:
    os.close(fd)


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
  value. A folder with checkpoints or metrics but without config.json and run.json
  is refused (its records were deleted: resuming it would make one run of two).
  The run's lock is taken first (`lock_workdir`). Returns the allowed changes.
  """
  check_workdir(workdir)
  lock_workdir(workdir)
  config_path = os.path.join(workdir, CONFIG_FILE)
  record_path = os.path.join(workdir, RECORD_FILE)
  has_config, has_record = os.path.exists(config_path), os.path.exists(record_path)
  if not has_config and not has_record:
    _check_no_orphans(workdir)
    return {}
  if has_config != has_record:
    missing, kept = ((record_path, config_path) if has_config else (config_path, record_path))
    raise RunError(
        f"--workdir={workdir!r}: {missing} is missing while {os.path.basename(kept)} is "
        "there: the run's records are incomplete, so it cannot be resumed safely. Restore "
        "the file, or use a new --workdir")
  record = read_json(record_path)
  old_config = read_json(config_path)
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


def _check_no_orphans(workdir: str) -> None:
  """RunError when `workdir` holds a run's outputs but none of its records."""
  checkpoints = os.path.join(workdir, CHECKPOINT_DIR)
  steps = (sorted(int(p) for p in os.listdir(checkpoints) if p.isdigit())
           if os.path.isdir(checkpoints) else [])
  found = ([f"checkpoints (steps {', '.join(map(str, steps[-3:]))})"] if steps else []) + [
      name for name in (METRICS_FILE, "metrics.jsonl")
      if os.path.exists(os.path.join(workdir, name))]
  if found:
    raise RunError(
        f"--workdir={workdir!r} holds {' and '.join(found)} but not the records that say "
        f"which run they belong to ({CONFIG_FILE}, {RECORD_FILE} are missing): resuming it "
        "as a new run would make one model of two runs. Restore the records, or use a new "
        "--workdir")


def _same(a, b) -> bool:
  if isinstance(a, list) and isinstance(b, list) and a and isinstance(a[0], (list, float)):
    try:
      return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-6))
    except ValueError:
      return False
  return a == b


FACTS = ("num_classes", "input_shape", "data_shape", "transition", "labels_checksum")


def start_run(workdir: str, config: Mapping[str, Any], record: Mapping[str, Any],
              allowed_changes: Mapping[str, tuple[Any, Any]] | None = None, *,
              after_restore: bool = False) -> None:
  """Writes WORKDIR/config.json and WORKDIR/run.json (process 0) once the task has
  validated its config and loaded its data (after `check_resume`).

  `config` is the run's resolved config as a plain nested dict; `record` the
  facts of the run (task first); the library version and the time are added.
  When resuming, the facts of the new record (classes, shapes, transition,
  training-label checksum) must equal the old ones (RunError otherwise: the data
  changed under the run), and the allowed config changes are appended to the
  record's "resumed" history. Nothing is written when a check fails.

  With `after_restore` (a task that trains through `sgn_jax.training.loop.run`)
  the records are written only once the loop has restored the state (`restored`):
  a restore that fails leaves the old records as they were. Files are replaced
  atomically.
  """
  record_path = os.path.join(workdir, RECORD_FILE)
  full = {"task": record["task"], **dict(record), "library_version": sgn_jax.__version__,
          "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
  if os.path.exists(record_path):
    old = read_json(record_path)
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
  if after_restore:
    _PENDING[_key(workdir)] = (workdir, dict(config), record_text(full))
  else:
    _write_records(workdir, config, record_text(full))


def _write_records(workdir: str, config: Mapping[str, Any], record: str) -> None:
  if jax.process_index() != 0:
    return
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  writers.write_atomic(os.path.join(workdir, CONFIG_FILE),
                       json.dumps(_jsonable(config), indent=2, sort_keys=True, default=str)
                       + "\n")
  writers.write_atomic(os.path.join(workdir, RECORD_FILE), record)


def restored(workdir: str, step: int, total_steps: int) -> dict[str, Any]:
  """Called by the training loop once the state of `workdir`'s run is restored (or
  fresh) at `step`: writes the records `start_run(..., after_restore=True)` left
  pending, and, when the run goes on (`step < total_steps`) after a call that
  finished it, clears the "completed" mark of metrics.json until the new end.
  Returns the metrics.json of the previous call ({} when there is none)."""
  pending = _PENDING.pop(_key(workdir), None)
  if pending is not None:
    _write_records(*pending)
  path = os.path.join(workdir, METRICS_FILE)
  previous = read_json(path) if os.path.exists(path) else {}
  if step < total_steps and previous.get("completed") == 1.0:
    if jax.process_index() == 0:
      writers.write_atomic(path, json.dumps({**previous, "completed": 0.0}, indent=2,
                                            sort_keys=True) + "\n")
  return previous


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


def read_json(path: str):
  """The JSON in `path`; RunError naming the file when it does not parse."""
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise RunError(f"{path} is damaged (it does not parse as JSON: {e}); the run's records "
                   "cannot be trusted. Restore the file from a copy, or use a new "
                   "--workdir") from None


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
    return read_json(path) if os.path.exists(path) else {}

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
  check_not_busy(workdir, what)
  record_path = os.path.join(workdir, RECORD_FILE)
  record = read_json(record_path) if os.path.exists(record_path) else {}
  run = Run(workdir=workdir, record=record, config=read_json(config_path))
  if tasks is not None and run.task not in tasks:
    raise RunError(f"{what}={workdir!r} is a task={run.task!r} run; expected "
                   f"{' or '.join(repr(t) for t in tasks)}")
  if finished and not run.finished:
    raise RunError(f"{what}={workdir!r} has not finished (metrics.json "
                   f"{'says completed=0' if run.metrics else 'is missing'}); rerun its "
                   "command with that workdir to finish it")
  logging.info("reading the %s run in %s", run.task, workdir)
  return run
