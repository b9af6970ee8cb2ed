"""The TDSM authors' MNIST CAS classifier (`ClassifierCAS_CNN_MNIST`), in Flax Linen.

byeonghu-na/tdsm@6a57a54 training/networks.py:1015-1041: the classifier that the
TDSM paper's CAS (Classification Accuracy Score) trains on generated MNIST digits
(`lnrd.metrics.cas`, arch "tdsm_cnn"). Their CIFAR CAS network (`ClassifierCAS`,
networks.py:977-992, torchvision ResNet-50 with the ImageNet stem) is
`sgn_jax.models.ResNet50(cifar_stem=False)`. Registered as "tdsm_cas_cnn" in
`sgn_jax.models.MODELS`. Their CAS training script is not released.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch.nn.Conv2d / Linear default init: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class TdsmCasCNN(nn.Module):
  """The authors' MNIST CAS classifier (`ClassifierCAS_CNN_MNIST`), NHWC.

      x = pad(x) to pad_to x pad_to with pad_value, centred   # MNIST 28 -> 32
      h = MaxPool2(ReLU(Conv5x5(16, stride 1, zero pad 2)(x)))  # 16 x 16 x 16
      h = MaxPool2(ReLU(Conv5x5(32, stride 1, zero pad 2)(h)))  # 8 x 8 x 32
      logits = Dense(num_outputs)(flatten(h))                   # 32 * 8 * 8 -> C

  No BatchNorm, dropout or hidden layer; PyTorch's default initialisation. The
  flatten is in torch's (C, H, W) order, so the authors' weights would map one to
  one. One channel, 10 classes: 33,738 parameters (416 + 12,832 + 20,490), as
  the authors' module.

  The authors' digits are 28x28 zero-padded to 32x32 in uint8 (0 = black); in
  their [-1, 1] input range (x / 127.5 - 1) that border is -1, hence the default
  `pad_value` for inputs in that range (the 28x28 MNIST arrays stay the data).

  Attributes:
    num_outputs: number of logits.
    pad_to: spatial size the input is padded to (0: none).
    pad_value: value of the padded border, in the input's range.
    head: if False, return the flattened features (N, 32 * 8 * 8).
  """
  num_outputs: int = 10
  pad_to: int = 32
  pad_value: float = -1.0
  head: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (N, num_outputs) of NHWC images; `train` changes nothing (no BN)."""
    del train
    x = jnp.asarray(x, jnp.float32)
    h, w = x.shape[1], x.shape[2]
    if self.pad_to and (h < self.pad_to or w < self.pad_to):
      top, left = max(self.pad_to - h, 0) // 2, max(self.pad_to - w, 0) // 2
      x = jnp.pad(x, ((0, 0), (top, max(self.pad_to - h, 0) - top),
                      (left, max(self.pad_to - w, 0) - left), (0, 0)),
                  constant_values=self.pad_value)
    for i, features in enumerate((16, 32), start=1):
      fan_in = x.shape[-1] * 5 * 5
      x = nn.Conv(features, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)),
                  kernel_init=_torch_kernel_init, bias_init=_torch_bias_init(fan_in),
                  name=f"conv{i}")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch's (C, H, W) order
    if not self.head:
      return x
    return nn.Dense(self.num_outputs, kernel_init=_torch_kernel_init,
                    bias_init=_torch_bias_init(x.shape[-1]), name="linear")(x)
