"""Whole TFDS splits in memory, prepared with TFDS's own builders.

TensorFlow and tensorflow_datasets are imported inside the functions only, so
the rest of the library imports without them.

Preparation (`prepare`) never touches the network unless asked to
(`download=True`): with neither a prepared copy nor a manual dir it fails at
once with a `DataNotFoundError` that names the files to fetch.

Row order. TFDS writes examples in a deterministic pseudo-random order (sorted
by the md5 hash of each example's key, salted with the split name), so the
rows returned here are NOT in the original order. `train_index` recovers it:

* cifar10 / cifar100 / cifar10_n / cifar100_n: from the feature
  `id` = "train_<python-batch index>";
* mnist / fashion_mnist (no `id` feature; the key is the archive position):
  by recomputing TFDS's key hash order (`tfds_key_order`). The test-suite
  checks that `images == idx_archive_images[train_index]` for MNIST.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import zlib

import numpy as np

from sgn_jax.data import dataset as dataset_lib
from sgn_jax.data.dataset import DataCorruptError, DataNotFoundError, InMemoryDataset

# TFDS feature name -> label-set key.
CIFAR_N_FEATURES: dict[str, dict[str, str]] = {
    "cifar10_n": {
        "aggre_label": "aggre",
        "random_label1": "random1",
        "random_label2": "random2",
        "random_label3": "random3",
        "worse_label": "worse",
    },
    "cifar100_n": {"noise_label": "noisy"},
}

_ID_ORDERED = ("cifar10", "cifar100", "cifar10_n", "cifar100_n")
_KEY_ORDERED = ("mnist", "fashion_mnist")


def default_data_dir() -> str:
  """TFDS's default data dir: `$TFDS_DATA_DIR` or ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def _tfds_info(name: str) -> dataset_lib.DatasetInfo:
  info = dataset_lib.get_info(name)
  if info.tfds_name is None:
    tfds_names = sorted(n for n, i in dataset_lib.DATASETS.items()
                        if i.tfds_name)
    raise ValueError(f"Dataset {name!r} does not come from TFDS (TFDS "
                     f"datasets: {', '.join(tfds_names)}).")
  return info


def _file_list(info: dataset_lib.DatasetInfo, names=None) -> str:
  return "\n".join(f"    {f}  <- {url}" for f, url in info.manual_files
                   if names is None or f in names)


def _not_found_message(info: dataset_lib.DatasetInfo, data_dir: str,
                       where: str) -> str:
  head = (f"Dataset {info.name!r} (TFDS builder {info.tfds_name!r}) is not "
          f"prepared in the TFDS data dir {data_dir} (looked in {where}), and "
          "downloading is off, so nothing was fetched.")
  if info.manual_only:
    return (
        f"{head} It needs internet access AND these files in one folder:\n"
        f"{_file_list(info)}\n"
        "  Set --config.dataset.download=True and "
        "--config.dataset.manual_dir=<that folder>, or prepare once with\n"
        f"    python -m sgn_jax.data.prepare --dataset={info.name} "
        f"--data_dir={data_dir} --manual_dir=<that folder> --download\n"
        f"  Note: {info.notes}")
  return (
      f"{head} Ways out:\n"
      "  1. With internet access: set --config.dataset.download=True (TFDS "
      "downloads and prepares it).\n"
      "  2. Offline: download these files into one folder\n"
      f"{_file_list(info)}\n"
      "     and pass --config.dataset.manual_dir=<that folder>, or prepare "
      "once with\n"
      f"       python -m sgn_jax.data.prepare --dataset={info.name} "
      f"--data_dir={data_dir} --manual_dir=<that folder>"
      + (f"\n  Note: {info.notes}" if info.notes else ""))


def check_archive(path: pathlib.Path, url: str = "") -> None:
  """Reads a manually downloaded `.gz` / `.tgz` archive to its end (gzip checks its
  CRC and length), so that a truncated or corrupt download is named before TFDS
  prepares anything from it (DataCorruptError: delete it and download it again)."""
  if not path.name.endswith((".gz", ".tgz")):
    return
  try:
    with gzip.open(path, "rb") as f:
      while f.read(1 << 24):
        pass
  except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
    again = f" from {url}" if url else ""
    raise DataCorruptError(
        f"{path} is damaged ({type(e).__name__}: {e}): the archive is truncated or corrupt "
        f"(an interrupted download?); delete it and download it again{again}") from None


def _builder(info: dataset_lib.DatasetInfo, data_dir: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(info.tfds_name, data_dir=data_dir)


def prepare(name: str,
            data_dir: str | os.PathLike | None = None,
            manual_dir: str | os.PathLike | None = None,
            download: bool = False) -> str:
  """Makes sure TFDS has `name` prepared in `data_dir`.

  * already prepared: nothing to do;
  * `manual_dir` given: checks that the files TFDS needs are there (missing
    ones listed with URLs), then prepares from them with
    `download_dir=<data_dir>/downloads/<name>` (one per dataset: MNIST and
    Fashion-MNIST archives share file names);
  * `download=True` (no manual dir): ordinary TFDS download and preparation;
  * otherwise: raises `DataNotFoundError` at once, without any network call.

  cifar10_n / cifar100_n need both: TFDS downloads the CIFAR images itself,
  and reads the CIFAR-N csv/npy files from the manual dir.

  Args:
    name: a TFDS-backed key of `DATASETS`.
    data_dir: TFDS data dir; default `default_data_dir()`.
    manual_dir: folder with manually downloaded files.
    download: allow TFDS to download.

  Returns:
    The directory of the prepared dataset version.

  Raises:
    DataNotFoundError: data not prepared and not obtainable as configured.
    ValueError: `name` is unknown or not a TFDS dataset.
  """
  info = _tfds_info(name)
  data_dir = os.fspath(pathlib.Path(data_dir or default_data_dir())
                       .expanduser())
  builder = _builder(info, data_dir)
  if builder.is_prepared():
    return os.fspath(builder.data_dir)
  where = os.fspath(builder.data_dir)
  if manual_dir is None and not download:
    raise DataNotFoundError(_not_found_message(info, data_dir, where))
  if manual_dir is None and info.manual_only:
    raise DataNotFoundError(
        f"Dataset {name!r} needs files that TFDS cannot download; put them "
        "in a folder and pass --config.dataset.manual_dir=<that folder>:\n"
        f"{_file_list(info, info.manual_only)}\n  Note: {info.notes}")
  if manual_dir is not None:
    manual = pathlib.Path(manual_dir).expanduser()
    required = info.manual_only if download else tuple(
        f for f, _ in info.manual_files)
    missing = [f for f in required if not (manual / f).is_file()]
    if missing:
      raise DataNotFoundError(
          f"Dataset {name!r}: the manual dir {manual}"
          f"{'' if manual.is_dir() else ' (no such folder)'} lacks "
          f"{len(missing)} file(s); download them into it:\n"
          f"{_file_list(info, missing)}"
          + (f"\n  Note: {info.notes}" if info.notes else ""))
    if info.manual_only and not download:
      raise DataNotFoundError(
          f"Dataset {name!r}: the manual dir {manual} has the CIFAR-N files, "
          "but TFDS must download the CIFAR images for this builder, and "
          "downloading is off (nothing was fetched); set "
          f"--config.dataset.download=True.\n  Note: {info.notes}")
    urls = dict(info.manual_files)
    for f in required:
      check_archive(manual / f, urls.get(f, ""))
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  download_dir = os.path.join(data_dir, "downloads", name)
  if manual_dir is not None:
    config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(pathlib.Path(manual_dir).expanduser()),
        try_download_gcs=download)
  else:
    config = tfds.download.DownloadConfig()
  try:
    builder.download_and_prepare(download_dir=download_dir,
                                 download_config=config)
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    where = (f"the archives in {pathlib.Path(manual_dir).expanduser()}" if manual_dir
             else f"the downloads in {download_dir}")
    raise DataCorruptError(
        f"Dataset {name!r} could not be prepared: {type(e).__name__}: {e}; one of {where} "
        f"is truncated or corrupt: delete it (and {download_dir}) and download it again"
        ) from None
  return os.fspath(builder.data_dir)


def tfds_key_order(num_examples: int, split: str) -> np.ndarray:
  """TFDS's on-disk order of examples whose keys are 0..num_examples-1.

  TFDS's writer sorts examples by `hashing.Hasher(split).hash_key(key)` (md5,
  stable across TFDS versions: changing it would need a major version bump of
  every dataset). Builders that key examples by their position in the source
  files (mnist, fashion_mnist, cifar10, cifar100) thus store row j = source
  example `order[j]`. (For CIFAR-10 this equals the CIFAR-N authors'
  `image_order_c10.npy`.)

  Args:
    num_examples: number of examples in the split.
    split: split name used as the hash salt ("train", "test").

  Returns:
    (num_examples,) int64: source position of each TFDS row.
  """
  from tensorflow_datasets.core import hashing  # pylint: disable=g-import-not-at-top
  hasher = hashing.Hasher(split)
  keys = [hasher.hash_key(i) for i in range(num_examples)]
  return np.array(sorted(range(num_examples), key=keys.__getitem__),
                  dtype=np.int64)


def _damaged_files(builder, split: str) -> list[str]:
  """The record files of `split` in the prepared folder that cannot be read to the end."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(builder.data_dir)
  damaged = []
  for path in sorted(folder.glob(f"*-{split}.tfrecord-*")):
    try:
      for _ in tf.data.TFRecordDataset(os.fspath(path)):
        pass
    except tf.errors.OpError:
      damaged.append(os.fspath(path))
  return damaged


def _read_split(builder, split: str) -> dict[str, np.ndarray]:
  """The whole `split` in memory; DataCorruptError naming the damaged record file(s)
  (truncated or corrupted) with what to do."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    ds = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
    return tfds.as_numpy(ds)
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    reason = " ".join(str(e).split())
    reason = reason.split("}}", 1)[-1].strip()[:200]  # TF's function-node prefix dropped
    damaged = _damaged_files(builder, split) or [
        os.fspath(pathlib.Path(builder.data_dir) / f"*-{split}.*")]
    raise DataCorruptError(
        f"the prepared TFDS dataset in {builder.data_dir} is damaged: {', '.join(damaged)} "
        f"cannot be read ({type(e).__name__}: {reason}); delete the folder "
        f"{builder.data_dir} and prepare the dataset again (python -m sgn_jax.data.prepare "
        f"--dataset={builder.name} --data_dir={pathlib.Path(builder.data_dir).parents[1]} "
        "[--manual_dir=...])") from None


def _index_from_ids(ids: np.ndarray, split: str) -> np.ndarray:
  prefix = f"{split}_"
  out = np.empty(len(ids), dtype=np.int64)
  for i, raw in enumerate(ids):
    s = raw.decode() if isinstance(raw, bytes) else str(raw)
    if not s.startswith(prefix):
      raise ValueError(f"unexpected TFDS id {s!r} (expected {prefix}<index>).")
    out[i] = int(s[len(prefix):])
  return out


def load(name: str,
         data_dir: str | os.PathLike | None = None,
         manual_dir: str | os.PathLike | None = None,
         download: bool = False) -> InMemoryDataset:
  """Loads the train and test splits of a TFDS dataset into memory.

  Calls `prepare` first (same arguments). Rows stay in TFDS order;
  `train_index` gives each row's original index (see the module doc). For
  cifar10_n / cifar100_n `train_labels` are the clean labels and the human
  labels go to `label_sets` (TFDS features renamed as in `CIFAR_N_FEATURES`).

  Args:
    name: a TFDS-backed key of `DATASETS`.
    data_dir: TFDS data dir; default `default_data_dir()`.
    manual_dir: folder with manually downloaded files.
    download: allow TFDS to download.

  Raises:
    DataNotFoundError: see `prepare`.
  """
  info = _tfds_info(name)
  data_dir = os.fspath(pathlib.Path(data_dir or default_data_dir())
                       .expanduser())
  prepare(name, data_dir=data_dir, manual_dir=manual_dir, download=download)
  builder = _builder(info, data_dir)
  train = _read_split(builder, "train")
  test = _read_split(builder, "test")
  n = len(train["label"])
  if name in _ID_ORDERED:
    train_index = _index_from_ids(train["id"], "train")
  elif name in _KEY_ORDERED:
    train_index = tfds_key_order(n, "train")
  else:  # pragma: no cover - every TFDS dataset is in one of the two lists
    train_index = np.arange(n, dtype=np.int64)
  label_sets = {key: np.asarray(train[feature]).astype(np.int32)
                for feature, key in CIFAR_N_FEATURES.get(name, {}).items()}
  return InMemoryDataset(
      name=name,
      num_classes=info.num_classes,
      train_images=np.asarray(train["image"], dtype=np.uint8),
      train_labels=np.asarray(train["label"]).astype(np.int32),
      test_images=np.asarray(test["image"], dtype=np.uint8),
      test_labels=np.asarray(test["label"]).astype(np.int32),
      train_index=train_index,
      label_sets=label_sets,
      class_names=info.class_names,
  )
