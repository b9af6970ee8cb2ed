"""Clothing1M (Xiao et al., CVPR 2015) as a TFDS dataset, prepared from a manual dir.

Clothing1M cannot be downloaded automatically: the authors hand it out on
request (https://github.com/Cysu/noisy_label). The manual dir is the folder
the release unpacks into:

    <manual_dir>/
      images/0/00/...jpg ... images/9/99/...jpg   (the 10 image archives, unpacked)
      noisy_label_kv.txt        "images/<a>/<bb>/<name>.jpg <label>" (noisy labels)
      clean_label_kv.txt        "images/<a>/<bb>/<name>.jpg <label>" (clean labels)
      noisy_train_key_list.txt  1,000,000 paths: the noisy training set
      clean_val_key_list.txt    14,313 paths: the clean validation set
      clean_test_key_list.txt   10,526 paths: the clean test set
      category_names_eng.txt    optional: the 14 class names, one a line

Splits (rows in key-list order, `index` = position in the key list):

* `noisy_train`: every path of noisy_train_key_list.txt with its label from
  noisy_label_kv.txt;
* `clean_val`, `clean_test`: the clean key lists with labels from
  clean_label_kv.txt.

Features: "image" (the JPEG bytes as they are in the release, decoded when
read; the rare file TF cannot decode is re-encoded, see
`streaming.read_image_bytes`), "label" (14 classes), "index" (int32), "key"
(the path as the key list writes it).

The train split is far too large for memory: train with
`sgn_jax.data.streaming` (class-balanced 18,976 x 14 = 265,664 images per
epoch in the SGN / DivideMix setting). The builder stores the label table of
every split in the dataset's metadata, so the streaming pipeline samples an
epoch without reading any image.

TensorFlow Datasets is imported only when the builder class is first used
(`Clothing1M`, `builder()`, `prepare()`); the file parsing and
`check_manual_dir` need neither TF nor TFDS. The builder plumbing shared with
mini-WebVision lives in `sgn_jax.data.manual_builders`.
"""

from __future__ import annotations

import functools
import os
import pathlib

from sgn_jax.data import manual_builders
from sgn_jax.data import streaming
from sgn_jax.data.dataset import DataNotFoundError, DatasetInfo  # pylint: disable=unused-import

NAME = "clothing1m"
NUM_CLASSES = 14
CLASS_NAMES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie",
               "Windbreaker", "Jacket", "Downcoat", "Suit", "Shawl", "Dress",
               "Vest", "Underwear")
SPLITS = ("noisy_train", "clean_val", "clean_test")
KEY_LISTS = {
    "noisy_train": "noisy_train_key_list.txt",
    "clean_val": "clean_val_key_list.txt",
    "clean_test": "clean_test_key_list.txt",
}
LABEL_FILES = {
    "noisy_train": "noisy_label_kv.txt",
    "clean_val": "clean_label_kv.txt",
    "clean_test": "clean_label_kv.txt",
}
# Sizes of the official release (the builder accepts any, e.g. test trees).
OFFICIAL_SIZES = {"noisy_train": 1_000_000, "clean_val": 14_313,
                  "clean_test": 10_526}
IMAGES_DIR = "images"
CLASS_NAMES_FILE = "category_names_eng.txt"
REQUIRED_FILES = ("noisy_label_kv.txt", "clean_label_kv.txt",
                  "noisy_train_key_list.txt", "clean_val_key_list.txt",
                  "clean_test_key_list.txt")
# SGN setting: 18,976 images of each class per epoch, 265,664 in all.
SAMPLES_PER_CLASS = 18_976

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Clothing1M is distributed by its authors on request
(https://github.com/Cysu/noisy_label). Put the unpacked release in the manual
dir:
  images/                    the 10 image archives (0.tar ... 9.tar) unpacked,
                             so that images/<a>/<bb>/<name>.jpg exist
  noisy_label_kv.txt         noisy labels ("<path> <label>" per line)
  clean_label_kv.txt         clean labels ("<path> <label>" per line)
  noisy_train_key_list.txt   paths of the 1,000,000 noisy training images
  clean_val_key_list.txt     paths of the 14,313 clean validation images
  clean_test_key_list.txt    paths of the 10,526 clean test images
  category_names_eng.txt     (optional) the 14 class names, one per line
Paths in the .txt files are relative to the manual dir ("images/...").
"""

DATASET_INFO = DatasetInfo(
    name=NAME, num_classes=NUM_CLASSES, image_shape=(224, 224, 3),
    tfds_name=NAME, class_names=CLASS_NAMES,
    manual_files=tuple((f, "https://github.com/Cysu/noisy_label")
                       for f in (IMAGES_DIR + "/",) + REQUIRED_FILES),
    manual_only=(IMAGES_DIR + "/",) + REQUIRED_FILES,
    notes=("Streamed, not held in memory: prepare with "
           "sgn_jax.data.clothing1m.prepare and read with "
           "sgn_jax.data.streaming."))


def check_manual_dir(path: os.PathLike | str) -> pathlib.Path:
  """Checks that `path` holds the Clothing1M release; returns it as a Path.

  Checks the five label / key-list files, the `images/` folder and the first
  image of every key list (catches an archive unpacked one level too deep)
  without scanning the million images.

  Raises:
    DataNotFoundError: listing everything that is missing.
  """
  root = pathlib.Path(os.fspath(path)).expanduser()
  missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
  if not (root / IMAGES_DIR).is_dir():
    missing.append(IMAGES_DIR + "/ (folder of the unpacked image archives)")
  else:
    for split, name in KEY_LISTS.items():
      if (root / name).is_file():
        first = manual_builders.first_path(root / name)
        if first and not (root / first).is_file():
          missing.append(f"{first} (first image of {name}, split {split})")
  if missing:
    raise streaming.missing_files_error(NAME, root, missing,
                                        MANUAL_DOWNLOAD_INSTRUCTIONS)
  return root


def _read_key_list(path: pathlib.Path) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.split()[0] for line in f if line.strip()]


def _read_label_kv(path: pathlib.Path) -> dict[str, int]:
  labels = {}
  for lineno, key, label in manual_builders.path_label_lines(path):
    if not 0 <= label < NUM_CLASSES:
      raise ValueError(f"{path}:{lineno}: label {label} is not in "
                       f"[0, {NUM_CLASSES}).")
    labels[key] = label
  return labels


def read_split(manual_dir: os.PathLike | str, split: str,
               _label_cache: dict | None = None) -> streaming.SplitTable:
  """The paths and labels of `split`, in key-list order.

  Raises:
    DataNotFoundError: the manual dir is incomplete.
    ValueError: unknown split, or a key without a label.
  """
  if split not in KEY_LISTS:
    raise ValueError(f"Clothing1M has no split {split!r}; splits: "
                     f"{', '.join(SPLITS)}.")
  root = check_manual_dir(manual_dir)
  cache = {} if _label_cache is None else _label_cache
  label_file = LABEL_FILES[split]
  if label_file not in cache:
    cache[label_file] = _read_label_kv(root / label_file)
  kv = cache[label_file]
  keys = _read_key_list(root / KEY_LISTS[split])
  unlabelled = [k for k in keys if k not in kv]
  if unlabelled:
    raise ValueError(
        f"{len(unlabelled)} path(s) of {KEY_LISTS[split]} have no label in "
        f"{label_file}, e.g. {unlabelled[:3]}.")
  return streaming.SplitTable(root=os.fspath(root), paths=keys,
                              labels=[kv[k] for k in keys])


def read_class_names(manual_dir: os.PathLike | str) -> tuple[str, ...]:
  """The class names of category_names_eng.txt, or the built-in ones."""
  path = pathlib.Path(os.fspath(manual_dir)) / CLASS_NAMES_FILE
  if not path.is_file():
    return CLASS_NAMES
  with open(path, encoding="utf-8") as f:
    names = tuple(line.strip() for line in f if line.strip())
  if len(names) != NUM_CLASSES:
    raise ValueError(f"{path} lists {len(names)} names, expected "
                     f"{NUM_CLASSES}.")
  return names


def _read_tables(manual_dir: os.PathLike | str) -> dict[str, streaming.SplitTable]:
  """`read_split` of every split, reading clean_label_kv.txt once."""
  cache = {}
  return {s: read_split(manual_dir, s, cache) for s in SPLITS}


def _check_release(path: os.PathLike | str) -> pathlib.Path:
  """`check_manual_dir`, and the optional class names file (for the builder)."""
  root = check_manual_dir(path)
  read_class_names(root)
  return root


@functools.cache
def _builder_class():
  """Defines (once) and returns the TFDS builder class `Clothing1M`."""
  return manual_builders.define_builder(
      "Clothing1M", module=__name__, name=NAME,
      doc="Clothing1M: 1M clothing images with noisy labels, 14 classes.",
      release_notes="noisy_train, clean_val, clean_test; JPEGs as released.",
      instructions=MANUAL_DOWNLOAD_INSTRUCTIONS,
      description="Clothing1M: clothing images from shopping websites with "
      "labels from the surrounding text (about 38% wrong), plus small clean "
      "validation and test sets.",
      class_names=lambda: CLASS_NAMES,
      homepage="https://github.com/Cysu/noisy_label",
      citation="@inproceedings{xiao2015learning, title={Learning from "
      "massive noisy labeled data for image classification}, author="
      "{Xiao, Tong and Xia, Tian and Yang, Yi and Huang, Chang and Wang, "
      "Xiaogang}, booktitle={CVPR}, year={2015}}",
      check_manual_dir=_check_release, read_tables=_read_tables)


__getattr__ = manual_builders.lazy_getattr(__name__, "Clothing1M",
                                           _builder_class)


def builder(data_dir: os.PathLike | str | None = None, **kwargs):
  """A `Clothing1M` builder for `data_dir` (default: TFDS's data dir)."""
  return manual_builders.make_builder(_builder_class(), data_dir, **kwargs)


def prepare(data_dir: os.PathLike | str | None = None,
            manual_dir: os.PathLike | str | None = None):
  """Prepares Clothing1M in `data_dir` from `manual_dir` once; returns the builder.

  Already prepared: nothing is read. Otherwise `manual_dir` is checked first
  (`check_manual_dir`), so a missing file fails at once.

  Raises:
    DataNotFoundError: not prepared and no (complete) manual dir.
  """
  return manual_builders.prepare(
      builder(data_dir), manual_dir, title="Clothing1M",
      check_manual_dir=check_manual_dir,
      instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)


def sources(data_dir: os.PathLike | str | None = None,
            manual_dir: os.PathLike | str | None = None,
            from_files: bool = False) -> dict[str, streaming.Source]:
  """Streaming sources of the three splits.

  `from_files=True` reads the JPEGs of `manual_dir` directly (nothing to
  prepare); otherwise the prepared TFDS dataset (prepared first if needed).
  """
  return manual_builders.sources(
      lambda: prepare(data_dir, manual_dir), manual_dir, from_files,
      name=NAME, splits=SPLITS, read_tables=_read_tables,
      instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
