"""EDM's denoiser networks (DDPM++, NCSN++, ADM) in Flax Linen, and presets.

`get_network(arch, ...)` builds the raw U-Net that EDM's preconditioners wrap
(`F_theta` of Karras et al. 2022), configured as EDM's `train.py` (and TDSM's,
for 'ddpmpp_mnist') does for `--arch`. The networks take NHWC images:
`net.apply(variables, x, c_noise, class_labels, augment_labels, train=...)`.

Parameter counts (identical to the authors' PyTorch networks, checked in
tests/test_lnrd_networks.py), 32x32 images:

  ==================================================  ===========
  ddpmpp, CIFAR-10 (3 ch, 10 classes, augment_dim 9)   55,735,299
  ddpmpp, CIFAR-10, augment_dim 0                      55,734,147
  ddpmpp, unconditional, augment_dim 9                 55,733,891
  ddpmpp_mnist (1 ch, 10 classes, augment_dim 9)        1,559,425
  ddpmpp_mnist, augment_dim 0                           1,559,137
  ncsnpp, CIFAR-10 (10 classes, augment_dim 9)         56,400,643
  adm, CIFAR-10 (10 classes, augment_dim 9)           279,633,603
  ==================================================  ===========

Modules: `song_unet` (SongUNet), `dhariwal_unet` (DhariwalUNet), `layers`,
`mlp` (a small MLP denoiser for vector data), `convert_torch` (the authors'
U-Net weights), and TDSM's time-dependent noisy-label classifiers:
`time_classifiers` (`TimeCNN`, `TimeResNet`, `TimeMLP`; their own registry,
`get_time_classifier(name, num_classes)` over `TIME_CLASSIFIERS`, since they
take (x_t, sigma) and return logits) with their PyTorch converter
`convert_torch_classifier`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from lnrd.networks.dhariwal_unet import DhariwalUNet
from lnrd.networks.song_unet import SongUNet

# EDM train.py's --arch presets (plus TDSM's ddpmpp_mnist). Each entry is the
# network class and the constructor arguments the preset sets.
ARCHITECTURES: Mapping[str, tuple[type[nn.Module], Mapping[str, Any]]] = {
    "ddpmpp": (SongUNet, dict(
        embedding_type="positional", encoder_type="standard", decoder_type="standard",
        channel_mult_noise=1, resample_filter=(1, 1), model_channels=128, channel_mult=(2, 2, 2))),
    "ncsnpp": (SongUNet, dict(
        embedding_type="fourier", encoder_type="residual", decoder_type="standard",
        channel_mult_noise=2, resample_filter=(1, 3, 3, 1), model_channels=128, channel_mult=(2, 2, 2))),
    "adm": (DhariwalUNet, dict(model_channels=192, channel_mult=(1, 2, 3, 4))),
    "ddpmpp_mnist": (SongUNet, dict(
        embedding_type="positional", encoder_type="standard", decoder_type="standard",
        channel_mult_noise=1, resample_filter=(1, 1), model_channels=32, channel_mult=(2, 2, 2),
        num_blocks=1)),
}


def get_network(arch: str, *, img_resolution: int, in_channels: int, out_channels: int,
                label_dim: int = 0, augment_dim: int = 0, dropout: float = 0.10,
                **overrides: Any) -> nn.Module:
  """Builds the U-Net of an EDM `--arch` preset.

  Args:
    arch: 'ddpmpp', 'ncsnpp', 'adm' or 'ddpmpp_mnist'.
    img_resolution: image height and width.
    in_channels: input channels.
    out_channels: output channels.
    label_dim: number of classes (0: unconditional).
    augment_dim: augmentation-label size (EDM uses 9 with its augment pipe, else 0).
    dropout: dropout rate (EDM's train.py default is 0.13).
    **overrides: any other constructor argument of the network class (e.g.
      model_channels, channel_mult, label_dropout, dtype); they take precedence
      over the preset.

  Raises:
    ValueError: unknown `arch` (the message lists the known ones).
    TypeError: an override that is not a field of the network class.
  """
  if arch not in ARCHITECTURES:
    raise ValueError(f"Unknown network architecture {arch!r}; known: {sorted(ARCHITECTURES)}.")
  network_class, preset = ARCHITECTURES[arch]
  kwargs = dict(preset, img_resolution=img_resolution, in_channels=in_channels,
                out_channels=out_channels, label_dim=label_dim, augment_dim=augment_dim, dropout=dropout)
  kwargs.update(overrides)
  for key in ("channel_mult", "attn_resolutions", "resample_filter"):
    if key in kwargs and isinstance(kwargs[key], Sequence):
      kwargs[key] = tuple(kwargs[key])
  return network_class(**kwargs)


def example_inputs(module: nn.Module, batch_size: int = 1) -> tuple[Any, ...]:
  """Zero inputs (x, noise_labels, class_labels, augment_labels) matching `module`'s config."""
  x = np.zeros((batch_size, module.img_resolution, module.img_resolution, module.in_channels), np.float32)
  noise_labels = np.zeros((batch_size,), np.float32)
  class_labels = np.zeros((batch_size, module.label_dim), np.float32) if module.label_dim else None
  augment_labels = np.zeros((batch_size, module.augment_dim), np.float32) if module.augment_dim else None
  return x, noise_labels, class_labels, augment_labels


def init_shapes(module: nn.Module, inputs: Sequence[Any] | None = None) -> Any:
  """Shapes/dtypes of `module.init(...)`'s variables, via `jax.eval_shape` (no allocation)."""
  inputs = example_inputs(module) if inputs is None else tuple(inputs)
  rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
  return jax.eval_shape(lambda: module.init(rngs, *inputs))


def count_params(module: nn.Module, inputs: Sequence[Any] | None = None) -> int:
  """Number of trainable parameters (the 'params' collection) of `module`.

  Uses `jax.eval_shape`, so even the 280M-parameter ADM is counted without
  allocating it. Fixed buffers (NCSN++'s Fourier frequencies, collection
  'constants') are not counted, as PyTorch's `parameters()` does not count them.

  Args:
    module: the network.
    inputs: example positional inputs (x, noise_labels, class_labels,
      augment_labels); default `example_inputs(module)`.
  """
  shapes = init_shapes(module, inputs)
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes["params"])))


__all__ = ["ARCHITECTURES", "DhariwalUNet", "SongUNet", "count_params", "example_inputs",
           "get_network", "init_shapes"]
