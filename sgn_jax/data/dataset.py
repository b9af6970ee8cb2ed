"""In-memory datasets and the registry of the datasets this library knows.

Everything here is pure NumPy: importing it needs neither TensorFlow nor JAX.

A dataset is held whole in host memory as NumPy arrays (the largest, CIFAR, is
150 MB of uint8 train images). Train rows carry

* `train_labels`: the CLEAN labels (also for CIFAR-10N / CIFAR-100N),
* `train_index`: each row's index in the dataset's canonical original order
  (python-batch order for CIFAR, archive order for MNIST / Fashion-MNIST), so
  that per-example side data published in that order (CIFAR-N human labels)
  can be aligned whatever order a loader returns the rows in,
* `label_sets`: human noisy label sets aligned with the train rows.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np


class DataNotFoundError(FileNotFoundError):
  """Data a loader needs is not on disk; the message says how to get it."""


class DataCorruptError(ValueError):
  """Data on disk is damaged (a truncated archive, a corrupted record); the message names
  the file and says to delete it and fetch or prepare it again."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a dataset.

  Attributes:
    name: this library's name for the dataset ("mnist", "cifar10_n", ...).
    num_classes: number of classes.
    image_shape: shape of one example, (H, W, C) for images, (2,) for gmm2d.
    tfds_name: the TFDS builder that provides it, or None.
    class_names: one name per class.
    manual_files: (file name, URL) pairs that offline preparation needs in a
      manual dir (the files TFDS would otherwise download, plus, for
      CIFAR-N, the files TFDS never downloads).
    manual_only: the names among `manual_files` that TFDS cannot download
      itself: they must be in the manual dir even with `download=True`.
    notes: extra instructions shown in "data not found" errors.
    mean, std: per-channel statistics of the training images in [0, 1] (the
      usual normalisation; a config may choose others, e.g. SGN normalises
      CIFAR-100 with CIFAR-10's).
  """
  name: str
  num_classes: int
  image_shape: tuple[int, ...]
  tfds_name: str | None
  class_names: tuple[str, ...]
  manual_files: tuple[tuple[str, str], ...] = ()
  manual_only: tuple[str, ...] = ()
  notes: str = ""
  mean: tuple[float, ...] = ()
  std: tuple[float, ...] = ()


def _check_split(name: str, split: str, images, labels, num_classes: int) -> None:
  """Images: uint8 (N, H, W, C), or finite floats for vector data; labels: integers in
  [0, num_classes). ValueError naming the dataset, the split and what is wrong."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim == 4 and images.dtype != np.uint8:
    raise ValueError(f"{name} {split} images have dtype {images.dtype}; image datasets hold "
                     "uint8 in [0, 255] (sgn_jax.data.array_source.check_image_values)")
  if np.issubdtype(images.dtype, np.floating) and images.size and not np.isfinite(
      images).all():
    raise ValueError(f"{name} {split} inputs have {int((~np.isfinite(images)).sum())} "
                     "NaN/Inf values")
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name} {split} labels must be 1-D integers, got {labels.dtype} "
                     f"{labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"{name} {split} labels lie in [{labels.min()}, {labels.max()}], "
                     f"outside [0, {num_classes})")


@dataclasses.dataclass(frozen=True, eq=False)
class InMemoryDataset:
  """A whole dataset in host memory.

  Attributes:
    name: dataset name ("mnist", ...; a key of `DATASETS`).
    num_classes: number of classes.
    train_images: (N, H, W, C) uint8 for images; (N, 2) float32 for gmm2d.
    train_labels: (N,) int32 CLEAN labels (for cifar*_n: the clean labels).
    test_images: test inputs, like `train_images`.
    test_labels: (M,) int32 test labels.
    train_index: (N,) int64 index of each train row in the dataset's
      canonical original order (python-batch order for CIFAR, archive order
      for MNIST / Fashion-MNIST); `arange(N)` when the rows are in that order.
    label_sets: human noisy label sets, each (N,) int32 and aligned with the
      train rows. CIFAR-10N: "aggre", "random1", "random2", "random3",
      "worse"; CIFAR-100N: "noisy". Empty otherwise.
    class_names: one name per class.
  """
  name: str
  num_classes: int
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  train_index: np.ndarray
  label_sets: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  class_names: tuple[str, ...] = ()

  def __post_init__(self):
    n = len(self.train_images)
    if len(self.train_labels) != n:
      raise ValueError(
          f"{self.name}: {n} train images but {len(self.train_labels)} train "
          "labels.")
    if len(self.train_index) != n:
      raise ValueError(
          f"{self.name}: {n} train images but train_index has "
          f"{len(self.train_index)} entries.")
    if len(self.test_images) != len(self.test_labels):
      raise ValueError(
          f"{self.name}: {len(self.test_images)} test images but "
          f"{len(self.test_labels)} test labels.")
    for split, images, labels in (("train", self.train_images, self.train_labels),
                                  ("test", self.test_images, self.test_labels)):
      _check_split(self.name, split, images, labels, self.num_classes)
    for key, labels in self.label_sets.items():
      if len(labels) != n:
        raise ValueError(
            f"{self.name}: label set {key!r} has {len(labels)} entries, the "
            f"train split {n}.")
    if self.class_names and len(self.class_names) != self.num_classes:
      raise ValueError(
          f"{self.name}: {len(self.class_names)} class names for "
          f"{self.num_classes} classes.")
    object.__setattr__(self, "label_sets", dict(self.label_sets))
    object.__setattr__(self, "class_names", tuple(self.class_names))

  @property
  def num_train(self) -> int:
    """Number of train rows."""
    return len(self.train_labels)

  @property
  def num_test(self) -> int:
    """Number of test rows."""
    return len(self.test_labels)

  def subset(self, n: int) -> InMemoryDataset:
    """Returns the first `n` train rows (images, labels, index, label sets).

    The test split is left untouched.

    Args:
      n: number of train rows to keep, 1 <= n <= num_train.

    Raises:
      ValueError: if `n` is out of range.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
      raise ValueError(f"subset size must be an int, got {n!r}.")
    if not 0 < n <= self.num_train:
      raise ValueError(
          f"subset size {n} is out of range: {self.name} has "
          f"{self.num_train} train rows (allowed 1..{self.num_train}).")
    return dataclasses.replace(
        self,
        train_images=self.train_images[:n],
        train_labels=self.train_labels[:n],
        train_index=self.train_index[:n],
        label_sets={k: v[:n] for k, v in self.label_sets.items()},
    )


_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CIFAR_N_RAW = (
    "https://raw.githubusercontent.com/UCSC-REAL/cifar-10-100n/HEAD")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                   "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock
cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish
forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
tank telephone television tiger tractor train trout tulip turtle wardrobe whale
willow_tree wolf woman worm""".split())
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGITS = tuple(str(i) for i in range(10))


def _cifar_n_files(c: str) -> tuple[tuple[str, str], ...]:
  return (
      (f"CIFAR-{c}_human_annotations.csv",
       f"{_CIFAR_N_RAW}/data/CIFAR-{c}_human.pt"),
      (f"side_info_cifar{c}N.csv", f"{_CIFAR_N_RAW}/side_info_cifar{c}N.csv"),
      (f"image_order_c{c}.npy", f"{_CIFAR_N_RAW}/image_order_c{c}.npy"),
  )


def _cifar_n_notes(c: str) -> str:
  return (
      f"TFDS's cifar{c}_n builder downloads the CIFAR-{c} images itself "
      f"(cifar-{c}-binary.tar.gz; it has no manual-dir route for them) and "
      f"reads the CIFAR-N files (CIFAR-{c}_human_annotations.csv, "
      f"side_info_cifar{c}N.csv, image_order_c{c}.npy) from the manual dir, "
      "so it needs BOTH "
      "--config.dataset.download=True (internet) and "
      "--config.dataset.manual_dir=<folder with those files>. "
      f"CIFAR-{c}_human_annotations.csv is not published as such: it is the "
      f"authors' labels (CIFAR-{c}_human.pt, python-batch order) in TFDS row "
      f"order, label[image_order_c{c}]; write it with: python -c \"from "
      f"sgn_jax.data import cifar_n; cifar_n.write_tfds_annotations_csv("
      f"'cifar{c}', '<folder with CIFAR-{c}_human.pt and "
      f"image_order_c{c}.npy>')\". Offline alternative with the same labels: "
      f"--config.dataset.name=cifar{c} (TFDS, prepared from a manual dir "
      f"holding cifar-{c}-binary.tar.gz) plus "
      "--config.dataset.cifar_n_dir=<folder with the authors' "
      f"CIFAR-{c}_human.pt or cifar{c}n_labels.npz>.")


_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CIFAR100_MEAN, _CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", num_classes=10, image_shape=(28, 28, 1),
        tfds_name="mnist", class_names=DIGITS,
        manual_files=tuple((f, _MNIST_URL + f) for f in _IDX_FILES),
        mean=(0.1307,), std=(0.3081,)),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", num_classes=10, image_shape=(28, 28, 1),
        tfds_name="fashion_mnist", class_names=FASHION_MNIST_CLASSES,
        manual_files=tuple((f, _FASHION_URL + f) for f in _IDX_FILES),
        mean=(0.2860,), std=(0.3530,)),
    "cifar10": DatasetInfo(
        name="cifar10", num_classes=10, image_shape=(32, 32, 3),
        tfds_name="cifar10", class_names=CIFAR10_CLASSES,
        manual_files=(("cifar-10-binary.tar.gz",
                       "https://www.cs.toronto.edu/~kriz/"
                       "cifar-10-binary.tar.gz"),),
        mean=_CIFAR10_MEAN, std=_CIFAR10_STD),
    "cifar100": DatasetInfo(
        name="cifar100", num_classes=100, image_shape=(32, 32, 3),
        tfds_name="cifar100", class_names=CIFAR100_CLASSES,
        manual_files=(("cifar-100-binary.tar.gz",
                       "https://www.cs.toronto.edu/~kriz/"
                       "cifar-100-binary.tar.gz"),),
        mean=_CIFAR100_MEAN, std=_CIFAR100_STD),
    "cifar10_n": DatasetInfo(
        name="cifar10_n", num_classes=10, image_shape=(32, 32, 3),
        tfds_name="cifar10_n", class_names=CIFAR10_CLASSES,
        manual_files=_cifar_n_files("10"),
        manual_only=tuple(f for f, _ in _cifar_n_files("10")),
        notes=_cifar_n_notes("10"), mean=_CIFAR10_MEAN, std=_CIFAR10_STD),
    "cifar100_n": DatasetInfo(
        name="cifar100_n", num_classes=100, image_shape=(32, 32, 3),
        tfds_name="cifar100_n", class_names=CIFAR100_CLASSES,
        manual_files=_cifar_n_files("100"),
        manual_only=tuple(f for f, _ in _cifar_n_files("100")),
        notes=_cifar_n_notes("100"), mean=_CIFAR100_MEAN, std=_CIFAR100_STD),
    "gmm2d": DatasetInfo(
        name="gmm2d", num_classes=4, image_shape=(2,), tfds_name=None,
        class_names=("0", "1", "2", "3"),
        notes="Synthetic (sgn_jax.data.gmm); the class count is configurable.",
        mean=(0.0, 0.0), std=(1.0, 1.0)),
}


def get_info(name: str) -> DatasetInfo:
  """Returns `DATASETS[name]`, or raises ValueError listing the known names."""
  try:
    return DATASETS[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"Unknown dataset {name!r}; known datasets: "
        f"{', '.join(sorted(DATASETS))}.") from None
