"""`task="classify"`: SGN and the nine baselines on noisily labelled data.

    python main.py --config=configs/mnist_sym.py:method=sgn --workdir=WORKDIR

Reads the config (and only here): validates it before any data or compute and
turns it into `sgn_jax.classification.Settings`; `classification.train` builds
the data (`sgn_jax.train_data`), the model, method, optimizer and train step,
and runs the one training loop (`sgn_jax.training.loop`). Every
`eval_every_epochs` the net and its EMA are evaluated on the clean test set (and
on the noisy validation split when there is one). Writes WORKDIR/config.json and
run.json (`sgn_jax.runs`), checkpoints, TensorBoard summaries, metrics.jsonl
and, at the end, metrics.json.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from sgn_jax import classification
from sgn_jax import errors
from sgn_jax import losses
from sgn_jax import methods as methods_lib
from sgn_jax import models
from sgn_jax import noise
from sgn_jax import runs
from sgn_jax import train_data
from sgn_jax.data import loading
from sgn_jax.tasks import common
from sgn_jax.training import loop

NonFiniteLossError = loop.NonFiniteLossError
# Keys of a classification run that may change on a resume (beyond common.MAY_CHANGE).
MAY_CHANGE = ("num_epochs", "eval_batch_size", "eval_every_epochs")


def method_of(config: ml_collections.ConfigDict) -> methods_lib.Method:
  """The method of `config.method` with `config.method_args`."""
  if config.method not in methods_lib.METHODS:
    raise common.method_choice_error(
        config.method, "classification", methods_lib.METHODS,
        "dsm and tdsm train diffusion models with their own config; "
        if config.method in ("dsm", "tdsm") else "")
  args = config.get("method_args")
  return methods_lib.get_method(config.method, args.to_dict() if args is not None else {})


def model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {k: v for k, v in config.model.to_dict().items() if k != "name"}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the values of a classification config before any data or compute.

  Raises ValueError naming the offending key, its value and what is allowed.
  """
  try:
    method_of(config)
  except ValueError:
    if config.method in methods_lib.METHODS:  # e.g. SGN's arguments for --config.method=ce
      common.check_built_method(config)
    raise
  common.noise_spec(config)
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
    loading.check_dataset_spec(common.dataset_spec(config))
  check_pretrained(config)
  mixup_alpha = config.input.get("mixup_alpha", 0.0)
  if mixup_alpha < 0:
    raise ValueError(f"input.mixup_alpha={mixup_alpha} must be >= 0 (0: off)")
  if mixup_alpha > 0 and not methods_lib.METHODS[config.method].supports_soft_labels:
    raise ValueError(
        f"input.mixup_alpha={mixup_alpha} needs soft labels, which method={config.method!r} "
        f"cannot use; methods with mixup: "
        f"{sorted(n for n, m in methods_lib.METHODS.items() if m.supports_soft_labels)}")
  common.check_built_method(config)
  if config.noise.kind == "asym":
    noise.asymmetric_targets(config.dataset.name, config.noise.convention)
  if config.model.name not in models.MODELS:
    raise ValueError(
        f"model.name={config.model.name!r} is not known; allowed: {sorted(models.MODELS)}")
  common.check_widths(config.model, "model.")
  groups = tuple(config.model.get("head_groups", ()) or ())
  if groups:
    method = method_of(config)
    outputs = method.output_groups(int(config.num_classes))
    if sum(groups) != sum(outputs):
      raise ValueError(
          f"model.head_groups={groups} must sum to the {sum(outputs)} outputs of "
          f"method={config.method!r} (method_args as given); its output groups are "
          f"{outputs}: set --config.model.head_groups=\"{outputs}\", or () for one dense layer")
  for key in ("batch_size", "eval_batch_size", "num_epochs", "eval_every_epochs"):
    if int(config[key]) <= 0:
      raise ValueError(f"{key}={config[key]} must be a positive integer")
  common.loop_settings(config)
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f"ema_decay={config.ema_decay} must be in [0, 1)")
  common.check_learning_rate(config.optim.learning_rate, "optim.learning_rate")
  l2_params = config.optim.get("l2_params", classification.Settings.l2_params)
  if l2_params not in losses.L2_PARAMS:
    raise ValueError(
        f"optim.l2_params={l2_params!r} is not known; allowed: {list(losses.L2_PARAMS)} "
        "(all: weight_decay * sum(w^2) over every parameter; no_batchnorm: over convolution "
        "and dense kernels and biases, BatchNorm scales and biases excluded)")
  warmup = config.optim.get("warmup_epochs", classification.Settings.warmup_epochs)
  if not float(warmup) >= 0:
    raise ValueError(f"optim.warmup_epochs={warmup} must be >= 0 (0: no warm-up)")
  check_select(config)
  if len(config.input.mean) != len(config.input.std) or min(config.input.std) <= 0:
    raise ValueError(
        f"input.mean={tuple(config.input.mean)} and input.std={tuple(config.input.std)} must "
        "have one entry per channel and positive std")


PRETRAINED_NONE = "none"  # model_pretrained: train from scratch on purpose


def pretrained_path(config: ml_collections.ConfigDict) -> str:
  """The weights file of `model_pretrained`; "" for none ("" or "none")."""
  path = config.get("model_pretrained") or ""
  return "" if path == PRETRAINED_NONE else path


def check_pretrained(config: ml_collections.ConfigDict) -> None:
  """`model_pretrained`: a file that exists for a model that takes pretrained weights;
  required (not "") where the cell says so (`model_pretrained_required`, Clothing1M)."""
  from sgn_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  given = config.get("model_pretrained") or ""
  model = config.model.name
  if not given and config.get("model_pretrained_required", False):
    how = (pretrained.KERAS_HOW_TO_GET if model in pretrained.KERAS_MODELS else
           "Get torchvision ImageNet weights (.npz/.pth): see "
           "sgn_jax.models.pretrained.load_state_dict_file.")
    raise ValueError(
        f"model_pretrained is empty, but this config fine-tunes an ImageNet-pretrained "
        f"model.name={model!r} (model_pretrained_required=True): pass "
        f"--config.model_pretrained=PATH, or --config.model_pretrained={PRETRAINED_NONE} to "
        f"train from scratch on purpose. {how}")
  path = pretrained_path(config)
  if not path:
    return
  allowed = tuple(pretrained.TORCHVISION_MODELS) + tuple(pretrained.KERAS_MODELS)
  if model not in allowed:
    raise ValueError(f"model_pretrained={path!r}: pretrained weights load into models "
                     f"{list(allowed)}, not model.name={model!r}; set model_pretrained="
                     f"{PRETRAINED_NONE!r} (or '') to train it from scratch")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"model_pretrained={path!r} does not exist; see sgn_jax.models.pretrained "
        "(KERAS_HOW_TO_GET, load_state_dict_file) for how to get the weights, or set "
        f"model_pretrained={PRETRAINED_NONE!r} to train from scratch")


def check_select(config: ml_collections.ConfigDict) -> None:
  """`select.*` (model selection): an evaluated split, a known metric, after_epochs >= 0."""
  select = config.get("select")
  if select is None or not select.get("split", ""):
    return
  splits = train_data.eval_split_names(config.dataset.name, config.dataset.source,
                                       float(config.dataset.get("val_fraction", 0.0)))
  if select.split not in splits:
    raise ValueError(
        f"select.split={select.split!r} is not evaluated in this run; allowed: {list(splits)} "
        "(\"val\" needs dataset.val_fraction > 0), or \"\" for no model selection")
  metric = select.get("metric", classification.Selection.metric)
  metrics = [m for m in classification.SELECT_METRICS
             if m != "top5_accuracy" or int(config.num_classes) > 5]  # top-5 for K > 5
  if metric not in metrics:
    raise ValueError(f"select.metric={metric!r} is not known; allowed: {metrics}")
  after = select.get("after_epochs", classification.Selection.after_epochs)
  if not float(after) >= 0:
    raise ValueError(f"select.after_epochs={after} must be >= 0 (0: every evaluation)")


def selection(config: ml_collections.ConfigDict) -> classification.Selection:
  """`config.select` as a `classification.Selection` (off when absent)."""
  select = config.get("select")
  if select is None:
    return classification.Selection()
  return classification.Selection(**{k: v for k, v in select.to_dict().items()})


def settings(config: ml_collections.ConfigDict) -> classification.Settings:
  """The config as `classification.Settings` (after `validate_config`)."""
  o = config.optim
  return classification.Settings(
      dataset=common.dataset_spec(config), noise=common.noise_spec(config),
      val_fraction=float(config.dataset.get("val_fraction", 0.0)), seed=int(config.seed),
      num_classes=int(config.num_classes), model=config.model.name,
      model_kwargs=model_kwargs(config), method=config.method,
      method_args=method_of(config).args, pretrained=pretrained_path(config),
      mean=tuple(config.input.mean), std=tuple(config.input.std),
      crop_padding=int(config.input.crop_padding), flip=bool(config.input.flip),
      mixup_alpha=float(config.input.get("mixup_alpha", 0.0)),
      learning_rate=float(o.learning_rate), momentum=float(o.momentum or 0.0),
      nesterov=bool(o.nesterov), weight_decay=float(o.weight_decay),
      l2_params=o.get("l2_params", classification.Settings.l2_params),
      lr_decay_epochs=tuple(o.get("lr_decay_epochs", ())),
      lr_decay_factor=float(o.get("lr_decay_factor", 0.1)),
      warmup_epochs=float(o.get("warmup_epochs", classification.Settings.warmup_epochs)),
      batch_size=int(config.batch_size), num_epochs=int(config.num_epochs),
      ema_decay=float(config.ema_decay), ema_warmup=bool(config.get("ema_warmup", False)),
      eval_batch_size=int(config.eval_batch_size),
      eval_every_epochs=int(config.eval_every_epochs), select=selection(config),
      loop=common.loop_settings(config))


@runs.one_writer
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Trains a classifier on noisy labels as `config` says; returns the final metrics.

  Resumes from the latest checkpoint in WORKDIR/checkpoints when there is one.
  `devices` (default: all) are the devices of the data-parallel mesh.
  """
  with errors.user_input():
    validate_config(config)
    allowed = common.check_resume(config, workdir, "classify", may_change=MAY_CHANGE)
    run_settings = settings(config)
  return classification.train(run_settings, workdir, devices, config=config.to_dict(),
                              allowed_changes=allowed)
