"""Classification on noisily labelled data as pure functions: state, train step, evaluation.

    model = classification.build_model("cnn", num_classes=10, method=method, batch_norm=True)
    tx = classification.sgd(0.01)
    state = classification.init_state(model, tx, (28, 28, 1), jax.random.PRNGKey(0))
    step = classification.make_train_step(model, method, tx, num_classes=10,
                                          steps_per_epoch=468, ema_decay=0.999,
                                          weight_decay=2.5e-4, preprocess=normalize)
    state, metrics = jax.jit(step)(state, {"image": x, "label": y}, key)

`train(settings, workdir)` runs a whole classification run from a frozen
`Settings` (data, noise, model, method, optimizer, schedule, loop) through the
one training loop: the task `sgn_jax.tasks.classify` builds the settings from
its config; CAS (`lnrd.metrics.cas`) builds them itself.

`make_train_step` builds one train step `step(state, batch, key) -> (state,
metrics)` from explicit pieces: a Flax module, a method (`sgn_jax.methods`: the
loss, the network outputs it needs, its per-example state), an optax
transformation and the EMA decay (a number or a `step -> decay` schedule,
`sgn_jax.training.ema`). The forward pass, loss, gradients, update, per-example
state update and EMA update happen in that one function, which jits, shards
(`NamedSharding` batches, replicated state) and donates as it is. The batch is
{"image", "label"} and, for methods with per-example state, "index" (rows of the
tables in `state.extra["example_state"]`). Nothing here reads a config: the task
`sgn_jax.tasks.classify` does, once.

BatchNorm statistics under jit with a globally sharded batch are global (synced
BN), so a run gives the same result on 1 or 8 devices up to float rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from sgn_jax import baselines
from sgn_jax import errors
from sgn_jax import losses
from sgn_jax import methods as methods_lib
from sgn_jax import models
from sgn_jax import noise as noise_lib
from sgn_jax import runs
from sgn_jax import train_data
from sgn_jax.data import device_data
from sgn_jax.data import loading
from sgn_jax.data import mixup
from sgn_jax.training import ema
from sgn_jax.training import loop
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers
from sgn_jax.training.train_state import TrainState
from sgn_jax.training.train_state import init_replicated
from sgn_jax.training.train_state import num_params

ECE_BINS = 15
NonFiniteLossError = loop.NonFiniteLossError  # one error for every training loop


def build_model(name: str, num_classes: int, method: methods_lib.Method,
                **model_kwargs) -> nn.Module:
  """The backbone `name` (`sgn_jax.models.MODELS`) with the outputs `method` needs.

  HET replaces the final dense layer by a heteroscedastic head on the
  backbone's features.
  """
  if method.name == "het":
    backbone = models.get_model(name, num_classes, head=False, **model_kwargs)
    return models.WithHead(backbone=backbone, head=models.HeteroscedasticHead(
        num_outputs=num_classes, temperature=method.args["temperature"],
        num_factors=method.args["num_factors"],
        num_mc_samples=method.args["num_mc_samples"]))
  return models.get_model(name, method.num_outputs(num_classes), **model_kwargs)


def learning_rate_schedule(learning_rate: float, *, decay_epochs=(), decay_factor: float = 0.1,
                           warmup_epochs: float = 0.0, steps_per_epoch: int = 1):
  """The learning rate of each step (a number when it is constant).

  A constant `learning_rate`, multiplied by `decay_factor` at each epoch of
  `decay_epochs` (Clothing1M: 5); with `warmup_epochs` > 0 the first
  W = round(warmup_epochs * steps_per_epoch) steps instead ramp linearly from 0,
  lr(t) = learning_rate * t / W for t < W (t counts updates from 0), then the
  schedule above, its decay epochs counted from the start of training (Uncertainty
  Baselines' `AddWarmupDecaySchedule`, which the SGN authors' WebVision run wraps
  around its constant rate).
  """
  lr = learning_rate
  if decay_epochs:
    lr = optax.piecewise_constant_schedule(
        learning_rate, {int(e * steps_per_epoch): decay_factor for e in decay_epochs})
  warmup_steps = int(round(warmup_epochs * steps_per_epoch))
  if warmup_steps <= 0:
    return lr
  after = lr if callable(lr) else (lambda step: lr)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return jnp.where(step < warmup_steps, learning_rate * step / warmup_steps, after(step))
  return schedule


def sgd(learning_rate: float, *, momentum: float = 0.9, nesterov: bool = True,
        decay_epochs=(), decay_factor: float = 0.1, warmup_epochs: float = 0.0,
        steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum (SPEC §2) on `learning_rate_schedule`: a constant
  learning rate, multiplied by `decay_factor` at each epoch of `decay_epochs`, after a
  linear warm-up from 0 over `warmup_epochs` (0: none)."""
  lr = learning_rate_schedule(learning_rate, decay_epochs=decay_epochs,
                              decay_factor=decay_factor, warmup_epochs=warmup_epochs,
                              steps_per_epoch=steps_per_epoch)
  return optax.sgd(lr, momentum=momentum or None, nesterov=bool(nesterov))


def _split_variables(variables):
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


def init_state(model: nn.Module, tx: optax.GradientTransformation, input_shape, key,
               mesh=None) -> TrainState:
  """The train state of `model` for inputs of `input_shape` (no batch): parameters,
  model state (BatchNorm statistics), optimizer state, EMA copies and the base key;
  born replicated on `mesh` when given (`jax.eval_shape`, then one jitted init)."""
  input_shape = tuple(input_shape)

  def init(key):
    init_key, dropout_key, het_key, state_key = jax.random.split(key, 4)
    dummy = jnp.zeros((1,) + input_shape, jnp.float32)
    variables = model.init({"params": init_key, "dropout": dropout_key, "het": het_key},
                           dummy, train=False)
    params, model_state = _split_variables(variables)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
        opt_state=tx.init(params), ema_params=params, ema_model_state=model_state,
        rng=state_key)
  return init_replicated(init, key, mesh)


def with_example_state(state: TrainState, method: methods_lib.Method, train_labels,
                       num_classes: int, mesh=None) -> TrainState:
  """`state` with the method's per-example state, row-sharded like the data on `mesh`."""
  tables = method.init_example_state(np.asarray(train_labels), num_classes)
  if not tables:
    return state
  put = (lambda v: device_data.put_table(v, mesh)) if mesh is not None else jnp.asarray
  return state.replace(extra={"example_state": {k: put(v) for k, v in tables.items()}})


def forward(model: nn.Module, params, model_state, images, train: bool, key):
  """Network outputs and the updated model state (BatchNorm statistics when training)."""
  variables = {"params": params, **model_state}
  dropout_key, het_key = jax.random.split(key)
  rngs = {"dropout": dropout_key, "het": het_key}
  if train and model_state:
    outputs, new_model_state = model.apply(
        variables, images, train=True, mutable=list(model_state), rngs=rngs)
    return outputs, dict(new_model_state)
  return model.apply(variables, images, train=train, rngs=rngs), model_state


def check_takes_train(model: nn.Module) -> None:
  """TypeError naming the module when its `__call__` has no `train` argument (and no
  **kwargs): the classification step calls it as `model(x, train=...)`."""
  try:
    params = inspect.signature(type(model).__call__).parameters
  except (TypeError, ValueError):  # no signature to read: let the call decide
    return
  if "train" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD
                              for p in params.values()):
    return
  raise TypeError(
      f"{type(model).__name__}.__call__{inspect.signature(type(model).__call__)} has no "
      "`train` argument, but the classification step calls the model as model(x, "
      "train=True/False): add `train: bool = False` to its __call__ (and pass it to "
      "BatchNorm(use_running_average=not train) and Dropout(deterministic=not train))")


def _identity(images):
  return images.astype(jnp.float32)


def make_train_step(model: nn.Module, method: methods_lib.Method,
                    tx: optax.GradientTransformation, *, num_classes: int,
                    steps_per_epoch: int, ema_decay: float | Callable = 0.9999,
                    weight_decay: float = 0.0, l2_params: str = "all",
                    preprocess: Callable | None = None, mixup_alpha: float = 0.0,
                    mesh=None) -> Callable:
  """`step(state, batch, key) -> (state, metrics)`: one update of net, EMA and
  per-example state on `batch` = {"image", "label"[, "index"]}.

  Args:
    model: the Flax module (`build_model`), called as `model(x, train=...)`.
    method: the loss, the outputs it needs, its per-example state (`sgn_jax.methods`).
    tx: the optax transformation of the parameters.
    num_classes: K.
    steps_per_epoch: the continuous epoch step / steps_per_epoch drives methods
      with epoch schedules (SGN's label correction, ELR, NAL).
    ema_decay: the EMA's decay, a number or a `step -> decay` schedule
      (`sgn_jax.training.ema`).
    weight_decay: L2 penalty weight_decay * sum(w^2) over the weights `l2_params` names.
    l2_params: "all" (every parameter) or "no_batchnorm" (conv and dense kernels and
      biases; BatchNorm scales and biases excluded), see `losses.l2_mask`.
    preprocess: raw images -> network inputs (e.g. `device_data.normalize` with the
      dataset's mean/std); default: cast to float32.
    mixup_alpha: > 0: mixup on the device after preprocessing (soft labels).
    mesh: the mesh the per-example tables are row-sharded on (None: plain arrays).

  Raises:
    TypeError: `model` cannot be called with `train=` (add `train: bool = False` to
      its `__call__`; BatchNorm and dropout follow it).
  """
  check_takes_train(model)
  if l2_params not in losses.L2_PARAMS:
    raise ValueError(f"l2_params={l2_params!r} is not known; allowed: {list(losses.L2_PARAMS)}")
  preprocess = preprocess or _identity
  decay_fn = ema.as_schedule(ema_decay)

  def step(state: TrainState, batch, key):
    l2_mask = losses.l2_mask(state.params, state.model_state, l2_params)  # at trace time
    images, labels = preprocess(batch["image"]), batch["label"]
    idx = batch.get("index")
    model_key, ema_key, loss_key, mixup_key = jax.random.split(key, 4)
    soft_labels = None
    if mixup_alpha > 0:
      images, soft_labels = mixup.mixup(
          mixup_key, images, jax.nn.one_hot(labels, num_classes), mixup_alpha)
    epoch = state.step.astype(jnp.float32) / steps_per_epoch

    example_tables = state.extra.get("example_state", {})
    if example_tables and idx is None:
      raise ValueError(f"method {method.name!r} keeps per-example state: the batch needs "
                       "'index' (the rows of its examples)")
    rows = {k: device_data.gather_rows(t, idx, mesh) for k, t in example_tables.items()}
    trainable = {k: rows[k] for k in method.trainable_state}
    fixed = {k: v for k, v in rows.items() if k not in trainable}

    ema_outputs, ema_model_state = None, state.ema_model_state
    if method.uses_ema_outputs:  # the EMA net sees the same batch, in training mode
      ema_outputs, ema_model_state = forward(
          model, state.ema_params, state.ema_model_state, images, train=True, key=ema_key)
      ema_outputs = jax.lax.stop_gradient(ema_outputs)

    def loss_fn(params, trainable_rows):
      outputs, new_model_state = forward(
          model, params, state.model_state, images, train=True, key=model_key)
      per_example, new_rows, method_metrics = method.loss(methods_lib.LossInputs(
          outputs=outputs, labels=labels, example_state={**fixed, **trainable_rows},
          ema_outputs=ema_outputs, epoch=epoch, key=loss_key, num_classes=num_classes,
          soft_labels=soft_labels))
      data_loss = per_example.mean()
      loss = data_loss + weight_decay * losses.l2_penalty(params, l2_mask)
      return loss, (data_loss, outputs, new_model_state, new_rows, method_metrics)

    (loss, (data_loss, outputs, new_model_state, new_rows, method_metrics)), (
        grads, row_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, trainable)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    # Per-example state: SGD on the trainable rows (gradients of the batch-mean
    # loss), the method's own updates on the others; written back by index.
    new_rows = dict(new_rows)
    for name, lr in method.trainable_state.items():
      new_rows[name] = trainable[name] - lr * row_grads[name]
    new_tables = dict(example_tables)
    for name, value in new_rows.items():
      new_tables[name] = device_data.scatter_rows(example_tables[name], idx, value, mesh)

    decay = decay_fn(state.step)
    if not method.uses_ema_outputs:  # no EMA forward pass: average its statistics
      ema_model_state = ema.ema_update(state.ema_model_state, new_model_state, decay)
    new_state = state.replace(
        step=state.step + 1, params=params, model_state=new_model_state, opt_state=opt_state,
        ema_params=ema.ema_update(state.ema_params, params, decay),
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
  return step


def _eval_log_probs(model: nn.Module, method: methods_lib.Method,
                    preprocess: Callable | None) -> Callable:
  """`(params, model_state, images) -> (B, C)` log p(c | x) in evaluation mode (HET's
  Monte-Carlo samples with a fixed key)."""
  preprocess = preprocess or _identity

  def log_probs(params, model_state, images):
    key = jax.random.PRNGKey(0)
    outputs, _ = forward(model, params, model_state, preprocess(images), train=False, key=key)
    return method.log_probs(outputs, key)
  return log_probs


def make_predict_probs(model: nn.Module, method: methods_lib.Method,
                       preprocess: Callable | None = None) -> Callable:
  """`predict_probs(params, model_state, images) -> (B, C)`: the method's predictive
  distribution p(c | x) of raw images in evaluation mode (HET's Monte-Carlo samples
  with a fixed key)."""
  log_probs = _eval_log_probs(model, method, preprocess)
  return lambda params, model_state, images: jnp.exp(log_probs(params, model_state, images))


def make_eval_sums(model: nn.Module, method: methods_lib.Method,
                   preprocess: Callable | None = None) -> Callable:
  """`eval_sums(params, model_state, images, labels, mask)`: sums over one padded
  eval batch of correct top-1 and top-5 predictions, NLL, count, and the per-bin
  statistics of the expected calibration error (15 bins); see `summarize_eval`."""
  log_probs = _eval_log_probs(model, method, preprocess)

  def eval_sums(params, model_state, images, labels, mask):
    log_p = log_probs(params, model_state, images)
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
  return eval_sums


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


def load_pretrained(state: TrainState, path: str, sharding) -> TrainState:
  """Net and EMA initialised from a torchvision ResNet state dict (.npz or .pth) at
  `path`; the classifier keeps its fresh initialisation (e.g. 14 Clothing1M classes)."""
  from sgn_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  variables = jax.device_get({"params": state.params, **state.model_state})
  loaded = pretrained.load_pretrained_variables(path, variables, head="drop")
  loaded = jax.device_put(loaded, sharding)
  params, model_state = _split_variables(loaded)
  logging.info("Loaded pretrained weights from %s", path)
  return state.replace(params=params, model_state=model_state, ema_params=params,
                       ema_model_state=model_state, opt_state=state.opt_state)


def _reported_net(state: TrainState, ema_net: bool):
  """(params, model_state) of the reported net: the EMA's or the net's."""
  if ema_net:
    return state.ema_params, state.ema_model_state
  return state.params, state.model_state


def _selected_copier(mesh) -> Callable:
  """`keep(params, model_state, value, step)`: what model selection keeps of an
  evaluation, `{"params", "model_state", "value", "step"}`, as fresh copies (the net's
  buffers are donated to the next train step) replicated on `mesh`."""
  def keep(params, model_state, value, step):
    return {"params": jax.tree.map(jnp.copy, params),
            "model_state": jax.tree.map(jnp.copy, model_state),
            "value": jnp.asarray(value, jnp.float32), "step": jnp.asarray(step, jnp.int32)}
  return jax.jit(keep, out_shardings=mesh_lib.replicated(mesh))


def preview_batch(draw_batch: Callable, rng, inputs, step, count: int):
  """The first `count` training images of `step` as the step sees them, augmented,
  before normalisation (for an image grid in TensorBoard)."""
  draw_key, _ = loop.step_keys(rng, step)  # the key the train step draws with
  return draw_batch(inputs, step, draw_key)["image"][:count]


# ---- a whole run ------------------------------------------------------------------

# Metrics a run can select on: "max" (higher is better) or "min".
SELECT_METRICS = {"accuracy": "max", "top5_accuracy": "max", "nll": "min", "ece": "min"}


@dataclasses.dataclass(frozen=True)
class Selection:
  """Model selection ("early stopping"): which evaluation of the reported net is kept.

  split: the evaluation split selected on ("" = off): "val" (the noisy validation
    split of in-memory datasets; Clothing1M's clean val set) or any other evaluated
    split, e.g. "test" (mini-WebVision's WebVision val set, the one the SGN authors
    select on and report).
  metric: `SELECT_METRICS` of the reported net (the EMA net for methods that predict
    with it, else the net) on `split`; the first evaluation with the best value wins
    (a later one must be strictly better, as the authors' `best_val < value`).
  after_epochs: only evaluations at epoch step / steps_per_epoch > after_epochs are
    candidates (the authors' WebVision `epoch > 75` on a 0-based epoch index: 76).
  """
  split: str = ""
  metric: str = "accuracy"
  after_epochs: float = 0.0

  def __post_init__(self):
    if self.metric not in SELECT_METRICS:
      raise ValueError(f"select.metric={self.metric!r} is not known; allowed: "
                       f"{sorted(SELECT_METRICS)}")
    if not self.after_epochs >= 0:
      raise ValueError(f"select.after_epochs={self.after_epochs!r} must be >= 0")

  def better(self, value: float, best: float) -> bool:
    return value > best if SELECT_METRICS[self.metric] == "max" else value < best


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything a classification run is (`train`), as plain values.

  Data: `dataset` (`sgn_jax.data.loading.DatasetSpec`), `noise`
  (`sgn_jax.noise.NoiseSpec`), `val_fraction` (noisy validation split), `seed`
  (parameters, noisy labels, data order). Model: `model` (a `sgn_jax.models`
  name) with `model_kwargs`, `method` with `method_args` (`sgn_jax.methods`),
  `pretrained` (torchvision ResNet weights). Input: `mean`/`std` normalisation,
  on-device `crop_padding`/`flip`, `mixup_alpha`. Optimisation: SGD (`sgd`) with
  `learning_rate`, `momentum`, `nesterov`, `lr_decay_epochs`/`lr_decay_factor`, a
  linear warm-up over `warmup_epochs`, L2 `weight_decay` * sum(w^2) over `l2_params`
  ("all" | "no_batchnorm", `losses.l2_mask`); `batch_size`, `num_epochs`, `ema_decay`
  (fixed, as SGN's authors, or with `ema_warmup` min(decay, (1 + t) / (10 + t)) for
  short runs). Evaluation: `eval_batch_size`, every `eval_every_epochs`; `select`:
  model selection (`Selection`). `loop`: log/checkpoint/stop.
  """
  dataset: loading.DatasetSpec
  num_classes: int
  model: str
  mean: tuple
  std: tuple
  noise: noise_lib.NoiseSpec = noise_lib.NoiseSpec()
  val_fraction: float = 0.0
  seed: int = 0
  model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  method: str = "ce"
  method_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  pretrained: str = ""
  crop_padding: int = 0
  flip: bool = False
  mixup_alpha: float = 0.0
  learning_rate: float = 0.01
  momentum: float = 0.9
  nesterov: bool = True
  weight_decay: float = 0.0
  l2_params: str = "all"
  lr_decay_epochs: tuple = ()
  lr_decay_factor: float = 0.1
  warmup_epochs: float = 0.0
  batch_size: int = 128
  num_epochs: int = 1
  ema_decay: float = 0.9999
  ema_warmup: bool = False
  eval_batch_size: int = 1000
  eval_every_epochs: int = 1
  select: Selection = Selection()
  loop: loop.LoopSettings = loop.LoopSettings()

  def get_method(self) -> methods_lib.Method:
    return methods_lib.get_method(self.method, dict(self.method_args))

  def record(self, data) -> dict[str, Any]:
    """The run record (`sgn_jax.runs`): the facts of the run and what rebuilds its model."""
    splits = getattr(data, "splits", None)
    transition = None if splits is None else splits.transition
    return dict(
        task="classify", method=self.method, method_args=dict(self.get_method().args),
        model=dict(name=self.model, **dict(self.model_kwargs)),
        input=dict(mean=list(self.mean), std=list(self.std)),
        dataset=dataclasses.asdict(self.dataset), noise=dataclasses.asdict(self.noise),
        seed=self.seed, num_classes=self.num_classes, input_shape=list(data.input_shape),
        val_fraction=self.val_fraction, transition=transition,
        eval_batch_size=self.eval_batch_size, labels_checksum=runs.labels_checksum(
            data.train_labels))


def normalizer(mean, std) -> Callable:
  """uint8 (or float) images -> (x/255 - mean) / std per channel (`device_data.normalize`)."""
  return functools.partial(device_data.normalize, mean=tuple(mean), std=tuple(std))


def train(settings: Settings, workdir: str, devices=None,
          config: Mapping[str, Any] | None = None,
          allowed_changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Trains a classifier on noisy labels as `settings` say; returns the final metrics.

  Resumes from the latest checkpoint in WORKDIR/checkpoints when there is one.
  `devices` (default: all) are the devices of the data-parallel mesh; `config`
  (a plain dict) is written to WORKDIR/config.json beside the run record, and
  `allowed_changes` (from `sgn_jax.runs.check_resume`) into its resume history.
  Problems with the data (missing, malformed, labels that differ from a resumed
  run's) are `sgn_jax.errors.UserError`s raised before any compute.
  Every `eval_every_epochs` the net and its EMA are evaluated on the clean test
  set (and the noisy validation split when there is one); metrics.json holds the
  last evaluation, `final/test_accuracy` (the EMA net's for SGN with EMA
  prediction, else the net's), the last train metrics and the run's progress.
  With model selection (`settings.select`, `Selection`) it also holds the selected
  evaluation of the reported net: `selected/step`, `selected/epoch`,
  `selected/<split>/<metric>` for every evaluated split and `selected/test_accuracy`
  (`selected/step` is -1 while no evaluation was a candidate). The selected net itself
  (params, model_state), its step and value are kept in the train state,
  `extra["selected"]`, so every checkpoint holds it and a resumed run goes on
  selecting exactly as an uninterrupted one (`sgn_jax.runs.Run.restore()`).
  """
  s = settings
  with errors.user_input():
    mesh = mesh_lib.create_mesh(devices)
    mesh_lib.check_divisible(s.batch_size, mesh, "batch_size")
    mesh_lib.check_divisible(s.eval_batch_size, mesh, "eval_batch_size")
    method = s.get_method()
    data = train_data.create(s.dataset, s.noise, mesh, batch_size=s.batch_size,
                             eval_batch_size=s.eval_batch_size, seed=s.seed,
                             val_fraction=s.val_fraction, num_classes=s.num_classes)
    if s.select.split and s.select.split not in data.eval_splits:
      raise ValueError(f"select.split={s.select.split!r} is not evaluated in this run; "
                       f"evaluated splits: {list(data.eval_splits)}")
    runs.start_run(workdir, config if config is not None else dataclasses.asdict(s),
                   s.record(data), allowed_changes, after_restore=True)
  steps_per_epoch = data.steps_per_epoch
  total_steps = s.num_epochs * steps_per_epoch
  logging.info("%s; %d steps/epoch, %d steps", data.describe(), steps_per_epoch, total_steps)
  noise_rate = data.noise_summary["realised_noise_rate"]
  logging.info("realised noise rate %.4f", noise_rate)
  if "empirical_transition" in data.noise_summary:
    logging.info("empirical transition matrix:\n%s",
                 np.array2string(np.asarray(data.noise_summary["empirical_transition"]),
                                 precision=3, suppress_small=True, max_line_width=200))

  model = build_model(s.model, s.num_classes, method, **dict(s.model_kwargs))
  tx = sgd(s.learning_rate, momentum=s.momentum, nesterov=s.nesterov,
           decay_epochs=tuple(s.lr_decay_epochs), decay_factor=s.lr_decay_factor,
           warmup_epochs=s.warmup_epochs, steps_per_epoch=steps_per_epoch)
  preprocess = normalizer(s.mean, s.std)
  state = init_state(model, tx, data.input_shape,
                     jax.random.fold_in(jax.random.PRNGKey(s.seed), 0), mesh)
  if s.pretrained:
    state = load_pretrained(state, s.pretrained, mesh_lib.replicated(mesh))
  state = with_example_state(state, method, data.train_labels, s.num_classes, mesh)
  logging.info("parameters: %d", num_params(state.params))
  ema_net = bool(method.args.get("ema_prediction"))  # the reported net is the EMA
  select = s.select
  if select.split:
    keep_selected = _selected_copier(mesh)
    state = state.replace(extra={**state.extra, "selected": keep_selected(
        *_reported_net(state, ema_net), -1.0, -1)})

  ema_decay = ema.warmup_decay(s.ema_decay) if s.ema_warmup else s.ema_decay
  if method.args.get("ema_prediction"):
    ema.warn_if_cold(
        ema_decay, total_steps,
        uses=(f"final/test_accuracy will be the EMA network's (method {s.method} predicts with "
              f"its EMA; ema_decay={s.ema_decay:g}{' with warm-up' if s.ema_warmup else ''})"),
        fix="set ema_warmup=True, lower ema_decay or train longer (num_epochs)")
  train_step = make_train_step(
      model, method, tx, num_classes=s.num_classes, steps_per_epoch=steps_per_epoch,
      ema_decay=ema_decay, weight_decay=s.weight_decay, l2_params=s.l2_params,
      preprocess=preprocess, mixup_alpha=s.mixup_alpha, mesh=mesh)
  drawer = data.drawer(crop_padding=s.crop_padding, flip=s.flip)
  eval_sums = make_eval_sums(model, method, preprocess)
  writer = writers.create_writer(workdir)
  eval_results: dict[str, float] = {}
  eval_step = [-1]  # the step of eval_results

  def evaluate(step, state):
    results = {}
    for prefix, params, model_state in (("", state.params, state.model_state),
                                        ("ema_", state.ema_params, state.ema_model_state)):
      for split in data.eval_splits:
        totals, n = data.evaluate(split, eval_sums, params, model_state)
        for k, v in summarize_eval(totals, n, data.num_classes).items():
          results[f"{prefix}{split}/{k}"] = v
    writer.write_scalars(step, results)
    logging.info("epoch %.2f: %s", step / steps_per_epoch,
                 ", ".join(f"{k}={v:.4f}" for k, v in sorted(results.items())))
    eval_results.clear()
    eval_results.update(results)
    eval_step[0] = step

  def evaluate_and_select(step, state):
    """The periodic evaluation; with model selection the state whose
    extra["selected"] holds the reported net when this evaluation is the best so far."""
    evaluate(step, state)
    if not select.split or not step / steps_per_epoch > select.after_epochs:
      return None
    value = eval_results[f"{'ema_' if ema_net else ''}{select.split}/{select.metric}"]
    kept = state.extra["selected"]
    best, best_step = float(jax.device_get(kept["value"])), int(jax.device_get(kept["step"]))
    if not np.isfinite(value) or (best_step >= 0 and not select.better(value, best)):
      return None
    logging.info("selected the evaluation at epoch %.2f: %s/%s=%.4f of the %s (before: %s)",
                 step / steps_per_epoch, select.split, select.metric, value,
                 "EMA net" if ema_net else "net",
                 f"{best:.4f} at step {best_step}" if best_step >= 0 else "none")
    return state.replace(extra={**state.extra, "selected": keep_selected(
        *_reported_net(state, ema_net), value, step)})

  def selected_metrics(state) -> dict[str, float]:
    kept = state.extra["selected"]
    step = int(jax.device_get(kept["step"]))
    out = {"selected/step": step}
    if step < 0:
      logging.warning("select.split=%r: no evaluation after epoch %g yet, nothing selected",
                      select.split, select.after_epochs)
      return out
    prefix = "ema_" if ema_net else ""
    if step == eval_step[0]:  # the last evaluation
      results = {k[len(prefix):]: v for k, v in eval_results.items()
                 if k.startswith(prefix) and (prefix or not k.startswith("ema_"))}
    else:  # the kept copy, evaluated again (the same numbers as at its step)
      results = {}
      for split in data.eval_splits:
        totals, n = data.evaluate(split, eval_sums, kept["params"], kept["model_state"])
        for k, v in summarize_eval(totals, n, data.num_classes).items():
          results[f"{split}/{k}"] = v
    out.update({f"selected/{k}": v for k, v in results.items()})
    out["selected/epoch"] = step / steps_per_epoch
    out["selected/test_accuracy"] = results["test/accuracy"]
    logging.info("selected (%s %s of the %s, epoch %.2f): %s", select.split, select.metric,
                 "EMA net" if ema_net else "net", step / steps_per_epoch,
                 ", ".join(f"{k}={v:.4f}" for k, v in sorted(results.items())))
    return out

  def at_start(state, inputs):
    writer.write_hparams(writers.flatten_scalars(
        config if config is not None else {"method": s.method, "seed": s.seed}))
    writer.write_scalars(0, {"noise/realised_rate": noise_rate})
    if drawer is not None and len(data.input_shape) == 3:
      preview = jax.jit(functools.partial(preview_batch, drawer), static_argnums=3,
                        out_shardings=mesh_lib.replicated(mesh))(state.rng, inputs, 0, 64)
      writer.write_images(0, {"train/augmented_batch": writers.image_grid(
          jax.device_get(preview))[None]})

  result = loop.run(
      state, loop.jit_step(train_step, drawer), data.train_inputs, total_steps=total_steps,
      workdir=workdir, settings=s.loop, mesh=mesh, writer=writer, items_per_step=s.batch_size,
      periodic=(loop.Periodic(s.eval_every_epochs * steps_per_epoch, evaluate_and_select,
                              name="eval"),),
      log_scalars=lambda step: {"epoch": step / steps_per_epoch}, at_start=at_start)
  if not eval_results:  # resumed at the very end, or stopped before an epoch ended
    evaluate(result.step, result.state)  # reported, not a candidate for selection
  reported = "ema_test" if ema_net else "test"
  final = {
      **eval_results,
      "final/test_accuracy": eval_results[f"{reported}/accuracy"],
      **(selected_metrics(result.state) if select.split else {}),
      **result.summary(),
      "noise/realised_rate": noise_rate,
      "ema/init_weight": ema.init_weight(ema_decay, result.step),
      "epoch": result.step / steps_per_epoch,
  }
  writers.write_metrics_json(os.path.join(workdir, "metrics.json"), final)
  writer.close()
  return final
