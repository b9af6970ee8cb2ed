"""Timing of a jitted, state-donating train step, shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time

import jax


def time_train_step(step, state, inputs, *, steps: int, repeats: int, warmup: int,
                    sync: bool):
  """Compile + `warmup` steps, then `repeats` windows of `steps` timed steps.

  `sync`: wait for every step (several CPU devices in one process need it).
  Returns (compile seconds, median seconds per step, state, last metrics).
  """
  start = time.perf_counter()
  state, metrics = step(state, inputs)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = step(state, inputs)
    if sync:
      jax.block_until_ready(metrics)
  jax.block_until_ready(metrics)
  windows = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, inputs)
      if sync:
        jax.block_until_ready(metrics)
    jax.block_until_ready(metrics)
    windows.append((time.perf_counter() - start) / steps)
  return compile_s, statistics.median(windows), state, metrics
