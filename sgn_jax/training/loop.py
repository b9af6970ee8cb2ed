"""The one training loop of the library: classification, the time-dependent
classifier and diffusion all run through `run`.

    step = loop.jit_step(train_step, draw_batch)        # (state, inputs) -> (state, metrics)
    result = loop.run(state, step, data.train_inputs, total_steps=n, workdir=w,
                      settings=loop.LoopSettings(), mesh=mesh, writer=writer,
                      items_per_step=batch_size)

A train step is any pure `train_step(state, batch, key) -> (state, metrics)`
(the library's factories: `sgn_jax.classification.make_train_step`,
`lnrd.time_classifier.make_train_step`, `lnrd.diffusion.make_train_step`).
`jit_step` composes it with a batch drawer (`draw(inputs, step, key) -> batch`,
e.g. `sgn_jax.data.device_data.BatchDrawer`, which gathers the batch from the
device-resident tables) into one jitted, state-donating XLA program; the key of
step s is `fold_in(state.rng, s)`, split between the drawer and the step.

`run` then owns everything around the steps, the same way for every task:
resume from the latest checkpoint (the data position follows from the step),
periodic checkpoints (orbax), preemption (SIGTERM: save and stop), the
`stop_after_steps` budget, one metric averaging and log line per
`log_every_steps` (steps/s, images/s, ETA), NaN/Inf detection
(`NonFiniteLossError`, nothing saved after the last good checkpoint) and
periodic work such as evaluations and sample grids (`Periodic`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from absl import logging

from sgn_jax.training import checkpointing
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import progress
from sgn_jax.training import writers


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf (the last good checkpoint is kept)."""


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """How `run` logs, checkpoints and stops.

  log_every_steps: average the step metrics over this many steps per log line.
  checkpoint_every_steps: save a checkpoint at multiples of this step.
  keep_checkpoints: how many checkpoints to keep.
  stop_after_steps: > 0: save and stop after this many steps of this call.
  """
  log_every_steps: int = 100
  checkpoint_every_steps: int = 2000
  keep_checkpoints: int = 3
  stop_after_steps: int = 0

  def __post_init__(self):
    for name in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
      value = getattr(self, name)
      if isinstance(value, bool) or int(value) != value or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    if int(self.stop_after_steps) != self.stop_after_steps or self.stop_after_steps < 0:
      raise ValueError(f"stop_after_steps={self.stop_after_steps!r} must be >= 0 (0: off)")


@dataclasses.dataclass(frozen=True)
class Periodic:
  """`fn(step, state)` every `every_steps` steps (and at the last step when `at_end`),
  timed apart from the training steps under `name`. A `fn` that returns a state
  replaces the loop's (e.g. with a kept copy of the net in `extra`: model
  selection); it is saved in the checkpoints that follow. None keeps it."""
  every_steps: int
  fn: Callable[[int, Any], Any]
  at_end: bool = True
  name: str = "periodic"


@dataclasses.dataclass
class LoopResult:
  """What `run` reached: the state, its step, the last logged train metrics (means
  over the last log window), the steps run in this call and their wall time."""
  state: Any
  step: int
  total_steps: int
  train_metrics: dict[str, float]
  steps_this_run: int
  seconds: float

  @property
  def completed(self) -> bool:
    return self.step >= self.total_steps

  def summary(self) -> dict[str, float]:
    """What every task's metrics.json reports of its loop: the last train metrics
    (train/*), the step, whether the run completed (1/0), and this call's steps and
    seconds."""
    return {**{f"train/{k}": v for k, v in self.train_metrics.items()}, "step": self.step,
            "completed": float(self.completed), "steps_this_run": self.steps_this_run,
            "train_seconds_this_run": self.seconds}


def step_keys(rng, step):
  """(draw key, step key) of step `step`: `fold_in(rng, step)` split in two."""
  return jax.random.split(jax.random.fold_in(rng, step))


def jit_step(train_step: Callable, draw_batch: Callable | None = None,
             donate: bool = True) -> Callable:
  """`jax.jit((state, inputs) -> train_step(state, batch, key))`.

  key = fold_in(state.rng, state.step), split into (draw key, step key); batch =
  `draw_batch(inputs, state.step, draw_key)` (e.g. gathered from device-resident
  tables), or `inputs` itself when `draw_batch` is None (an already formed batch,
  e.g. streamed). The state is donated.
  """
  def step(state, inputs):
    draw_key, step_key = step_keys(state.rng, state.step)
    batch = inputs if draw_batch is None else draw_batch(inputs, state.step, draw_key)
    return train_step(state, batch, step_key)
  return jax.jit(step, donate_argnums=0 if donate else ())


def mean_metrics(pending: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Means of per-step metrics; "nonfinite" (a per-step count) is summed."""
  fetched = jax.device_get(list(pending))
  out = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "nonfinite"}
  if "nonfinite" in fetched[0]:
    out["nonfinite"] = int(sum(int(m["nonfinite"]) for m in fetched))
  return out


def run(state, step_fn: Callable, inputs_fn: Callable[[int], Any], *, total_steps: int,
        workdir: str, settings: LoopSettings, mesh, writer, items_per_step: int,
        periodic: Sequence[Periodic] = (),
        log_scalars: Callable[[int], Mapping[str, float]] | None = None,
        at_start: Callable[[Any, Any], None] | None = None) -> LoopResult:
  """Runs `step_fn` from the state's step (or the latest checkpoint's) to `total_steps`.

  Args:
    state: the freshly initialised train state (a pytree with `.step` and `.rng`),
      replaced by the latest checkpoint in WORKDIR/checkpoints when there is one.
    step_fn: jitted `(state, inputs) -> (state, metrics)` (see `jit_step`); the
      metrics hold "loss" (and optionally "nonfinite", a count of bad steps).
    inputs_fn: `step -> inputs` of that step.
    total_steps: the run's length.
    workdir: the run's folder (checkpoints go to WORKDIR/checkpoints).
    settings: logging, checkpoint and stopping intervals.
    mesh, writer: the device mesh and the metric writer.
    items_per_step: the global batch size (images/s in the log line).
    periodic: work every so many steps (evaluations, sample grids); a `Periodic` fn
      that returns a state replaces the loop's.
    log_scalars: `step -> {name: value}` added to each log line (e.g. epoch, kimg).
    at_start: `(state, inputs)` called once before the first step of a fresh run.

  Returns:
    `LoopResult`; `completed` is False when stopped early (budget, preemption).

  Raises:
    NonFiniteLossError: the loss became NaN/Inf; the last good checkpoint stays.
  """
  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), save_every_steps=settings.checkpoint_every_steps,
      keep=settings.keep_checkpoints)
  state = checkpointer.restore_or(state)
  step = first_step = int(jax.device_get(state.step))
  from sgn_jax import runs  # pylint: disable=g-import-not-at-top  (runs builds on training)
  previous = runs.restored(workdir, step, total_steps)  # the records, once restored
  stop_at = (min(total_steps, step + settings.stop_after_steps) if settings.stop_after_steps
             else total_steps)
  sync_each_step = mesh_lib.needs_step_sync(mesh)
  reporter = progress.ProgressReporter(total_steps, items_per_step, writer, first=step)
  pending: list[Mapping[str, Any]] = []
  # A call that runs no step (the run had finished) reports the last call's train/*.
  last: dict[str, float] = {k[len("train/"):]: v for k, v in previous.items()
                            if k.startswith("train/") and v is not None}
  start_time = time.time()

  def check_pending(clear: bool = True) -> dict[str, float]:
    """Mean of the metrics since the last log; raises on NaN/Inf. Periodic work and
    checkpoints check without clearing, so the next log still covers every step."""
    nonlocal pending, last
    if not pending:
      return last
    summary = mean_metrics(pending)
    if clear:
      pending = []
    if summary.get("nonfinite", 0) or not np.isfinite(summary["loss"]):
      kept = checkpointer.latest_step
      raise NonFiniteLossError(
          f"training loss became {summary['loss']} before step {step}; stopped without saving. "
          + (f"The last good checkpoint (step {kept}) is kept in {checkpointer.directory}."
             if kept is not None else "No checkpoint had been saved yet.")
          + " Lower the learning rate (optim.learning_rate) or check the data.")
    last = summary
    return summary

  def save(step, state, wait):
    try:
      checkpointer.save(step, state, force=True, wait=wait)
    except Exception as e:  # pylint: disable=broad-except
      if not writers.is_disk_full(e):
        raise
      kept = checkpointer.latest_step
      raise writers.disk_full_error(
          os.path.join(checkpointer.directory, str(step)), e,
          f"The last good checkpoint is step {kept} in {checkpointer.directory}."
          if kept is not None and kept != step else "No good checkpoint had been saved.") from e

  try:
    while step < stop_at:
      inputs = inputs_fn(step)
      if step == 0 and at_start is not None:
        at_start(state, inputs)
      state, metrics = step_fn(state, inputs)
      if sync_each_step:
        jax.block_until_ready(metrics)
      step += 1
      pending.append(metrics)
      reporter.tick(step)
      if step % settings.log_every_steps == 0 or step == stop_at:
        summary = check_pending()
        extra = dict(log_scalars(step)) if log_scalars is not None else {}
        rates = reporter.report(step, loss=summary["loss"], **extra)
        writer.write_scalars(step, {f"train/{k}": v for k, v in {**summary, **rates}.items()})
      for p in periodic:
        if step % p.every_steps == 0 or (p.at_end and step == total_steps):
          check_pending(clear=False)
          with reporter.timed(p.name):
            replaced = p.fn(step, state)
          if replaced is not None:
            state = replaced
      preempted = checkpointer.preempted(step)
      if checkpointer.should_save(step) or step == stop_at or preempted:
        check_pending(clear=False)
        with reporter.timed("checkpoint"):
          save(step, state, wait=preempted)
      if preempted:
        logging.warning("Stopped at step %d (signal or preemption); the checkpoint is saved: "
                        "rerun with the same workdir to resume.", step)
        break
  finally:
    try:
      checkpointer.close()  # waits for the saves in flight
    except Exception as e:  # pylint: disable=broad-except
      if not writers.is_disk_full(e):
        raise
      raise writers.disk_full_error(checkpointer.directory, e) from e
    writer.flush()
  if step < total_steps:
    logging.info("Stopped at step %d of %d; rerun with the same workdir to resume.",
                 step, total_steps)
  return LoopResult(state=state, step=step, total_steps=total_steps,
                    train_metrics={k: v for k, v in last.items() if k != "nonfinite"},
                    steps_this_run=step - first_step, seconds=time.time() - start_time)
