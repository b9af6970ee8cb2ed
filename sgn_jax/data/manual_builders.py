"""What the TFDS builders of the hand-downloaded datasets share (Clothing1M, mini-WebVision).

Neither dataset can be downloaded by TFDS: the user unpacks the release into a
"manual dir", and the builder reads it from there. `clothing1m` and
`webvision` keep what is specific to their dataset (the file layout,
`check_manual_dir`, `read_split`, the builder's description); this module
holds the plumbing around it, which each of them calls with its own name,
check function, instructions, splits and split reader:

* `first_path`, `path_label_lines`: reading the "<path> <label>" lists;
* `define_builder`: the builder class (a `GeneratorBasedBuilder` that writes
  ArrayRecord by default, features "image" / "label" / "index" / "key", the
  label table of every split in the metadata);
* `lazy_getattr`: a module `__getattr__` that defines that class on first use;
* `make_builder`, `prepare`, `sources`: the bodies of the modules' `builder`,
  `prepare` and `sources`.

TensorFlow Datasets is imported only inside `define_builder` and `prepare`,
so importing this module (or the dataset modules) imports neither TF nor TFDS.
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable, Iterator, Sequence

import numpy as np

from sgn_jax.data import streaming
from sgn_jax.data.dataset import DataNotFoundError

PathLike = os.PathLike | str
# manual dir -> {split: table}, in split order.
ReadTables = Callable[[PathLike], dict[str, streaming.SplitTable]]


def first_path(path: os.PathLike | str) -> str:
  """The first field of the first non-blank line of `path` ("" if none)."""
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        return line.split()[0]
  return ""


def path_label_lines(path: os.PathLike | str) -> Iterator[tuple[int, str, int]]:
  """(line number, path, label) of every non-blank "<path> <label>" line.

  Raises:
    ValueError: a line that is not two fields, or a label that is not an int.
  """
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2:
        raise ValueError(f"{path}:{lineno}: expected '<path> <label>', got "
                         f"{line.strip()!r}.")
      yield lineno, parts[0], int(parts[1])


def define_builder(class_name: str, *, module: str, name: str, doc: str,
                   release_notes: str, instructions: str, description: str,
                   class_names: Callable[[], Sequence[str]], homepage: str,
                   citation: str,
                   check_manual_dir: Callable[[PathLike], pathlib.Path],
                   read_tables: ReadTables):
  """Defines and returns a TFDS builder class of a manual-dir dataset.

  The class is named `class_name` and belongs to `module` (where TFDS looks
  for it); TFDS registers it under `name` when it is defined, so call this
  once per dataset (the modules cache the class). Version 1.0.0, ArrayRecord
  by default (the streaming pipeline reads rows at random), rows in the order
  of `read_tables` (shuffling disabled, so row r has `index == r`).

  Preparing it calls `check_manual_dir(manual_dir)` (which returns the
  manual dir as a Path), then `read_tables` on that Path, stores
  `{split: {"labels": [...]}}` in the metadata under "tables", and writes
  every row: "image" (the file's bytes, see `streaming.read_image_bytes`),
  "label" (named by `class_names()`), "index" and "key" (the table's path).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  base = tfds.core.GeneratorBasedBuilder

  def __init__(self, *, file_format=None, **kwargs):
    # ArrayRecord by default: the streaming pipeline reads rows at random.
    base.__init__(self, file_format=file_format or "array_record", **kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=class_names()),
            "index": tfds.features.Scalar(dtype=np.int32),
            "key": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage=homepage,
        citation=citation,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    tables = read_tables(check_manual_dir(dl_manager.manual_dir))
    self.info.metadata["tables"] = {
        s: {"labels": t.labels.tolist()} for s, t in tables.items()}
    return {s: self._generate_examples(t) for s, t in tables.items()}

  def _generate_examples(self, table):
    for i in range(len(table)):
      yield i, {
          "image": streaming.read_image_bytes(table.full_path(i)),
          "label": int(table.labels[i]),
          "index": i,
          "key": table.keys[i],
      }

  return type(class_name, (base,), {
      "__module__": module,
      "__qualname__": class_name,
      "__doc__": doc,
      "name": name,
      "VERSION": tfds.core.Version("1.0.0"),
      "RELEASE_NOTES": {"1.0.0": release_notes},
      "MANUAL_DOWNLOAD_INSTRUCTIONS": instructions,
      "__init__": __init__,
      "_info": _info,
      "_split_generators": _split_generators,
      "_generate_examples": _generate_examples,
  })


def lazy_getattr(module: str, class_name: str, builder_class: Callable[[], type]):
  """A module `__getattr__` that answers `class_name` with `builder_class()`."""

  def __getattr__(name):
    if name == class_name:
      return builder_class()
    raise AttributeError(f"module {module!r} has no attribute {name!r}")

  return __getattr__


def make_builder(cls, data_dir: os.PathLike | str | None = None, **kwargs):
  """`cls(**kwargs)`, for `data_dir` if given (else TFDS's data dir)."""
  if data_dir is not None:
    kwargs["data_dir"] = os.fspath(data_dir)
  return cls(**kwargs)


def prepare(builder, manual_dir: os.PathLike | str | None, *, title: str,
            check_manual_dir: Callable[[PathLike], pathlib.Path],
            instructions: str):
  """Prepares `builder` from `manual_dir` unless it is prepared; returns it.

  Already prepared: nothing is read. Otherwise `check_manual_dir(manual_dir)`
  runs first, so a missing file fails before anything is written; TFDS is
  not asked to download anything.

  Raises:
    DataNotFoundError: not prepared and no (complete) manual dir; the message
      names the dataset by `title` and ends with `instructions`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if builder.is_prepared():
    return builder
  if manual_dir is None:
    raise DataNotFoundError(
        f"{title} is not prepared in {builder.data_dir} and no manual dir was "
        f"given.\n{instructions}")
  check_manual_dir(manual_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir), try_download_gcs=False))
  return builder


def sources(prepared: Callable[[], object], manual_dir: os.PathLike | str | None,
            from_files: bool, *, name: str, splits: Sequence[str],
            read_tables: ReadTables,
            instructions: str) -> dict[str, streaming.Source]:
  """Streaming sources of `splits`, by split.

  `from_files=True`: file sources over `read_tables(manual_dir)` (nothing to
  prepare), named "<name>/<split>". Otherwise TFDS sources over the builder
  that `prepared()` returns (the dataset prepared first if needed).

  Raises:
    DataNotFoundError: `from_files=True` without a manual dir.
  """
  if from_files:
    if manual_dir is None:
      raise DataNotFoundError("from_files=True needs the manual dir.\n"
                              + instructions)
    return {s: streaming.file_source(t, name=f"{name}/{s}")
            for s, t in read_tables(manual_dir).items()}
  b = prepared()
  return {s: streaming.tfds_source(b, s) for s in splits}
