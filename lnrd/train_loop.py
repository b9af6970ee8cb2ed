"""What the diffusion and the time-dependent-classifier trainers share.

EDM's optimiser (Adam with a linear learning-rate warm-up counted in images,
non-finite gradients replaced as EDM does), drawing a batch from the
device-resident training set inside the jitted step, mapping images to the
model range [-1, 1] (with MNIST's zero padding to 32x32), and the outer loop:
checkpoint and resume, preemption, `stop_after_steps`, NaN/Inf detection,
progress reports and periodic callbacks (sample grids, evaluation).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from sgn_jax.data import device_data
from sgn_jax.training import checkpointing
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import progress


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


def edm_learning_rate(lr: float, warmup_kimg: float, batch_size: int) -> Callable:
  """lr * min(nimg / (warmup_kimg * 1000), 1) with nimg = step * batch_size (EDM's ramp-up)."""
  def schedule(count):
    if warmup_kimg <= 0:
      return jnp.asarray(lr, jnp.float32)
    nimg = jnp.asarray(count, jnp.float32) * batch_size
    return lr * jnp.minimum(nimg / (warmup_kimg * 1000.0), 1.0)
  return schedule


def sanitize_gradients() -> optax.GradientTransformation:
  """EDM's `nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5)` before the update."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(
      lambda g: jnp.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5), updates))


def adam_with_warmup(optim_config, batch_size: int) -> optax.GradientTransformation:
  """Adam (betas, eps from the config) with EDM's learning-rate warm-up in kimg."""
  return optax.chain(
      sanitize_gradients(),
      optax.adam(edm_learning_rate(optim_config.learning_rate, optim_config.warmup_kimg,
                                   batch_size),
                 b1=optim_config.beta1, b2=optim_config.beta2, eps=optim_config.eps))


def draw_batch(inputs: dict, step, steps_per_epoch: int, batch_size: int, mesh):
  """The training batch of `step` from the device tables: (images, labels, indices)."""
  idx = device_data.batch_indices(inputs["permutation"], step, steps_per_epoch, batch_size)
  images = device_data.gather_rows(inputs["train_images"], idx, mesh)
  labels = device_data.gather_rows(inputs["train_labels"], idx, mesh)
  return images, labels, idx


def to_model_range(images: jax.Array, pad_to: int = 0) -> jax.Array:
  """uint8 images -> float32 in [-1, 1] (x/127.5 - 1), zero-padded (value -1) to pad_to.

  Float inputs (e.g. 2-D mixture points) are returned as float32 unchanged.
  """
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 127.5 - 1.0
  else:
    return images.astype(jnp.float32)
  if pad_to and x.ndim == 4 and x.shape[1] < pad_to:
    top = (pad_to - x.shape[1]) // 2
    left = (pad_to - x.shape[2]) // 2
    x = jnp.pad(x, ((0, 0), (top, pad_to - x.shape[1] - top),
                    (left, pad_to - x.shape[2] - left), (0, 0)), constant_values=-1.0)
  return x


def build_augment(config, input_shape):
  """EDM's augmentation pipe (`config.augment`) for images when augment.p > 0, else None."""
  if len(input_shape) != 3 or config.augment.p <= 0:
    return None
  from lnrd import augment  # pylint: disable=g-import-not-at-top
  return augment.from_config(config.augment.to_dict())


def with_overrides(config, **dotted):
  """A copy of `config` with `a.b.c=value` overrides given as keyword `**{"a.b.c": value}`."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  copy = ml_collections.ConfigDict(config.to_dict())
  for key, value in dotted.items():
    node = copy
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return copy


def check_data_and_noise(config) -> None:
  """The dataset and label-noise keys of a config, checked before anything loads."""
  from sgn_jax import noise  # pylint: disable=g-import-not-at-top
  from sgn_jax.data import loading  # pylint: disable=g-import-not-at-top
  loading.check_dataset_config(config.dataset)
  if config.noise.kind not in noise.NOISE_KINDS:
    raise ValueError(f"noise.kind={config.noise.kind!r} is not known; allowed: "
                     f"{list(noise.NOISE_KINDS)}")
  try:
    noise.check_rate(config.noise.rate)
  except ValueError as e:
    raise ValueError(f"noise.rate: {e}") from None


def model_input_shape(data_shape, pad_to: int = 0) -> tuple:
  """The network's input shape (no batch): images zero-padded up to pad_to x pad_to."""
  shape = tuple(data_shape)
  if len(shape) == 3 and pad_to:
    shape = (max(pad_to, shape[0]), max(pad_to, shape[1]), shape[2])
  return shape


def init_replicated(init: Callable, key, mesh):
  """`init(key)` run once under jit with every leaf born replicated on `mesh`
  (shapes from `jax.eval_shape`, no host copy of the parameters)."""
  abstract = jax.eval_shape(init, key)
  sharding = mesh_lib.replicated(mesh)
  return jax.jit(init, out_shardings=jax.tree.map(lambda _: sharding, abstract))(key)


def num_params(tree) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(tree)))


@dataclasses.dataclass
class Periodic:
  """Call `fn(step, state)` every `every_steps` steps (and at the end when `at_end`)."""
  every_steps: int
  fn: Callable[[int, Any], None]
  at_end: bool = True


def _mean_metrics(pending: list[dict[str, Any]]) -> dict[str, float]:
  fetched = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def run(config, workdir: str, state, train_step: Callable, train_inputs: Callable,
        total_steps: int, batch_size: int, mesh, writer,
        periodic: tuple[Periodic, ...] = ()):
  """Runs `train_step` from the state's step to `total_steps` with checkpoints.

  Args:
    config: needs log_every_steps, checkpoint_every_steps, keep_checkpoints,
      stop_after_steps.
    workdir: checkpoints go to WORKDIR/checkpoints; an existing one is resumed.
    state: the freshly initialised state (replaced by the checkpoint if any).
    train_step: jitted `(state, inputs) -> (state, metrics)`, metrics with 'loss'.
    train_inputs: `step -> inputs` of the step.
    total_steps, batch_size: the run's length and global batch.
    mesh, writer: the device mesh and the metric writer.
    periodic: callbacks (sample grids, evaluation).

  Returns:
    (state, step reached, last logged train metrics, steps run in this call).
  """
  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints)
  state = checkpointer.restore_or(state)
  step = first_step = int(jax.device_get(state.step))
  if step:
    logging.info("resumed from step %d", step)
  stop_at = (min(total_steps, step + config.stop_after_steps) if config.stop_after_steps
             else total_steps)
  sync_each_step = mesh_lib.needs_step_sync(mesh)
  reporter = progress.ProgressReporter(total_steps, batch_size, writer, first_step=step)
  pending: list[dict[str, Any]] = []
  last: dict[str, float] = {}

  def check_pending(clear: bool = True):
    """Mean of the metrics since the last log; raises on NaN/Inf. Periodic work and
    checkpoints check without clearing, so the next log still covers every step."""
    nonlocal pending, last
    if not pending:
      return last
    summary = _mean_metrics(pending)
    if clear:
      pending = []
    if not np.isfinite(summary["loss"]):
      kept = checkpointer.latest_step
      raise NonFiniteLossError(
          f"training loss became {summary['loss']} before step {step}; stopped without saving. "
          + (f"The last good checkpoint (step {kept}) is kept in {checkpointer.directory}."
             if kept is not None else "No checkpoint had been saved yet.")
          + " Lower optim.learning_rate or check the data.")
    last = summary
    return summary

  try:
    while step < stop_at:
      state, metrics = train_step(state, train_inputs(step))
      if sync_each_step:
        jax.block_until_ready(metrics)
      step += 1
      pending.append(metrics)
      reporter.tick(step)
      if step % config.log_every_steps == 0 or step == stop_at:
        summary = check_pending()
        rates = reporter.report(step, loss=summary["loss"], kimg=step * batch_size / 1000)
        writer.write_scalars(step, {f"train/{k}": v for k, v in {**summary, **rates}.items()})
      for p in periodic:
        if step % p.every_steps == 0 or (p.at_end and step == total_steps):
          check_pending(clear=False)
          p.fn(step, state)
      preempted = checkpointer.preempted(step)
      if checkpointer.should_save(step) or step == stop_at or preempted:
        check_pending(clear=False)
        with reporter.timed("checkpoint"):
          checkpointer.save(step, state, force=True)
      if preempted:
        logging.warning("Stopping at step %d after preemption; rerun to resume.", step)
        break
  finally:
    checkpointer.close()
    writer.flush()
  if step < total_steps:
    logging.info("Stopped at step %d of %d; rerun with the same workdir to resume.",
                 step, total_steps)
  return state, step, last, step - first_step
