"""Timing of a jitted, state-donating train step, shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time

import jax

from sgn_jax.data import device_data
from sgn_jax.training import mesh as mesh_lib


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


def time_for(step, state, inputs, window: float, *, sync: bool, min_steps: int = 3):
  """Compile, then about `window` seconds of steps: a probe of `min_steps` steps sizes
  a fixed count, so the timing never runs past its window by more than one probe.
  Returns (compile seconds, seconds per step, state)."""
  compile_s, rough, state, _ = time_train_step(step, state, inputs, steps=min_steps,
                                               repeats=1, warmup=0, sync=sync)
  count = max(min_steps, int(window / max(rough, 1e-9)))
  _, seconds, state, _ = time_train_step(step, state, inputs, steps=count, repeats=1,
                                         warmup=0, sync=sync)
  return compile_s, seconds, state


def device_inputs(images, labels, mesh) -> dict:
  """Random-data train inputs on the devices, as `sgn_jax.train_data.InMemoryData` gives
  them: the tables row-sharded on `mesh` and a replicated permutation of the rows."""
  permutation = device_data.epoch_permutation(jax.random.PRNGKey(1), 0, len(labels))
  return {"permutation": jax.device_put(permutation, mesh_lib.replicated(mesh)),
          "train_images": device_data.put_table(images, mesh),
          "train_labels": device_data.put_table(labels, mesh)}
