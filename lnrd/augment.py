"""EDM's non-leaky augmentation pipeline in JAX.

A port of the augmentation pipeline of "Elucidating the Design Space of
Diffusion-Based Generative Models" (Karras et al., 2022), itself built on the
ADA pipeline of "Training Generative Adversarial Networks with Limited Data"
(Karras et al., 2020). Every transform is applied with a per-example
probability and its parameters are returned as "augment labels" that the
denoiser is conditioned on, so the augmentations do not leak into the
generated distribution.

Images are NHWC float arrays in EDM's [-1, 1] range. The pipeline is split in
three stages, each a pure function of the drawn parameters:

* pixel blitting (`apply_xflip`, `apply_yflip`, `apply_rotate_int`,
  `apply_translate_int`),
* geometric transforms (`geometric_matrices` then `apply_geometric`),
* color transforms (`color_matrices` then `apply_color`).

`sample_params` draws the per-example parameters, `augment_labels` encodes
them exactly as EDM does, and `apply_params` runs the three stages, so
`AugmentPipe.__call__` is `apply_params(sample_params(...))`.

Static shapes. EDM pads the image, before the 2x wavelet upsampling, by a
reflection margin computed from the transformed image corners (the maximum
over the batch, clamped to [0, size - 1]); the padded size thus depends on the
random draws. Here the image is always reflect-padded by the largest margin
EDM can use (size - 1 on each side) and the data-dependent margin is emulated
exactly with two masks: pixels outside EDM's padded image are zeroed before
the upsampling (EDM's convolution zero-pads there) and samples of the
upsampled image outside EDM's upsampled extent are treated as zeros by the
bilinear sampler (EDM's `grid_sample` uses `padding_mode='zeros'`). With
`margin_mode='batch'` (default) the result equals EDM's up to float rounding;
`'example'` uses each example's own margin (EDM with a batch of one, so
examples are independent of each other); `'max'` uses the full margin for
everyone (no masking, the most accurate border handling).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Low-pass filter of the sym6 wavelet, as used by EDM for the 2x up/down
# sampling around the geometric transform.
SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057,
    -0.048311742585633, 0.4910559419267466, 0.787641141030194,
    0.3379294217276218, -0.07263752278646252, -0.021060292512300564,
    0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)

MARGIN_MODES = ("batch", "example", "max")

# Order in which EDM draws the transforms and concatenates their labels, with
# the number of label dimensions of each.
_LABEL_DIMS = (
    ("xflip", 1), ("yflip", 1), ("rotate_int", 2), ("translate_int", 2),
    ("scale", 1), ("rotate_frac", 2), ("aniso", 2), ("translate_frac", 2),
    ("brightness", 1), ("contrast", 1), ("lumaflip", 1), ("hue", 2),
    ("saturation", 1),
)
_TRANSFORMS = tuple(name for name, _ in _LABEL_DIMS)
_BLIT = ("xflip", "yflip", "rotate_int", "translate_int")
_GEOMETRIC = ("scale", "rotate_frac", "aniso", "translate_frac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
_PROBABILITIES = ("p", "aniso_rotate_prob")


@dataclasses.dataclass(frozen=True)
class AugmentPipe:
  """EDM's augmentation pipeline; every transform is off by default.

  A transform is enabled by a positive probability multiplier; it is applied
  to each example independently with probability `min(1, multiplier * p)`.
  The fields and defaults are those of EDM's `training.augment.AugmentPipe`.
  The dataclass is frozen and hashable, so it can be a static argument of
  `jax.jit`.

  Attributes:
    p: Overall multiplier for the augmentation probability.
    xflip: Probability multiplier for x-flip.
    yflip: Probability multiplier for y-flip.
    rotate_int: Probability multiplier for rotations by multiples of 90 deg.
    translate_int: Probability multiplier for integer translation.
    translate_int_max: Range of integer translation, relative to image size.
    scale: Probability multiplier for isotropic scaling.
    rotate_frac: Probability multiplier for fractional rotation.
    aniso: Probability multiplier for anisotropic scaling.
    translate_frac: Probability multiplier for fractional translation.
    scale_std: Log2 standard deviation of isotropic scaling.
    rotate_frac_max: Range of fractional rotation, 1 = full circle.
    aniso_std: Log2 standard deviation of anisotropic scaling.
    aniso_rotate_prob: Probability of anisotropic scaling along a rotated
      frame.
    translate_frac_std: Standard deviation of fractional translation,
      relative to image size.
    brightness: Probability multiplier for brightness.
    contrast: Probability multiplier for contrast.
    lumaflip: Probability multiplier for luma flip.
    hue: Probability multiplier for hue rotation.
    saturation: Probability multiplier for saturation.
    brightness_std: Standard deviation of brightness.
    contrast_std: Log2 standard deviation of contrast.
    hue_max: Range of hue rotation, 1 = full circle.
    saturation_std: Log2 standard deviation of saturation.
    margin_mode: How the reflection margin of the geometric stage is chosen:
      'batch' (EDM's), 'example' or 'max'; see the module docstring. Not an
      EDM option.
  """

  p: float = 1.0
  # Pixel blitting.
  xflip: float = 0.0
  yflip: float = 0.0
  rotate_int: float = 0.0
  translate_int: float = 0.0
  translate_int_max: float = 0.125
  # Geometric transformations.
  scale: float = 0.0
  rotate_frac: float = 0.0
  aniso: float = 0.0
  translate_frac: float = 0.0
  scale_std: float = 0.2
  rotate_frac_max: float = 1.0
  aniso_std: float = 0.2
  aniso_rotate_prob: float = 0.5
  translate_frac_std: float = 0.125
  # Color transformations.
  brightness: float = 0.0
  contrast: float = 0.0
  lumaflip: float = 0.0
  hue: float = 0.0
  saturation: float = 0.0
  brightness_std: float = 0.2
  contrast_std: float = 0.5
  hue_max: float = 1.0
  saturation_std: float = 1.0
  # Implementation choice (not in EDM).
  margin_mode: str = "batch"

  def __post_init__(self):
    for f in dataclasses.fields(self):
      if f.name == "margin_mode":
        continue
      value = getattr(self, f.name)
      try:
        value = float(value)
      except (TypeError, ValueError) as e:
        raise ValueError(f"AugmentPipe.{f.name} must be a number, got {value!r}") from e
      if not np.isfinite(value):
        raise ValueError(f"AugmentPipe.{f.name} must be finite, got {value}")
      if f.name in _PROBABILITIES and not 0.0 <= value <= 1.0:
        raise ValueError(f"AugmentPipe.{f.name} is a probability and must lie in [0, 1], got {value}")
      if value < 0.0:
        raise ValueError(f"AugmentPipe.{f.name} must be non-negative, got {value}")
      object.__setattr__(self, f.name, value)
    if self.margin_mode not in MARGIN_MODES:
      raise ValueError(f"AugmentPipe.margin_mode must be one of {MARGIN_MODES}, got {self.margin_mode!r}")

  def enabled(self, name: str) -> bool:
    """Whether the transform `name` is enabled (EDM: its multiplier is > 0)."""
    return getattr(self, name) > 0

  def probability(self, name: str) -> float:
    """Per-example probability that transform `name` is drawn."""
    return min(1.0, getattr(self, name) * self.p)

  @property
  def augment_dim(self) -> int:
    """Number of augment-label dimensions (9 for EDM's CIFAR set)."""
    return augment_dim(self)

  @property
  def label_layout(self) -> tuple[tuple[str, int], ...]:
    """(label name, column) pairs of the augment labels, in EDM's order."""
    return label_layout(self)

  def __call__(self, key: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Augments a batch.

    Args:
      key: PRNG key.
      images: [N, H, W, C] float images in [-1, 1]; C is 1 or 3 when a color
        transform is enabled.

    Returns:
      (augmented images [N, H, W, C], augment labels [N, augment_dim] float32).
    """
    images = jnp.asarray(images)
    n, h, w, _ = images.shape
    if self.p == 0:
      # Nothing can be drawn: skip the (identity up to rounding) filtering.
      return images, jnp.zeros((n, self.augment_dim), jnp.float32)
    params = sample_params(self, key, n, h, w)
    return apply_params(self, images, params)


def augment_dim(pipe: AugmentPipe) -> int:
  """Number of augment-label dimensions of `pipe`."""
  return sum(dim for name, dim in _LABEL_DIMS if pipe.enabled(name))


def label_layout(pipe: AugmentPipe) -> tuple[tuple[str, int], ...]:
  """Names of the augment-label columns of `pipe`, as (name, column) pairs."""
  names = {
      "xflip": ("xflip",), "yflip": ("yflip",),
      "rotate_int": ("rotate_int_xflip", "rotate_int_yflip"),
      "translate_int": ("translate_int_x", "translate_int_y"),
      "scale": ("scale_log2",), "rotate_frac": ("rotate_frac_cos_m1", "rotate_frac_sin"),
      "aniso": ("aniso_w_cos", "aniso_w_sin"),
      "translate_frac": ("translate_frac_x", "translate_frac_y"),
      "brightness": ("brightness",), "contrast": ("contrast",), "lumaflip": ("lumaflip",),
      "hue": ("hue_cos_m1", "hue_sin"), "saturation": ("saturation",),
  }
  out = []
  for name in _TRANSFORMS:
    if pipe.enabled(name):
      out.extend(names[name])
  return tuple((label, i) for i, label in enumerate(out))


def edm_cifar_pipe(p: float = 0.12, **overrides: Any) -> AugmentPipe:
  """EDM's default configuration (train.py `--augment`, 0.12 for CIFAR-10).

  Args:
    p: Overall augmentation probability.
    **overrides: Other `AugmentPipe` fields to change.

  Returns:
    The pipe; its augment labels have 9 dimensions.
  """
  kwargs = dict(p=p, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
  kwargs.update(overrides)
  return from_kwargs(kwargs)


default_pipe = edm_cifar_pipe


def from_kwargs(kwargs: Mapping[str, Any] | None) -> AugmentPipe:
  """Builds a pipe from a dict of `AugmentPipe` fields (EDM's augment_kwargs).

  An EDM-style `class_name` entry naming an `AugmentPipe` is accepted and
  ignored.

  Args:
    kwargs: Field values; missing fields keep EDM's defaults.

  Returns:
    The pipe.

  Raises:
    ValueError: For an unknown key, a non-numeric or negative value, or a
      probability (`p`, `aniso_rotate_prob`) outside [0, 1].
  """
  fields = dict(kwargs or {})
  class_name = fields.pop("class_name", None)
  if class_name is not None and not str(class_name).endswith("AugmentPipe"):
    raise ValueError(f"class_name must name an AugmentPipe, got {class_name!r}")
  known = {f.name for f in dataclasses.fields(AugmentPipe)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"Unknown augmentation option(s) {unknown}; known: {sorted(known)}")
  return AugmentPipe(**fields)


# -----------------------------------------------------------------------------
# Parameter sampling and labels.


def sample_params(pipe: AugmentPipe, key: jax.Array, batch: int, height: int,
                  width: int) -> dict[str, jax.Array]:
  """Draws per-example parameters of the enabled transforms.

  Each transform uses its own key (`fold_in(key, index)`), so enabling one
  transform does not change the draws of the others. A parameter is zero
  (the identity) for an example where the transform is not drawn, as in EDM.

  Args:
    pipe: The pipe.
    key: PRNG key.
    batch: N.
    height: H.
    width: W.

  Returns:
    Dict with, for each enabled transform, [N] arrays: 'xflip', 'yflip',
    'lumaflip' (int32 0/1), 'rotate_int' (int32 0..3, quarter turns
    counterclockwise as `np.rot90`), 'translate_int_x', 'translate_int_y'
    (int32 pixels), 'scale' (log2 scale / scale_std), 'rotate_frac' (angle,
    radians), 'aniso' and 'aniso_angle', 'translate_frac_x',
    'translate_frac_y' (in units of translate_frac_std * size), 'brightness',
    'contrast', 'hue' (angle, radians), 'saturation' (float32).
  """
  n = batch
  params = {}

  def gate(k, name, value):
    keep = jax.random.uniform(k, (n,)) < pipe.probability(name)
    return jnp.where(keep, value, jnp.zeros_like(value))

  def keys(name, num):
    return jax.random.split(jax.random.fold_in(key, _TRANSFORMS.index(name)), num)

  for name in ("xflip", "yflip", "lumaflip"):
    if pipe.enabled(name):
      k = keys(name, 2)
      params[name] = gate(k[1], name, jax.random.randint(k[0], (n,), 0, 2, jnp.int32))
  if pipe.enabled("rotate_int"):
    k = keys("rotate_int", 2)
    params["rotate_int"] = gate(k[1], "rotate_int", jax.random.randint(k[0], (n,), 0, 4, jnp.int32))
  if pipe.enabled("translate_int"):
    k = keys("translate_int", 3)
    u = jax.random.uniform(k[0], (2, n)) * 2 - 1
    keep = jax.random.uniform(k[1], (n,)) < pipe.probability("translate_int")
    u = jnp.where(keep, u, 0.0)
    params["translate_int_x"] = jnp.round(u[0] * (width * pipe.translate_int_max)).astype(jnp.int32)
    params["translate_int_y"] = jnp.round(u[1] * (height * pipe.translate_int_max)).astype(jnp.int32)
  for name in ("scale", "brightness", "contrast", "saturation"):
    if pipe.enabled(name):
      k = keys(name, 2)
      params[name] = gate(k[1], name, jax.random.normal(k[0], (n,)))
  if pipe.enabled("rotate_frac"):
    k = keys("rotate_frac", 2)
    angle = (jax.random.uniform(k[0], (n,)) * 2 - 1) * (np.pi * pipe.rotate_frac_max)
    params["rotate_frac"] = gate(k[1], "rotate_frac", angle)
  if pipe.enabled("aniso"):
    k = keys("aniso", 4)
    params["aniso"] = gate(k[2], "aniso", jax.random.normal(k[0], (n,)))
    r = (jax.random.uniform(k[1], (n,)) * 2 - 1) * np.pi
    keep_r = jax.random.uniform(k[3], (n,)) < pipe.aniso_rotate_prob
    params["aniso_angle"] = jnp.where(keep_r, r, 0.0)
  if pipe.enabled("translate_frac"):
    k = keys("translate_frac", 2)
    t = jax.random.normal(k[0], (2, n))
    keep = jax.random.uniform(k[1], (n,)) < pipe.probability("translate_frac")
    t = jnp.where(keep, t, 0.0)
    params["translate_frac_x"], params["translate_frac_y"] = t[0], t[1]
  if pipe.enabled("hue"):
    k = keys("hue", 2)
    angle = (jax.random.uniform(k[0], (n,)) * 2 - 1) * (np.pi * pipe.hue_max)
    params["hue"] = gate(k[1], "hue", angle)
  return params


def augment_labels(pipe: AugmentPipe, params: Mapping[str, jax.Array], height: int,
                   width: int) -> jax.Array:
  """Encodes drawn parameters as EDM's augment labels, [N, augment_dim] float32.

  Args:
    pipe: The pipe.
    params: Output of `sample_params`.
    height: H.
    width: W.

  Returns:
    Labels in EDM's order and encoding (see `label_layout`).
  """
  cols = []
  f32 = lambda x: jnp.asarray(x).astype(jnp.float32)
  for name in _TRANSFORMS:
    if not pipe.enabled(name):
      continue
    if name in ("xflip", "yflip", "lumaflip", "scale", "brightness", "contrast", "saturation"):
      cols.append(f32(params[name]))
    elif name == "rotate_int":
      k = params[name]
      cols += [f32((k == 1) | (k == 2)), f32((k == 2) | (k == 3))]
    elif name == "translate_int":
      cols += [f32(params["translate_int_x"]) / (width * pipe.translate_int_max),
               f32(params["translate_int_y"]) / (height * pipe.translate_int_max)]
    elif name in ("rotate_frac", "hue"):
      a = f32(params[name])
      cols += [jnp.cos(a) - 1, jnp.sin(a)]
    elif name == "aniso":
      w, r = f32(params["aniso"]), f32(params["aniso_angle"])
      cols += [w * jnp.cos(r), w * jnp.sin(r)]
    elif name == "translate_frac":
      cols += [f32(params["translate_frac_x"]), f32(params["translate_frac_y"])]
  if not cols:
    n = next(iter(params.values())).shape[0] if params else 0
    return jnp.zeros((n, 0), jnp.float32)
  return jnp.stack(cols, axis=1)


def apply_params(pipe: AugmentPipe, images: jax.Array,
                 params: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Applies the transforms given drawn parameters (EDM's order).

  Args:
    pipe: The pipe (selects the enabled transforms and their strengths).
    images: [N, H, W, C] images.
    params: Output of `sample_params` (or the same structure built by hand).

  Returns:
    (augmented images, augment labels).
  """
  images = jnp.asarray(images)
  _, h, w, _ = images.shape
  if pipe.enabled("xflip"):
    images = apply_xflip(images, params["xflip"])
  if pipe.enabled("yflip"):
    images = apply_yflip(images, params["yflip"])
  if pipe.enabled("rotate_int"):
    images = apply_rotate_int(images, params["rotate_int"])
  if pipe.enabled("translate_int"):
    images = apply_translate_int(images, params["translate_int_x"], params["translate_int_y"])
  if any(pipe.enabled(name) for name in _GEOMETRIC):
    matrices = geometric_matrices(pipe, params, h, w)
    images = apply_geometric(images, matrices, margin_mode=pipe.margin_mode)
  if any(pipe.enabled(name) for name in _COLOR):
    images = apply_color(images, color_matrices(pipe, params))
  return images, augment_labels(pipe, params, h, w)


# -----------------------------------------------------------------------------
# Pixel blitting.


def _per_example(mask: jax.Array, ndim: int) -> jax.Array:
  return jnp.reshape(mask, mask.shape + (1,) * (ndim - 1))


def apply_xflip(images: jax.Array, flags: jax.Array) -> jax.Array:
  """Mirrors horizontally (the W axis) the examples where `flags` is 1."""
  return jnp.where(_per_example(flags == 1, images.ndim), images[:, :, ::-1], images)


def apply_yflip(images: jax.Array, flags: jax.Array) -> jax.Array:
  """Mirrors vertically (the H axis) the examples where `flags` is 1."""
  return jnp.where(_per_example(flags == 1, images.ndim), images[:, ::-1], images)


def apply_rotate_int(images: jax.Array, quarters: jax.Array) -> jax.Array:
  """Rotates example i by `quarters[i]` (0..3) times 90 degrees, as `np.rot90`.

  Args:
    images: [N, H, W, C] with H == W.
    quarters: [N] int; the rotation is counterclockwise in (H, W) axes.

  Returns:
    Rotated images.
  """
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"rotate_int needs square images, got {images.shape[1:3]}")
  nd = images.ndim
  q = quarters
  images = jnp.where(_per_example((q == 1) | (q == 2), nd), images[:, :, ::-1], images)
  images = jnp.where(_per_example((q == 2) | (q == 3), nd), images[:, ::-1], images)
  images = jnp.where(_per_example((q == 1) | (q == 3), nd), jnp.swapaxes(images, 1, 2), images)
  return images


def apply_translate_int(images: jax.Array, tx: jax.Array, ty: jax.Array) -> jax.Array:
  """Integer translation with reflection at the borders (EDM's indexing).

  Output pixel (y, x) of example i reads input pixel
  (reflect(y + ty[i]), reflect(x - tx[i])), where reflect folds an index into
  [0, size - 1] with mirror (no edge repeat) symmetry, periodic in 2 (size - 1).
  So positive tx moves the content right and positive ty moves it up, as EDM.

  Args:
    images: [N, H, W, C].
    tx: [N] int shifts along W.
    ty: [N] int shifts along H.

  Returns:
    Translated images.
  """
  _, h, w, _ = images.shape
  xs = jnp.arange(w)[None, :] - tx[:, None]
  ys = jnp.arange(h)[None, :] + ty[:, None]
  xs = (w - 1) - jnp.abs((w - 1) - jnp.mod(xs, 2 * w - 2)) if w > 1 else jnp.zeros_like(xs)
  ys = (h - 1) - jnp.abs((h - 1) - jnp.mod(ys, 2 * h - 2)) if h > 1 else jnp.zeros_like(ys)
  images = jnp.take_along_axis(images, ys[:, :, None, None], axis=1)
  return jnp.take_along_axis(images, xs[:, None, :, None], axis=2)


# -----------------------------------------------------------------------------
# Geometric transformations.


def _eye(n: int, batch: int) -> jax.Array:
  return jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (batch, n, n))


def _translate2d(tx, ty):
  o, z = jnp.ones_like(tx), jnp.zeros_like(tx)
  return jnp.stack([jnp.stack([o, z, tx], -1), jnp.stack([z, o, ty], -1),
                    jnp.stack([z, z, o], -1)], -2)


def _scale2d(sx, sy):
  o, z = jnp.ones_like(sx), jnp.zeros_like(sx)
  return jnp.stack([jnp.stack([sx, z, z], -1), jnp.stack([z, sy, z], -1),
                    jnp.stack([z, z, o], -1)], -2)


def _rotate2d(theta):
  c, s = jnp.cos(theta), jnp.sin(theta)
  o, z = jnp.ones_like(theta), jnp.zeros_like(theta)
  return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1),
                    jnp.stack([z, z, o], -1)], -2)


def geometric_matrices(pipe: AugmentPipe, params: Mapping[str, jax.Array], height: int,
                       width: int) -> jax.Array:
  """EDM's inverse geometric matrices G_inv, [N, 3, 3] float32.

  G_inv maps output pixel coordinates to input pixel coordinates, both
  relative to the image center (x right, y down, in pixels).

  Args:
    pipe: The pipe.
    params: Output of `sample_params`.
    height: H.
    width: W.

  Returns:
    The matrices (the identity where nothing was drawn).
  """
  n = next(iter(params.values())).shape[0]
  g = _eye(3, n)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  if pipe.enabled("scale"):
    s = jnp.exp2(f32(params["scale"]) * pipe.scale_std)
    g = g @ _scale2d(1 / s, 1 / s)
  if pipe.enabled("rotate_frac"):
    g = g @ _rotate2d(f32(params["rotate_frac"]))
  if pipe.enabled("aniso"):
    s = jnp.exp2(f32(params["aniso"]) * pipe.aniso_std)
    r = f32(params["aniso_angle"])
    g = g @ _rotate2d(-r) @ _scale2d(1 / s, s) @ _rotate2d(r)
  if pipe.enabled("translate_frac"):
    tx = f32(params["translate_frac_x"]) * (width * pipe.translate_frac_std)
    ty = f32(params["translate_frac_y"]) * (height * pipe.translate_frac_std)
    g = g @ _translate2d(-tx, -ty)
  return g


def _depthwise_conv(x: jax.Array, taps: np.ndarray, axis: int, *, stride: int = 1,
                    dilation: int = 1, padding: tuple[int, int]) -> jax.Array:
  """1-D depthwise cross-correlation of NHWC `x` along `axis` (1 or 2)."""
  c = x.shape[-1]
  k = np.asarray(taps, np.float32)
  shape = (len(k), 1) if axis == 1 else (1, len(k))
  kernel = jnp.asarray(np.tile(k.reshape(shape + (1, 1)), (1, 1, 1, c)), x.dtype)
  strides = (stride, 1) if axis == 1 else (1, stride)
  lhs_dil = (dilation, 1) if axis == 1 else (1, dilation)
  pad = (padding, (0, 0)) if axis == 1 else ((0, 0), padding)
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=pad, lhs_dilation=lhs_dil,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
      precision=jax.lax.Precision.HIGHEST)


def geometric_margins(matrices: jax.Array, height: int, width: int,
                      margin_mode: str = "batch") -> jax.Array:
  """EDM's reflection margins [N, 4] int32 (x0, y0, x1, y1) for `matrices`."""
  n = matrices.shape[0]
  if margin_mode == "max":
    return jnp.broadcast_to(jnp.asarray([width - 1, height - 1] * 2, jnp.int32), (n, 4))
  hz_pad = len(SYM6) // 4
  cx, cy = (width - 1) / 2, (height - 1) / 2
  corners = jnp.asarray([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], jnp.float32)
  cp = matrices.astype(jnp.float32) @ corners  # [N, 3, 4]
  x, y = cp[:, 0], cp[:, 1]
  m = jnp.stack([(-x).max(-1), (-y).max(-1), x.max(-1), y.max(-1)], -1)  # [N, 4]
  if margin_mode == "batch":
    m = jnp.broadcast_to(m.max(0, keepdims=True), m.shape)
  elif margin_mode != "example":
    raise ValueError(f"margin_mode must be one of {MARGIN_MODES}, got {margin_mode!r}")
  m = m + jnp.asarray([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, jnp.float32)
  m = jnp.clip(m, 0.0, jnp.asarray([width - 1, height - 1] * 2, jnp.float32))
  return jnp.ceil(m).astype(jnp.int32)


def apply_geometric(images: jax.Array, matrices: jax.Array,
                    margin_mode: str = "batch") -> jax.Array:
  """EDM's geometric transform of each example by its inverse matrix.

  Reflect-pad, 2x upsample with the sym6 filter, bilinear resampling
  (`grid_sample`, align_corners=False, zero padding) of the output grid
  mapped through G_inv, 2x downsample with the filter, crop. The padding is
  static (size - 1 on each side) and EDM's data-dependent margin is emulated
  by masking, see the module docstring.

  Args:
    images: [N, H, W, C] float images.
    matrices: [N, 3, 3] G_inv (output -> input, centered pixel coordinates).
    margin_mode: 'batch' (EDM), 'example' or 'max'.

  Returns:
    [N, H, W, C] transformed images.
  """
  images = jnp.asarray(images)
  dtype = images.dtype
  n, h, w, c = images.shape
  hz = np.asarray(SYM6, np.float32)
  hz_pad = len(hz) // 4
  matrices = jnp.asarray(matrices, jnp.float32)
  margins = geometric_margins(matrices, h, w, margin_mode)  # [N, 4]
  mx0, my0, mx1, my1 = (margins[:, i] for i in range(4))
  px, py = w - 1, h - 1  # Static padding: the largest margin EDM can use.

  # Reflect-pad by the static margin, then zero what lies outside EDM's pad.
  x = jnp.pad(images, ((0, 0), (py, py), (px, px), (0, 0)), mode="reflect")
  hb, wb = h + 2 * py, w + 2 * px
  if margin_mode != "max":
    cols = jnp.arange(wb)[None, :]
    rows = jnp.arange(hb)[None, :]
    keep_x = (cols >= (px - mx0)[:, None]) & (cols < (px + w + mx1)[:, None])
    keep_y = (rows >= (py - my0)[:, None]) & (rows < (py + h + my1)[:, None])
    keep = keep_y[:, :, None, None] & keep_x[:, None, :, None]
    x = jnp.where(keep, x, jnp.zeros_like(x))

  # 2x upsampling: zero-stuffing (input pixel i at index 2i) and filtering.
  conv_pad = (len(hz) + 1) // 2
  x = _depthwise_conv(x, hz[::-1], 2, dilation=2, padding=(conv_pad, conv_pad))
  x = _depthwise_conv(x, hz[::-1], 1, dilation=2, padding=(conv_pad, conv_pad))
  hu, wu = 2 * hb, 2 * wb
  x = x.astype(jnp.float32)

  # Output grid at 2x resolution, with a 2 * hz_pad border: index o is at
  # output pixel o / 2 - hz_pad.
  ho, wo = 2 * (h + 2 * hz_pad), 2 * (w + 2 * hz_pad)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  ox = jnp.arange(wo, dtype=jnp.float32) / 2 - hz_pad - cx
  oy = jnp.arange(ho, dtype=jnp.float32) / 2 - hz_pad - cy
  gx, gy = jnp.meshgrid(ox, oy)  # [ho, wo]
  pts = jnp.stack([gx.ravel(), gy.ravel(), jnp.ones(ho * wo, jnp.float32)], 0)  # [3, P]
  src = jnp.einsum("nij,jp->nip", matrices, pts, precision=jax.lax.Precision.HIGHEST)
  # Input pixel q (original coordinates) sits at index 2 (q + pad) upsampled.
  sx = 2 * (src[:, 0] + cx + px)  # [N, P]
  sy = 2 * (src[:, 1] + cy + py)

  # Valid sample range: EDM's upsampled image, or the whole one for 'max'.
  if margin_mode == "max":
    lo_x = jnp.zeros((n, 1), jnp.int32)
    hi_x = jnp.full((n, 1), wu, jnp.int32)
    lo_y = jnp.zeros((n, 1), jnp.int32)
    hi_y = jnp.full((n, 1), hu, jnp.int32)
  else:
    lo_x, hi_x = (2 * (px - mx0))[:, None], (2 * (px + w + mx1))[:, None]
    lo_y, hi_y = (2 * (py - my0))[:, None], (2 * (py + h + my1))[:, None]

  x0f, y0f = jnp.floor(sx), jnp.floor(sy)
  fx, fy = sx - x0f, sy - y0f
  x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
  flat = x.reshape(n, hu * wu, c)
  out = jnp.zeros((n, ho * wo, c), jnp.float32)
  for dy, wy in ((0, 1 - fy), (1, fy)):
    for dx, wx in ((0, 1 - fx), (1, fx)):
      xi, yi = x0 + dx, y0 + dy
      valid = (xi >= lo_x) & (xi < hi_x) & (yi >= lo_y) & (yi < hi_y)
      idx = jnp.clip(yi, 0, hu - 1) * wu + jnp.clip(xi, 0, wu - 1)
      vals = jnp.take_along_axis(flat, idx[:, :, None], axis=1)
      out = out + jnp.where(valid, wx * wy, 0.0)[:, :, None] * vals
  x = out.reshape(n, ho, wo, c).astype(dtype)

  # 2x downsampling with the filter, then crop the border.
  conv_pad = (len(hz) - 1) // 2
  x = _depthwise_conv(x, hz, 2, stride=2, padding=(conv_pad, conv_pad))[:, :, hz_pad:-hz_pad]
  x = _depthwise_conv(x, hz, 1, stride=2, padding=(conv_pad, conv_pad))[:, hz_pad:-hz_pad]
  return x


# -----------------------------------------------------------------------------
# Color transformations.


_LUMA = np.asarray([1, 1, 1, 0], np.float32) / np.sqrt(3)


def _translate3d(t):
  n = t.shape[0]
  m = _eye(4, n)
  return m.at[:, :3, 3].set(t[:, None])


def _rotate3d(v: np.ndarray, theta: jax.Array) -> jax.Array:
  vx, vy, vz = (float(a) for a in v[:3])
  s, c = jnp.sin(theta), jnp.cos(theta)
  cc = 1 - c
  o, z = jnp.ones_like(theta), jnp.zeros_like(theta)
  rows = [
      [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, z],
      [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, z],
      [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, z],
      [z, z, z, o],
  ]
  return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def color_matrices(pipe: AugmentPipe, params: Mapping[str, jax.Array]) -> jax.Array:
  """EDM's 4x4 color matrices (acting on [r, g, b, 1]), [N, 4, 4] float32."""
  n = next(iter(params.values())).shape[0]
  m = _eye(4, n)
  eye = jnp.eye(4, dtype=jnp.float32)
  ll = jnp.asarray(np.outer(_LUMA, _LUMA), jnp.float32)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  if pipe.enabled("brightness"):
    m = _translate3d(f32(params["brightness"]) * pipe.brightness_std) @ m
  if pipe.enabled("contrast"):
    c = jnp.exp2(f32(params["contrast"]) * pipe.contrast_std)
    m = (eye * jnp.concatenate([jnp.broadcast_to(c[:, None], (n, 3)), jnp.ones((n, 1))], 1)[:, None, :]) @ m
  if pipe.enabled("lumaflip"):
    m = (eye - 2 * ll * f32(params["lumaflip"])[:, None, None]) @ m
  if pipe.enabled("hue"):
    m = _rotate3d(_LUMA, f32(params["hue"])) @ m
  if pipe.enabled("saturation"):
    s = jnp.exp2(f32(params["saturation"]) * pipe.saturation_std)[:, None, None]
    m = (ll + (eye - ll) * s) @ m
  return m


def apply_color(images: jax.Array, matrices: jax.Array) -> jax.Array:
  """Applies [N, 4, 4] color matrices to RGB or grayscale NHWC images.

  Args:
    images: [N, H, W, C] with C == 3 (RGB) or C == 1 (luma; EDM averages the
      three output rows of the matrix).
    matrices: Output of `color_matrices`.

  Returns:
    Transformed images.

  Raises:
    ValueError: For another number of channels.
  """
  c = images.shape[-1]
  m = jnp.asarray(matrices, jnp.float32)
  hp = jax.lax.Precision.HIGHEST
  if c == 3:
    out = jnp.einsum("nij,nhwj->nhwi", m[:, :3, :3], images, precision=hp)
    return (out + m[:, None, None, :3, 3]).astype(images.dtype)
  if c == 1:
    r = m[:, :3, :].mean(axis=1)  # [N, 4]
    gain = r[:, :3].sum(-1)[:, None, None, None]
    return (images * gain + r[:, 3][:, None, None, None]).astype(images.dtype)
  raise ValueError(f"Color transforms need RGB (3) or L (1) channels, got {c}")
