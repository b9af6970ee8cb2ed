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
single process a SIGTERM handler sets a flag. Either way the loop saves and
exits cleanly at the next step.
"""

from __future__ import annotations

import os
import signal
import threading

import jax
import orbax.checkpoint as ocp
from absl import logging


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of the arrays in `tree`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run under `directory`."""

  def __init__(self, directory: str, *, save_every_steps: int, keep: int = 3,
               handle_sigterm: bool = True):
    if save_every_steps <= 0:
      raise ValueError(f"checkpoint_every_steps={save_every_steps} must be > 0")
    if keep <= 0:
      raise ValueError(f"keep_checkpoints={keep} must be > 0")
    self.directory = os.path.abspath(directory) if "://" not in directory else directory
    self.save_every_steps = save_every_steps
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every_steps, create=True))
    self._sigterm = threading.Event()
    self._previous_handler = None
    if (handle_sigterm and jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self._sigterm.set()

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore_or(self, state, step: int | None = None):
    """The latest checkpoint (or the one at `step`) restored into the structure and
    shardings of `state`; `state` itself when there is none (and no `step` was asked)."""
    if step is not None:
      steps = self.all_steps()
      if step not in steps:
        raise ValueError(f"no checkpoint at step {step} in {self.directory}; "
                         f"available: {sorted(steps)}")
    else:
      step = self._manager.latest_step()
    if step is None:
      return state
    logging.info("Resuming from checkpoint at step %d in %s", step, self.directory)
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_like(state)))

  def should_save(self, step: int) -> bool:
    """True at multiples of `save_every_steps`."""
    return step > 0 and step % self.save_every_steps == 0

  def save(self, step: int, state, *, force: bool = False) -> bool:
    saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=force)
    if saved:
      logging.info("Saved checkpoint at step %d", step)
    return saved

  def preempted(self, step: int) -> bool:
    """True once a SIGTERM (or a coordinated preemption notice) has arrived."""
    return self._sigterm.is_set() or self._manager.reached_preemption(step)

  def all_steps(self):
    return list(self._manager.all_steps())

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None


def restore_tree(directory: str, step: int, mesh=None) -> dict:
  """The checkpoint of `step` in `directory` as saved, a dict of arrays, without a
  template: shapes and dtypes from the checkpoint's metadata, every array
  replicated on `mesh` (default: the first local device)."""
  if mesh is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  else:
    from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
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
