"""Classifier networks and a name registry.

Every model is a `flax.linen.Module` applied as
`model.apply(variables, x, train=bool, mutable=[...])` on float32 inputs
(N, H, W, C) images or (N, D) vectors, returning float32 logits
(N, num_outputs), or the penultimate features when built with head=False.
"""

import dataclasses
import functools

import flax.linen as nn

from sgn_jax.models.cnn import SmallCNN
from sgn_jax.models.composition import WithHead
from sgn_jax.models.heteroscedastic import HeteroscedasticHead
from sgn_jax.models.inception_resnet_v2 import InceptionResNetV2
from sgn_jax.models.keras_resnet import KerasResNet
from sgn_jax.models.keras_resnet import KerasResNet50
from sgn_jax.models.mlp import MLP
from sgn_jax.models.resnet import ResNet
from sgn_jax.models.resnet import ResNet18
from sgn_jax.models.resnet import ResNet34
from sgn_jax.models.resnet import ResNet50
from sgn_jax.models.tdsm_cas_cnn import TdsmCasCNN
from sgn_jax.models.wide_resnet import WideResNet
from sgn_jax.models.wide_resnet import WideResNetBlock
from sgn_jax.models.wide_resnet import wrn28_2

MODELS = {
    "cnn": SmallCNN,
    "wrn": WideResNet,
    "wrn28_2": wrn28_2,
    "mlp": MLP,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet50_keras": KerasResNet50,  # Keras applications ResNet50 (v1), Keras weights
    "inception_resnet_v2": InceptionResNetV2,
    "tdsm_cas_cnn": TdsmCasCNN,
}


def _allowed_fields(factory):
  """Constructor fields a caller may set: dataclass fields, minus Flax's own
  `parent`/`name` and the arguments a `functools.partial` alias already fixes."""
  fixed = {}
  if isinstance(factory, functools.partial):
    fixed = factory.keywords
    factory = factory.func
  return [f.name for f in dataclasses.fields(factory)
          if f.init and f.name not in ("parent", "name") and f.name not in fixed]


def get_model(name: str, num_outputs: int, **kwargs) -> nn.Module:
  """Builds the model registered as `name` with `num_outputs` logits.

  Raises:
    ValueError: unknown `name` (the message lists `MODELS`).
    TypeError: a keyword that is not a field of the model (named in the message).
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; known models: {sorted(MODELS)}.")
  factory = MODELS[name]
  allowed = _allowed_fields(factory)
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise TypeError(f"Model {name!r} has no field(s) {unknown}; its fields are "
                    f"{allowed}.")
  return factory(num_outputs=num_outputs, **kwargs)


__all__ = ["HeteroscedasticHead", "InceptionResNetV2", "KerasResNet", "KerasResNet50", "MLP",
           "MODELS", "ResNet", "ResNet18", "ResNet34", "ResNet50", "SmallCNN", "TdsmCasCNN",
           "WideResNet", "WideResNetBlock", "WithHead", "get_model", "wrn28_2"]
