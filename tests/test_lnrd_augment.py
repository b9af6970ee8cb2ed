"""Tests for lnrd.augment, the JAX port of EDM's augmentation pipeline.

tests/data/edm_augment_golden.npz was produced once by running the authors'
torch `training/augment.py` (NVlabs/edm) on synthetic smooth images, with its
random draws (torch.rand/randn/randint) replaced by recorded NumPy draws so
that the drawn parameters are known:

* geo_*: a geometric-only pipe (p=1, scale, rotate_frac, aniso,
  translate_frac); example 0 is a 0.2 rad rotation with a 2**0.1 zoom.
  Stores the input images, the float64 G_inv matrices rebuilt from the draws,
  and EDM's output.
* full_*: every transform enabled (p=0.8). Stores the input images, the drawn
  parameters in lnrd's `sample_params` format, EDM's output and labels.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lnrd import augment

GOLDEN = pathlib.Path(__file__).parent / "data" / "edm_augment_golden.npz"

FULL_CONFIG = dict(
    p=0.8, xflip=1, yflip=1, rotate_int=1, translate_int=1, scale=1, rotate_frac=1,
    aniso=1, translate_frac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)


_apply_params = jax.jit(augment.apply_params, static_argnums=0)
_apply_geometric = jax.jit(augment.apply_geometric, static_argnums=2)
_sample = jax.jit(augment.sample_params, static_argnums=(0, 2, 3, 4))
_call = jax.jit(lambda pipe, key, images: pipe(key, images), static_argnums=0)


def _images(n, h=32, w=32, c=3, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (n, h, w, c)).astype(np.float32)


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(GOLDEN))


def test_p_zero_leaves_images_unchanged():
  x = _images(5)
  y, labels = augment.edm_cifar_pipe(p=0.0)(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(np.asarray(y), x)
  np.testing.assert_array_equal(np.asarray(labels), np.zeros((5, 9), np.float32))
  # Every transform enabled, through the parameter path: nothing is drawn and
  # the transforms with identity parameters leave the images unchanged.
  pipe = augment.from_kwargs({**FULL_CONFIG, "p": 0.0})
  x = _images(6)
  params = _sample(pipe, jax.random.PRNGKey(1), 6, 32, 32)
  # (EDM draws the anisotropy frame angle independently of p.)
  assert all(not np.asarray(v).any() for k, v in params.items() if k != "aniso_angle")
  # apply_params does not read p: reuse the golden test's compiled function.
  y, labels = _apply_params(augment.from_kwargs(FULL_CONFIG), x, params)
  np.testing.assert_allclose(np.asarray(y), x, atol=2e-5)
  np.testing.assert_array_equal(np.asarray(labels), np.zeros((6, pipe.augment_dim)))


def test_identity_geometry_is_identity():
  x = _images(3, 16, 24)
  eye = np.broadcast_to(np.eye(3, dtype=np.float32), (3, 3, 3))
  for mode in augment.MARGIN_MODES:
    np.testing.assert_allclose(np.asarray(_apply_geometric(x, eye, mode)), x, atol=2e-5)


def test_augment_dim_and_layout():
  pipe = augment.edm_cifar_pipe()
  assert pipe.p == 0.12 and pipe.xflip == 1e8
  assert pipe.augment_dim == augment.augment_dim(pipe) == 9
  assert [name for name, _ in pipe.label_layout] == [
      "xflip", "yflip", "scale_log2", "rotate_frac_cos_m1", "rotate_frac_sin",
      "aniso_w_cos", "aniso_w_sin", "translate_frac_x", "translate_frac_y"]
  assert augment.from_kwargs(FULL_CONFIG).augment_dim == 19
  assert augment.AugmentPipe().augment_dim == 0
  pipe = augment.edm_cifar_pipe(p=0.6)  # As in test_call_is_sample_then_apply.
  params = _sample(pipe, jax.random.PRNGKey(7), 16, 16, 16)
  labels = augment.augment_labels(pipe, params, 16, 16)
  assert labels.shape == (16, 9) and labels.dtype == jnp.float32


def test_xflip_only():
  x = _images(64, 8, 8)
  pipe = augment.AugmentPipe(p=0.12, xflip=1e8)
  y, labels = _call(pipe, jax.random.PRNGKey(3), x)
  y, labels = np.asarray(y), np.asarray(labels)
  assert labels.shape == (64, 1)
  flipped = labels[:, 0] == 1
  assert set(np.unique(labels)) == {0.0, 1.0}
  assert 10 < flipped.sum() < 54  # Probability 1, then a fair coin (EDM).
  np.testing.assert_array_equal(y[flipped], np.flip(x[flipped], axis=2))
  np.testing.assert_array_equal(y[~flipped], x[~flipped])


@pytest.mark.parametrize("max_frac", [0.125, 0.5])
def test_translate_int_matches_numpy(max_frac):
  n, h, w = 32, 12, 10
  x = _images(n, h, w)
  pipe = augment.AugmentPipe(p=0.9, translate_int=1, translate_int_max=max_frac)
  y, labels = _call(pipe, jax.random.PRNGKey(4), x)
  y, labels = np.asarray(y), np.asarray(labels)
  tx = np.round(labels[:, 0] * w * max_frac).astype(int)
  ty = np.round(labels[:, 1] * h * max_frac).astype(int)
  assert np.abs(tx).max() >= 1 and (tx == 0).any()
  m = max(h, w)
  for i in range(n):
    padded = np.pad(x[i], ((m, m), (m, m), (0, 0)), mode="reflect")
    # Content moves right by tx and up by ty (EDM's convention).
    ref = padded[m + ty[i]:m + ty[i] + h, m - tx[i]:m - tx[i] + w]
    np.testing.assert_array_equal(y[i], ref)


def test_rotate_int_matches_rot90():
  x = _images(24, 6, 6)
  pipe = augment.AugmentPipe(p=1, rotate_int=1)
  y, labels = _call(pipe, jax.random.PRNGKey(5), x)
  y, labels = np.asarray(y), np.asarray(labels)
  a, b = labels[:, 0] == 1, labels[:, 1] == 1
  k = np.where(a & ~b, 1, np.where(a & b, 2, np.where(b, 3, 0)))
  assert set(k) == {0, 1, 2, 3}
  for i in range(len(x)):
    np.testing.assert_array_equal(y[i], np.rot90(x[i], k[i], axes=(0, 1)))


@pytest.mark.parametrize("mode", augment.MARGIN_MODES)
def test_geometric_matches_edm_golden(golden, mode):
  y = _apply_geometric(golden["geo_images"], golden["geo_matrices"], mode)
  # 'example'/'max' differ from EDM's batch-wide margin only in far borders.
  atol = 1e-4 if mode == "batch" else 1e-3
  np.testing.assert_allclose(np.asarray(y), golden["geo_out"], atol=atol)
  # The transform is not trivial.
  assert np.abs(golden["geo_out"] - golden["geo_images"]).max() > 0.5


def test_full_pipe_matches_edm_golden(golden):
  pipe = augment.from_kwargs(FULL_CONFIG)
  params = {k[len("full_param_"):]: jnp.asarray(v) for k, v in golden.items()
            if k.startswith("full_param_")}
  y, labels = _apply_params(pipe, golden["full_images"], params)
  np.testing.assert_allclose(np.asarray(labels), golden["full_labels"], atol=1e-5)
  np.testing.assert_allclose(np.asarray(y), golden["full_out"], atol=1e-4)


def test_geometric_matrices_from_params():
  pipe = augment.AugmentPipe(scale=1, rotate_frac=1, aniso=1, translate_frac=1)
  params = {"scale": jnp.array([1.0]), "rotate_frac": jnp.array([0.3]), "aniso": jnp.array([0.5]),
            "aniso_angle": jnp.array([0.7]), "translate_frac_x": jnp.array([1.0]),
            "translate_frac_y": jnp.array([-2.0])}
  g = np.asarray(augment.geometric_matrices(pipe, params, 16, 32))[0]
  rot = lambda t: np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
  s, a = 2 ** 0.2, 2 ** 0.1
  ref = (np.diag([1 / s, 1 / s, 1]) @ rot(0.3) @ rot(-0.7) @ np.diag([1 / a, a, 1]) @ rot(0.7)
         @ np.array([[1, 0, -4.0], [0, 1, 4.0], [0, 0, 1]]))
  np.testing.assert_allclose(g, ref, atol=1e-5)


def test_label_fractions_match_probabilities():
  n = 40000
  pipe = augment.from_kwargs({**FULL_CONFIG, "p": 0.3, "xflip": 1e8})
  params = _sample(pipe, jax.random.PRNGKey(6), n, 32, 32)
  labels = np.asarray(augment.augment_labels(pipe, params, 32, 32))
  cols = dict(pipe.label_layout)
  # Probability that each transform's label is nonzero.
  expected = {
      "xflip": 0.5, "yflip": 0.3 * 0.5, "rotate_int_xflip": 0.3 * 0.5,
      "rotate_int_yflip": 0.3 * 0.5, "scale_log2": 0.3, "rotate_frac_sin": 0.3,
      "aniso_w_cos": 0.3, "translate_frac_x": 0.3, "brightness": 0.3, "contrast": 0.3,
      "lumaflip": 0.15, "hue_sin": 0.3, "saturation": 0.3,
      # |u| * 4 rounds to nonzero for |u| >= 1/8: both axes zero w.p. (1/8)^2.
      "translate_int_x": 0.3 * (1 - 1 / 8),
  }
  for name, prob in expected.items():
    frac = np.mean(labels[:, cols[name]] != 0)
    std = np.sqrt(prob * (1 - prob) / n)
    assert abs(frac - prob) < 5 * std, (name, frac, prob)
  either = (labels[:, cols["translate_int_x"]] != 0) | (labels[:, cols["translate_int_y"]] != 0)
  prob = 0.3 * (1 - 1 / 64)
  assert abs(either.mean() - prob) < 5 * np.sqrt(prob * (1 - prob) / n)
  # Drawn Gaussian parameters are standard normal.
  w = labels[:, cols["scale_log2"]]
  w = w[w != 0]
  assert abs(w.mean()) < 0.05 and abs(w.std() - 1) < 0.05
  # Rotation angles are uniform on (-pi, pi): E[cos] = 0 -> label mean -1.
  drawn = labels[:, cols["rotate_frac_sin"]] != 0
  assert abs(labels[drawn, cols["rotate_frac_cos_m1"]].mean() + 1) < 0.05


def test_call_is_sample_then_apply():
  pipe = augment.edm_cifar_pipe(p=0.6)
  x = _images(16, 16, 16)
  key = jax.random.PRNGKey(7)
  y, labels = _call(pipe, key, x)
  params = _sample(pipe, key, 16, 16, 16)
  y2, labels2 = _apply_params(pipe, x, params)
  np.testing.assert_array_equal(np.asarray(labels), np.asarray(labels2))
  np.testing.assert_allclose(np.asarray(y), np.asarray(y2), atol=1e-6)
  assert np.abs(np.asarray(y) - x).max() > 0.1


def test_jit_sharded_matches_unsharded():
  devices = np.array(jax.devices()[:8])
  assert len(devices) == 8
  mesh = Mesh(devices, ("data",))
  pipe = augment.edm_cifar_pipe(p=0.6)
  x = _images(16, 16, 16)
  key = jax.random.PRNGKey(8)
  step = jax.jit(lambda k, im: pipe(k, im))
  y_ref, l_ref = _call(pipe, key, x)  # Same as in test_call_is_sample_then_apply.
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  xs = jax.device_put(x, sharding)
  y, labels = step(key, xs)
  assert y.sharding.is_equivalent_to(sharding, 4)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(labels), np.asarray(l_ref))


def test_color_grayscale_uses_mean_of_rows():
  pipe = augment.AugmentPipe(p=1, brightness=1, contrast=1, saturation=1)
  params = augment.sample_params(pipe, jax.random.PRNGKey(9), 4, 5, 5)
  m = np.asarray(augment.color_matrices(pipe, params))
  x = _images(4, 5, 5, 1)
  y = np.asarray(augment.apply_color(x, m))
  r = m[:, :3, :].mean(axis=1)
  ref = x * r[:, :3].sum(-1)[:, None, None, None] + r[:, 3][:, None, None, None]
  np.testing.assert_allclose(y, ref, atol=1e-6)
  with pytest.raises(ValueError, match="channels"):
    augment.apply_color(_images(1, 4, 4, 2), m[:1])


def test_from_kwargs_validation():
  pipe = augment.from_kwargs({"class_name": "training.augment.AugmentPipe", "p": 0.12,
                              "xflip": 1e8, "yflip": 1, "scale": 1, "rotate_frac": 1,
                              "aniso": 1, "translate_frac": 1})
  assert pipe == augment.edm_cifar_pipe()
  assert hash(pipe) == hash(augment.edm_cifar_pipe())
  with pytest.raises(ValueError, match="Unknown"):
    augment.from_kwargs({"p": 0.1, "xflipp": 1})
  for bad in ({"p": 1.5}, {"p": -0.1}, {"aniso_rotate_prob": 2.0}):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
      augment.from_kwargs(bad)
  with pytest.raises(ValueError, match="non-negative"):
    augment.from_kwargs({"scale": -1})
  with pytest.raises(ValueError, match="margin_mode"):
    augment.from_kwargs({"margin_mode": "huge"})
  with pytest.raises(ValueError, match="class_name"):
    augment.from_kwargs({"class_name": "Other"})
