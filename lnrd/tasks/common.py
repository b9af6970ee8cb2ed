"""What the TDSM tasks convert from their configs the same way."""

from __future__ import annotations

import dataclasses
import functools
import os

import ml_collections
import numpy as np

from lnrd import augment as augment_lib
from lnrd import edm
from lnrd import images
from lnrd import sampler as sampler_lib
from sgn_jax import runs
from sgn_jax import train_data
from sgn_jax.tasks import common


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
