"""Progress reporting: one readable line with the rate and the ETA, for every loop.

Training (`sgn_jax.training.loop.run`) calls `tick(step)` after each step and
`report(step, **scalars)` at its log steps (steps/s, images/s, ETA; clu's
`ReportProgress`, where clu is importable, also writes steps_per_sec to
TensorBoard and times the `timed` sections). Long non-training loops (sampling
or feature extraction in `task=evaluate`) count items and call `update(done)`,
which logs at most every `every_seconds` (items/s, ETA) and writes the rate.
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
  """Rate and ETA of a loop of `total` units (steps, or items with `items_per_step=1`).

  Training: `tick(step)` after every step, `report(step, **scalars)` at log steps,
  `timed(name)` around non-training work (excluded from the rate).
  Other loops: `update(done)` with the number of units done so far.
  """

  def __init__(self, total: int, items_per_step: int = 1, writer=None, first: int = 0, *,
               name: str = "step", every_seconds: float = 30.0, use_clu: bool = True):
    self._total = total
    self._items = items_per_step
    self._writer = writer
    self._name = name
    self._every = every_seconds
    self._last_step = first
    self._last_time = time.monotonic()
    self._excluded = 0.0
    self._start: tuple[float, int] | None = None  # (time, done) of the first update()
    self._last_update = 0.0
    self._clu = None
    if use_clu:
      try:
        from clu import periodic_actions  # pylint: disable=g-import-not-at-top
        self._clu = periodic_actions.ReportProgress(
            num_train_steps=total, writer=writer, every_secs=60.0)
      except ImportError:
        pass

  def tick(self, step: int) -> None:
    """Call after every train step (clu's ReportProgress needs every step)."""
    if self._clu is not None:
      self._clu(step, time.time())

  @contextlib.contextmanager
  def timed(self, name: str):
    """Excludes the wrapped time from the rate (e.g. evaluation, checkpointing)."""
    start = time.monotonic()
    with (self._clu.timed(name, wait_jax_async_dispatch=False) if self._clu
          else contextlib.nullcontext()):
      yield
    self._excluded += time.monotonic() - start

  def _line(self, done: int, rate: float, scalars) -> str:
    """"step 100/1000 (10.0%) | loss 0.3 | 12.3 steps/s | 1574 img/s | ETA 1m13s"."""
    eta = (self._total - done) / rate if rate > 0 else float("inf")
    parts = [f"{self._name} {done}/{self._total} ({100.0 * done / max(self._total, 1):.1f}%)"]
    parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
    if self._items != 1:
      parts += [f"{rate:.1f} {self._name}s/s", f"{rate * self._items:.0f} img/s"]
    else:
      parts.append(f"{rate:.1f} img/s")
    parts.append(f"ETA {format_duration(eta) if eta != float('inf') else '?'}")
    return " | ".join(parts)

  def report(self, step: int, **scalars) -> dict[str, float]:
    """Logs the line for `step`; returns {"steps_per_sec", "images_per_sec"} since the
    last report (time in `timed` sections excluded)."""
    now = time.monotonic()
    elapsed = max(now - self._last_time - self._excluded, 1e-9)
    rate = (step - self._last_step) / elapsed
    logging.info(self._line(step, rate, scalars))
    self._last_step, self._last_time, self._excluded = step, now, 0.0
    return {"steps_per_sec": rate, "images_per_sec": rate * self._items}

  def update(self, done: int) -> None:
    """Non-training loops: log `done` of `total` items, the mean rate since the first
    call and the ETA, at most every `every_seconds` (and at the end); the rate also
    goes to the writer as `progress/<name>_per_second`. The first call starts the clock."""
    now = time.monotonic()
    if self._start is None:
      self._start, self._last_update = (now, done), now
      return
    if now - self._last_update < self._every and done < self._total:
      return
    self._last_update = now
    rate = (done - self._start[1]) / max(now - self._start[0], 1e-9)
    logging.info(self._line(done, rate, {}))
    if self._writer is not None:
      self._writer.write_scalars(done, {f"progress/{self._name}_per_second": rate})

  def __call__(self, done: int, _total: int | None = None) -> None:
    """`update(done)`: a reporter is a `progress(done, total)` callback."""
    self.update(done)
