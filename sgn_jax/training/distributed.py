"""Multi-process start-up, driven by the environment.

* `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` all set:
  `jax.distributed.initialize` with them (local CPU "pods", several processes
  on one GPU host, clusters without auto-detection). On the CPU the collectives
  use gloo.
* `LNRD_DISTRIBUTED=auto`: `jax.distributed.initialize()` with JAX's own
  detection (Cloud TPU pods, SLURM, Open MPI, Kubernetes).
* otherwise: one process; nothing to do.
"""

from __future__ import annotations

import os

import jax
from absl import logging

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def maybe_initialize() -> bool:
  """Initialises `jax.distributed` when the environment asks for it.

  Returns True when several processes were connected. Must run before any
  other JAX call touches the backend.
  """
  explicit = {k: os.environ.get(k) for k in _ENV}
  mode = os.environ.get("LNRD_DISTRIBUTED", "").lower()
  if any(explicit.values()):
    missing = [k for k, v in explicit.items() if not v]
    if missing:
      raise ValueError(
          f"multi-process launch needs all of {list(_ENV)}; missing {missing}")
    num_processes = int(explicit["JAX_NUM_PROCESSES"])
    process_id = int(explicit["JAX_PROCESS_ID"])
    if not 0 <= process_id < num_processes:
      raise ValueError(
          f"JAX_PROCESS_ID={process_id} must be in [0, JAX_NUM_PROCESSES={num_processes})")
    if num_processes == 1:
      return False
    if "cpu" in os.environ.get("JAX_PLATFORMS", "").lower():
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=explicit["JAX_COORDINATOR_ADDRESS"],
        num_processes=num_processes, process_id=process_id)
    return True
  if mode == "auto":
    jax.distributed.initialize()
    return jax.process_count() > 1
  if mode not in ("", "off", "0", "false"):
    raise ValueError(f"LNRD_DISTRIBUTED={mode!r}; allowed: auto, off")
  return False


def log_topology() -> None:
  logging.info(
      "process %d of %d; %d local devices, %d global devices (%s)",
      jax.process_index(), jax.process_count(), jax.local_device_count(),
      jax.device_count(), jax.devices()[0].platform)
