"""The device mesh: one data-parallel axis over every device of every process."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def create_mesh(devices=None) -> Mesh:
  """A 1-D `Mesh` with axis "data" over `devices` (default: all global devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of an array held whole on every device."""
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits an array's leading axis over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def num_data_shards(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def check_divisible(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  """Raises ValueError unless `batch_size` splits evenly over the data axis."""
  n = num_data_shards(mesh)
  if batch_size <= 0 or batch_size % n:
    raise ValueError(
        f"{what}={batch_size} must be a positive multiple of the number of "
        f"devices on the data axis ({n}); e.g. {max(n, (batch_size // n) * n or n)}")


def needs_step_sync(mesh: Mesh) -> bool:
  """True when consecutive steps must not overlap: several CPU devices in one process.

  XLA:CPU runs the collectives of fake host devices (and of several CPU devices
  per process) as in-process rendezvous on a shared thread pool. With async
  dispatch, the next step's collectives can occupy every pool thread while one
  device still has work left from the previous step, and the rendezvous
  deadlocks (XLA aborts after 40 s: "Expected 8 threads to join the
  rendezvous"). Waiting for each step on such meshes avoids it; GPUs and TPUs
  keep fully asynchronous dispatch.
  """
  devices = list(mesh.devices.flat)
  local_cpu = [d for d in devices if d.platform == "cpu" and d.process_index == jax.process_index()]
  return len(local_cpu) > 1
