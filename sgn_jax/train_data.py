"""Where a classification run's batches come from: on-device tables or a stream.

Both kinds give the trainer the same things: the number of training examples
and steps per epoch, the (noisy) training labels for per-example state, the
inputs of the train step for a given global step, and evaluation over each
evaluation split with every example counted once.

* `InMemoryData` (MNIST, CIFAR, arrays, the 2-D mixture): the whole dataset is
  placed on the devices once; the train step gathers its batch by index from the
  epoch's permutation (`sgn_jax.data.device_data`).
* `StreamingData` (Clothing1M, mini-WebVision): a tf.data pipeline per host
  (`sgn_jax.data.streaming`), each host reading its block of every global batch,
  assembled with `jax.make_array_from_process_local_data`; resumable at any step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sgn_jax import noise
from sgn_jax.data import device_data
from sgn_jax.data import loading
from sgn_jax.training import mesh as mesh_lib

STREAMING_DATASETS = ("clothing1m", "mini_webvision")

# eval split name -> the streaming dataset's split
_STREAM_EVAL_SPLITS = {
    "clothing1m": {"val": "clean_val", "test": "clean_test"},
    "mini_webvision": {"test": "val", "imagenet": "imagenet_val"},
}
_STREAM_TRAIN_SPLIT = {"clothing1m": "noisy_train", "mini_webvision": "train"}


def eval_split_names(dataset_name: str, source: str, val_fraction: float = 0.0
                     ) -> tuple[str, ...]:
  """The evaluation splits a run of this dataset has (the keys of its results,
  "<split>/accuracy"), known before any data is read: a streamed dataset's own
  (Clothing1M "val", "test"; mini-WebVision "test" = the WebVision val set,
  "imagenet"), else "test" and, with a validation fraction, the noisy "val"."""
  if source == "stream":
    return tuple(_STREAM_EVAL_SPLITS.get(dataset_name, {}))
  return ("test", "val") if val_fraction > 0 else ("test",)


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


def training_labels(noise_spec: noise.NoiseSpec, dataset, seed: int
                    ) -> tuple[np.ndarray, np.ndarray | None]:
  """(labels to train on, their transition T or None) for every training example of
  `dataset`, in its original order: `noise_spec.labels_file` when set (e.g. a
  corrector's labels and estimated T), else noise drawn once from `seed`."""
  return noise_spec.draw(dataset.train_labels, num_classes=dataset.num_classes,
                         dataset=dataset.name, seed=seed, label_sets=dataset.label_sets)


def prepare_splits(dataset_spec: loading.DatasetSpec, noise_spec: noise.NoiseSpec, *,
                   seed: int, val_fraction: float = 0.0,
                   num_classes: int | None = None) -> Splits:
  """Loads the dataset, draws its noisy labels once from the seed, splits off validation.

  Noise is drawn on the full training set before the split, so the validation
  labels are noisy too (SGN's protocol) and the labels are the same on every
  host and every resume. `dataset_spec.val_split` picks the validation rows
  (`loading.split_validation`: seeded random, or the last rows for every seed).
  With `noise_spec.labels_file` (a corrector's npz, see `noise.load_labels_file`)
  those labels and their transition replace the draw.
  `num_classes`, when given, must be the dataset's.
  """
  dataset = loading.load_dataset(dataset_spec)
  if num_classes is not None and dataset.num_classes != num_classes:
    raise ValueError(
        f"num_classes={num_classes} but dataset {dataset.name} has {dataset.num_classes}")
  noisy, transition = training_labels(noise_spec, dataset, seed)
  if transition is not None and noise.uninformative_labels(transition):
    logging.warning(
        "noise.kind=%r at noise.rate=%g leaves the labels without information (another "
        "class is at least as likely as the given one for noisy labels %s): whatever trains "
        "on them learns little; methods that invert T refuse it", noise_spec.kind,
        noise_spec.rate, noise.uninformative_labels(transition)[:5])
  summary = noise.noise_summary(dataset.train_labels, noisy, dataset.num_classes)
  train_rows, val_rows = loading.split_validation(len(noisy), val_fraction, seed,
                                                  mode=dataset_spec.val_split)
  return Splits(
      train_images=dataset.train_images[train_rows],
      train_labels=noisy[train_rows].astype(np.int32),
      train_clean_labels=dataset.train_labels[train_rows].astype(np.int32),
      val_images=dataset.train_images[val_rows],
      val_labels=noisy[val_rows].astype(np.int32),
      test_images=dataset.test_images,
      test_labels=dataset.test_labels.astype(np.int32),
      num_classes=dataset.num_classes,
      noise_summary=summary,
      transition=transition)


def _sum_batches(results) -> dict[str, np.ndarray]:
  totals = None
  for sums in results:
    sums = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()}
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
  return totals


class InMemoryData:
  """The dataset on the devices; batches drawn by index inside the train step.

  `splits` (host arrays, `prepare_splits`) are placed on the mesh once, rows
  split over its data axis. `train_inputs(step)` are the tables and the epoch's
  permutation (a function of `seed` and the epoch); `drawer()` is the
  `device_data.BatchDrawer` that turns them into the batch of a step.
  """

  def __init__(self, splits: Splits, mesh, *, batch_size: int, eval_batch_size: int,
               seed: int):
    self.mesh = mesh
    self.batch_size = batch_size
    self.eval_batch_size = eval_batch_size
    self.splits = splits
    self.num_classes = splits.num_classes
    self.train_labels = splits.train_labels
    self.num_train = len(splits.train_labels)
    self.steps_per_epoch = self.num_train // batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"batch_size={batch_size} is larger than the training set "
                       f"({self.num_train} examples)")
    self.input_shape = splits.train_images.shape[1:]
    self.noise_summary = splits.noise_summary
    self.tables = {
        "train_images": device_data.put_table(splits.train_images, mesh),
        "train_labels": device_data.put_table(splits.train_labels, mesh),
    }
    self.eval_tables = {"test": (device_data.put_table(splits.test_images, mesh),
                                 device_data.put_table(splits.test_labels, mesh),
                                 len(splits.test_labels))}
    if len(splits.val_labels):
      self.eval_tables["val"] = (device_data.put_table(splits.val_images, mesh),
                                 device_data.put_table(splits.val_labels, mesh),
                                 len(splits.val_labels))
    self._permutation_fn = jax.jit(
        functools.partial(device_data.epoch_permutation, num_examples=self.num_train),
        out_shardings=mesh_lib.replicated(mesh))
    self._data_key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    self._permutation, self._permutation_epoch = None, -1
    self._eval_fns: dict[Any, Callable] = {}

  def drawer(self, crop_padding: int = 0, flip: bool = False) -> device_data.BatchDrawer:
    """The batch drawer of this data (random crops/flips of images when asked)."""
    return device_data.BatchDrawer(self.batch_size, self.steps_per_epoch, self.mesh,
                                   crop_padding=crop_padding, flip=flip)

  @property
  def eval_splits(self) -> tuple[str, ...]:
    return tuple(self.eval_tables)

  def describe(self) -> str:
    return (f"train {self.num_train} (noisy), val {len(self.splits.val_labels)}, "
            f"test {len(self.splits.test_labels)} examples, in device memory")

  def train_inputs(self, step: int) -> dict[str, jax.Array]:
    """The train step's inputs at `step`: the epoch's permutation and the tables."""
    epoch = step // self.steps_per_epoch
    if epoch != self._permutation_epoch:
      self._permutation = self._permutation_fn(self._data_key, epoch)
      self._permutation_epoch = epoch
    return {"permutation": self._permutation, **self.tables}

  def evaluate(self, split: str, eval_sums: Callable, params, model_state):
    """Sums of `eval_sums(params, model_state, images, labels, mask)` over `split`."""
    images, labels, n = self.eval_tables[split]
    batch = self.eval_batch_size
    key = (id(eval_sums), split)
    if key not in self._eval_fns:
      def fn(params, model_state, images, labels, start):
        idx, mask = device_data.eval_indices(start, batch, n)
        mask = jax.lax.with_sharding_constraint(mask, mesh_lib.data_sharded(self.mesh))
        return eval_sums(params, model_state, device_data.gather_rows(images, idx, self.mesh),
                         device_data.gather_rows(labels, idx, self.mesh), mask)
      self._eval_fns[key] = jax.jit(fn)
    fn = self._eval_fns[key]
    return _sum_batches(fn(params, model_state, images, labels, jnp.int32(start))
                        for start in range(0, n, batch)), n


class StreamingData:
  """Clothing1M / mini-WebVision streamed from disk with per-host sharding.

  `train_inputs(step)` is the global batch of the step ({"image", "label",
  "index"}, cropped and flipped on the host): pass `drawer()` (None) to
  `jit_step`, the batch needs no drawing.
  """

  def __init__(self, dataset_spec: loading.DatasetSpec, mesh, *, batch_size: int,
               eval_batch_size: int, seed: int, num_classes: int):
    from sgn_jax.data import clothing1m  # pylint: disable=g-import-not-at-top
    from sgn_jax.data import streaming  # pylint: disable=g-import-not-at-top
    from sgn_jax.data import webvision  # pylint: disable=g-import-not-at-top
    self._streaming = streaming
    self.mesh = mesh
    self.batch_size = batch_size
    self.eval_batch_size = eval_batch_size
    self.seed = seed
    name = dataset_spec.name
    module = {"clothing1m": clothing1m, "mini_webvision": webvision}[name]
    self.sources = module.sources(dataset_spec.data_dir, dataset_spec.manual_dir,
                                  from_files=bool(dataset_spec.from_files))
    self.train_source = self.sources[_STREAM_TRAIN_SPLIT[name]]
    self.preprocess = streaming.PREPROCESS[name]
    crop, resize = dataset_spec.crop_size, dataset_spec.resize
    if crop or resize:  # e.g. small images for tests; 0 keeps the authors' sizes
      self.preprocess = dataclasses.replace(
          self.preprocess, crop_size=crop or self.preprocess.crop_size,
          resize=(resize, resize) if resize else self.preprocess.resize)
    self.num_classes = num_classes
    self.train_labels = np.asarray(self.train_source.labels, np.int32)
    self.num_train = len(self.train_labels)
    self.samples_per_class = dataset_spec.samples_per_class or None
    self.steps_per_epoch = streaming.train_steps_per_epoch(
        self.train_source, batch_size, samples_per_class=self.samples_per_class,
        num_classes=self.num_classes)
    if self.steps_per_epoch == 0:
      raise ValueError(f"batch_size={batch_size} is larger than the training set "
                       f"({self.num_train} examples)")
    size = self.preprocess.crop_size
    self.input_shape = (size, size, 3)
    self.noise_summary = {"realised_noise_rate": float("nan")}  # real noise: unknown
    self._split_names = _STREAM_EVAL_SPLITS[name]
    self._iterator, self._iterator_epoch, self._next_step = None, -1, -1
    self._eval_fns: dict[Any, Callable] = {}

  def drawer(self, crop_padding: int = 0, flip: bool = False) -> None:
    """None: a streamed batch is already drawn (and augmented on the host)."""
    del crop_padding, flip
    return None

  @property
  def eval_splits(self) -> tuple[str, ...]:
    return tuple(self._split_names)

  def describe(self) -> str:
    sizes = ", ".join(f"{k} {len(self.sources[v])}" for k, v in self._split_names.items())
    return f"train {self.num_train} (noisy, streamed), {sizes}"

  def train_inputs(self, step: int) -> dict[str, jax.Array]:
    """The global batch of `step` (uint8 images, labels, example indices)."""
    epoch, position = divmod(step, self.steps_per_epoch)
    if epoch != self._iterator_epoch or step != self._next_step:
      self._iterator = self._streaming.make_train_iterator(
          self.train_source, preprocess=self.preprocess,
          global_batch_size=self.batch_size, seed=self.seed, epoch=epoch,
          start_step=position, samples_per_class=self.samples_per_class,
          num_classes=self.num_classes, normalize=False)
      self._iterator_epoch = epoch
    local = next(self._iterator)
    self._next_step = step + 1
    return self._streaming.to_global_batch(local, self.mesh)

  def evaluate(self, split: str, eval_sums: Callable, params, model_state):
    source = self.sources[self._split_names[split]]
    key = id(eval_sums)
    if key not in self._eval_fns:
      self._eval_fns[key] = jax.jit(
          lambda p, m, b: eval_sums(p, m, b["image"], b["label"], b["mask"]))
    fn = self._eval_fns[key]
    batches = self._streaming.make_eval_iterator(
        source, preprocess=self.preprocess, global_batch_size=self.eval_batch_size,
        normalize=False)
    return _sum_batches(fn(params, model_state, self._streaming.to_global_batch(b, self.mesh))
                        for b in batches), len(source)


def create(dataset_spec: loading.DatasetSpec, noise_spec: noise.NoiseSpec, mesh, *,
           batch_size: int, eval_batch_size: int, seed: int, val_fraction: float = 0.0,
           num_classes: int | None = None):
  """`StreamingData` for dataset source "stream", else `InMemoryData` of `prepare_splits`."""
  if dataset_spec.source == "stream":
    return StreamingData(dataset_spec, mesh, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seed, num_classes=num_classes)
  splits = prepare_splits(dataset_spec, noise_spec, seed=seed, val_fraction=val_fraction,
                          num_classes=num_classes)
  return InMemoryData(splits, mesh, batch_size=batch_size, eval_batch_size=eval_batch_size,
                      seed=seed)
