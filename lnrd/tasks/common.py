"""What the TDSM tasks convert from their configs the same way."""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from lnrd import augment as augment_lib
from lnrd import edm
from lnrd import images
from lnrd import sampler as sampler_lib
from sgn_jax import errors
from sgn_jax import runs
from sgn_jax import train_data
from sgn_jax.tasks import common

# `matmul_precision` values (`jax.default_matmul_precision` of the networks' matmuls and
# convolutions): "highest" float32, as the TDSM authors, who disable TF32; "high" and
# "default" let the device trade accuracy for speed (TF32 on recent NVIDIA GPUs, bfloat16
# passes on TPUs). On CPUs all three compute in float32.
MATMUL_PRECISIONS = ("highest", "high", "default")


def matmul_precision(config: ml_collections.ConfigDict) -> str:
  """`config.matmul_precision`, checked (ValueError naming the key and the values)."""
  value = config.get("matmul_precision", None)
  if value not in MATMUL_PRECISIONS:
    raise ValueError(
        f"matmul_precision={value!r} is not known; allowed: {list(MATMUL_PRECISIONS)} "
        "(highest: float32 as the TDSM authors, who disable TF32; default: the device's "
        "fastest); e.g. --config.matmul_precision=highest")
  return value


def with_matmul_precision(train_and_evaluate):
  """Runs a task's `train_and_evaluate(config, workdir, devices=None)` inside
  `jax.default_matmul_precision(config.matmul_precision)`, so that every network it
  traces (jit traces on the first call, inside) computes at that precision."""

  @functools.wraps(train_and_evaluate)
  def run(config: ml_collections.ConfigDict, workdir: str, devices=None):
    with errors.user_input():
      precision = matmul_precision(config)
    with jax.default_matmul_precision(precision):
      return train_and_evaluate(config, workdir, devices)
  return run


def in_memory_data(config: ml_collections.ConfigDict, mesh, batch_size: int,
                   eval_batch_size: int) -> train_data.InMemoryData:
  """The dataset of `config` with its noisy labels on the mesh (no validation split)."""
  return train_data.InMemoryData(common.prepare_splits(config), mesh,
                                 batch_size=int(batch_size),
                                 eval_batch_size=int(eval_batch_size), seed=int(config.seed))


def transition_or_identity(data) -> np.ndarray:
  """The data's transition matrix T (the identity when the noise has none)."""
  t = data.splits.transition
  return np.eye(data.num_classes) if t is None else np.asarray(t, np.float64)


def preconditioning(config: ml_collections.ConfigDict) -> edm.Preconditioning:
  return edm.from_fields(config.precond.to_dict())


def edm_optimizer(optim: ml_collections.ConfigDict, batch_size: int):
  """EDM's Adam with warm-up from an `optim` section."""
  return edm.adam_with_warmup(float(optim.learning_rate), warmup_kimg=float(optim.warmup_kimg),
                              batch_size=int(batch_size), beta1=float(optim.beta1),
                              beta2=float(optim.beta2), eps=float(optim.eps))


def augment_pipe(config: ml_collections.ConfigDict, input_shape):
  """EDM's augmentation pipe (`config.augment`) for images when augment.p > 0, else None."""
  if len(input_shape) != 3 or config.augment.p <= 0:
    return None
  return augment_lib.from_kwargs(config.augment.to_dict())


def preprocess(config: ml_collections.ConfigDict):
  """uint8 batch -> model range, zero-padded to `config.pad_to`."""
  return functools.partial(images.to_model_range, pad_to=int(config.get("pad_to", 0) or 0))


def data_record(config: ml_collections.ConfigDict, data, model_shape) -> dict:
  """The data facts of a run record: dataset, noise, seed, classes, shapes, T, labels."""
  transition = data.splits.transition
  return dict(
      dataset=dataclasses.asdict(common.dataset_spec(config)),
      noise=dataclasses.asdict(common.noise_spec(config)), seed=int(config.seed),
      num_classes=int(data.num_classes), data_shape=[int(d) for d in data.input_shape],
      input_shape=[int(d) for d in model_shape], pad_to=int(config.get("pad_to", 0) or 0),
      transition=None if transition is None else np.asarray(transition).tolist(),
      labels_checksum=runs.labels_checksum(data.train_labels))


def sampler_settings(config: ml_collections.ConfigDict) -> sampler_lib.SamplerSettings:
  """`config.sample` as `SamplerSettings` (its grid_per_class is the tasks' own)."""
  names = {f.name for f in dataclasses.fields(sampler_lib.SamplerSettings)}
  return sampler_lib.SamplerSettings(**{k: v for k, v in config.sample.to_dict().items()
                                        if k in names})


def check_run_dir(run_dir: str, key: str, task: str) -> None:
  """`key` (e.g. generate.run_dir) names a diffusion run with checkpoints."""
  if not run_dir:
    raise ValueError(f"task={task} needs {key}, the workdir of a diffusion run "
                     f"(--config.{key}=DIR)")
  if not os.path.isdir(os.path.join(run_dir, "checkpoints")):
    raise FileNotFoundError(f"{key}={run_dir!r} has no checkpoints/ folder; "
                            "train it first with task=diffusion")


def warn_if_warmup_exceeds_run(prefix: str, warmup_kimg: float, duration_kimg: float) -> bool:
  """Logs a warning naming `<prefix>optim.warmup_kimg` when the learning-rate warm-up is
  longer than the run (the rate never reaches its value); returns whether it did."""
  if warmup_kimg > duration_kimg:
    logging.warning(
        "%soptim.warmup_kimg=%g is longer than the run (%sduration_kimg=%g): the learning "
        "rate only reaches %.0f%% of %soptim.learning_rate. Lower %soptim.warmup_kimg (e.g. "
        "to a tenth of the run) for a short run", prefix, warmup_kimg, prefix, duration_kimg,
        100 * duration_kimg / warmup_kimg, prefix, prefix)
    return True
  return False


def warn_if_classifier_at_chance(classifier, path: str) -> bool:
  """Logs a warning before TDSM trains when the classifier it loads is no better than
  chance on its own held-out data at the lowest noise level (its export records the
  clean test accuracies): its weights then carry nothing but the transition matrix."""
  accuracies = {float(k.rsplit("_", 1)[-1]): v for k, v in
                (classifier.meta.get("clean_accuracy") or {}).items()}
  if not accuracies:
    return False
  sigma = min(accuracies)
  chance = 1.0 / classifier.num_classes
  if accuracies[sigma] <= 1.5 * chance:
    logging.warning(
        "the time-dependent classifier of tdsm.classifier_dir=%r is at chance: clean test "
        "accuracy %.3f at sigma=%g (chance %.3f). TDSM's weights will be the transition "
        "matrix alone. Train it longer (classifier.duration_kimg) or with a shorter "
        "warm-up (classifier.optim.warmup_kimg)", path, accuracies[sigma], sigma, chance)
    return True
  return False
