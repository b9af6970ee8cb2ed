"""Datasets from plain files, without TensorFlow: `.npz` arrays and idx archives.

* `load_npz`: an npz with `train_images, train_labels, test_images,
  test_labels` and optionally `train_index` (e.g. the partial CIFAR-10 in
  `../shared/data/cifar10_subset/cifar10_subset.npz`).
* `load_idx`: the four original MNIST / Fashion-MNIST archives
  (`train-images-idx3-ubyte.gz`, ...), read with NumPy and gzip.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import zlib

import numpy as np

from sgn_jax import safe_load
from sgn_jax.data import dataset as dataset_lib
from sgn_jax.data.dataset import DataCorruptError, DataNotFoundError, InMemoryDataset

_NPZ_REQUIRED = ("train_images", "train_labels", "test_images", "test_labels")


def _as_images(x: np.ndarray, info: dataset_lib.DatasetInfo,
               what: str) -> np.ndarray:
  """uint8 NHWC images: adds a channel axis to (N, H, W) arrays of one-channel
  datasets and checks the values (`check_image_values`)."""
  x = np.asarray(x)
  if x.ndim == len(info.image_shape) and info.image_shape[-1] == 1:
    x = x[..., None]
  if x.shape[1:] != tuple(info.image_shape):
    raise ValueError(
        f"{what} has shape {x.shape}; {info.name} examples have shape "
        f"{tuple(info.image_shape)}.")
  return check_image_values(x, what)


def check_image_values(x: np.ndarray, what: str) -> np.ndarray:
  """Image arrays as the library keeps them: uint8 in [0, 255].

  Accepted: uint8; other integer types with values in [0, 255] (cast); floats
  in [0, 1] (scaled by 255 and rounded). Refused (ValueError naming `what`, the
  dtype and the value range): NaN/Inf, floats outside [0, 1] (e.g. 0..255 stored
  as float, or already normalised), integers outside [0, 255], other dtypes.
  """
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x
  if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"{what} has dtype {x.dtype}; images must be uint8 in [0, 255] "
                     "(or floats in [0, 1])")
  if np.issubdtype(x.dtype, np.floating):
    bad = ~np.isfinite(x)
    if bad.any():
      raise ValueError(f"{what} has {int(bad.sum())} NaN/Inf values; images must be finite")
  lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
  if np.issubdtype(x.dtype, np.floating):
    if lo < 0.0 or hi > 1.0:
      raise ValueError(
          f"{what} is {x.dtype} with values in [{lo:g}, {hi:g}]; float images must lie in "
          "[0, 1] (store uint8 in [0, 255], e.g. np.clip(x, 0, 255).astype(np.uint8), or "
          "divide by 255)")
    return np.rint(x * 255.0).astype(np.uint8)
  if lo < 0 or hi > 255:
    raise ValueError(f"{what} is {x.dtype} with values in [{lo:g}, {hi:g}]; integer images "
                     "must lie in [0, 255]")
  return x.astype(np.uint8)


def _as_labels(y: np.ndarray, num_classes: int, what: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{what} must be a 1-D integer array, got {y.dtype} "
                     f"{y.shape}.")
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"{what} has values in [{y.min()}, {y.max()}], outside "
                     f"[0, {num_classes}).")
  return y.astype(np.int32)


def load_npz(path: str | os.PathLike, name: str) -> InMemoryDataset:
  """Loads a dataset stored as arrays in one `.npz` file.

  Args:
    path: the npz file. Required keys: `train_images`, `train_labels`,
      `test_images`, `test_labels`; optional: `train_index` (each train row's
      index in the dataset's original order; default `arange(N)`). Other keys
      are ignored. Images of one-channel datasets may be (N, H, W).
    name: the dataset it holds (a key of `DATASETS`; sets the class count,
      class names and expected image shape).

  Returns:
    The dataset, with no label sets (attach CIFAR-N ones with
    `sgn_jax.data.cifar_n.load_label_sets`).

  Raises:
    DataNotFoundError: if `path` does not exist.
    ValueError: unknown `name`, a missing key (named), or inconsistent arrays.
  """
  info = dataset_lib.get_info(name)
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise DataNotFoundError(
        f"npz file for dataset {name!r} not found: {path} (expected keys "
        f"{', '.join(_NPZ_REQUIRED)}, optional train_index).")
  with safe_load.open_npz(path, fix=(  # allow_pickle=False: object arrays refused
      "write it again with np.savez(path, train_images=..., train_labels=..., "
      "test_images=..., test_labels=...)")) as z:
    missing = [k for k in _NPZ_REQUIRED if k not in z.files]
    if missing:
      raise ValueError(
          f"{path} lacks the key(s) {', '.join(missing)}; it has "
          f"{', '.join(z.files) or 'no arrays'} (required: "
          f"{', '.join(_NPZ_REQUIRED)}).")
    arrays = {k: z[k] for k in (*_NPZ_REQUIRED, "train_index") if k in z.files}
  train_images = _as_images(arrays["train_images"], info, f"{path}:train_images")
  test_images = _as_images(arrays["test_images"], info, f"{path}:test_images")
  n = len(train_images)
  if "train_index" in arrays:
    train_index = np.asarray(arrays["train_index"]).astype(np.int64)
    if train_index.shape != (n,):
      raise ValueError(f"{path}:train_index has shape {train_index.shape}, "
                       f"expected ({n},).")
  else:
    train_index = np.arange(n, dtype=np.int64)
  return InMemoryDataset(
      name=name,
      num_classes=info.num_classes,
      train_images=train_images,
      train_labels=_as_labels(arrays["train_labels"], info.num_classes,
                              f"{path}:train_labels"),
      test_images=test_images,
      test_labels=_as_labels(arrays["test_labels"], info.num_classes,
                             f"{path}:test_labels"),
      train_index=train_index,
      label_sets={},
      class_names=info.class_names,
  )


_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
  """Reads one idx file (gzip-compressed if the name ends in `.gz`).

  Args:
    path: the file.
    expected_magic: 0x803 for uint8 image files, 0x801 for uint8 label files.

  Returns:
    The uint8 array with the shape the header gives.

  Raises:
    ValueError: wrong magic number or a size that does not match the header.
  """
  path = pathlib.Path(path)
  opener = gzip.open if path.name.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise DataCorruptError(
        f"{path} is damaged ({type(e).__name__}: {e}): the archive is truncated or corrupt; "
        "delete it and download it again") from None
  if len(data) < 4:
    raise ValueError(f"{path}: too short for an idx file ({len(data)} bytes).")
  magic = int.from_bytes(data[:4], "big")
  if magic != expected_magic:
    raise ValueError(
        f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"
        " (is this an idx archive of the right kind, images vs labels?).")
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
                for i in range(ndim))
  size = int(np.prod(shape))
  if len(data) - header != size:
    raise DataCorruptError(f"{path}: header says shape {shape} ({size} bytes) but "
                           f"the file holds {len(data) - header} bytes of data: it is "
                           "truncated or damaged; delete it and download it again.")
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
  for candidate in (stem + ".gz", stem):
    if (directory / candidate).is_file():
      return directory / candidate
  return None


def load_idx(directory: str | os.PathLike, name: str) -> InMemoryDataset:
  """Loads MNIST or Fashion-MNIST from the four original idx archives.

  Pure NumPy + gzip (no TensorFlow). Rows stay in archive order, so
  `train_index` is `arange(60000)`.

  Args:
    directory: folder with `train-images-idx3-ubyte.gz`,
      `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
      `t10k-labels-idx1-ubyte.gz` (uncompressed files without `.gz` also
      work).
    name: "mnist" or "fashion_mnist".

  Raises:
    DataNotFoundError: missing folder or archives (each listed with its URL).
    ValueError: `name` is not an idx dataset; a bad magic number or size.
  """
  if name not in ("mnist", "fashion_mnist"):
    raise ValueError(f"load_idx reads MNIST-format archives; dataset {name!r}"
                     " is not one (allowed: mnist, fashion_mnist).")
  info = dataset_lib.DATASETS[name]
  directory = pathlib.Path(directory).expanduser()
  paths, missing = {}, []
  for file_name, url in info.manual_files:
    stem = file_name[:-3] if file_name.endswith(".gz") else file_name
    found = _find_idx(directory, stem) if directory.is_dir() else None
    if found is None:
      missing.append(f"  {file_name}  <- {url}")
    paths[stem] = found
  if missing:
    raise DataNotFoundError(
        f"{name}: idx archives missing in {directory}"
        f"{'' if directory.is_dir() else ' (no such folder)'}; download:\n"
        + "\n".join(missing))
  train_images = read_idx(paths["train-images-idx3-ubyte"], _IDX_IMAGES_MAGIC)
  train_labels = read_idx(paths["train-labels-idx1-ubyte"], _IDX_LABELS_MAGIC)
  test_images = read_idx(paths["t10k-images-idx3-ubyte"], _IDX_IMAGES_MAGIC)
  test_labels = read_idx(paths["t10k-labels-idx1-ubyte"], _IDX_LABELS_MAGIC)
  for images, labels, split in ((train_images, train_labels, "train"),
                                (test_images, test_labels, "t10k")):
    if len(images) != len(labels):
      raise ValueError(f"{name} {split}: {len(images)} images but "
                       f"{len(labels)} labels in {directory}.")
  return InMemoryDataset(
      name=name,
      num_classes=info.num_classes,
      train_images=_as_images(train_images, info, "train images"),
      train_labels=_as_labels(train_labels, info.num_classes, "train labels"),
      test_images=_as_images(test_images, info, "test images"),
      test_labels=_as_labels(test_labels, info.num_classes, "test labels"),
      train_index=np.arange(len(train_labels), dtype=np.int64),
      label_sets={},
      class_names=info.class_names,
  )
