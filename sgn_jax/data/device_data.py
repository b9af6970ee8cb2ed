"""Device-resident data: in-memory datasets kept on the accelerators.

A dataset that fits in memory (MNIST, CIFAR) is placed on the devices ONCE, its
rows split over the mesh's data axis (each device holds 1/D of the rows; each
host creates only the shards of its own devices, from its own copy). Every step
then draws its batch inside the jitted train step:

* the order of epoch e is `jax.random.permutation(fold_in(data_key, e), n)`,
  a function of the seed and the epoch only, so the data position is restored
  from the step alone, and the batch is the same for any device count;
* `gather_rows` collects the batch's rows from the row shards: each device
  looks up the indices it owns, and a `psum_scatter` over the data axis hands
  every device its slice of the batch (B/D rows), never the whole table;
* pad-and-random-crop and horizontal flips run on the device, per example,
  with keys split from the step key.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sgn_jax.training.mesh import DATA_AXIS


def put_table(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """Places a host array on the devices, rows split over the data axis.

  The row count is zero-padded to a multiple of the data-axis size; callers
  keep the true count. Every process passes its full copy; each creates only
  the shards of its addressable devices.
  """
  array = np.asarray(array)
  shards = mesh.shape[DATA_AXIS]
  padded_rows = -(-array.shape[0] // shards) * shards
  if padded_rows != array.shape[0]:
    pad = np.zeros((padded_rows - array.shape[0],) + array.shape[1:], array.dtype)
    array = np.concatenate([array, pad])
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def gather_rows(table: jax.Array, indices: jax.Array, mesh: Mesh | None) -> jax.Array:
  """table[indices] for a row-sharded table; the result is sharded over the batch.

  `indices` (B,) is the same on every device (B divisible by the data-axis
  size). Each device gathers the rows it owns (zeros elsewhere) and
  `psum_scatter` sums exactly one non-zero contribution per row and scatters
  the batch, so the result equals a plain gather bit for bit. Without a mesh,
  a plain gather.
  """
  if mesh is None:
    return table[indices]

  def local(table_shard, idx):
    rows_per_shard = table_shard.shape[0]
    local_idx = idx - jax.lax.axis_index(DATA_AXIS) * rows_per_shard
    owned = (local_idx >= 0) & (local_idx < rows_per_shard)
    rows = table_shard[jnp.clip(local_idx, 0, rows_per_shard - 1)]
    mask = owned.reshape(owned.shape + (1,) * (rows.ndim - 1))
    rows = jnp.where(mask, rows, jnp.zeros_like(rows))
    return jax.lax.psum_scatter(rows, DATA_AXIS, scatter_dimension=0, tiled=True)

  return jax.shard_map(
      local, mesh=mesh, in_specs=(P(DATA_AXIS), P()), out_specs=P(DATA_AXIS),
  )(table, indices)


def scatter_rows(table: jax.Array, indices: jax.Array, rows: jax.Array,
                 mesh: Mesh | None) -> jax.Array:
  """table.at[indices].set(rows) for a row-sharded table (per-example state).

  `indices` (B,) is the same on every device; `rows` (B, ...) is sharded over
  the batch. The rows are all-gathered (B rows, never the table) and each
  device writes those it owns. Indices must be distinct (one batch of an
  epoch's permutation is). Without a mesh, a plain scatter.
  """
  if mesh is None:
    return table.at[indices].set(rows.astype(table.dtype))

  def local(table_shard, idx, rows_shard):
    rows_per_shard = table_shard.shape[0]
    all_rows = jax.lax.all_gather(rows_shard, DATA_AXIS, axis=0, tiled=True)
    local_idx = idx - jax.lax.axis_index(DATA_AXIS) * rows_per_shard
    owned = (local_idx >= 0) & (local_idx < rows_per_shard)
    # Rows owned elsewhere go to an out-of-range index and are dropped.
    target = jnp.where(owned, local_idx, rows_per_shard)
    return table_shard.at[target].set(all_rows.astype(table_shard.dtype), mode="drop")

  return jax.shard_map(
      local, mesh=mesh, in_specs=(P(DATA_AXIS), P(), P(DATA_AXIS)), out_specs=P(DATA_AXIS),
  )(table, indices, rows)


def epoch_permutation(data_key: jax.Array, epoch, num_examples: int) -> jax.Array:
  """The example order of `epoch`: a permutation of range(num_examples)."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


def batch_indices(permutation: jax.Array, step, steps_per_epoch: int, batch_size: int) -> jax.Array:
  """Rows of global step `step`: slice `step % steps_per_epoch` of the permutation."""
  start = (step % steps_per_epoch) * batch_size
  return jax.lax.dynamic_slice_in_dim(permutation, start, batch_size)


@dataclasses.dataclass(frozen=True)
class BatchDrawer:
  """`draw(inputs, step, key) -> batch`: the batch of a global step, inside the step.

  `inputs` are the device tables of `sgn_jax.train_data.InMemoryData.train_inputs`
  ("train_images", "train_labels" row-sharded, "permutation" of the epoch); the
  batch is {"image", "label", "index"}: rows `batch_indices(permutation, step)`
  gathered from the row shards (`gather_rows`), images randomly cropped
  (`crop_padding`) and flipped (`flip`) per example with `key` (NHWC only).
  Pass it to `sgn_jax.training.loop.jit_step` beside a train step.
  """
  batch_size: int
  steps_per_epoch: int
  mesh: Mesh | None = None
  crop_padding: int = 0
  flip: bool = False

  def __call__(self, inputs, step, key) -> dict[str, jax.Array]:
    idx = batch_indices(inputs["permutation"], step, self.steps_per_epoch, self.batch_size)
    images = gather_rows(inputs["train_images"], idx, self.mesh)
    if images.ndim == 4:
      images = random_crop_flip(images, key, crop_padding=self.crop_padding, flip=self.flip)
    return {"image": images, "label": gather_rows(inputs["train_labels"], idx, self.mesh),
            "index": idx}


def eval_indices(start, batch_size: int, num_examples: int):
  """Indices start..start+B-1 clipped to the data, and the mask of real rows."""
  idx = start + jnp.arange(batch_size)
  return jnp.minimum(idx, num_examples - 1), idx < num_examples


def normalize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
  """uint8 images -> (x / 255 - mean) / std per channel; float inputs: (x - mean) / std."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  if jnp.issubdtype(images.dtype, jnp.integer):
    x = images.astype(jnp.float32) / 255.0
  else:
    x = images.astype(jnp.float32)
  return ((x - mean) / std).astype(dtype)


def random_crop_flip(images: jax.Array, key: jax.Array, *, crop_padding: int = 0,
                     flip: bool = False) -> jax.Array:
  """Per-example pad-and-random-crop (zero padding) and horizontal flip.

  images: (B, H, W, C). Each example gets its own offsets in
  [0, 2 * crop_padding] and a fair coin for the flip, from `key`.
  """
  if crop_padding == 0 and not flip:
    return images
  batch, height, width, _ = images.shape
  crop_key, flip_key = jax.random.split(key)
  if crop_padding:
    p = crop_padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * p + 1)
    crop = functools.partial(_crop, height=height, width=width)
    images = jax.vmap(crop)(padded, offsets)
  if flip:
    do_flip = jax.random.bernoulli(flip_key, 0.5, (batch, 1, 1, 1))
    images = jnp.where(do_flip, images[:, :, ::-1, :], images)
  return images


def _crop(image, offset, *, height, width):
  return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))
