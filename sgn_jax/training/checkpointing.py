"""Checkpoints with orbax `CheckpointManager`: periodic saves, resume, preemption.

The whole train state is one pytree (step, params, EMA, optimizer state, model
state, the replicated key and any per-example state), saved with
`StandardSave` and restored against an abstract state that carries the target
shardings, so arrays land directly where they belong, whatever the device count
of the run that wrote them. The data position is derived from the step (the
data order of each epoch is a function of the seed and the epoch), so restoring
the step restores the data position.

Preemption: under `jax.distributed` orbax's `reached_preemption` (the
coordination service turns SIGTERM on any host into an agreed step); in a
single process a SIGTERM or SIGINT (Ctrl-C) handler sets a flag. Either way the
loop saves at the next step, waits for the save, and exits cleanly.

Recovery: a latest checkpoint that cannot be restored (truncated, partly
deleted) is skipped with a warning and the newest one that can be restored is
used; `CheckpointError` names the folder when none can.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time

import jax
import orbax.checkpoint as ocp
from absl import logging

from sgn_jax import errors
from sgn_jax.training import mesh as mesh_lib


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of the arrays in `tree`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class CheckpointError(errors.UserError, RuntimeError):
  """No checkpoint of a run can be restored."""


UNREADABLE_DIR = "checkpoints_unreadable"  # beside checkpoints/: steps that failed to restore


def _quiet_closed_loop(hook):
  """An unraisable-exception hook that drops what a failed (already reported) orbax
  restore leaves behind: TensorStore callbacks into its closed event loop and its
  abandoned array reads."""
  def quiet(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(
        unraisable.exc_value):
      return
    if "_read_array" in repr(unraisable.object):
      return
    hook(unraisable)
  return quiet


def _reason(error: BaseException) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run under `directory`.

  SIGTERM (preemption) and SIGINT (Ctrl-C) set a flag (`preempted`): the loop
  saves at the next step, waits for the save and stops. A second Ctrl-C
  interrupts at once.
  """

  def __init__(self, directory: str, *, save_every_steps: int, keep: int = 3,
               handle_signals: bool = True):
    if save_every_steps <= 0:
      raise ValueError(f"checkpoint_every_steps={save_every_steps} must be > 0")
    if keep <= 0:
      raise ValueError(f"keep_checkpoints={keep} must be > 0")
    self.directory = os.path.abspath(directory) if "://" not in directory else directory
    self.save_every_steps = save_every_steps
    self._manager = ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every_steps, create=True))
    self._stop = threading.Event()
    self._previous_handlers = {}
    if (handle_signals and jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self._stop.is_set():
      raise KeyboardInterrupt  # a second Ctrl-C: stop now
    logging.warning("%s received: saving a checkpoint at the next step and stopping "
                    "(rerun with the same workdir to resume).", name)
    self._stop.set()

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore_or(self, state, step: int | None = None):
    """The latest restorable checkpoint (or the one at `step`) restored into the
    structure and shardings of `state`; `state` itself when there is none (and no
    `step` was asked).

    A checkpoint that fails to restore (truncated or partly deleted files) is
    skipped with a warning naming its step and why, moved to
    WORKDIR/checkpoints_unreadable/, and the next older one is tried;
    CheckpointError names the folder when none can be restored.
    """
    if step is not None:
      steps = self.all_steps()
      if step not in steps:
        raise ValueError(f"no checkpoint at step {step} in {self.directory}; "
                         f"available: {sorted(steps)}")
      candidates = [step]
    else:
      candidates = sorted(self.all_steps(), reverse=True)
    if not candidates:
      return state
    abstract = abstract_like(state)
    failures = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_closed_loop(previous_hook)
    try:
      return self._restore_first(candidates, abstract, failures)
    finally:
      if failures:
        gc.collect()  # the failed restore's abandoned reads are reported now, quietly
      sys.unraisablehook = previous_hook

  def _restore_first(self, candidates, abstract, failures):
    for candidate in candidates:
      try:
        # The metadata first: a torn checkpoint usually fails here, before any array read
        # is scheduled on orbax's event loop.
        self._manager.item_metadata(candidate)
        restored = self._manager.restore(candidate, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # pylint: disable=broad-except  (orbax/TensorStore errors)
        failures.append((candidate, _reason(e)))
        logging.warning("checkpoint at step %d in %s cannot be restored (%s); trying an older "
                        "one", candidate, self.directory, _reason(e))
        continue
      if failures:
        self._set_aside([s for s, _ in failures])
      logging.info("Resuming from checkpoint at step %d in %s", candidate, self.directory)
      return restored
    raise CheckpointError(
        f"no checkpoint in {self.directory} can be restored ("
        + "; ".join(f"step {s}: {r}" for s, r in failures)
        + "). Move that folder away to start the run afresh, or use a new --workdir")

  def _set_aside(self, steps) -> None:
    """Moves unreadable steps out of the way (kept for inspection) so the run can save
    those steps again."""
    if jax.process_index() != 0 or "://" in self.directory:
      return
    aside = os.path.join(os.path.dirname(self.directory), UNREADABLE_DIR)
    os.makedirs(aside, exist_ok=True)
    for step in steps:
      target = os.path.join(aside, f"{step}.{int(time.time())}")
      os.replace(os.path.join(self.directory, str(step)), target)
      logging.warning("moved the unreadable checkpoint of step %d to %s", step, target)
    self._manager.reload()

  def should_save(self, step: int) -> bool:
    """True at multiples of `save_every_steps`."""
    return step > 0 and step % self.save_every_steps == 0

  def save(self, step: int, state, *, force: bool = False, wait: bool = False) -> bool:
    """Saves (asynchronously; `wait` blocks until the checkpoint is on disk)."""
    saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=force)
    if wait:
      self._manager.wait_until_finished()
    if saved:
      logging.info("Saved checkpoint at step %d", step)
    return saved

  def preempted(self, step: int) -> bool:
    """True once SIGTERM / SIGINT (or a coordinated preemption notice) has arrived."""
    return self._stop.is_set() or self._manager.reached_preemption(step)

  def all_steps(self):
    return list(self._manager.all_steps())

  def close(self) -> None:
    """Waits for saves in flight, then releases the manager and the signal handlers."""
    try:
      self._manager.wait_until_finished()
      self._manager.close()
    finally:
      for signum, handler in self._previous_handlers.items():
        signal.signal(signum, handler)
      self._previous_handlers = {}


def restore_tree(directory: str, step: int, mesh=None) -> dict:
  """The checkpoint of `step` in `directory` as saved, a dict of arrays, without a
  template: shapes and dtypes from the checkpoint's metadata, every array
  replicated on `mesh` (default: the first local device)."""
  if mesh is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  else:
    sharding = mesh_lib.replicated(mesh)
  manager = ocp.CheckpointManager(
      os.path.abspath(directory) if "://" not in directory else directory,
      item_handlers=ocp.StandardCheckpointHandler())
  try:
    metadata = manager.item_metadata(step)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                          metadata)
    return manager.restore(step, args=ocp.args.StandardRestore(target))
  finally:
    manager.close()
