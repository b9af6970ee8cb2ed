"""Metric writers: TensorBoard through clu on process 0, logging elsewhere.

clu's writers import TensorFlow; where TensorFlow (or clu) is absent, e.g. on a
bare accelerator machine, `create_writer` falls back to a writer that logs
scalars and saves images as PNG files, so training runs anyway.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from etils import epath

from sgn_jax import errors


class LoggingWriter:
  """clu-compatible writer without TensorFlow: logs scalars, writes PNG images."""

  def __init__(self, workdir: str | None, enabled: bool = True):
    self._workdir = workdir
    self._enabled = enabled

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if self._enabled:
      logging.info("[%d] %s", step, ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(scalars.items())))

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    if not (self._enabled and self._workdir):
      return
    from PIL import Image  # pylint: disable=g-import-not-at-top
    for name, batch in images.items():
      batch = np.asarray(batch)
      for i, image in enumerate(batch if batch.ndim == 4 else batch[None]):
        array = image if image.dtype == np.uint8 else np.clip(image * 255, 0, 255).astype(np.uint8)
        if array.shape[-1] == 1:
          array = array[..., 0]
        path = os.path.join(self._workdir, "images", f"{name.replace('/', '_')}_{step}_{i}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(array).save(path)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    if self._enabled:
      logging.info("hparams: %s", dict(hparams))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    if self._enabled:
      for k, v in texts.items():
        logging.info("[%d] %s: %s", step, k, v)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class JsonlWriter:
  """Appends `{"step": s, name: value, ...}` lines to a file: the metric history
  in a form any script can read (process 0 only)."""

  def __init__(self, path: str, enabled: bool = True):
    self._path = epath.Path(path)
    self._enabled = enabled

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self._enabled:
      return
    record = {"step": int(step), **flatten_metrics(scalars)}
    record = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
              for k, v in record.items()}
    with self._path.open("a") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")

  def write_images(self, step, images):
    pass

  def write_hparams(self, hparams):
    pass

  def write_texts(self, step, texts):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class MultiWriter:
  """Forwards every call to several writers."""

  def __init__(self, writers):
    self._writers = list(writers)

  def __getattr__(self, name):
    def call(*args, **kwargs):
      for w in self._writers:
        getattr(w, name)(*args, **kwargs)
    return call


def _fmt(value) -> str:
  value = float(np.asarray(value))
  return f"{value:.6g}"


def image_grid(images, num_columns: int = 8, padding: int = 2) -> np.ndarray:
  """Tiles (N, H, W, C) images into one (rows*(H+p)+p, cols*(W+p)+p, C) uint8 grid.

  Float images are taken to lie in [0, 1]; uint8 images are used as they are.
  Missing cells of the last row stay black.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"image_grid needs (N, H, W, C) images, got shape {images.shape}")
  if images.dtype != np.uint8:
    images = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
  n, h, w, c = images.shape
  cols = max(1, min(num_columns, n))
  rows = -(-n // cols)
  grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, cols)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = image
  return grid


def create_writer(workdir: str):
  """Metric writer of a run.

  Process 0: clu's default writer (log + TensorBoard under `workdir`) and the
  history `workdir/metrics.jsonl`; other processes: log only. Without
  clu/TensorFlow, the TensorBoard part becomes `LoggingWriter` (log + PNGs).
  """
  is_chief = jax.process_index() == 0
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    main = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  except ImportError as e:
    logging.warning("clu/TensorFlow unavailable (%s): metrics go to the log only.", e)
    main = LoggingWriter(workdir, enabled=is_chief)
  return MultiWriter([main, JsonlWriter(os.path.join(workdir, "metrics.jsonl"), is_chief)])


def flatten(tree: Mapping[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
  """Nested mappings as one flat `a<sep>b<sep>c -> leaf` dict (an empty mapping is a leaf)."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping) and value:
      flat.update(flatten(value, sep, name + sep))
    else:
      flat[name] = value
  return flat


def flatten_metrics(tree: Mapping[str, Any]) -> dict[str, float]:
  """{"test": {"accuracy": 0.9}} -> {"test/accuracy": 0.9}; values as Python floats."""
  return {k: float(np.asarray(v)) for k, v in flatten(tree, "/").items()
          if not isinstance(v, Mapping)}


def flatten_scalars(tree: Mapping[str, Any]) -> dict[str, Any]:
  """The scalar leaves of a nested dict (e.g. a config) as flat `a.b.c -> value`
  (hyper-parameters for `write_hparams`); other leaves are left out."""
  return {k: v for k, v in flatten(tree).items() if isinstance(v, (int, float, bool, str))}


class DiskFullError(errors.UserError, OSError):
  """A run's file could not be written: the disk (or quota) is full."""


def is_disk_full(error: BaseException) -> bool:
  """True when `error`, or an exception it was raised from, is ENOSPC/EDQUOT."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def disk_full_error(path: str, error: BaseException, kept: str = "") -> DiskFullError:
  """The one-line error for a write to `path` that found the disk full; `kept` says
  what of the run is still good (e.g. the last checkpoint)."""
  return DiskFullError(
      errno.ENOSPC, f"the disk is full: {path} could not be written ({error}). "
      + (kept + " " if kept else "") + "Free space (or choose a --workdir on a larger "
      "disk and copy the run there), then rerun the same command to resume", path)


def write_atomic(path: str, text: str | bytes) -> None:
  """Writes `text` (str or bytes) to `path` so that readers see the old file or the
  new one, never a part (a temporary file in the same folder, fsynced, then renamed
  over it); DiskFullError naming the path when the disk is full. Buckets: one write."""
  if "://" in path:
    target = epath.Path(path)
    target.write_bytes(text) if isinstance(text, bytes) else target.write_text(text)
    return
  folder = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
  try:
    with open(tmp, "wb" if isinstance(text, bytes) else "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    if is_disk_full(e):
      raise disk_full_error(path, e, f"{path} is unchanged.") from e
    raise


def write_metrics_json(path: str, metrics: Mapping[str, Any]) -> None:
  """Writes flat `name -> number` metrics as JSON (process 0 only, atomically);
  NaN/Inf become null."""
  if jax.process_index() != 0:
    return
  flat = flatten_metrics(metrics)
  clean = {k: (v if math.isfinite(v) else None) for k, v in sorted(flat.items())}
  write_atomic(path, json.dumps(clean, indent=2, sort_keys=True) + "\n")
