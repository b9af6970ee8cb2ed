"""What every task converts from its config the same way: data, noise, loop settings."""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from sgn_jax import noise
from sgn_jax import runs
from sgn_jax.data import loading
from sgn_jax.training import loop

# Config keys that may change when a run is resumed, for every task: bookkeeping and
# where the data lives (its content is checked by the training labels' checksum).
MAY_CHANGE = ("allow_changes", "stop_after_steps", "keep_checkpoints", "log_every_steps",
              "checkpoint_every_steps", "dataset.data_dir", "dataset.manual_dir",
              "dataset.download", "dataset.path", "dataset.cifar_n_dir")


def dataset_spec(config: ml_collections.ConfigDict) -> loading.DatasetSpec:
  """`config.dataset` as a `DatasetSpec`."""
  return loading.DatasetSpec.from_mapping(config.dataset.to_dict())


def noise_spec(config: ml_collections.ConfigDict) -> noise.NoiseSpec:
  """`config.noise` as a `NoiseSpec` (ValueError naming the bad noise.* value)."""
  n = config.noise
  return noise.NoiseSpec(kind=n.kind, rate=float(n.rate), convention=n.convention,
                         label_set=n.get("label_set", "") or "",
                         labels_file=n.get("labels_file", "") or "",
                         assumed_rate=float(n.get("assumed_rate", 0.0) or 0.0))


def check_data_and_noise(config: ml_collections.ConfigDict) -> None:
  """The dataset and label-noise keys of a config, checked before anything loads."""
  loading.check_dataset_spec(dataset_spec(config))
  noise_spec(config)


def loop_settings(section: ml_collections.ConfigDict,
                  root: ml_collections.ConfigDict | None = None) -> loop.LoopSettings:
  """`LoopSettings` from the log/checkpoint intervals of `section` (a config or its
  classifier section); keep_checkpoints and stop_after_steps from `root` when given."""
  root = section if root is None else root
  return loop.LoopSettings(
      log_every_steps=int(section.log_every_steps),
      checkpoint_every_steps=int(section.checkpoint_every_steps),
      keep_checkpoints=int(root.keep_checkpoints),
      stop_after_steps=int(root.stop_after_steps))


def kimg_steps(kimg: float, batch_size: int) -> int:
  """Steps of `kimg` thousand images at `batch_size` per step (at least 1)."""
  return max(1, int(round(kimg * 1000 / batch_size)))


def with_overrides(config: ml_collections.ConfigDict, **dotted) -> ml_collections.ConfigDict:
  """A copy of `config` with `a.b.c=value` overrides given as keyword `**{"a.b.c": value}`
  (a task running another stage with its own values, e.g. the pipeline)."""
  copy = ml_collections.ConfigDict(config.to_dict())
  for key, value in dotted.items():
    node = copy
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return copy


def prepare_splits(config: ml_collections.ConfigDict):
  """`sgn_jax.train_data.prepare_splits` of the dataset, noise and seed of `config`."""
  from sgn_jax import train_data  # pylint: disable=g-import-not-at-top
  return train_data.prepare_splits(
      dataset_spec(config), noise_spec(config), seed=int(config.seed),
      val_fraction=float(config.dataset.get("val_fraction", 0.0)),
      num_classes=int(config.num_classes))


def method_choice_error(method: str, family: str, allowed, how_other: str = "") -> ValueError:
  """The error for `--config.method=X` that this config was not built for: the
  method is chosen with the config argument (`:method=X`), which also builds the
  method's own keys."""
  return ValueError(
      f"method={method!r} is not a {family} method; allowed: {sorted(allowed)}; "
      f"{how_other}choose the method with the config argument, e.g. "
      f"--config=configs/<dataset>_<noise>.py:method={method} (it builds that method's "
      "config; --config.method=... cannot)")


# The method a config builder filled the method's own keys for (method_args, the model's
# head, SGN's alpha scaled to the run), kept on the ConfigDict object as an attribute, not
# as a key: config.json, run.json and the resume checks stay as they are.
_BUILT_FOR_METHOD = "_built_for_method"


def record_built_method(config: ml_collections.ConfigDict, method: str) -> None:
  """Records on `config` that its builder filled the keys of `method` (configs/common.py)."""
  object.__setattr__(config, _BUILT_FOR_METHOD, method)


def built_method(config: ml_collections.ConfigDict) -> str | None:
  """The method `record_built_method` recorded on `config` (None: not recorded, e.g. a
  config rebuilt from a dict)."""
  return getattr(config, "__dict__", {}).get(_BUILT_FOR_METHOD)


def check_built_method(config: ml_collections.ConfigDict) -> None:
  """ValueError when `config.method` is not the method the config was built for
  (`--config.method=X` renames the method but keeps the other method's constants)."""
  built = built_method(config)
  if built is None or config.method == built:
    return
  raise ValueError(
      f"method={config.method!r}, but this config was built for method={built!r}: its "
      f"method_args, model head and schedule constants are those of {built!r}, and "
      "--config.method=... renames the method only. Choose the method with the config "
      f"argument instead, e.g. --config=configs/<dataset>_<noise>.py:method={config.method} "
      "(it builds that method's config)")


def check_learning_rate(value, key: str) -> None:
  """`key` (e.g. optim.learning_rate) is a finite number > 0 (NaN and inf refused)."""
  try:
    ok = math.isfinite(float(value)) and float(value) > 0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"{key}={value} must be a finite number > 0 (e.g. --config.{key}=0.001)")


# Network keys that are layer widths (units, channels, channel multipliers): each a
# positive integer, or a sequence of them (one per layer).
WIDTH_KEYS = ("hidden", "channels", "width", "features", "model_channels", "channel_mult",
              "channel_mult_emb", "noise_channels", "emb_channels", "channels_per_head",
              "num_channels", "hidden_size", "filters")


def check_widths(section, prefix: str) -> None:
  """The width keys (`WIDTH_KEYS`) of a network section (e.g. `config.model`, prefix
  "model.") are positive integers or sequences of them; ValueError names the key."""
  if section is None:
    return
  for key in WIDTH_KEYS:
    value = section.get(key) if hasattr(section, "get") else None
    if value is None:
      continue
    many = isinstance(value, (tuple, list))
    values = tuple(value) if many else (value,)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
           for v in values):
      continue
    what, example = (("positive integers (one per layer)", '"(32, 64)"') if many else
                     ("a positive integer", "32"))
    raise ValueError(f"{prefix}{key}={value!r} must be {what}: a layer of width 0 (or less) "
                     f"has no units; e.g. --config.{prefix}{key}={example}")


def allowed_changes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`config.allow_changes` ("a.b,c" -> ("a.b", "c"))."""
  text = config.get("allow_changes", "") or ""
  return tuple(k.strip() for k in str(text).split(",") if k.strip())


def check_resume(config: ml_collections.ConfigDict, workdir: str, task: str, *,
                 compare=("",), may_change=()) -> dict:
  """`sgn_jax.runs.check_resume` of this config: the keys under `compare` define the
  run; `MAY_CHANGE` and `may_change` may differ on a resume; `allow_changes` too."""
  return runs.check_resume(workdir, task, config.to_dict(), compare=compare,
                           may_change=MAY_CHANGE + tuple(may_change),
                           allow_changes=allowed_changes(config))
