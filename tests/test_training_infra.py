"""Mesh, device-resident batching, augmentation, EMA and checkpoint helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgn_jax.data import device_data
from sgn_jax.training import checkpointing
from sgn_jax.training import ema
from sgn_jax.training import mesh as mesh_lib


def test_eight_fake_devices():
  assert jax.device_count() == 8, "tests/conftest.py must set 8 fake CPU devices"


@pytest.mark.parametrize("num_devices", [1, 3, 8])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_gather_rows_equals_numpy_gather(num_devices, dtype):
  mesh = mesh_lib.create_mesh(jax.devices()[:num_devices])
  rng = np.random.default_rng(0)
  table = (rng.integers(0, 255, size=(1003, 4, 4, 3)) if dtype != np.float32
           else rng.normal(size=(1003, 4, 4, 3))).astype(dtype)
  placed = device_data.put_table(table, mesh)
  assert placed.shape[0] % num_devices == 0 and placed.shape[0] >= 1003
  idx = rng.integers(0, 1003, size=24 * num_devices)
  rows = jax.jit(lambda t, i: device_data.gather_rows(t, i, mesh))(placed, jnp.asarray(idx))
  assert rows.sharding.spec == mesh_lib.data_sharded(mesh).spec
  np.testing.assert_array_equal(np.asarray(rows), table[idx])


def test_gather_rows_never_gathers_whole_table():
  mesh = mesh_lib.create_mesh()
  placed = device_data.put_table(np.zeros((8000, 8), np.float32), mesh)
  hlo = jax.jit(lambda t, i: device_data.gather_rows(t, i, mesh)).lower(
      placed, jnp.zeros((64,), jnp.int32)).compile().as_text()
  assert "all-gather" not in hlo
  assert "reduce-scatter" in hlo


def test_epoch_permutation_and_batches_cover_every_example_once():
  key = jax.random.PRNGKey(3)
  perm = np.asarray(device_data.epoch_permutation(key, 2, 103))
  assert sorted(perm.tolist()) == list(range(103))
  assert not np.array_equal(perm, np.asarray(device_data.epoch_permutation(key, 3, 103)))
  np.testing.assert_array_equal(perm, np.asarray(device_data.epoch_permutation(key, 2, 103)))
  batches = [np.asarray(device_data.batch_indices(jnp.asarray(perm), s, 10, 10))
             for s in range(20, 30)]  # steps of epoch 2 with 10 steps per epoch
  np.testing.assert_array_equal(np.concatenate(batches), perm[:100])


def test_eval_indices_mask_padding():
  idx, mask = device_data.eval_indices(96, 16, 100)
  np.testing.assert_array_equal(np.asarray(idx), [96, 97, 98, 99] + [99] * 12)
  assert int(mask.sum()) == 4


def test_normalize_matches_formula():
  images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3) * 7
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
  out = np.asarray(device_data.normalize(jnp.asarray(images), mean, std))
  np.testing.assert_allclose(out, (images / 255.0 - np.array(mean)) / np.array(std), atol=1e-6)


def test_random_crop_flip_is_a_shifted_window_of_the_padded_image():
  rng = np.random.default_rng(1)
  images = rng.integers(1, 255, size=(64, 8, 8, 3)).astype(np.uint8)
  out = np.asarray(device_data.random_crop_flip(
      jnp.asarray(images), jax.random.PRNGKey(0), crop_padding=2, flip=True))
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets_seen, flips = set(), 0
  for i in range(64):
    matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
               if np.array_equal(out[i], (lambda w: w[:, ::-1] if f else w)(
                   padded[i, dy:dy + 8, dx:dx + 8]))]
    assert matches, f"example {i} is not a (flipped) crop of its padded image"
    offsets_seen.add(matches[0][:2])
    flips += matches[0][2]
  assert len(offsets_seen) > 10  # offsets vary per example
  assert 16 < flips < 48       # about half flipped
  same = device_data.random_crop_flip(jnp.asarray(images), jax.random.PRNGKey(0),
                                      crop_padding=0, flip=False)
  np.testing.assert_array_equal(np.asarray(same), images)


def test_ema_update_formula():
  rng = np.random.default_rng(0)
  a = {"w": rng.normal(size=(3, 2)).astype(np.float32), "n": np.int32(4)}
  b = {"w": rng.normal(size=(3, 2)).astype(np.float32), "n": np.int32(7)}
  out = ema.ema_update(a, b, 0.9)
  np.testing.assert_allclose(out["w"], 0.9 * a["w"] + 0.1 * b["w"], rtol=1e-6)
  assert int(out["n"]) == 7


def test_edm_ema_decay_matches_edm_formula():
  batch, halflife_kimg, ratio = 512, 500, 0.05
  for nimg in (0, 512, 10_000, 1_000_000, 50_000_000):
    halflife_nimg = min(halflife_kimg * 1000, nimg * ratio)
    expected = 0.5 ** (batch / max(halflife_nimg, 1e-8))
    np.testing.assert_allclose(
        float(ema.edm_ema_decay(nimg, batch, halflife_kimg, ratio)), expected, rtol=1e-5)
  np.testing.assert_allclose(float(ema.edm_ema_decay(0, batch, halflife_kimg, None)),
                             0.5 ** (batch / 500_000), rtol=1e-6)


def test_check_divisible():
  mesh = mesh_lib.create_mesh()
  mesh_lib.check_divisible(64, mesh)
  with pytest.raises(ValueError, match="batch_size=60 must be a positive multiple of"):
    mesh_lib.check_divisible(60, mesh)


def test_checkpointer_roundtrip_reshards(tmp_path):
  mesh8 = mesh_lib.create_mesh()
  mesh1 = mesh_lib.create_mesh(jax.devices()[:1])
  tree = {"a": jnp.arange(16.0), "b": {"c": jnp.ones((2, 3), jnp.int32)},
          "key": jax.random.PRNGKey(1)}
  placed = jax.device_put(tree, mesh_lib.replicated(mesh8))
  ckpt = checkpointing.Checkpointer(str(tmp_path), save_every_steps=2, keep=2)
  for step in (2, 4, 6):
    assert ckpt.should_save(step)
    ckpt.save(step, jax.tree.map(lambda x: x + step if x.dtype != jnp.uint32 else x, placed))
  assert not ckpt.should_save(7)
  ckpt.close()
  target = jax.device_put(jax.tree.map(jnp.zeros_like, tree), mesh_lib.replicated(mesh1))
  ckpt = checkpointing.Checkpointer(str(tmp_path), save_every_steps=2, keep=2)
  assert ckpt.all_steps() == [4, 6]
  restored = ckpt.restore_or(target)
  ckpt.close()
  np.testing.assert_array_equal(restored["a"], np.arange(16.0) + 6)
  np.testing.assert_array_equal(restored["b"]["c"], np.ones((2, 3)) + 6)
  np.testing.assert_array_equal(restored["key"], jax.random.PRNGKey(1))
  assert restored["a"].sharding == mesh_lib.replicated(mesh1)


def test_checkpointer_without_checkpoint_returns_given_state(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "none"), save_every_steps=5)
  state = {"x": jnp.ones(3)}
  assert ckpt.restore_or(state) is state
  assert ckpt.latest_step is None
  ckpt.close()


def test_image_grid_places_each_image_in_its_cell():
  from sgn_jax.training import writers
  images = np.stack([np.full((3, 4, 1), i * 20, np.uint8) for i in range(1, 6)])
  grid = writers.image_grid(images, num_columns=2, padding=1)
  assert grid.shape == (3 * 4 + 1, 2 * 5 + 1, 1)
  for i in range(5):
    r, c = divmod(i, 2)
    cell = grid[1 + r * 4:1 + r * 4 + 3, 1 + c * 5:1 + c * 5 + 4]
    assert np.all(cell == (i + 1) * 20)
  assert np.all(grid[9:12, 6:10] == 0)  # empty last cell
  floats = writers.image_grid(np.ones((2, 2, 2, 3), np.float32), padding=0)
  assert floats.dtype == np.uint8 and np.all(floats == 255)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_scatter_rows_equals_numpy_update(num_devices):
  mesh = mesh_lib.create_mesh(jax.devices()[:num_devices])
  rng = np.random.default_rng(2)
  table = rng.normal(size=(203, 5)).astype(np.float32)
  placed = device_data.put_table(table, mesh)
  idx = rng.permutation(203)[:16]
  rows = rng.normal(size=(16, 5)).astype(np.float32)
  rows_dev = jax.device_put(rows, mesh_lib.data_sharded(mesh))
  out = jax.jit(lambda t, i, r: device_data.scatter_rows(t, i, r, mesh))(
      placed, jnp.asarray(idx), rows_dev)
  expected = table.copy()
  expected[idx] = rows
  np.testing.assert_array_equal(np.asarray(out)[:203], expected)
  assert out.sharding.spec == mesh_lib.data_sharded(mesh).spec
