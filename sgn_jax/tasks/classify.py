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
from sgn_jax import methods as methods_lib
from sgn_jax import models
from sgn_jax import noise
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
  method_of(config)
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
  if config.noise.kind == "asym":
    noise.asymmetric_targets(config.dataset.name, config.noise.convention)
  if config.model.name not in models.MODELS:
    raise ValueError(
        f"model.name={config.model.name!r} is not known; allowed: {sorted(models.MODELS)}")
  for key in ("batch_size", "eval_batch_size", "num_epochs", "eval_every_epochs"):
    if int(config[key]) <= 0:
      raise ValueError(f"{key}={config[key]} must be a positive integer")
  common.loop_settings(config)
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f"ema_decay={config.ema_decay} must be in [0, 1)")
  if config.optim.learning_rate <= 0:
    raise ValueError(f"optim.learning_rate={config.optim.learning_rate} must be > 0")
  if len(config.input.mean) != len(config.input.std) or min(config.input.std) <= 0:
    raise ValueError(
        f"input.mean={tuple(config.input.mean)} and input.std={tuple(config.input.std)} must "
        "have one entry per channel and positive std")


def settings(config: ml_collections.ConfigDict) -> classification.Settings:
  """The config as `classification.Settings` (after `validate_config`)."""
  o = config.optim
  return classification.Settings(
      dataset=common.dataset_spec(config), noise=common.noise_spec(config),
      val_fraction=float(config.dataset.get("val_fraction", 0.0)), seed=int(config.seed),
      num_classes=int(config.num_classes), model=config.model.name,
      model_kwargs=model_kwargs(config), method=config.method,
      method_args=method_of(config).args, pretrained=config.get("model_pretrained") or "",
      mean=tuple(config.input.mean), std=tuple(config.input.std),
      crop_padding=int(config.input.crop_padding), flip=bool(config.input.flip),
      mixup_alpha=float(config.input.get("mixup_alpha", 0.0)),
      learning_rate=float(o.learning_rate), momentum=float(o.momentum or 0.0),
      nesterov=bool(o.nesterov), weight_decay=float(o.weight_decay),
      lr_decay_epochs=tuple(o.get("lr_decay_epochs", ())),
      lr_decay_factor=float(o.get("lr_decay_factor", 0.1)),
      batch_size=int(config.batch_size), num_epochs=int(config.num_epochs),
      ema_decay=float(config.ema_decay), ema_warmup=bool(config.get("ema_warmup", False)),
      eval_batch_size=int(config.eval_batch_size),
      eval_every_epochs=int(config.eval_every_epochs), loop=common.loop_settings(config))


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
