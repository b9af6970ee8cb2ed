"""Streaming tf.data pipelines for the large image datasets (Clothing1M, WebVision).

These datasets do not fit in host memory (Clothing1M: 1M JPEGs), so unlike
`device_data` the images are read, decoded and augmented batch by batch on the
host and handed to the devices as sharded global batches.

Where the bytes come from (a "source", random access by row):

* `tfds_source(builder, split)`: a TFDS dataset prepared by the builders of
  `clothing1m` / `webvision` in the ArrayRecord format (their default). Rows
  are in the order of the dataset's own file lists (the builders write with
  `disable_shuffling`), so row r has `index == r`.
* `file_source(table)`: the JPEG files of a manual dir, read directly (no
  preparation at all), from a `SplitTable` made by `clothing1m.read_split` or
  `webvision.read_split`. Same rows, same `index`, same labels.

Order, sharding and resumption. The example order of an epoch is a NumPy
permutation that depends on (seed, epoch) only (`epoch_rows`). For
Clothing1M it is first restricted to a class-balanced subset of the noisy
labels: `samples_per_class` rows of every class, drawn without replacement
afresh every epoch (the SGN / DivideMix recipe: 18,976 x 14 = 265,664). Global
step s uses positions [s*B, (s+1)*B) of that order (B the global batch, the
remainder of the epoch dropped); process p of P takes the contiguous block
[p*B/P, (p+1)*B/P) of every global batch. This is `ds.shard` by blocks rather
than by stride: the global batch is the same whatever the process count, and
concatenating the local batches in process order (what
`jax.make_array_from_process_local_data` does) rebuilds it. Resuming at
`start_step` is a `skip` on the per-step row list before anything is read or
decoded, so it costs nothing and yields exactly the batches an uninterrupted
run would have produced. Crops and flips use stateless random ops seeded by
(seed, epoch, position in the epoch), so they resume identically too.

Preprocessing (both follow the SGN authors' code, ErikEnglesson/SGN):

* Clothing1M: resize to 256 x 256 (aspect ratio not kept, bilinear), scale to
  [0, 1], random 224 crop + horizontal flip for training, normalise with the
  Clothing1M mean (0.6959, 0.6537, 0.6371) / std (0.3113, 0.3192, 0.3214).
* WebVision and ImageNet val: resize to 256 x 256, random 227 crop + flip for
  training, centre 227 crop for evaluation, ImageNet mean / std.

Evaluation uses the centre crop. `Preprocess(resize=256)` instead resizes the
shorter side to 256 (torchvision `Resize(256)`, as DivideMix / ELR do).

The authors feed that Clothing1M normalisation (RGB, dataset mean / std) even
to the Keras ImageNet ResNet-50 they fine-tune. The normalisation those Keras
weights were trained with is `Preprocess(mode="caffe")` (`CLOTHING1M_CAFFE`):
RGB -> BGR, minus the per-channel mean `CAFFE_MEAN_BGR` in pixel units 0..255,
no scaling (`keras.applications.resnet50.preprocess_input`). `device_normalize`
applies either normalisation on the device to the uint8 crops of
`normalize=False` pipelines.

TensorFlow is imported inside the functions only: `import
sgn_jax.data.streaming` works without it.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sgn_jax.data.dataset import DataNotFoundError
from sgn_jax.training.mesh import DATA_AXIS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLOTHING1M_MEAN = (0.6959, 0.6537, 0.6371)
CLOTHING1M_STD = (0.3113, 0.3192, 0.3214)
# Caffe's ImageNet mean in BGR order, pixel units 0..255 (Keras `preprocess_input`
# mode "caffe", used by the Keras ImageNet ResNet-50 weights).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
NORMALIZATION_MODES = ("standardize", "caffe")

# Salts that keep the order and the augmentation streams independent.
_ORDER_SALT = 0x4F524452
_AUGMENT_SALT = 0x41554720


# ----------------------------------------------------------------------------
# Split tables and image files (no TensorFlow).
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SplitTable:
  """The examples of one split as listed by a dataset's own files.

  Attributes:
    root: folder the paths are relative to.
    paths: (N,) relative path of every example, in file-list order.
    labels: (N,) int32 label of every example.
    keys: (N,) identifier stored with each example (the path as the
      dataset's files spell it); defaults to `paths`.
  The example index is the position in this table (0..N-1).
  """
  root: str
  paths: np.ndarray
  labels: np.ndarray
  keys: np.ndarray | None = None

  def __post_init__(self):
    paths = np.asarray(self.paths, dtype=object)
    labels = np.asarray(self.labels, dtype=np.int32)
    if paths.ndim != 1 or labels.shape != paths.shape:
      raise ValueError(f"{len(paths)} paths but {len(labels)} labels.")
    keys = paths if self.keys is None else np.asarray(self.keys, dtype=object)
    if keys.shape != paths.shape:
      raise ValueError(f"{len(paths)} paths but {len(keys)} keys.")
    object.__setattr__(self, "root", os.fspath(self.root))
    object.__setattr__(self, "paths", paths)
    object.__setattr__(self, "labels", labels)
    object.__setattr__(self, "keys", keys)

  def __len__(self) -> int:
    return len(self.labels)

  def full_path(self, i: int) -> str:
    return os.path.join(self.root, self.paths[i])


def missing_files_error(dataset: str, folder: os.PathLike | str,
                        missing: Sequence[str], instructions: str) -> DataNotFoundError:
  """The `DataNotFoundError` for a manual dir that lacks `missing`."""
  folder = os.fspath(folder)
  where = folder if os.path.isdir(folder) else f"{folder} (no such folder)"
  listed = "\n".join(f"    {m}" for m in missing)
  return DataNotFoundError(
      f"{dataset}: the manual dir {where} lacks {len(missing)} required "
      f"item(s):\n{listed}\n{instructions}")


def read_image_bytes(path: os.PathLike | str) -> bytes:
  """The encoded bytes of an image file, kept as they are when TF can decode them.

  JPEG and PNG files in RGB or grey scale are returned unchanged. Anything
  else (CMYK JPEGs, palette or RGBA PNGs, GIF, BMP, ...) is converted to RGB
  with PIL and re-encoded as JPEG (quality 95), so that every stored image
  decodes with `tf.io.decode_image(channels=3)`.

  Raises:
    DataNotFoundError: the file does not exist.
    ValueError: PIL cannot read the file.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise DataNotFoundError(f"image file not found: {path}") from None
  try:
    with Image.open(io.BytesIO(data)) as img:
      if img.format in ("JPEG", "PNG") and img.mode in ("RGB", "L"):
        return data
      out = io.BytesIO()
      img.convert("RGB").save(out, format="JPEG", quality=95)
      return out.getvalue()
  except Exception as e:  # PIL raises many types for broken files.
    raise ValueError(f"cannot read image {path}: {e}") from e


# ----------------------------------------------------------------------------
# Preprocessing settings.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How images are resized, cropped and normalised.

  Attributes:
    crop_size: side of the square crop fed to the network.
    resize: (height, width): resize to exactly this size first (the SGN
      authors' `Resizing(256, 256)`); an int: resize the shorter side to it,
      keeping the aspect ratio (torchvision `Resize(256)`); None: no resize
      (the image must be at least `crop_size` on each side).
    mean, std: per-channel normalisation of RGB images scaled to [0, 1]
      (mode "standardize"); None with mode "caffe".
    mode: "standardize": (x / 255 - mean) / std on RGB; "caffe": RGB -> BGR,
      minus `CAFFE_MEAN_BGR` on pixel values 0..255, no scaling (the input the
      Keras ImageNet ResNet-50 weights were trained on).
  """
  crop_size: int
  resize: tuple[int, int] | int | None
  mean: tuple[float, float, float] | None
  std: tuple[float, float, float] | None
  mode: str = "standardize"

  def __post_init__(self):
    if self.mode not in NORMALIZATION_MODES:
      raise ValueError(
          f"Preprocess mode={self.mode!r} is not known; allowed: {list(NORMALIZATION_MODES)} "
          f"('standardize': (x / 255 - mean) / std on RGB; 'caffe': RGB -> BGR minus "
          f"{CAFFE_MEAN_BGR}, the Keras ImageNet ResNet-50's preprocess_input).")
    if self.mode == "caffe" and (self.mean is not None or self.std is not None):
      raise ValueError(
          f"Preprocess(mode='caffe') subtracts the fixed BGR mean {CAFFE_MEAN_BGR} and "
          f"takes no mean / std; got mean={self.mean!r}, std={self.std!r}. Pass mean=None, "
          f"std=None, or mode='standardize' to normalise with them.")
    if self.mode == "standardize" and (self.mean is None or self.std is None):
      raise ValueError(
          f"Preprocess(mode='standardize') needs a per-channel mean and std; got "
          f"mean={self.mean!r}, std={self.std!r}. Pass both (e.g. CLOTHING1M_MEAN / "
          f"CLOTHING1M_STD), or mode='caffe'.")


CLOTHING1M = Preprocess(crop_size=224, resize=(256, 256), mean=CLOTHING1M_MEAN,
                        std=CLOTHING1M_STD)
WEBVISION = Preprocess(crop_size=227, resize=(256, 256), mean=IMAGENET_MEAN,
                       std=IMAGENET_STD)
# Clothing1M crops with the Keras ImageNet ResNet-50's own normalisation (model
# "resnet50_keras"); the authors use CLOTHING1M with those weights.
CLOTHING1M_CAFFE = Preprocess(crop_size=224, resize=(256, 256), mean=None, std=None,
                              mode="caffe")
PREPROCESS = {"clothing1m": CLOTHING1M, "mini_webvision": WEBVISION}


def device_normalize(images: jax.Array, preprocess: Preprocess,
                     dtype=jnp.float32) -> jax.Array:
  """uint8 (or float, 0..255) RGB crops -> network inputs, as `preprocess.mode` says.

  The same values as the host pipelines' `normalize=True`, for the uint8 crops
  of `normalize=False` (jit-able; e.g. `functools.partial(device_normalize,
  preprocess=CLOTHING1M_CAFFE)` as the classification `preprocess`).
  """
  x = jnp.asarray(images).astype(jnp.float32)
  if preprocess.mode == "caffe":
    return (x[..., ::-1] - jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)).astype(dtype)
  mean = jnp.asarray(preprocess.mean, jnp.float32) * 255.0
  std = jnp.asarray(preprocess.std, jnp.float32) * 255.0
  return ((x - mean) / std).astype(dtype)


# ----------------------------------------------------------------------------
# Sources: random access to the encoded images of a split.
# ----------------------------------------------------------------------------


class Source:
  """Random access to one split: labels and indices in memory, images on demand.

  Attributes:
    labels: (N,) int32 label of every row (Clothing1M train: the noisy label).
    index: (N,) int32 example index of every row.
    name: for messages.
  """
  labels: np.ndarray
  index: np.ndarray
  name: str

  def __len__(self) -> int:
    return len(self.labels)

  def attach_images(self, ds):
    """Maps a dataset of dicts with "row" (and "path") to add "encoded" bytes."""
    raise NotImplementedError


class FileSource(Source):
  """Reads the image files of a `SplitTable` directly."""

  def __init__(self, table: SplitTable, name: str = "files"):
    self.table = table
    self.labels = table.labels
    self.index = np.arange(len(table), dtype=np.int32)
    self.name = name
    self._full = np.array(
        [os.path.join(table.root, p).encode("utf-8") for p in table.paths],
        dtype=object)

  def paths_for(self, rows: np.ndarray) -> np.ndarray:
    return self._full[rows]

  def attach_images(self, ds):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    def read(ex):
      ex = dict(ex)
      ex["encoded"] = tf.io.read_file(ex.pop("path"))
      return ex

    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class TfdsSource(Source):
  """A split of a TFDS dataset prepared in the ArrayRecord format.

  Labels and indices come from the dataset's metadata (written by the
  builders, so nothing is read to get them); the serialised records are read
  by row with the ArrayRecord data source and parsed in the tf.data graph.
  """

  def __init__(self, builder, split: str):
    from tensorflow_datasets.core import decode  # pylint: disable=g-import-not-at-top
    info = builder.info
    if split not in info.splits:
      raise ValueError(f"{builder.name} has no split {split!r} (splits: "
                       f"{', '.join(sorted(info.splits))}).")
    table = (info.metadata or {}).get("tables", {}).get(split)
    if table is None:
      raise ValueError(
          f"{builder.name}: the prepared dataset in {builder.data_dir} has no "
          "label table in its metadata; prepare it with this library's "
          "builder.")
    self.labels = np.asarray(table["labels"], dtype=np.int32)
    self.index = np.arange(len(self.labels), dtype=np.int32)
    self.name = f"{builder.name}/{split}"
    if len(self.labels) != info.splits[split].num_examples:
      raise ValueError(
          f"{self.name}: metadata lists {len(self.labels)} labels, the split "
          f"has {info.splits[split].num_examples} examples.")
    try:
      self._records = builder.as_data_source(
          split, deserialize_method=decode.DeserializeMethod.RAW_BYTES)
    except NotImplementedError as e:
      raise ValueError(
          f"{self.name} is not stored in a random-access format: prepare it "
          "with file_format='array_record' (the default of this library's "
          f"builders), or use file_source(). ({e})") from None
    self._spec = builder.info.features.tf_example_spec

  def fetch(self, rows: np.ndarray) -> np.ndarray:
    records = self._records.__getitems__([int(r) for r in rows])
    return np.array(records, dtype=object)

  def attach_images(self, ds):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    spec = self._spec

    def read(batch):
      batch = dict(batch)
      serialized = tf.numpy_function(self.fetch, [batch["row"]], tf.string,
                                     stateful=False)
      serialized.set_shape(batch["row"].shape)
      parsed = tf.io.parse_example(serialized, spec)
      batch["encoded"] = parsed["image"]
      batch["record_index"] = tf.cast(parsed["index"], tf.int32)
      return batch

    # Read in chunks (one ArrayRecord call per chunk), then back to examples.
    return ds.batch(64).map(read, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True).unbatch()


def tfds_source(builder, split: str) -> TfdsSource:
  """A `Source` over `split` of a prepared builder (ArrayRecord format)."""
  return TfdsSource(builder, split)


def file_source(table: SplitTable, name: str = "files") -> FileSource:
  """A `Source` that reads the image files of `table` directly."""
  return FileSource(table, name)


# ----------------------------------------------------------------------------
# Epoch order.
# ----------------------------------------------------------------------------


def _check_seed(seed: int, epoch: int) -> None:
  for name, value in (("seed", seed), ("epoch", epoch)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
        or value < 0:
      raise ValueError(f"{name} must be a non-negative int, got {value!r}.")


def balanced_subset(labels: np.ndarray, samples_per_class: int, *, seed: int,
                    epoch: int, num_classes: int | None = None) -> np.ndarray:
  """Rows of a class-balanced random subset, in a random order.

  Every class contributes `samples_per_class` rows drawn uniformly without
  replacement (all of its rows if it has fewer, with a warning), and the
  union is shuffled. Deterministic in (seed, epoch); a new subset each epoch.

  Args:
    labels: (N,) labels (for Clothing1M: the noisy labels).
    samples_per_class: rows per class (18,976 in the paper setting).
    seed, epoch: non-negative ints.
    num_classes: default max(labels) + 1.

  Returns:
    (M,) int64 rows, M = sum over classes of min(count, samples_per_class).
  """
  _check_seed(seed, epoch)
  if samples_per_class <= 0:
    raise ValueError(f"samples_per_class must be positive, got "
                     f"{samples_per_class}.")
  labels = np.asarray(labels)
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  rng = np.random.default_rng([seed, epoch, _ORDER_SALT, 1])
  picked = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    if len(members) < samples_per_class:
      logging.warning("class %d has %d examples, fewer than samples_per_class"
                      "=%d: all are used.", c, len(members), samples_per_class)
      picked.append(members)
    else:
      picked.append(rng.choice(members, size=samples_per_class, replace=False))
  subset = np.concatenate(picked).astype(np.int64)
  return subset[rng.permutation(len(subset))]


def epoch_rows(labels: np.ndarray, *, seed: int, epoch: int,
               samples_per_class: int | None = None,
               num_classes: int | None = None) -> np.ndarray:
  """The rows of epoch `epoch` in order: a function of (seed, epoch) only.

  With `samples_per_class` None, a permutation of all rows; otherwise
  `balanced_subset`.
  """
  if samples_per_class is not None:
    return balanced_subset(labels, samples_per_class, seed=seed, epoch=epoch,
                           num_classes=num_classes)
  _check_seed(seed, epoch)
  rng = np.random.default_rng([seed, epoch, _ORDER_SALT, 0])
  return rng.permutation(len(labels)).astype(np.int64)


def steps_per_epoch(num_rows: int, global_batch_size: int) -> int:
  """Whole global batches in an epoch of `num_rows` rows (remainder dropped)."""
  return num_rows // global_batch_size


def _process(process_index, process_count) -> tuple[int, int]:
  p = jax.process_index() if process_index is None else int(process_index)
  n = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= p < n:
    raise ValueError(f"process_index {p} is not in [0, {n}).")
  return p, n


def _local_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} must be a positive multiple "
        f"of the process count ({process_count}).")
  return global_batch_size // process_count


def _augment_key(seed: int, epoch: int) -> int:
  state = np.random.SeedSequence([seed, epoch, _AUGMENT_SALT]).generate_state(1)
  return int(state[0] & 0x7FFFFFFF)


# ----------------------------------------------------------------------------
# Image ops (TensorFlow, inside tf.data).
# ----------------------------------------------------------------------------


def _decode_resize(encoded, preprocess: Preprocess):
  """Encoded bytes -> float32 (H, W, 3) in [0, 255], resized as configured."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  image = tf.cast(image, tf.float32)
  resize = preprocess.resize
  if resize is None:
    return image
  if isinstance(resize, int):
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    short = tf.minimum(h, w)
    new_h = tf.where(h <= w, float(resize), tf.floor(resize * h / short))
    new_w = tf.where(h <= w, tf.floor(resize * w / short), float(resize))
    size = tf.cast(tf.stack([new_h, new_w]), tf.int32)
  else:
    size = tuple(int(s) for s in resize)
  return tf.image.resize(image, size, method="bilinear", antialias=False)


def _finish(image, preprocess: Preprocess, normalize: bool):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  c = preprocess.crop_size
  image.set_shape([c, c, 3])
  if normalize and preprocess.mode == "caffe":
    return tf.reverse(image, axis=[-1]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)
  if normalize:
    mean = tf.constant(preprocess.mean, tf.float32) * 255.0
    std = tf.constant(preprocess.std, tf.float32) * 255.0
    return (image - mean) / std
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def train_transform(encoded, seed, preprocess: Preprocess, *,
                    normalize: bool = True, flip: bool = True):
  """Decode, resize, random crop, random horizontal flip, normalise.

  `seed` is a (2,) int64 stateless seed: the same seed gives the same crop.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = _decode_resize(encoded, preprocess)
  c = preprocess.crop_size
  seeds = tf.random.experimental.stateless_split(seed, num=3)
  shape = tf.shape(image)
  dy = tf.random.stateless_uniform([], seeds[0], minval=0,
                                   maxval=shape[0] - c + 1, dtype=tf.int32)
  dx = tf.random.stateless_uniform([], seeds[1], minval=0,
                                   maxval=shape[1] - c + 1, dtype=tf.int32)
  image = image[dy:dy + c, dx:dx + c, :]
  if flip:
    coin = tf.random.stateless_uniform([], seeds[2]) < 0.5
    image = tf.cond(coin, lambda: tf.reverse(image, axis=[1]), lambda: image)
  return _finish(image, preprocess, normalize)


def eval_transform(encoded, preprocess: Preprocess, *, normalize: bool = True):
  """Decode, resize, centre crop, normalise."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = _decode_resize(encoded, preprocess)
  c = preprocess.crop_size
  shape = tf.shape(image)
  dy = (shape[0] - c) // 2
  dx = (shape[1] - c) // 2
  return _finish(image[dy:dy + c, dx:dx + c, :], preprocess, normalize)


# ----------------------------------------------------------------------------
# Pipelines.
# ----------------------------------------------------------------------------


def _rows_dataset(source: Source, rows: np.ndarray, extra: dict[str, np.ndarray]):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = np.asarray(rows, dtype=np.int64)
  tensors = {"row": rows, "label": source.labels[rows], "index": source.index[rows]}
  tensors.update(extra)
  if isinstance(source, FileSource):
    tensors["path"] = source.paths_for(rows)
  return tf.data.Dataset.from_tensor_slices(tensors)


def _checked_index(ex):
  """The example's index; for TFDS records, checked against the record's own."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  index = tf.cast(ex["index"], tf.int32)
  if "record_index" not in ex:
    return index
  check = tf.debugging.assert_equal(
      index, ex["record_index"],
      message="TFDS record index differs from the metadata table")
  with tf.control_dependencies([check]):
    return tf.identity(index)


def _options(ds, threads: int | None):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  options = tf.data.Options()
  options.deterministic = True
  if threads:
    options.threading.private_threadpool_size = threads
  return ds.with_options(options)


def make_train_dataset(source: Source, *, preprocess: Preprocess,
                       global_batch_size: int, seed: int, epoch: int,
                       start_step: int = 0,
                       samples_per_class: int | None = None,
                       num_classes: int | None = None,
                       process_index: int | None = None,
                       process_count: int | None = None,
                       normalize: bool = True, flip: bool = True,
                       prefetch: int = 2, threads: int | None = None):
  """The tf.data pipeline of this process's batches of epoch `epoch` from `start_step`.

  Yields dicts: "image" (L, c, c, 3) float32 (uint8 when `normalize` is
  False), "label" (L,) int32, "index" (L,) int32, with L = global batch /
  process count. See the module doc for order, sharding and resumption.

  Args:
    source: `tfds_source(...)` or `file_source(...)`.
    preprocess: e.g. `CLOTHING1M` or `WEBVISION`.
    global_batch_size: batch over all processes (Clothing1M 32, WebVision 64).
    seed, epoch: the order and the augmentation are functions of these.
    start_step: first step of the epoch to produce (resumption).
    samples_per_class: class-balanced subset per epoch (Clothing1M: 18,976),
      None = every row every epoch.
    num_classes: classes for the balanced subset (default max label + 1).
    process_index, process_count: default `jax.process_index()` /
      `jax.process_count()`.
    normalize: normalise to float32 with the mean / std; False gives uint8
      crops to normalise on the device.
    flip: random horizontal flips.
    prefetch: batches to prepare ahead.
    threads: size of a private tf.data thread pool (None = TF's default).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  p, n = _process(process_index, process_count)
  local = _local_batch(global_batch_size, n)
  order = epoch_rows(source.labels, seed=seed, epoch=epoch,
                     samples_per_class=samples_per_class,
                     num_classes=num_classes)
  steps = steps_per_epoch(len(order), global_batch_size)
  if not 0 <= start_step <= steps:
    raise ValueError(f"start_step={start_step} is outside the epoch's "
                     f"{steps} steps.")
  positions = np.arange(steps * global_batch_size, dtype=np.int64).reshape(
      steps, global_batch_size)[:, p * local:(p + 1) * local].reshape(-1)
  key = _augment_key(seed, epoch)
  ds = _rows_dataset(source, order[positions], {"position": positions})
  # Resumption: drop the rows of the steps already taken, before any reading.
  ds = ds.skip(start_step * local)
  ds = source.attach_images(ds)

  def transform(ex):
    seed_pair = tf.stack([tf.constant(key, tf.int64), ex["position"]])
    return {
        "image": train_transform(ex["encoded"], seed_pair, preprocess,
                                 normalize=normalize, flip=flip),
        "label": tf.cast(ex["label"], tf.int32),
        "index": _checked_index(ex),
    }

  ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(prefetch)
  return _options(ds, threads)


def make_train_iterator(source: Source, *, preprocess: Preprocess,
                        global_batch_size: int, seed: int, epoch: int,
                        start_step: int = 0, **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """NumPy batches of `make_train_dataset` (same arguments)."""
  ds = make_train_dataset(source, preprocess=preprocess,
                          global_batch_size=global_batch_size, seed=seed,
                          epoch=epoch, start_step=start_step, **kwargs)
  return ds.as_numpy_iterator()


def train_steps_per_epoch(source: Source, global_batch_size: int, *,
                          samples_per_class: int | None = None,
                          num_classes: int | None = None) -> int:
  """Steps of each epoch of `make_train_dataset`: the same for every epoch."""
  if samples_per_class is None:
    return steps_per_epoch(len(source), global_batch_size)
  labels = np.asarray(source.labels)
  k = int(labels.max()) + 1 if num_classes is None else num_classes
  counts = np.bincount(labels, minlength=k)[:k]
  return steps_per_epoch(int(np.minimum(counts, samples_per_class).sum()),
                         global_batch_size)


def eval_steps(source: Source, global_batch_size: int) -> int:
  """Steps of `make_eval_dataset`: ceil(N / global batch)."""
  return -(-len(source) // global_batch_size)


def make_eval_dataset(source: Source, *, preprocess: Preprocess,
                      global_batch_size: int,
                      process_index: int | None = None,
                      process_count: int | None = None,
                      normalize: bool = True, prefetch: int = 2,
                      threads: int | None = None):
  """Every row once, in row order, centre crops; the last batch padded.

  Yields dicts like `make_train_dataset` plus "mask" (L,) bool, False on the
  padding rows (copies of row 0) that fill the last global batch. Each
  process gets its block of every global batch, so all processes run the same
  number of steps (`eval_steps`).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  p, n = _process(process_index, process_count)
  local = _local_batch(global_batch_size, n)
  total = eval_steps(source, global_batch_size) * global_batch_size
  positions = np.arange(total, dtype=np.int64).reshape(
      -1, global_batch_size)[:, p * local:(p + 1) * local].reshape(-1)
  real = positions < len(source)
  rows = np.where(real, positions, 0)
  ds = _rows_dataset(source, rows, {"mask": real})
  ds = source.attach_images(ds)

  def transform(ex):
    return {
        "image": eval_transform(ex["encoded"], preprocess, normalize=normalize),
        "label": tf.cast(ex["label"], tf.int32),
        "index": _checked_index(ex),
        "mask": ex["mask"],
    }

  ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(prefetch)
  return _options(ds, threads)


def make_eval_iterator(source: Source, *, preprocess: Preprocess,
                       global_batch_size: int, **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """NumPy batches of `make_eval_dataset` (same arguments)."""
  return make_eval_dataset(source, preprocess=preprocess,
                           global_batch_size=global_batch_size,
                           **kwargs).as_numpy_iterator()


# ----------------------------------------------------------------------------
# To the devices.
# ----------------------------------------------------------------------------


def to_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's batch -> global arrays sharded over the "data" axis.

  Every process calls it with its own local batch (L rows); the result has
  L * process_count rows, the local batches concatenated in process order,
  split over the mesh's data axis. L must be divisible by the number of this
  process's devices on that axis.
  """
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
