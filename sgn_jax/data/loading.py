"""`load_dataset(spec)`: one entry point from a dataset description to an InMemoryDataset.

The description is a `DatasetSpec` (or any object or mapping with these
fields; missing ones take the defaults shown):

    name         "mnist" | "fashion_mnist" | "cifar10" | "cifar100" |
                 "cifar10_n" | "cifar100_n" | "gmm2d"
    source       "tfds" | "npz" | "idx" | "gmm"            (default "tfds")
    data_dir     TFDS data dir, None = $TFDS_DATA_DIR or ~/tensorflow_datasets
    manual_dir   folder of manually downloaded files for TFDS  (None)
    download     let TFDS download                           (False)
    path         the npz file (source "npz") or idx folder (source "idx")
    cifar_n_dir  folder with the CIFAR-N authors' label files (None); for
                 cifar10 / cifar100 it attaches the aligned human label sets,
                 for cifar10_n / cifar100_n from "npz" it is required, and
                 for cifar10_n / cifar100_n from "tfds" it is the default
                 manual_dir
    train_subset first n train rows only; 0 = all            (0)
    val_split    which train rows a validation fraction holds out
                 (`split_validation`): "random" (seeded) | "last"  ("random")
    gmm          sub-config for source "gmm": num_classes, num_train,
                 num_test, std, radius; the seed is `spec.seed` (default 0)

Everything is validated before anything is loaded. The noise model is not a
data-loading concern: these fields have no noise rate, and the noisy labels
for synthetic noise are made later by `sgn_jax.noise`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

import numpy as np

from sgn_jax.data import array_source
from sgn_jax.data import cifar_n
from sgn_jax.data import dataset as dataset_lib
from sgn_jax.data import gmm as gmm_lib
from sgn_jax.data.dataset import DataNotFoundError, InMemoryDataset

SOURCES = ("tfds", "npz", "idx", "gmm")
# source -> datasets it can provide.
_SOURCE_DATASETS = {
    "tfds": tuple(n for n, i in dataset_lib.DATASETS.items() if i.tfds_name),
    "npz": tuple(n for n in dataset_lib.DATASETS if n != "gmm2d"),
    "idx": ("mnist", "fashion_mnist"),
    "gmm": ("gmm2d",),
}
_CIFAR_N_OK = ("cifar10", "cifar100", "cifar10_n", "cifar100_n")
_GMM_FIELDS = ("num_classes", "num_train", "num_test", "std", "radius")
# How `split_validation` picks the validation rows.
VAL_SPLITS = ("random", "last")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Which dataset to load and from where (the fields of the module doc).

  The streamed datasets (Clothing1M, mini-WebVision, `sgn_jax.train_data.StreamingData`)
  also use `from_files` (read the JPEGs of manual_dir), `samples_per_class` (a
  class-balanced subset per epoch, 0: all), `crop_size` and `resize` (0: the
  authors' sizes). `val_split` says which rows a validation fraction holds out
  (`VAL_SPLITS`, `split_validation`). `DatasetSpec.from_mapping(d)` takes the known
  keys of a mapping.
  """
  name: str
  source: str = "tfds"
  data_dir: str | None = None
  manual_dir: str | None = None
  download: bool = False
  path: str | None = None
  cifar_n_dir: str | None = None
  train_subset: int = 0
  seed: int = 0
  gmm: Mapping[str, Any] | None = None
  from_files: bool = False
  samples_per_class: int = 0
  crop_size: int = 0
  resize: int = 0
  val_split: str = "random"

  @classmethod
  def from_mapping(cls, fields: Mapping[str, Any]) -> "DatasetSpec":
    """The spec of the keys of `fields` that are spec fields (others are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kept = {k: v for k, v in dict(fields).items() if k in names}
    if kept.get("gmm") is not None:
      kept["gmm"] = dict(kept["gmm"])
    return cls(**kept)


def _get(spec: Any, field: str, default: Any = None) -> Any:
  if spec is None:
    return default
  if hasattr(spec, "get") and callable(spec.get):
    try:
      return spec.get(field, default)
    except TypeError:
      pass
  return getattr(spec, field, default)


def _gmm_kwargs(spec: Any) -> dict[str, Any]:
  sub = _get(spec, "gmm")
  kwargs = {}
  for field in _GMM_FIELDS:
    value = _get(sub, field)
    if value is not None:
      kwargs[field] = value
  return kwargs


def check_dataset_spec(spec: Any) -> dict[str, Any]:
  """Checks a dataset config without loading anything; returns its normalised fields.

  Raises ValueError naming the offending field, its value and what is allowed,
  and DataNotFoundError for paths that do not exist.
  """
  name = _get(spec, "name")
  if name not in dataset_lib.DATASETS:
    raise ValueError(f"dataset.name={name!r} is unknown; allowed: "
                     f"{', '.join(dataset_lib.DATASETS)}.")
  source = _get(spec, "source", "tfds") or "tfds"
  if source not in SOURCES:
    raise ValueError(f"dataset.source={source!r} is unknown; allowed: "
                     f"{', '.join(SOURCES)}.")
  if name not in _SOURCE_DATASETS[source]:
    providers = [s for s, names in _SOURCE_DATASETS.items() if name in names]
    raise ValueError(
        f"dataset.source={source!r} cannot provide dataset.name={name!r}: "
        f"source {source!r} serves {', '.join(_SOURCE_DATASETS[source])}; "
        f"{name!r} comes from source {' or '.join(map(repr, providers))}.")

  train_subset = _get(spec, "train_subset", 0) or 0
  if (isinstance(train_subset, bool) or not isinstance(
      train_subset, (int, np.integer)) or train_subset < 0):
    raise ValueError(f"dataset.train_subset={train_subset!r} must be an int "
                     ">= 0 (0 = all train rows).")

  val_split = _get(spec, "val_split", "random") or "random"
  if val_split not in VAL_SPLITS:
    raise ValueError(
        f"dataset.val_split={val_split!r} is unknown; allowed: {', '.join(VAL_SPLITS)} "
        "(random: a seeded random subset of the training rows; last: the last rows in "
        "the dataset's order, the same for every seed).")

  fields = dict(name=name, source=source, train_subset=int(train_subset),
                data_dir=_get(spec, "data_dir"),
                manual_dir=_get(spec, "manual_dir"),
                download=bool(_get(spec, "download", False)),
                path=_get(spec, "path"), cifar_n_dir=_get(spec, "cifar_n_dir"),
                seed=_get(spec, "seed", 0) or 0, val_split=val_split)

  cifar_n_dir = fields["cifar_n_dir"]
  if cifar_n_dir:
    if name not in _CIFAR_N_OK:
      raise ValueError(
          f"dataset.cifar_n_dir is set but dataset.name={name!r} has no "
          f"CIFAR-N labels (allowed with: {', '.join(_CIFAR_N_OK)}).")
    if not pathlib.Path(cifar_n_dir).expanduser().is_dir():
      raise DataNotFoundError(
          f"dataset.cifar_n_dir={cifar_n_dir!r} is not a folder; it must hold "
          "the CIFAR-N authors' labels (cifar10n_labels.npz / "
          "CIFAR-10_human.pt, resp. cifar100n_labels.npz / CIFAR-100_human.pt)"
          ".")
  elif name in ("cifar10_n", "cifar100_n") and source == "npz":
    raise ValueError(
        f"dataset.name={name!r} from an npz needs dataset.cifar_n_dir (the "
        "folder with the CIFAR-N authors' labels) for its human label sets.")

  if source in ("npz", "idx"):
    path = fields["path"]
    if not path:
      what = ("the .npz file" if source == "npz" else
              "the folder with the four *-idx?-ubyte.gz archives")
      raise ValueError(
          f"dataset.source={source!r} needs dataset.path ({what}).")
    p = pathlib.Path(path).expanduser()
    if source == "npz" and not p.is_file():
      raise DataNotFoundError(f"dataset.path={path!r}: no such npz file.")
    if source == "idx" and not p.is_dir():
      raise DataNotFoundError(f"dataset.path={path!r}: no such folder (it "
                              "should hold the four *-idx?-ubyte.gz "
                              "archives).")
  if source == "tfds" and fields["manual_dir"]:
    if not pathlib.Path(fields["manual_dir"]).expanduser().is_dir():
      raise DataNotFoundError(
          f"dataset.manual_dir={fields['manual_dir']!r} is not a folder.")
  if source == "gmm":
    kwargs = _gmm_kwargs(spec)
    try:
      gmm_lib.GaussianMixture2D(
          **{k: v for k, v in kwargs.items() if k in ("num_classes", "std",
                                                      "radius")})
    except (TypeError, ValueError) as e:
      raise ValueError(f"dataset.gmm is invalid: {e}") from None
    for k in ("num_train", "num_test"):
      v = kwargs.get(k)
      if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
        raise ValueError(f"dataset.gmm.{k}={v!r} must be a positive int.")
    fields["gmm"] = kwargs
  if train_subset and source == "gmm":
    n = fields["gmm"].get("num_train", 10_000)
    if train_subset > n:
      raise ValueError(f"dataset.train_subset={train_subset} exceeds "
                       f"dataset.gmm.num_train={n}.")
  return fields


def load_dataset(spec: Any) -> InMemoryDataset:
  """Loads the dataset a config describes (see the module doc for fields).

  Args:
    spec: ConfigDict or object with the dataset fields.

  Returns:
    The dataset in host memory, with CIFAR-N label sets when configured, cut
    to `train_subset` rows when that is > 0.

  Raises:
    ValueError: unknown name or source, an incompatible pair, bad values
      (each message names the value and what is allowed).
    DataNotFoundError: a configured path is missing, or the data is not
      prepared (with instructions).
  """
  f = check_dataset_spec(spec)
  name, source = f["name"], f["source"]
  if source == "gmm":
    ds = gmm_lib.load_gmm(seed=int(f["seed"]), **f["gmm"])
  elif source == "idx":
    ds = array_source.load_idx(f["path"], name)
  elif source == "npz":
    ds = array_source.load_npz(f["path"], name)
  else:
    from sgn_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    manual_dir = f["manual_dir"]
    if manual_dir is None and name in ("cifar10_n", "cifar100_n"):
      manual_dir = f["cifar_n_dir"]
    ds = tfds_source.load(name, data_dir=f["data_dir"], manual_dir=manual_dir,
                          download=f["download"])
  check_splits_not_empty(ds, f)

  if f["cifar_n_dir"] and not ds.label_sets:
    label_sets = cifar_n.load_label_sets(
        name, f["cifar_n_dir"], ds.train_index, clean_labels=ds.train_labels)
    ds = dataclasses.replace(ds, label_sets=label_sets)
  if f["train_subset"]:
    ds = ds.subset(f["train_subset"])
  return ds


def check_splits_not_empty(ds: InMemoryDataset, fields: Mapping[str, Any]) -> None:
  """ValueError naming the data when its train or test split holds no example (the
  tasks train on the train split and evaluate on the test split)."""
  source = fields["source"]
  for split, count in (("train", ds.num_train), ("test", ds.num_test)):
    if count:
      continue
    if source == "npz":
      where, fix = (f"dataset.path={fields['path']!r}",
                    f"store examples in {split}_images / {split}_labels")
    elif source == "idx":
      where, fix = (f"dataset.path={fields['path']!r}",
                    f"download the {'train' if split == 'train' else 't10k'} archives again")
    else:
      where, fix = (f"dataset {ds.name!r} (source {source!r})",
                    "prepare the dataset again (delete its TFDS folder first)")
    raise ValueError(f"{where}: the {split} split is empty (0 examples); the tasks train on "
                     f"the train split and evaluate on the test split: {fix}")


def split_validation(num_examples: int, fraction: float, seed: int,
                     mode: str = "random") -> tuple[np.ndarray, np.ndarray]:
  """Deterministic train/validation split of `num_examples` rows.

  Args:
    num_examples: number of rows to split (>= 0).
    fraction: share of rows for validation, in [0, 1); the validation size is
      round(fraction * num_examples). 0 gives all rows to train.
    seed: seed for `np.random.default_rng` (mode "random").
    mode: "random": a random subset drawn from `seed`; "last": the last rows, the
      same for every seed (Uncertainty Baselines' CIFAR validation split,
      `ReadInstruction('train', from_=-n)` of the TFDS train split in its on-disk
      order, which the TFDS source keeps; the SGN authors' CIFAR/CIFAR-N runs).

  Returns:
    (train_rows, val_rows): disjoint sorted int64 arrays covering
    range(num_examples).

  Raises:
    ValueError: fraction outside [0, 1), a negative / non-int count or an unknown
      mode.
  """
  if (isinstance(num_examples, bool) or
      not isinstance(num_examples, (int, np.integer)) or num_examples < 0):
    raise ValueError(f"num_examples={num_examples!r} must be an int >= 0.")
  if isinstance(fraction, bool) or not 0.0 <= float(fraction) < 1.0:
    raise ValueError(f"validation fraction={fraction!r} must be in [0, 1).")
  if mode not in VAL_SPLITS:
    raise ValueError(f"validation split mode={mode!r} is unknown; allowed: "
                     f"{', '.join(VAL_SPLITS)}.")
  n_val = int(round(float(fraction) * num_examples))
  if n_val == 0:
    return (np.arange(num_examples, dtype=np.int64),
            np.zeros((0,), dtype=np.int64))
  if mode == "last":
    return (np.arange(num_examples - n_val, dtype=np.int64),
            np.arange(num_examples - n_val, num_examples, dtype=np.int64))
  perm = np.random.default_rng(seed).permutation(num_examples)
  return (np.sort(perm[n_val:]).astype(np.int64),
          np.sort(perm[:n_val]).astype(np.int64))
