"""Progress reporting: a readable line with steps/s, images/s and ETA.

Where clu is importable, its `ReportProgress` also runs (steps_per_sec to
TensorBoard, and `timed` sections such as evaluation).
"""

from __future__ import annotations

import contextlib
import time

from absl import logging


def format_duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressReporter:
  """`tick(step)` after every step, `report(step, **scalars)` at log steps,
  `timed(name)` around non-training work."""

  def __init__(self, num_train_steps: int, batch_size: int, writer=None, first_step: int = 0):
    self._total = num_train_steps
    self._batch = batch_size
    self._last_step = first_step
    self._last_time = time.monotonic()
    self._excluded = 0.0
    self._clu = None
    try:
      from clu import periodic_actions  # pylint: disable=g-import-not-at-top
      self._clu = periodic_actions.ReportProgress(
          num_train_steps=num_train_steps, writer=writer, every_secs=60.0)
    except ImportError:
      pass

  def tick(self, step: int) -> None:
    """Call after every train step (clu's ReportProgress needs every step)."""
    if self._clu is not None:
      self._clu(step, time.time())

  @contextlib.contextmanager
  def timed(self, name: str):
    """Excludes the wrapped time from steps/s (e.g. evaluation, checkpointing)."""
    start = time.monotonic()
    with (self._clu.timed(name, wait_jax_async_dispatch=False) if self._clu
          else contextlib.nullcontext()):
      yield
    self._excluded += time.monotonic() - start

  def report(self, step: int, **scalars) -> dict[str, float]:
    now = time.monotonic()
    elapsed = max(now - self._last_time - self._excluded, 1e-9)
    steps = step - self._last_step
    rate = steps / elapsed
    eta = (self._total - step) / rate if rate > 0 else float("inf")
    parts = [f"step {step}/{self._total} ({100.0 * step / max(self._total, 1):.1f}%)"]
    parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
    parts += [f"{rate:.1f} steps/s", f"{rate * self._batch:.0f} img/s",
              f"ETA {format_duration(eta) if eta != float('inf') else '?'}"]
    logging.info(" | ".join(parts))
    self._last_step, self._last_time, self._excluded = step, now, 0.0
    return {"steps_per_sec": rate, "images_per_sec": rate * self._batch}
