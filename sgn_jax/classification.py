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

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from sgn_jax import baselines
from sgn_jax import losses
from sgn_jax import methods as methods_lib
from sgn_jax import models
from sgn_jax import noise
from sgn_jax import train_data
from sgn_jax.data import device_data
from sgn_jax.data import loading
from sgn_jax.data import mixup
from sgn_jax.training import checkpointing
from sgn_jax.training import ema
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import progress
from sgn_jax.training import writers
from sgn_jax.training.train_state import TrainState

ECE_BINS = 15


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the values of a classification config before any data or compute.

  Raises ValueError naming the offending key, its value and what is allowed.
  """
  methods_lib.get_method(config.method, _method_args(config))
  if config.dataset.source == "stream":
    if config.dataset.name not in train_data.STREAMING_DATASETS:
      raise ValueError(
          f"dataset.source='stream' serves {list(train_data.STREAMING_DATASETS)}, not "
          f"dataset.name={config.dataset.name!r}")
    if config.noise.kind != "none":
      raise ValueError(
          f"noise.kind={config.noise.kind!r}: {config.dataset.name} has real label noise; "
          "use noise.kind='none'")
  else:
    loading.check_dataset_config(config.dataset)
  pretrained_path = config.get("model_pretrained")
  if pretrained_path:
    if not config.model.name.startswith("resnet"):
      raise ValueError(f"model_pretrained loads torchvision ResNet weights; model.name="
                       f"{config.model.name!r} is not a ResNet")
    if not os.path.exists(pretrained_path):
      raise FileNotFoundError(
          f"model_pretrained={pretrained_path!r} does not exist; see "
          "sgn_jax.models.pretrained.load_state_dict_file for how to get the weights")
  mixup_alpha = config.input.get("mixup_alpha", 0.0)
  if mixup_alpha < 0:
    raise ValueError(f"input.mixup_alpha={mixup_alpha} must be >= 0 (0: off)")
  if mixup_alpha > 0 and not methods_lib.METHODS[config.method].supports_soft_labels:
    raise ValueError(
        f"input.mixup_alpha={mixup_alpha} needs soft labels, which method={config.method!r} "
        f"cannot use; methods with mixup: "
        f"{sorted(n for n, m in methods_lib.METHODS.items() if m.supports_soft_labels)}")
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
  for key in ("batch_size", "eval_batch_size", "num_epochs", "eval_every_epochs",
              "log_every_steps",
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


def _method_args(config) -> dict[str, Any]:
  args = config.get("method_args")
  return args.to_dict() if args is not None else {}


def build_method(config: ml_collections.ConfigDict) -> methods_lib.Method:
  return methods_lib.get_method(config.method, _method_args(config))


def build_model(config: ml_collections.ConfigDict, method: methods_lib.Method):
  """The backbone of `config.model` with the outputs `method` needs.

  HET replaces the final dense layer by a heteroscedastic head on the
  backbone's features.
  """
  kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
  if method.name == "het":
    backbone = models.get_model(config.model.name, config.num_classes, head=False, **kwargs)
    return models.WithHead(backbone=backbone, head=models.HeteroscedasticHead(
        num_outputs=config.num_classes, temperature=method.args["temperature"],
        num_factors=method.args["num_factors"],
        num_mc_samples=method.args["num_mc_samples"]))
  return models.get_model(config.model.name, method.num_outputs(config.num_classes), **kwargs)


def build_optimizer(config: ml_collections.ConfigDict,
                    steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum (SPEC §2): a constant learning rate, multiplied by
  `optim.lr_decay_factor` at each epoch of `optim.lr_decay_epochs` (Clothing1M: 5)."""
  decay_epochs = tuple(config.optim.get("lr_decay_epochs", ()))
  lr = config.optim.learning_rate
  if decay_epochs:
    factor = config.optim.get("lr_decay_factor", 0.1)
    lr = optax.piecewise_constant_schedule(
        lr, {int(e * steps_per_epoch): factor for e in decay_epochs})
  return optax.sgd(lr, momentum=config.optim.momentum or None,
                   nesterov=bool(config.optim.nesterov))


def _split_variables(variables):
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


class Classifier:
  """The jitted pieces of one classification run: init, train step, eval step."""

  def __init__(self, config, method, model, tx, mesh, input_shape, steps_per_epoch):
    self.config = config
    self.method = method
    self.model = model
    self.tx = tx
    self.mesh = mesh
    self.input_shape = tuple(input_shape)
    self.steps_per_epoch = steps_per_epoch
    self.replicated = mesh_lib.replicated(mesh)

  # ---- initialisation ------------------------------------------------------
  def _init(self, key):
    init_key, dropout_key, het_key, state_key = jax.random.split(key, 4)
    dummy = jnp.zeros((1,) + self.input_shape, jnp.float32)
    variables = self.model.init({"params": init_key, "dropout": dropout_key, "het": het_key},
                                dummy, train=False)
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

  def with_example_state(self, state: TrainState, train_labels: np.ndarray) -> TrainState:
    """`state` with the method's per-example state, row-sharded like the data."""
    tables = self.method.init_example_state(train_labels, self.config.num_classes)
    if not tables:
      return state
    return state.replace(extra={"example_state": {
        k: device_data.put_table(v, self.mesh) for k, v in tables.items()}})

  # ---- training ------------------------------------------------------------
  def _forward(self, params, model_state, images, train, key):
    """Network outputs and the updated model state (BatchNorm statistics when training)."""
    variables = {"params": params, **model_state}
    dropout_key, het_key = jax.random.split(key)
    rngs = {"dropout": dropout_key, "het": het_key}
    if train and model_state:
      logits, new_model_state = self.model.apply(
          variables, images, train=True, mutable=list(model_state), rngs=rngs)
      return logits, dict(new_model_state)
    return self.model.apply(variables, images, train=train, rngs=rngs), model_state

  def _draw_batch(self, rng, step, inputs):
    """The batch of `step` (images, noisy labels, example indices) and the step's key.

    `inputs` is either a streamed global batch ("image", "label", "index",
    already cropped and flipped on the host) or the device-resident tables with
    the epoch's permutation ("permutation", "train_images", "train_labels"), from
    which the batch is gathered and augmented (random crops and flips).
    """
    augment_key, step_key = jax.random.split(jax.random.fold_in(rng, step))
    if "image" in inputs:
      return inputs["image"], inputs["label"], inputs["index"], step_key
    idx = device_data.batch_indices(inputs["permutation"], step, self.steps_per_epoch,
                                    self.config.batch_size)
    images = device_data.gather_rows(inputs["train_images"], idx, self.mesh)
    labels = device_data.gather_rows(inputs["train_labels"], idx, self.mesh)
    if images.ndim == 4:
      images = device_data.random_crop_flip(
          images, augment_key, crop_padding=self.config.input.crop_padding,
          flip=self.config.input.flip)
    return images, labels, idx, step_key

  def _normalize(self, images):
    return device_data.normalize(images, self.config.input.mean, self.config.input.std)

  def train_step(self, state: TrainState, inputs):
    """One SGD step on the batch of `state.step`; returns (state, metrics).

    `inputs`: see `_draw_batch` (from `train_data.InMemoryData` or `StreamingData`).
    """
    cfg, method = self.config, self.method
    images, labels, idx, step_key = self._draw_batch(state.rng, state.step, inputs)
    images = self._normalize(images)
    model_key, ema_key, loss_key, mixup_key = jax.random.split(step_key, 4)
    soft_labels = None
    if cfg.input.get("mixup_alpha", 0.0) > 0:  # on the device, after normalisation
      images, soft_labels = mixup.mixup(
          mixup_key, images, jax.nn.one_hot(labels, cfg.num_classes), cfg.input.mixup_alpha)
    epoch = state.step.astype(jnp.float32) / self.steps_per_epoch

    example_tables = state.extra.get("example_state", {})
    rows = {k: device_data.gather_rows(t, idx, self.mesh) for k, t in example_tables.items()}
    trainable = {k: rows[k] for k in method.trainable_state}
    fixed = {k: v for k, v in rows.items() if k not in trainable}

    ema_outputs, ema_model_state = None, state.ema_model_state
    if method.uses_ema_outputs:  # the EMA net sees the same batch, in training mode
      ema_outputs, ema_model_state = self._forward(
          state.ema_params, state.ema_model_state, images, train=True, key=ema_key)
      ema_outputs = jax.lax.stop_gradient(ema_outputs)

    def loss_fn(params, trainable_rows):
      outputs, new_model_state = self._forward(
          params, state.model_state, images, train=True, key=model_key)
      per_example, new_rows, method_metrics = method.loss(methods_lib.LossInputs(
          outputs=outputs, labels=labels, example_state={**fixed, **trainable_rows},
          ema_outputs=ema_outputs, epoch=epoch, key=loss_key, num_classes=cfg.num_classes,
          soft_labels=soft_labels))
      data_loss = per_example.mean()
      loss = data_loss + cfg.optim.weight_decay * losses.l2_penalty(params)
      return loss, (data_loss, outputs, new_model_state, new_rows, method_metrics)

    (loss, (data_loss, outputs, new_model_state, new_rows, method_metrics)), (
        grads, row_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, trainable)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    # Per-example state: SGD on the trainable rows (gradients of the batch-mean
    # loss), the method's own updates on the others; written back by index.
    new_rows = dict(new_rows)
    for name, lr in method.trainable_state.items():
      new_rows[name] = trainable[name] - lr * row_grads[name]
    new_tables = dict(example_tables)
    for name, value in new_rows.items():
      new_tables[name] = device_data.scatter_rows(example_tables[name], idx, value, self.mesh)

    if not method.uses_ema_outputs:  # no EMA forward pass: average its statistics
      ema_model_state = ema.ema_update(state.ema_model_state, new_model_state, cfg.ema_decay)
    new_state = state.replace(
        step=state.step + 1, params=params, model_state=new_model_state, opt_state=opt_state,
        ema_params=ema.ema_update(state.ema_params, params, cfg.ema_decay),
        ema_model_state=ema_model_state,
        extra={**state.extra, "example_state": new_tables} if new_tables else state.extra)
    predictions = jnp.argmax(method.log_probs(outputs, loss_key), -1)
    metrics = {
        "loss": loss,
        "data_loss": data_loss,
        "noisy_accuracy": jnp.mean(predictions == labels),
        "grad_norm": optax.global_norm(grads),
        "nonfinite": (~jnp.isfinite(loss)).astype(jnp.int32),
        **method_metrics,
    }
    return new_state, metrics

  def preview_batch(self, rng, inputs, step, count: int):
    """The first `count` training images of `step` as the step sees them, augmented,
    before normalisation (for an image grid in TensorBoard)."""
    images, _, _, _ = self._draw_batch(rng, step, inputs)
    return images[:count]

  # ---- evaluation ----------------------------------------------------------
  def predict_probs(self, params, model_state, images):
    """The method's predictive distribution p(c | x), (B, C), for raw (unnormalised)
    images in evaluation mode (HET's Monte-Carlo samples with a fixed key)."""
    key = jax.random.PRNGKey(0)
    outputs, _ = self._forward(params, model_state, self._normalize(images), train=False,
                               key=key)
    return jnp.exp(self.method.log_probs(outputs, key))

  def eval_sums(self, params, model_state, images, labels, mask):
    """Sums over one padded eval batch: correct top-1 and top-5 predictions, NLL,
    count, and the per-bin statistics of the expected calibration error (15 bins)."""
    key = jax.random.PRNGKey(0)  # HET's Monte-Carlo samples: fixed for evaluation
    outputs, _ = self._forward(params, model_state, self._normalize(images), train=False,
                               key=key)
    log_p = self.method.log_probs(outputs, key)
    weight = mask.astype(jnp.float32)
    correct = (jnp.argmax(log_p, -1) == labels).astype(jnp.float32)
    label_log_p = jnp.take_along_axis(log_p, labels[:, None], axis=-1)
    rank = jnp.sum(log_p > label_log_p, axis=-1)  # classes strictly more likely than the label
    counts, confidence, accurate = baselines.ece_bin_statistics(
        jnp.exp(log_p), labels, num_bins=ECE_BINS, mask=mask)
    return {"correct": jnp.sum(correct * weight),
            "correct_top5": jnp.sum((rank < 5).astype(jnp.float32) * weight),
            "nll": -jnp.sum(label_log_p[:, 0] * weight),
            "count": jnp.sum(weight), "ece_counts": counts, "ece_confidence": confidence,
            "ece_correct": accurate}


def load_pretrained(state: TrainState, path: str, sharding) -> TrainState:
  """Net and EMA initialised from a torchvision ResNet state dict (.npz or .pth) at
  `path`; the classifier keeps its fresh initialisation (e.g. 14 Clothing1M classes)."""
  from sgn_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  variables = jax.device_get({"params": state.params, **state.model_state})
  loaded = pretrained.load_torchvision_resnet(
      pretrained.load_state_dict_file(path), variables, head="drop")
  loaded = jax.device_put(loaded, sharding)
  params, model_state = _split_variables(loaded)
  logging.info("Loaded pretrained weights from %s", path)
  return state.replace(params=params, model_state=model_state, ema_params=params,
                       ema_model_state=model_state, opt_state=state.opt_state)


def summarize_eval(totals, num_examples: int, num_classes: int) -> dict[str, float]:
  """Accuracy (and top-5 when K > 5), mean NLL and ECE from summed eval statistics."""
  if int(round(float(totals["count"]))) != num_examples:
    raise AssertionError(f"evaluated {totals['count']} examples, expected {num_examples}")
  ece = baselines.ece_from_bin_statistics(
      totals["ece_counts"], totals["ece_confidence"], totals["ece_correct"])
  out = {"accuracy": float(totals["correct"]) / num_examples,
         "nll": float(totals["nll"]) / num_examples, "ece": float(ece)}
  if num_classes > 5:
    out["top5_accuracy"] = float(totals["correct_top5"]) / num_examples
  return out


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

  data = train_data.create(config, mesh)
  steps_per_epoch = data.steps_per_epoch
  if steps_per_epoch == 0:
    raise ValueError(f"batch_size={config.batch_size} is larger than the training set "
                     f"({data.num_train} examples)")
  total_steps = config.num_epochs * steps_per_epoch
  logging.info("%s; %d steps/epoch, %d steps", data.describe(), steps_per_epoch, total_steps)
  noise_rate = data.noise_summary["realised_noise_rate"]
  logging.info("realised noise rate %.4f", noise_rate)
  if "empirical_transition" in data.noise_summary:
    logging.info("empirical transition matrix:\n%s",
                 np.array2string(np.asarray(data.noise_summary["empirical_transition"]),
                                 precision=3, suppress_small=True, max_line_width=200))

  method = build_method(config)
  classifier = Classifier(config, method, build_model(config, method),
                          build_optimizer(config, steps_per_epoch), mesh, data.input_shape,
                          steps_per_epoch)
  root_key = jax.random.PRNGKey(config.seed)
  state = classifier.init_state(jax.random.fold_in(root_key, 0))
  if config.get("model_pretrained"):
    state = load_pretrained(state, config.model_pretrained, classifier.replicated)
  state = classifier.with_example_state(state, data.train_labels)
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
    writer.write_scalars(0, {"noise/realised_rate": noise_rate})

  train_step = jax.jit(classifier.train_step, donate_argnums=0)

  def run_evaluation(step):
    results = {}
    for prefix, params, model_state in (("", state.params, state.model_state),
                                        ("ema_", state.ema_params, state.ema_model_state)):
      for split in data.eval_splits:
        totals, n = data.evaluate(split, classifier.eval_sums, params, model_state)
        for k, v in summarize_eval(totals, n, data.num_classes).items():
          results[f"{prefix}{split}/{k}"] = v
    writer.write_scalars(step, results)
    logging.info("epoch %.2f: %s", step / steps_per_epoch,
                 ", ".join(f"{k}={v:.4f}" for k, v in sorted(results.items())))
    return results

  sync_each_step = mesh_lib.needs_step_sync(mesh)
  eval_every = config.eval_every_epochs * steps_per_epoch
  reporter = progress.ProgressReporter(total_steps, config.batch_size, writer, first_step=step)
  pending: list[dict[str, Any]] = []
  last_train: dict[str, float] = {}
  eval_results: dict[str, float] = {}
  start_time = time.time()
  stop_at = min(total_steps, step + config.stop_after_steps) if config.stop_after_steps \
      else total_steps

  def check_pending(clear: bool = True):
    """Mean of the metrics since the last log, checked for NaN; `clear` starts a new
    window (logging does; evaluations and checkpoints only check)."""
    nonlocal pending, last_train
    if not pending:
      return
    summary = _mean_metrics(pending)
    if clear:
      pending = []
    if summary["nonfinite"] or not np.isfinite(summary["loss"]):
      last = checkpointer.latest_step
      kept = (f"The last good checkpoint (step {last}) is kept in {checkpointer.directory}."
              if last is not None else "No checkpoint had been saved yet.")
      raise NonFiniteLossError(
          f"training loss became {summary['loss']} before step {step}; stopped without "
          f"saving. {kept} Lower optim.learning_rate or check the data.")
    last_train = summary
    return summary

  try:
    while step < stop_at:
      inputs = data.train_inputs(step)
      if step == 0 and len(data.input_shape) == 3:
        preview = jax.jit(classifier.preview_batch, static_argnums=3,
                          out_shardings=classifier.replicated)(state.rng, inputs, step, 64)
        writer.write_images(0, {"train/augmented_batch": writers.image_grid(
            jax.device_get(preview))[None]})
      state, metrics = train_step(state, inputs)
      if sync_each_step:
        jax.block_until_ready(metrics)
      step += 1
      pending.append(metrics)
      reporter.tick(step)

      if step % config.log_every_steps == 0 or step == stop_at:
        summary = check_pending()
        rates = reporter.report(step, loss=summary["loss"], epoch=step / steps_per_epoch)
        writer.write_scalars(step, {f"train/{k}": v for k, v in {**summary, **rates}.items()})

      if step % eval_every == 0 or step == total_steps:
        check_pending(clear=False)
        with reporter.timed("eval"):
          eval_results = run_evaluation(step)

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
  if not eval_results:  # resumed at the very end, or stopped before an epoch ended
    eval_results = run_evaluation(step)
  # The reported prediction: the EMA net's for SGN with EMA prediction (EP), else the net's.
  reported = "ema_test" if method.args.get("ema_prediction") else "test"
  final = {
      **eval_results,
      "final/test_accuracy": eval_results[f"{reported}/accuracy"],
      **{f"train/{k}": v for k, v in last_train.items() if k != "nonfinite"},
      "noise/realised_rate": noise_rate,
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
