"""Training and evaluation of classifiers on noisily labelled data (`task="classify"`).

    python main.py --config=configs/mnist_sym.py:method=ce --workdir=WORKDIR

One jitted, state-donating train step over a data-parallel `Mesh`: the batch is
drawn on the devices from the device-resident training set (see
`sgn_jax.data.device_data`), augmented there, and the loss, gradients, SGD
update and EMA update all happen in the same XLA program. BatchNorm statistics
under jit with a globally sharded batch are global (synced BN), so a run gives
the same result on 1 or 8 devices up to float rounding.

Every epoch the net and its EMA are evaluated on the clean test set (and on the
noisy validation split when there is one). The final metrics go to TensorBoard
and to WORKDIR/metrics.json.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from sgn_jax import losses
from sgn_jax import models
from sgn_jax import noise
from sgn_jax.data import device_data
from sgn_jax.data import loading
from sgn_jax.training import checkpointing
from sgn_jax.training import ema
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import progress
from sgn_jax.training import writers
from sgn_jax.training.train_state import TrainState

METHODS = ("ce",)


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the values of a classification config before any data or compute.

  Raises ValueError naming the offending key, its value and what is allowed.
  """
  if config.method not in METHODS:
    raise ValueError(f"method={config.method!r} is not known; allowed: {list(METHODS)}")
  loading.check_dataset_config(config.dataset)
  kind = config.noise.kind
  if kind not in noise.NOISE_KINDS:
    raise ValueError(f"noise.kind={kind!r} is not known; allowed: {list(noise.NOISE_KINDS)}")
  if config.noise.convention not in noise.CONVENTIONS:
    raise ValueError(
        f"noise.convention={config.noise.convention!r}; allowed: {list(noise.CONVENTIONS)}")
  try:
    noise.check_rate(config.noise.rate)
  except ValueError as e:
    raise ValueError(f"noise.rate: {e}") from None
  if kind == "asym":
    noise.asymmetric_targets(config.dataset.name, config.noise.convention)
  if config.model.name not in models.MODELS:
    raise ValueError(
        f"model.name={config.model.name!r} is not known; allowed: {sorted(models.MODELS)}")
  for key in ("batch_size", "eval_batch_size", "num_epochs", "log_every_steps",
              "checkpoint_every_steps", "keep_checkpoints"):
    if int(config[key]) <= 0:
      raise ValueError(f"{key}={config[key]} must be a positive integer")
  if config.stop_after_steps < 0:
    raise ValueError(f"stop_after_steps={config.stop_after_steps} must be >= 0 (0: off)")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f"ema_decay={config.ema_decay} must be in [0, 1)")
  if config.optim.learning_rate <= 0:
    raise ValueError(f"optim.learning_rate={config.optim.learning_rate} must be > 0")
  if len(config.input.mean) != len(config.input.std) or min(config.input.std) <= 0:
    raise ValueError(
        f"input.mean={tuple(config.input.mean)} and input.std={tuple(config.input.std)} must "
        "have one entry per channel and positive std")


@dataclasses.dataclass(frozen=True)
class Splits:
  """Host copies of the train/val/test arrays after noise and splitting."""
  train_images: np.ndarray
  train_labels: np.ndarray        # noisy labels used for training
  train_clean_labels: np.ndarray
  val_images: np.ndarray
  val_labels: np.ndarray          # noisy validation labels
  test_images: np.ndarray
  test_labels: np.ndarray         # clean
  num_classes: int
  noise_summary: dict
  transition: np.ndarray | None


def prepare_splits(config: ml_collections.ConfigDict) -> Splits:
  """Loads the dataset, draws its noisy labels once from the seed, splits off validation.

  Noise is drawn on the full training set before the split, so the validation
  labels are noisy too (SGN's protocol) and the labels are the same on every
  host and every resume.
  """
  dataset = loading.load_dataset(config.dataset)
  num_classes = dataset.num_classes
  if num_classes != config.num_classes:
    raise ValueError(
        f"num_classes={config.num_classes} but dataset {dataset.name} has {num_classes}")
  noisy, transition = noise.make_noisy_labels(
      dataset.train_labels, config.noise.kind, num_classes=num_classes,
      rate=config.noise.rate, dataset=dataset.name, convention=config.noise.convention,
      seed=config.seed, label_sets=dataset.label_sets,
      label_set=config.noise.label_set or None)
  summary = noise.noise_summary(dataset.train_labels, noisy, num_classes)
  train_rows, val_rows = loading.split_validation(
      len(noisy), config.dataset.val_fraction, config.seed)
  return Splits(
      train_images=dataset.train_images[train_rows],
      train_labels=noisy[train_rows].astype(np.int32),
      train_clean_labels=dataset.train_labels[train_rows].astype(np.int32),
      val_images=dataset.train_images[val_rows],
      val_labels=noisy[val_rows].astype(np.int32),
      test_images=dataset.test_images,
      test_labels=dataset.test_labels.astype(np.int32),
      num_classes=num_classes,
      noise_summary=summary,
      transition=transition)


def build_model(config: ml_collections.ConfigDict):
  kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
  return models.get_model(config.model.name, config.num_classes, **kwargs)


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum at a constant learning rate (SPEC §2)."""
  return optax.sgd(config.optim.learning_rate, momentum=config.optim.momentum or None,
                   nesterov=bool(config.optim.nesterov))


def _split_variables(variables):
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


class Classifier:
  """The jitted pieces of one classification run: init, train step, eval step."""

  def __init__(self, config, model, tx, mesh, input_shape, steps_per_epoch):
    self.config = config
    self.model = model
    self.tx = tx
    self.mesh = mesh
    self.input_shape = tuple(input_shape)
    self.steps_per_epoch = steps_per_epoch
    self.replicated = mesh_lib.replicated(mesh)

  # ---- initialisation ------------------------------------------------------
  def _init(self, key):
    init_key, dropout_key, state_key = jax.random.split(key, 3)
    dummy = jnp.zeros((1,) + self.input_shape, jnp.float32)
    variables = self.model.init({"params": init_key, "dropout": dropout_key}, dummy, train=False)
    params, model_state = _split_variables(variables)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
        opt_state=self.tx.init(params), ema_params=params, ema_model_state=model_state,
        rng=state_key)

  def init_state(self, key) -> TrainState:
    """Parameters born replicated on the mesh: shapes from `jax.eval_shape`, then
    one jitted init whose outputs land directly with the target shardings."""
    abstract = jax.eval_shape(self._init, key)
    shardings = jax.tree.map(lambda _: self.replicated, abstract)
    return jax.jit(self._init, out_shardings=shardings)(key)

  # ---- training ------------------------------------------------------------
  def _forward(self, params, model_state, images, train, dropout_key=None):
    """Logits and the updated model state (BatchNorm statistics when training)."""
    variables = {"params": params, **model_state}
    rngs = {"dropout": dropout_key} if dropout_key is not None else None
    if train and model_state:
      logits, new_model_state = self.model.apply(
          variables, images, train=True, mutable=list(model_state), rngs=rngs)
      return logits, dict(new_model_state)
    return self.model.apply(variables, images, train=train, rngs=rngs), model_state

  def _draw_batch(self, rng, step, permutation, tables):
    """Batch `step` gathered from the device-resident training set and augmented
    (random crops and flips, per example); also returns the step's dropout key."""
    augment_key, dropout_key = jax.random.split(jax.random.fold_in(rng, step))
    idx = device_data.batch_indices(permutation, step, self.steps_per_epoch,
                                    self.config.batch_size)
    images = device_data.gather_rows(tables["train_images"], idx, self.mesh)
    labels = device_data.gather_rows(tables["train_labels"], idx, self.mesh)
    if images.ndim == 4:
      images = device_data.random_crop_flip(
          images, augment_key, crop_padding=self.config.input.crop_padding,
          flip=self.config.input.flip)
    return images, labels, dropout_key

  def _normalize(self, images):
    return device_data.normalize(images, self.config.input.mean, self.config.input.std)

  def train_step(self, state: TrainState, permutation, tables):
    """One SGD step on the batch of `state.step`; returns (state, metrics)."""
    cfg = self.config
    images, labels, dropout_key = self._draw_batch(state.rng, state.step, permutation, tables)
    images = self._normalize(images)

    def loss_fn(params):
      logits, new_model_state = self._forward(
          params, state.model_state, images, train=True, dropout_key=dropout_key)
      per_example = losses.softmax_cross_entropy(logits, labels)
      data_loss = per_example.mean()
      loss = data_loss + cfg.optim.weight_decay * losses.l2_penalty(params)
      return loss, (data_loss, logits, new_model_state)

    (loss, (data_loss, logits, new_model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, model_state=new_model_state, opt_state=opt_state,
        ema_params=ema.ema_update(state.ema_params, params, cfg.ema_decay),
        ema_model_state=ema.ema_update(state.ema_model_state, new_model_state, cfg.ema_decay))
    metrics = {
        "loss": loss,
        "data_loss": data_loss,
        "noisy_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "grad_norm": optax.global_norm(grads),
        "nonfinite": (~jnp.isfinite(loss)).astype(jnp.int32),
    }
    return new_state, metrics

  def preview_batch(self, rng, permutation, tables, step, count: int):
    """The first `count` training images of `step` as the step sees them, augmented,
    before normalisation (for an image grid in TensorBoard)."""
    images, _, _ = self._draw_batch(rng, step, permutation, tables)
    return images[:count]

  # ---- evaluation ----------------------------------------------------------
  def eval_step(self, params, model_state, images_table, labels_table, start, num_examples):
    """Sums of correct predictions, NLL and example count over one padded eval batch."""
    idx, mask = device_data.eval_indices(start, self.config.eval_batch_size, num_examples)
    images = device_data.gather_rows(images_table, idx, self.mesh)
    labels = device_data.gather_rows(labels_table, idx, self.mesh)
    mask = jax.lax.with_sharding_constraint(mask, mesh_lib.data_sharded(self.mesh))
    logits, _ = self._forward(params, model_state, self._normalize(images), train=False)
    weight = mask.astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    nll = losses.softmax_cross_entropy(logits, labels)
    return {"correct": jnp.sum(correct * weight), "nll": jnp.sum(nll * weight),
            "count": jnp.sum(weight)}


def evaluate(eval_fn, params, model_state, images_table, labels_table, num_examples,
             batch_size) -> dict[str, float]:
  """Accuracy and mean NLL over `num_examples` rows, each counted exactly once."""
  totals = {"correct": 0.0, "nll": 0.0, "count": 0.0}
  for start in range(0, num_examples, batch_size):
    sums = jax.device_get(eval_fn(params, model_state, images_table, labels_table,
                                  jnp.int32(start)))
    for k in totals:
      totals[k] += float(sums[k])
  if int(totals["count"]) != num_examples:
    raise AssertionError(f"evaluated {totals['count']} examples, expected {num_examples}")
  return {"accuracy": totals["correct"] / num_examples, "nll": totals["nll"] / num_examples}


def _mean_metrics(pending: list[dict[str, Any]]) -> dict[str, float]:
  fetched = jax.device_get(pending)
  out = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "nonfinite"}
  out["nonfinite"] = int(sum(int(m["nonfinite"]) for m in fetched))
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, float]:
  """Trains a classifier on noisy labels as `config` says; returns the final metrics.

  Resumes from the latest checkpoint in WORKDIR/checkpoints when there is one.
  `devices` (default: all) are the devices of the data-parallel mesh.
  """
  validate_config(config)
  mesh = mesh_lib.create_mesh(devices)
  mesh_lib.check_divisible(config.batch_size, mesh, "batch_size")
  mesh_lib.check_divisible(config.eval_batch_size, mesh, "eval_batch_size")

  splits = prepare_splits(config)
  n_train = len(splits.train_labels)
  steps_per_epoch = n_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(
        f"batch_size={config.batch_size} is larger than the training set ({n_train} examples)")
  total_steps = config.num_epochs * steps_per_epoch
  logging.info("train %d (noisy), val %d, test %d examples; %d steps/epoch, %d steps",
               n_train, len(splits.val_labels), len(splits.test_labels), steps_per_epoch,
               total_steps)
  logging.info("realised noise rate %.4f", splits.noise_summary["realised_noise_rate"])
  logging.info("empirical transition matrix:\n%s",
               np.array2string(np.asarray(splits.noise_summary["empirical_transition"]),
                               precision=3, suppress_small=True, max_line_width=200))

  tables = {
      "train_images": device_data.put_table(splits.train_images, mesh),
      "train_labels": device_data.put_table(splits.train_labels, mesh),
      "test_images": device_data.put_table(splits.test_images, mesh),
      "test_labels": device_data.put_table(splits.test_labels, mesh),
  }
  has_val = len(splits.val_labels) > 0
  if has_val:
    tables["val_images"] = device_data.put_table(splits.val_images, mesh)
    tables["val_labels"] = device_data.put_table(splits.val_labels, mesh)

  classifier = Classifier(config, build_model(config), build_optimizer(config), mesh,
                          splits.train_images.shape[1:], steps_per_epoch)
  root_key = jax.random.PRNGKey(config.seed)
  data_key = jax.random.fold_in(root_key, 1)
  state = classifier.init_state(jax.random.fold_in(root_key, 0))
  logging.info("parameters: %d",
               sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params)))

  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints)
  state = checkpointer.restore_or(state)
  step = int(jax.device_get(state.step))
  first_step = step

  writer = writers.create_writer(workdir)
  if step == 0:
    writer.write_hparams(_hparams(config))
    writer.write_scalars(0, {"noise/realised_rate": splits.noise_summary["realised_noise_rate"]})

  train_step = jax.jit(classifier.train_step, donate_argnums=0)
  permutation_fn = jax.jit(
      functools.partial(device_data.epoch_permutation, num_examples=n_train),
      out_shardings=classifier.replicated)
  eval_fns = {
      name: jax.jit(functools.partial(classifier.eval_step, num_examples=n))
      for name, n in (("test", len(splits.test_labels)), ("val", len(splits.val_labels)))}

  def run_evaluation(step):
    results = {}
    for prefix, params, model_state in (("", state.params, state.model_state),
                                        ("ema_", state.ema_params, state.ema_model_state)):
      for split in ("test", "val") if has_val else ("test",):
        metrics = evaluate(eval_fns[split], params, model_state, tables[f"{split}_images"],
                           tables[f"{split}_labels"], len(getattr(splits, f"{split}_labels")),
                           config.eval_batch_size)
        for k, v in metrics.items():
          results[f"{prefix}{split}/{k}"] = v
    writer.write_scalars(step, results)
    logging.info("epoch %.2f: %s", step / steps_per_epoch,
                 ", ".join(f"{k}={v:.4f}" for k, v in sorted(results.items())))
    return results

  sync_each_step = mesh_lib.needs_step_sync(mesh)
  reporter = progress.ProgressReporter(total_steps, config.batch_size, writer, first_step=step)
  pending: list[dict[str, Any]] = []
  last_train: dict[str, float] = {}
  eval_results: dict[str, float] = {}
  permutation, permutation_epoch = None, -1
  start_time = time.time()
  stop_at = min(total_steps, step + config.stop_after_steps) if config.stop_after_steps \
      else total_steps

  def check_pending():
    nonlocal pending, last_train
    if not pending:
      return
    summary = _mean_metrics(pending)
    pending = []
    if summary["nonfinite"] or not np.isfinite(summary["loss"]):
      raise NonFiniteLossError(
          f"training loss became {summary['loss']} before step {step}; stopped without "
          f"saving. The last good checkpoint (step {checkpointer.latest_step}) is kept in "
          f"{checkpointer.directory}. Lower optim.learning_rate or check the data.")
    last_train = summary
    return summary

  try:
    while step < stop_at:
      epoch = step // steps_per_epoch
      if epoch != permutation_epoch:
        permutation, permutation_epoch = permutation_fn(data_key, epoch), epoch
        if step == 0 and splits.train_images.ndim == 4:
          preview = jax.jit(classifier.preview_batch, static_argnums=4,
                            out_shardings=classifier.replicated)(
              state.rng, permutation, tables, step, 64)
          writer.write_images(0, {"train/augmented_batch": writers.image_grid(
              jax.device_get(preview))[None]})
      state, metrics = train_step(state, permutation, tables)
      if sync_each_step:
        jax.block_until_ready(metrics)
      step += 1
      pending.append(metrics)
      reporter.tick(step)

      if step % config.log_every_steps == 0 or step == stop_at:
        summary = check_pending()
        rates = reporter.report(step, loss=summary["loss"], epoch=step / steps_per_epoch)
        writer.write_scalars(step, {f"train/{k}": v for k, v in {**summary, **rates}.items()})

      if step % steps_per_epoch == 0 or step == total_steps:
        check_pending()
        with reporter.timed("eval"):
          eval_results = run_evaluation(step)

      preempted = checkpointer.preempted(step)
      if checkpointer.should_save(step) or step == stop_at or preempted:
        check_pending()
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
  if not eval_results:  # resumed at the very end, or stopped before an epoch ended
    eval_results = run_evaluation(step)
  final = {
      **eval_results,
      **{f"train/{k}": v for k, v in last_train.items() if k != "nonfinite"},
      "noise/realised_rate": splits.noise_summary["realised_noise_rate"],
      "step": step,
      "epoch": step / steps_per_epoch,
      "completed": float(step >= total_steps),
      "train_seconds_this_run": time.time() - start_time,
      "steps_this_run": step - first_step,
  }
  writers.write_metrics_json(os.path.join(workdir, "metrics.json"), final)
  writer.close()
  return final


def _hparams(config) -> dict[str, Any]:
  """The config's scalar values as flat `a.b.c -> value` hyper-parameters."""
  def flatten(tree, prefix=""):
    for k, v in tree.items():
      if isinstance(v, dict):
        yield from flatten(v, f"{prefix}{k}.")
      elif isinstance(v, (int, float, bool, str)):
        yield f"{prefix}{k}", v
  return dict(flatten(config.to_dict()))
