"""Composing a backbone with a separate head."""

from typing import Any

import flax.linen as nn


class WithHead(nn.Module):
  """head(backbone(x, train), train): e.g. a backbone built with head=False and
  HET's heteroscedastic head."""
  backbone: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, x, train: bool = False) -> Any:
    return self.head(self.backbone(x, train=train), train=train)
