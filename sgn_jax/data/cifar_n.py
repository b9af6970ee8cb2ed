"""CIFAR-10N / CIFAR-100N human noisy labels (Wei et al., ICLR 2022).

The authors (github.com/UCSC-REAL/cifar-10-100n) publish the labels in the
ORIGINAL PYTHON-BATCH ORDER of the CIFAR train set (`clean_label` equals the
labels of `data_batch_1..5`, resp. CIFAR-100's `train`):

* `CIFAR-10_human.pt`: keys `clean_label, aggre_label, worse_label,
  random_label1, random_label2, random_label3`;
* `CIFAR-100_human.pt`: keys `clean_label, noisy_label, clean_coarse_label,
  noisy_coarse_label`.

The `.pt` files are zip archives holding a pickled dict of NumPy arrays; they
are read here without torch, with an unpickler that only builds NumPy arrays.
`cifar10n_labels.npz` / `cifar100n_labels.npz` are the same arrays as plain npz
and are preferred when present.

Relation to TFDS. TFDS's `cifar10` / `cifar100` builders write the train rows
in the order of the md5 hash of their python-batch index (TFDS's deterministic
shuffle); each row's feature `id` = "train_<python-batch index>" undoes it.
`image_order_c10.npy` (from the authors) lists, for each TFDS row j, its
python-batch index: it equals TFDS's hash order exactly. The files TFDS's
`cifar10_n` / `cifar100_n` builders read from their manual dir,
`CIFAR-*_human_annotations.csv`, hold the labels in that TFDS order:

    csv_row[j] == label[image_order[j]]      (`tfds_order_labels`)

and those builders map them back, so their rows (whatever order) carry
`id` = "train_<python-batch index>" and correctly aligned noisy labels.
Note: `image_order_c100.npy` differs from TFDS's hash order in 14 positions
(a permutation among them); the CIFAR-100 csv uses `image_order_c100`, and so
does TFDS when it maps the csv back, so the labels stay aligned.

CSV columns. CIFAR-10: `clean_label, aggre_label, worse_label, random_label1,
random_label2, random_label3` (TFDS reads columns 1..5 as `aggre_label,
worse_label, random_label1..3`). CIFAR-100: `clean_label, noise_label` (TFDS
reads column 1 as its feature `noise_label`; the authors' key is
`noisy_label`).
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import zipfile
from typing import Mapping

import numpy as np

from sgn_jax import safe_load
from sgn_jax.data.dataset import DataNotFoundError

NUM_TRAIN = 50_000

# label-set key (this library) -> key in the authors' files.
LABEL_SET_KEYS: dict[str, dict[str, str]] = {
    "cifar10": {
        "aggre": "aggre_label",
        "random1": "random_label1",
        "random2": "random_label2",
        "random3": "random_label3",
        "worse": "worse_label",
    },
    "cifar100": {"noisy": "noisy_label"},
}

# Columns of the TFDS manual-dir csv, in order.
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "cifar10": ("clean_label", "aggre_label", "worse_label", "random_label1",
                "random_label2", "random_label3"),
    "cifar100": ("clean_label", "noise_label"),
}

_FILES = {
    "cifar10": ("cifar10n_labels.npz", "CIFAR-10_human.pt",
                "image_order_c10.npy", "CIFAR-10_human_annotations.csv"),
    "cifar100": ("cifar100n_labels.npz", "CIFAR-100_human.pt",
                 "image_order_c100.npy", "CIFAR-100_human_annotations.csv"),
}


def _base_name(dataset_name: str) -> str:
  base = {"cifar10": "cifar10", "cifar10_n": "cifar10",
          "cifar100": "cifar100", "cifar100_n": "cifar100"}.get(dataset_name)
  if base is None:
    raise ValueError(
        f"CIFAR-N labels exist for CIFAR-10 and CIFAR-100 only, not "
        f"{dataset_name!r} (allowed: cifar10, cifar10_n, cifar100, "
        "cifar100_n).")
  return base


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles dicts/lists of NumPy arrays and nothing else."""

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"),
      ("numpy._core.multiarray", "_reconstruct"),
      ("numpy", "ndarray"),
      ("numpy", "dtype"),
      ("numpy.core.multiarray", "scalar"),
      ("numpy._core.multiarray", "scalar"),
      ("collections", "OrderedDict"),
      ("_codecs", "encode"),  # how protocol-2 pickles store array bytes
  }

  def find_class(self, module, name):
    if (module, name) == ("_codecs", "encode"):
      return safe_load.latin1_encode  # latin-1 only: no codec lookup by name
    if (module, name) in self._ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
        f"refusing to load {module}.{name}: only NumPy arrays are expected in "
        "a CIFAR-N labels file.")

  def persistent_load(self, pid):
    raise pickle.UnpicklingError(
        "this .pt file holds torch tensors; convert it to npz with torch "
        "(np.savez(..., **{k: v.numpy() for k, v in torch.load(f).items()})).")


def _read_pt(path: pathlib.Path) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as z:
    names = [n for n in z.namelist() if n.endswith("/data.pkl")]
    if len(names) != 1:
      raise ValueError(f"{path}: not a torch zip archive with one data.pkl "
                       f"({z.namelist()[:5]}).")
    try:
      obj = _NumpyOnlyUnpickler(io.BytesIO(z.read(names[0]))).load()
    except pickle.UnpicklingError as error:
      raise safe_load.UnsafeFileError(f"{path}: {error}") from error
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a dict of label arrays, got "
                     f"{type(obj).__name__}.")
  return {str(k): np.asarray(v) for k, v in obj.items()}


def load_authors_labels(dataset_name: str,
                        cifar_n_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads the CIFAR-N authors' label arrays, in python-batch order.

  Looks for `cifar10n_labels.npz` (resp. `cifar100n_labels.npz`) and, failing
  that, the authors' `CIFAR-10_human.pt` (resp. `CIFAR-100_human.pt`).

  Args:
    dataset_name: cifar10, cifar10_n, cifar100 or cifar100_n.
    cifar_n_dir: folder holding one of those files.

  Returns:
    dict of (50000,) int64 arrays with the authors' keys (`clean_label`, ...).

  Raises:
    DataNotFoundError: neither file is there (both named, with URLs).
    ValueError: unknown dataset, or a file without the expected keys.
  """
  base = _base_name(dataset_name)
  npz_name, pt_name, _, _ = _FILES[base]
  folder = pathlib.Path(cifar_n_dir).expanduser()
  if (folder / npz_name).is_file():
    labels = safe_load.load_npz(folder / npz_name,  # allow_pickle=False
                                fix="download the CIFAR-N labels again")
    source = folder / npz_name
  elif (folder / pt_name).is_file():
    labels = _read_pt(folder / pt_name)
    source = folder / pt_name
  else:
    raise DataNotFoundError(
        f"CIFAR-N labels for {base} not found in {folder}"
        f"{'' if folder.is_dir() else ' (no such folder)'}: expected "
        f"{npz_name} or {pt_name} (download {pt_name} from "
        f"https://raw.githubusercontent.com/UCSC-REAL/cifar-10-100n/HEAD/data/"
        f"{pt_name}).")
  needed = ("clean_label", *LABEL_SET_KEYS[base].values())
  missing = [k for k in needed if k not in labels]
  if missing:
    raise ValueError(f"{source} lacks the key(s) {', '.join(missing)}; it has "
                     f"{', '.join(sorted(labels))}.")
  out = {}
  for k, v in labels.items():
    v = np.asarray(v)
    if v.shape != (NUM_TRAIN,):
      raise ValueError(f"{source}:{k} has shape {v.shape}, expected "
                       f"({NUM_TRAIN},).")
    out[k] = v.astype(np.int64)
  return out


def check_alignment(clean_from_images: np.ndarray,
                    cifar_n_clean: np.ndarray) -> None:
  """Checks that the CIFAR-N clean labels equal the images' own labels.

  This is the proof that train rows and CIFAR-N labels are aligned: on 50,000
  images with 10 or 100 classes a misalignment leaves ~90% (99%) mismatches.

  Args:
    clean_from_images: (N,) labels that came with the images.
    cifar_n_clean: (N,) `clean_label` of the CIFAR-N file, gathered at the
      rows' python-batch indices.

  Raises:
    ValueError: shapes differ, or labels differ (message gives how many and
      the first rows).
  """
  a = np.asarray(clean_from_images)
  b = np.asarray(cifar_n_clean)
  if a.shape != b.shape:
    raise ValueError(f"cannot align CIFAR-N labels: {a.shape} image labels vs "
                     f"{b.shape} CIFAR-N clean labels.")
  bad = np.flatnonzero(a != b)
  if bad.size:
    raise ValueError(
        f"CIFAR-N clean labels disagree with the image labels on {bad.size} of"
        f" {a.size} train rows (first rows: {bad[:10].tolist()}): the rows are"
        " not in the order their train_index claims (python-batch order "
        "expected), or the labels belong to another dataset.")


def load_label_sets(dataset_name: str,
                    cifar_n_dir: str | os.PathLike,
                    train_index: np.ndarray,
                    clean_labels: np.ndarray | None = None
                    ) -> dict[str, np.ndarray]:
  """Human noisy label sets aligned with the given train rows.

  `label_sets[key] = authors_labels[authors_key][train_index]`.

  Args:
    dataset_name: cifar10, cifar10_n, cifar100 or cifar100_n.
    cifar_n_dir: folder with the authors' labels (see `load_authors_labels`).
    train_index: (N,) python-batch index of each train row.
    clean_labels: optional (N,) labels of those rows; when given,
      `check_alignment` validates them against the authors' `clean_label`.

  Returns:
    {"aggre", "random1", "random2", "random3", "worse"} (CIFAR-10N) or
    {"noisy"} (CIFAR-100N), each (N,) int32.

  Raises:
    DataNotFoundError, ValueError: see `load_authors_labels`; train_index out
      of [0, 50000); misalignment.
  """
  base = _base_name(dataset_name)
  labels = load_authors_labels(base, cifar_n_dir)
  idx = np.asarray(train_index)
  if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f"train_index must be a 1-D integer array, got "
                     f"{idx.dtype} {idx.shape}.")
  if idx.size and (idx.min() < 0 or idx.max() >= NUM_TRAIN):
    raise ValueError(f"train_index has values in [{idx.min()}, {idx.max()}], "
                     f"outside the CIFAR train set [0, {NUM_TRAIN}).")
  if clean_labels is not None:
    check_alignment(clean_labels, labels["clean_label"][idx])
  return {key: labels[src][idx].astype(np.int32)
          for key, src in LABEL_SET_KEYS[base].items()}


def tfds_order_labels(labels: np.ndarray, image_order: np.ndarray) -> np.ndarray:
  """Puts python-batch-order labels into TFDS row order: `labels[image_order]`.

  Args:
    labels: (50000,) labels in python-batch order (the authors' files).
    image_order: (50000,) `image_order_c10.npy` / `image_order_c100.npy`: for
      each TFDS row, its python-batch index.

  Returns:
    The labels in the order of the rows of `CIFAR-*_human_annotations.csv`
    (and of TFDS's cifar10 / cifar100 train split, see the module doc).

  Raises:
    ValueError: `image_order` is not a permutation of range(len(labels)).
  """
  labels = np.asarray(labels)
  order = np.asarray(image_order)
  if order.shape != labels.shape[:1] or not np.array_equal(
      np.sort(order), np.arange(len(labels))):
    raise ValueError(f"image_order (shape {order.shape}) is not a permutation "
                     f"of the {len(labels)} label rows.")
  return labels[order]


def write_tfds_annotations_csv(dataset_name: str,
                               cifar_n_dir: str | os.PathLike,
                               out_path: str | os.PathLike | None = None
                               ) -> pathlib.Path:
  """Writes the `CIFAR-*_human_annotations.csv` that TFDS's builders read.

  From the authors' labels (npz or .pt) and `image_order_c*.npy`, both in
  `cifar_n_dir`; rows in TFDS order, columns `CSV_COLUMNS[...]`. Equivalent to
  the conversion in TFDS's cifar10_n / cifar100_n manual instructions.

  Args:
    dataset_name: cifar10, cifar10_n, cifar100 or cifar100_n.
    cifar_n_dir: folder with the authors' labels and the image order file.
    out_path: where to write; default `<cifar_n_dir>/CIFAR-*_annotations.csv`.

  Returns:
    The path written.
  """
  base = _base_name(dataset_name)
  _, _, order_name, csv_name = _FILES[base]
  folder = pathlib.Path(cifar_n_dir).expanduser()
  labels = load_authors_labels(base, folder)
  if not (folder / order_name).is_file():
    raise DataNotFoundError(
        f"{folder / order_name} not found; download it from "
        f"https://raw.githubusercontent.com/UCSC-REAL/cifar-10-100n/HEAD/"
        f"{order_name}.")
  order = np.load(folder / order_name, allow_pickle=False)
  if base == "cifar100":
    labels["noise_label"] = labels["noisy_label"]  # TFDS's column name
  columns = [tfds_order_labels(labels[c], order) for c in CSV_COLUMNS[base]]
  out = pathlib.Path(out_path) if out_path else folder / csv_name
  table = np.stack(columns, axis=1)
  with open(out, "w", newline="") as f:
    f.write(",".join(CSV_COLUMNS[base]) + "\n")
    f.writelines(",".join(map(str, row)) + "\n" for row in table.tolist())
  return out
