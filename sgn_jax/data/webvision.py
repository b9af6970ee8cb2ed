"""Mini-WebVision (first 50 classes, Google images) and its ImageNet val subset, as TFDS.

WebVision 1.0 (Li et al., 2017) is downloaded by hand from
https://data.vision.ee.ethz.ch/cvl/webvision/download.html (the resized
version). "Mini" WebVision is the setting of Jiang et al. (MentorNet) used by
DivideMix, ELR and SGN: the Google-crawled training images of the first 50
classes, evaluated on the WebVision validation images and on the ImageNet
ILSVRC2012 validation images of the same 50 classes. The manual dir:

    <manual_dir>/
      info/train_filelist_google.txt   "google/q0001/00000000.jpg 0" per line
      info/val_filelist.txt            "val000001.jpg 0" per line
      info/synsets.txt                 optional: class i = WNID on line i
      google/q0001/...jpg ...          training images (paths as in the list)
      val_images_256/val000001.jpg ... validation images
      imagenet_val/ or imagenet/val/   ILSVRC2012 validation images, one of:

ImageNet validation layouts accepted (checked in this order):

1. `imagenet_val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG`: the official val
   images sorted into one folder per WNID (the layout of the PyTorch ImageNet
   example / valprep.sh). The class is the WNID's position in
   info/synsets.txt (or, without it, in the sorted ILSVRC2012 WNID list that
   TFDS ships: the same order).
2. `imagenet_val/ILSVRC2012_val_XXXXXXXX.JPEG`: the official
   ILSVRC2012_img_val.tar unpacked as is, with the ground truth from
   `imagenet_val/LOC_val_solution.csv` (Kaggle's ILSVRC file: "ImageId,
   PredictionString" whose first token is the WNID) when present, else from
   the WNID-per-image ground truth that TFDS ships for its imagenet2012
   builder (datasets/imagenet2012/validation_labels.txt, line k = image
   ILSVRC2012_val_{k:08d}). Only the images of the first 50 classes are read.
3. `imagenet/val/<class>/<file>`: DivideMix's layout, folders named by the
   WebVision class number 0..49.

WebVision's class order is the sorted ILSVRC2012 WNID order (info/synsets.txt);
the SGN authors filter TFDS imagenet2012 (same order) to label < 50.

Splits (`index` = row): "train" (65,944 in the full release: every line of
train_filelist_google.txt with label < 50, in file order), "val" (2,500: the
same for val_filelist.txt), "imagenet_val" (2,500: ILSVRC2012 val images of
the first 50 classes, by image number). Features as Clothing1M: "image"
(encoded bytes as released), "label" (50 classes, named by WNID), "index",
"key" (the path relative to the manual dir).

TensorFlow Datasets is imported only when the builder is used. The builder
plumbing shared with Clothing1M lives in `sgn_jax.data.manual_builders`.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
import pathlib
import re

from sgn_jax.data import manual_builders
from sgn_jax.data import streaming
from sgn_jax.data.dataset import DataNotFoundError, DatasetInfo

NAME = "mini_webvision"
NUM_CLASSES = 50
SPLITS = ("train", "val", "imagenet_val")
TRAIN_LIST = "info/train_filelist_google.txt"
VAL_LIST = "info/val_filelist.txt"
SYNSETS = "info/synsets.txt"
VAL_DIR = "val_images_256"
IMAGENET_DIR = "imagenet_val"
IMAGENET_DIVIDEMIX_DIR = "imagenet/val"
KAGGLE_SOLUTION = "LOC_val_solution.csv"
OFFICIAL_SIZES = {"train": 65_944, "val": 2_500, "imagenet_val": 2_500}
_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.(JPEG|jpeg|jpg|JPG|png|PNG)$")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download WebVision 1.0, resized version
(https://data.vision.ee.ethz.ch/cvl/webvision/download.html): the Google
training images, the validation images and the meta information, and the
ILSVRC2012 validation images (https://image-net.org). Put in the manual dir:
  info/train_filelist_google.txt  (from the meta information archive)
  info/val_filelist.txt
  info/synsets.txt                (optional; fixes the class -> WNID order)
  google/                         Google training images (google/q0001/...)
  val_images_256/                 WebVision validation images
  imagenet_val/                   ILSVRC2012 validation images, either in
                                  one folder per WNID (imagenet_val/n01440764/
                                  ILSVRC2012_val_00000293.JPEG) or flat as in
                                  ILSVRC2012_img_val.tar (ground truth from
                                  imagenet_val/LOC_val_solution.csv, else the
                                  one shipped with TFDS)
                  or imagenet/val/<0..49>/  (DivideMix's layout)
Only the first 50 classes (mini-WebVision) are used.
"""

DATASET_INFO = DatasetInfo(
    name=NAME, num_classes=NUM_CLASSES, image_shape=(227, 227, 3),
    tfds_name=NAME, class_names=(),
    manual_files=(
        (TRAIN_LIST, "https://data.vision.ee.ethz.ch/cvl/webvision/download.html"),
        (VAL_LIST, "https://data.vision.ee.ethz.ch/cvl/webvision/download.html"),
        ("google/", "https://data.vision.ee.ethz.ch/cvl/webvision/download.html"),
        (VAL_DIR + "/", "https://data.vision.ee.ethz.ch/cvl/webvision/download.html"),
        (IMAGENET_DIR + "/", "https://image-net.org/download-images.php"),
    ),
    manual_only=(TRAIN_LIST, VAL_LIST, "google/", VAL_DIR + "/",
                 IMAGENET_DIR + "/"),
    notes=("Streamed, not held in memory: prepare with "
           "sgn_jax.data.webvision.prepare and read with "
           "sgn_jax.data.streaming."))


# ----------------------------------------------------------------------------
# WNIDs and ImageNet ground truth.
# ----------------------------------------------------------------------------


def _tfds_imagenet_file(name: str) -> pathlib.Path:
  """A file TFDS ships for imagenet2012, located without importing TFDS."""
  spec = importlib.util.find_spec("tensorflow_datasets")
  if spec is None or not spec.submodule_search_locations:
    raise DataNotFoundError(
        f"tensorflow_datasets is not installed, and its imagenet2012/{name} "
        "is needed here.")
  path = (pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets"
          / "imagenet2012" / name)
  if not path.is_file():
    raise DataNotFoundError(f"{path} not found in the installed "
                            "tensorflow_datasets.")
  return path


def _read_lines(path: os.PathLike | str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def imagenet_wnids(manual_dir: os.PathLike | str | None = None) -> list[str]:
  """The 1000 WNIDs in WebVision class order.

  From `<manual_dir>/info/synsets.txt` (first token of each line) when it
  exists, else TFDS's imagenet2012 labels.txt (the same sorted order).
  """
  if manual_dir is not None:
    synsets = pathlib.Path(os.fspath(manual_dir)) / SYNSETS
    if synsets.is_file():
      return [line.split()[0] for line in _read_lines(synsets)]
  return _read_lines(_tfds_imagenet_file("labels.txt"))


def class_names() -> tuple[str, ...]:
  """The WNIDs of the 50 mini-WebVision classes (TFDS's sorted list)."""
  return tuple(imagenet_wnids()[:NUM_CLASSES])


def _val_number(name: str) -> int | None:
  m = _VAL_FILE.search(name)
  return int(m.group(1)) if m else None


def _imagenet_layout(root: pathlib.Path) -> str | None:
  """"wnid", "flat", "dividemix" or None (no ImageNet val folder)."""
  folder = root / IMAGENET_DIR
  if folder.is_dir():
    with os.scandir(folder) as it:
      for entry in it:
        if entry.is_dir() and re.fullmatch(r"n\d{8}", entry.name):
          return "wnid"
    return "flat"
  if (root / IMAGENET_DIVIDEMIX_DIR).is_dir():
    return "dividemix"
  return None


def _flat_ground_truth(folder: pathlib.Path) -> dict[int, str]:
  """ILSVRC2012 val image number -> WNID."""
  kaggle = folder / KAGGLE_SOLUTION
  if kaggle.is_file():
    truth = {}
    with open(kaggle, encoding="utf-8", newline="") as f:
      for row in csv.DictReader(f):
        number = _val_number(row["ImageId"] + ".JPEG")
        if number is not None:
          truth[number] = row["PredictionString"].split()[0]
    return truth
  wnids = _read_lines(_tfds_imagenet_file("validation_labels.txt"))
  return {k + 1: w for k, w in enumerate(wnids)}


def read_imagenet_val(manual_dir: os.PathLike | str) -> streaming.SplitTable:
  """The ILSVRC2012 validation images of the first 50 classes (any layout above).

  Rows are sorted by image number (by file name in the DivideMix layout).

  Raises:
    DataNotFoundError: no ImageNet val folder, or listed images missing.
  """
  root = pathlib.Path(os.fspath(manual_dir)).expanduser()
  layout = _imagenet_layout(root)
  if layout is None:
    raise streaming.missing_files_error(
        NAME, root, [IMAGENET_DIR + "/ (or imagenet/val/)"],
        MANUAL_DOWNLOAD_INSTRUCTIONS)
  entries = []  # (sort key, relative path, label)
  if layout == "dividemix":
    for c in range(NUM_CLASSES):
      folder = root / IMAGENET_DIVIDEMIX_DIR / str(c)
      if not folder.is_dir():
        continue
      for name in os.listdir(folder):
        rel = f"{IMAGENET_DIVIDEMIX_DIR}/{c}/{name}"
        entries.append(((_val_number(name) or 0, name), rel, c))
  else:
    class_of = {w: i for i, w in enumerate(imagenet_wnids(root)[:NUM_CLASSES])}
    folder = root / IMAGENET_DIR
    if layout == "wnid":
      for wnid, c in class_of.items():
        sub = folder / wnid
        if not sub.is_dir():
          continue
        for name in os.listdir(sub):
          entries.append(((_val_number(name) or 0, name),
                          f"{IMAGENET_DIR}/{wnid}/{name}", c))
    else:
      truth = _flat_ground_truth(folder)
      files = {}
      for name in os.listdir(folder):
        number = _val_number(name)
        if number is not None:
          files[number] = name
      missing = []
      for number, wnid in sorted(truth.items()):
        if wnid not in class_of:
          continue
        if number not in files:
          missing.append(f"{IMAGENET_DIR}/ILSVRC2012_val_{number:08d}.JPEG")
          continue
        entries.append(((number, files[number]),
                        f"{IMAGENET_DIR}/{files[number]}", class_of[wnid]))
      if missing:
        raise streaming.missing_files_error(
            NAME, root, missing[:20] + ([f"... {len(missing) - 20} more"]
                                        if len(missing) > 20 else []),
            "The ImageNet val folder is flat, so every image of the first 50 "
            "classes (per its ground truth) must be in it.\n"
            + MANUAL_DOWNLOAD_INSTRUCTIONS)
  if not entries:
    raise streaming.missing_files_error(
        NAME, root, [f"ImageNet val images of the first {NUM_CLASSES} "
                     f"classes (layout {layout!r} found, but empty)"],
        MANUAL_DOWNLOAD_INSTRUCTIONS)
  entries.sort()
  return streaming.SplitTable(root=os.fspath(root),
                              paths=[e[1] for e in entries],
                              labels=[e[2] for e in entries])


# ----------------------------------------------------------------------------
# WebVision file lists.
# ----------------------------------------------------------------------------


def _read_filelist(path: pathlib.Path) -> tuple[list[str], list[int]]:
  paths, labels = [], []
  for _, name, label in manual_builders.path_label_lines(path):
    if label < NUM_CLASSES:
      paths.append(name)
      labels.append(label)
  return paths, labels


def check_manual_dir(path: os.PathLike | str) -> pathlib.Path:
  """Checks the mini-WebVision manual dir; returns it as a Path.

  Checks the two file lists, the image folders, the first image of each
  list and that an ImageNet val folder in a known layout exists.

  Raises:
    DataNotFoundError: listing everything that is missing.
  """
  root = pathlib.Path(os.fspath(path)).expanduser()
  missing = [f for f in (TRAIN_LIST, VAL_LIST) if not (root / f).is_file()]
  if not (root / "google").is_dir():
    missing.append("google/ (Google training images)")
  elif (root / TRAIN_LIST).is_file():
    first = manual_builders.first_path(root / TRAIN_LIST)
    if first and not (root / first).is_file():
      missing.append(f"{first} (first image of {TRAIN_LIST})")
  if not (root / VAL_DIR).is_dir():
    missing.append(f"{VAL_DIR}/ (validation images)")
  elif (root / VAL_LIST).is_file():
    first = manual_builders.first_path(root / VAL_LIST)
    if first and not (root / VAL_DIR / first).is_file():
      missing.append(f"{VAL_DIR}/{first} (first image of {VAL_LIST})")
  if _imagenet_layout(root) is None:
    missing.append(f"{IMAGENET_DIR}/ or {IMAGENET_DIVIDEMIX_DIR}/ (ILSVRC2012 "
                   "validation images)")
  if missing:
    raise streaming.missing_files_error(NAME, root, missing,
                                        MANUAL_DOWNLOAD_INSTRUCTIONS)
  return root


def read_split(manual_dir: os.PathLike | str, split: str) -> streaming.SplitTable:
  """The paths (relative to the manual dir) and labels of `split`, in row order."""
  if split not in SPLITS:
    raise ValueError(f"mini_webvision has no split {split!r}; splits: "
                     f"{', '.join(SPLITS)}.")
  root = check_manual_dir(manual_dir)
  if split == "imagenet_val":
    return read_imagenet_val(root)
  if split == "train":
    paths, labels = _read_filelist(root / TRAIN_LIST)
  else:
    names, labels = _read_filelist(root / VAL_LIST)
    paths = [f"{VAL_DIR}/{n}" for n in names]
  return streaming.SplitTable(root=os.fspath(root), paths=paths, labels=labels)


# ----------------------------------------------------------------------------
# The TFDS builder.
# ----------------------------------------------------------------------------

def _read_tables(manual_dir: os.PathLike | str) -> dict[str, streaming.SplitTable]:
  """`read_split` of every split."""
  return {s: read_split(manual_dir, s) for s in SPLITS}


@functools.cache
def _builder_class():
  """Defines (once) and returns the TFDS builder class `MiniWebVision`."""
  return manual_builders.define_builder(
      "MiniWebVision", module=__name__, name=NAME,
      doc="Mini-WebVision: Google images of the first 50 WebVision classes.",
      release_notes="train (Google, classes 0-49), val, imagenet_val.",
      instructions=MANUAL_DOWNLOAD_INSTRUCTIONS,
      description="Mini-WebVision: the Google images of the first 50 "
      "WebVision 1.0 classes (web labels), the WebVision validation images "
      "and the ILSVRC2012 validation images of those classes.",
      class_names=class_names,
      homepage="https://data.vision.ee.ethz.ch/cvl/webvision/",
      citation="@article{li2017webvision, title={WebVision Database: "
      "Visual Learning and Understanding from Web Data}, author={Li, Wen "
      "and Wang, Limin and Li, Wei and Agustsson, Eirikur and Van Gool, "
      "Luc}, journal={arXiv:1708.02862}, year={2017}}",
      check_manual_dir=check_manual_dir, read_tables=_read_tables)


__getattr__ = manual_builders.lazy_getattr(__name__, "MiniWebVision",
                                           _builder_class)


def builder(data_dir: os.PathLike | str | None = None, **kwargs):
  """A `MiniWebVision` builder for `data_dir` (default: TFDS's data dir)."""
  return manual_builders.make_builder(_builder_class(), data_dir, **kwargs)


def prepare(data_dir: os.PathLike | str | None = None,
            manual_dir: os.PathLike | str | None = None):
  """Prepares mini-WebVision in `data_dir` from `manual_dir` once; returns the builder.

  Raises:
    DataNotFoundError: not prepared and no (complete) manual dir.
  """
  return manual_builders.prepare(
      builder(data_dir), manual_dir, title=NAME,
      check_manual_dir=check_manual_dir,
      instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)


def sources(data_dir: os.PathLike | str | None = None,
            manual_dir: os.PathLike | str | None = None,
            from_files: bool = False) -> dict[str, streaming.Source]:
  """Streaming sources of "train", "val" and "imagenet_val".

  `from_files=True` reads the images of `manual_dir` directly; otherwise the
  prepared TFDS dataset (prepared first if needed).
  """
  return manual_builders.sources(
      lambda: prepare(data_dir, manual_dir), manual_dir, from_files,
      name=NAME, splits=SPLITS, read_tables=_read_tables,
      instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
