"""Evaluation over a whole dataset on any number of devices, every example counted once.

A dataset of n examples is cut into ceil(n / B) global batches of B rows (B
divisible by the mesh's data axis). The last batch is completed with copies of
the last example (valid inputs, so no NaNs from all-zero rows) and a mask

  mask_i = 1[start + i < n],   i = 0..B-1,

marks the real rows. Each batch is split over the data axis (`NamedSharding`
with `PartitionSpec("data")`) and a jitted function runs on it:

* `map_batches(fn, arrays, B, mesh)`: fn(batch) -> per-example outputs (B, ...);
  the padding rows are dropped on the host, so the result is exactly
  fn(arrays[0..n-1]) in order, as NumPy arrays;
* `sum_batches(fn, arrays, B, mesh)`: fn(batch, mask) -> sums over the rows
  with mask 1 (e.g. `lnrd.metrics.frechet.batch_sums`); the per-batch sums are
  accumulated on the host in float64 (integers in int64), so the total is
  sum_{i < n} f(x_i) whatever the device count or the padding;
* `feature_statistics(feature_fn, arrays, B, mesh)`: FID's sufficient
  statistics (n, sum x, sum x x^T) of feature_fn's features, streamed over
  batches with `sum_batches` (no (n, D) feature matrix is ever built).

Inputs are pytrees of arrays with a common leading axis n. NumPy (host) leaves
are sliced and padded on the host and sent batch by batch (the dataset never
has to fit on the devices); `jax.Array` (device) leaves stay where they are
(or are replicated onto the mesh when they live on other devices) and each
batch's rows are gathered inside the jitted step with the clipped indices of
`sgn_jax.data.device_data.eval_indices`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from lnrd.metrics import frechet
from sgn_jax.data import device_data
from sgn_jax.training import mesh as mesh_lib

# progress(done, total): examples finished so far and the dataset size.
ProgressFn = Callable[[int, int], Any]


def _check_inputs(arrays, batch_size: int, mesh: Mesh) -> tuple[list, Any, int]:
  """Leaves, treedef and the common row count n; ValueError on bad arguments."""
  if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool):
    raise ValueError(f"batch_size={batch_size!r} must be a positive int")
  shards = mesh_lib.num_data_shards(mesh)
  if batch_size <= 0 or batch_size % shards:
    raise ValueError(
        f"batch_size={batch_size} must be a positive multiple of the mesh's data axis "
        f"({shards} devices), e.g. {max(shards, batch_size // shards * shards)}")
  leaves, treedef = jax.tree.flatten(arrays)
  if not leaves:
    raise ValueError("arrays is empty: pass an array or a pytree of arrays")
  sizes = [np.shape(x)[0] if np.ndim(x) else None for x in leaves]
  if None in sizes:
    raise ValueError(f"every array needs a leading example axis; got shapes "
                     f"{[np.shape(x) for x in leaves]}")
  if len(set(sizes)) != 1:
    raise ValueError(f"arrays have different leading sizes {sizes}; they must agree")
  if sizes[0] == 0:
    raise ValueError("arrays have no rows (n = 0)")
  return leaves, treedef, int(sizes[0])


def _host_batch(x: np.ndarray, start: int, batch_size: int) -> np.ndarray:
  """Rows start..start+B-1 of a host array, completed with copies of its last row."""
  rows = x[start:start + batch_size]
  short = batch_size - len(rows)
  if short:
    rows = np.concatenate([rows, np.repeat(x[-1:], short, axis=0)])
  return rows


def _on_mesh(x: jax.Array, mesh: Mesh) -> jax.Array:
  """A device leaf as is when it lives on the mesh's devices, else replicated there."""
  if set(x.sharding.device_set) == set(mesh.devices.flat):
    return x
  return jax.device_put(x, mesh_lib.replicated(mesh))


def _to_host(tree, mesh: Mesh):
  """Device pytree -> NumPy (gathering all processes' shards when the mesh spans
  several processes; a mesh of this process's devices is read directly)."""
  if any(d.process_index != jax.process_index() for d in mesh.devices.flat):
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _run(fn: Callable, arrays, batch_size: int, mesh: Mesh | None, with_mask: bool,
         out_sharded: bool, consume: Callable[[Any, int], None],
         progress: ProgressFn | None, params: Any = None) -> int:
  """Runs jit(fn) over the padded batches; hands (host outputs, start) to `consume`.

  Returns n. Results are fetched one batch late, so the next batch is already
  dispatched while the host copies the previous one, except on meshes of
  several CPU devices in one process, where every step is waited for
  (`mesh_lib.needs_step_sync`).
  """
  mesh = mesh_lib.create_mesh() if mesh is None else mesh
  leaves, treedef, n = _check_inputs(arrays, batch_size, mesh)
  is_device = [isinstance(x, jax.Array) for x in leaves]
  device_leaves = [_on_mesh(x, mesh) for x, d in zip(leaves, is_device) if d]
  host_leaves = [np.asarray(x) for x, d in zip(leaves, is_device) if not d]
  sharded = mesh_lib.data_sharded(mesh)
  if params is not None:  # e.g. network weights: replicated once, an argument (not a constant)
    params = jax.device_put(params, mesh_lib.replicated(mesh))

  def step(params, host_batch, device_full, start):
    idx, mask = device_data.eval_indices(start, batch_size, n)
    gathered = iter([jnp.take(x, idx, axis=0) for x in device_full])
    host_iter = iter(host_batch)
    batch = [next(gathered) if d else next(host_iter) for d in is_device]
    batch = jax.lax.with_sharding_constraint(batch, [sharded] * len(batch))
    batch = jax.tree.unflatten(treedef, batch)
    args = (batch,) if params is None else (params, batch)
    if with_mask:
      return fn(*args, jax.lax.with_sharding_constraint(mask, sharded))
    return fn(*args)

  # Sums come back replicated; per-example outputs keep the sharding XLA propagates.
  jitted = jax.jit(step, out_shardings=None if out_sharded else mesh_lib.replicated(mesh))
  sync = mesh_lib.needs_step_sync(mesh)
  pending = None
  for start in range(0, n, batch_size):
    host_batch = [jax.device_put(_host_batch(x, start, batch_size), sharded)
                  for x in host_leaves]
    out = jitted(params, host_batch, device_leaves, jnp.int32(start))
    if sync:
      jax.block_until_ready(out)
    if pending is not None:
      consume(_to_host(pending[0], mesh), pending[1])
      if progress is not None:
        progress(min(pending[1] + batch_size, n), n)
    pending = (out, start)
  consume(_to_host(pending[0], mesh), pending[1])
  if progress is not None:
    progress(n, n)
  return n


def map_batches(fn: Callable, arrays, batch_size: int, mesh: Mesh | None = None, *,
                progress: ProgressFn | None = None, params: Any = None):
  """fn applied to every example of `arrays`, batch by batch, padding removed.

  Args:
    fn: batch -> per-example outputs, a pytree of arrays with leading axis B
      (jitted here; the batch has the structure of `arrays`, rows split over
      the data axis).
    arrays: a pytree of (n, ...) arrays, NumPy (host) or `jax.Array` (device).
    batch_size: the global batch B, a positive multiple of the data-axis size.
    mesh: the `sgn_jax.training.mesh` mesh (default: all devices).
    progress: optional `progress(done, total)` called after every batch.
    params: optional pytree (e.g. network weights) replicated over the mesh and
      passed as fn's first argument, fn(params, batch), instead of being baked
      into the compiled program as constants.

  Returns:
    fn's outputs for rows 0..n-1 in order, as NumPy arrays (the pytree of fn's
    outputs, each leaf (n, ...)).

  Raises:
    ValueError: a batch_size that does not split over the data axis, arrays
      of different lengths or without rows, or outputs without a leading B axis.
  """
  chunks: list = []

  def consume(out, start):
    for leaf in jax.tree.leaves(out):
      if np.ndim(leaf) == 0 or np.shape(leaf)[0] != batch_size:
        raise ValueError(
            f"map_batches: fn must return per-example outputs with leading axis "
            f"batch_size={batch_size}; got shape {np.shape(leaf)} (use sum_batches for sums)")
    chunks.append(out)

  n = _run(fn, arrays, batch_size, mesh, with_mask=False, out_sharded=True,
           consume=consume, progress=progress, params=params)
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *chunks)


def sum_batches(fn: Callable, arrays, batch_size: int, mesh: Mesh | None = None, *,
                progress: ProgressFn | None = None, params: Any = None):
  """sum over batches of fn(batch, mask), every example counted exactly once.

  fn must ignore the rows where mask is False (the padding of the last batch),
  e.g. sum_i mask_i f(x_i), like `lnrd.metrics.frechet.batch_sums`. Batch
  results are added on the host in float64 (integers in int64).

  Args:
    fn: (batch, mask (B,) bool) -> pytree of sums (jitted here; replicated out);
      fn(params, batch, mask) when `params` is given.
    arrays, batch_size, mesh, progress, params: as for `map_batches`.

  Returns:
    The pytree of fn's outputs, summed over all batches (NumPy float64/int64).
  """
  total: list = [None]

  def widen(x):
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
      return x.astype(np.float64)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
      return x.astype(np.int64)
    return x

  def consume(out, _):
    out = jax.tree.map(widen, out)
    total[0] = out if total[0] is None else jax.tree.map(np.add, total[0], out)

  _run(fn, arrays, batch_size, mesh, with_mask=True, out_sharded=False,
       consume=consume, progress=progress, params=params)
  return total[0]


def feature_statistics(feature_fn: Callable, arrays, batch_size: int,
                       mesh: Mesh | None = None, *,
                       progress: ProgressFn | None = None) -> frechet.FeatureStatistics:
  """FID statistics (n, sum x, sum x x^T) of x = feature_fn(batch), streamed.

  Every batch's (count, sum, outer) comes from `frechet.batch_sums` with the
  padding masked out, on the devices (float32, HIGHEST matmul precision), and
  the batches are added on the host in float64; then
  `frechet.mean_and_covariance` gives mu = S1 / n and the unbiased covariance
  (S2 - n mu mu^T) / (n - 1), as np.mean / np.cov of all n feature rows.
  Combine processes with `frechet.merge_across_processes` only when each
  process streamed different data (here every process sees the same arrays).

  Args:
    feature_fn: batch -> (B, D) features (e.g. Inception pool features).
    arrays, batch_size, mesh, progress: as for `map_batches`.

  Returns:
    `frechet.FeatureStatistics` of the n feature rows.
  """
  def sums(batch, mask):
    return frechet.batch_sums(feature_fn(batch), mask)

  count, total, outer = sum_batches(sums, arrays, batch_size, mesh, progress=progress)
  return frechet.from_sums(count, total, outer)
