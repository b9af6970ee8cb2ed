"""The train state: one pytree holding everything a resumed run needs."""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """step: global step (int32); params / model_state (e.g. batch_stats) of the net;
  opt_state: optimizer state; ema_params / ema_model_state: the EMA network;
  rng: the replicated base key, folded with the step inside the train step;
  extra: method-specific state (e.g. per-example label memories), {} if none.
  """
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  ema_params: Any
  ema_model_state: Any
  rng: jax.Array
  extra: Any = flax.struct.field(default_factory=dict)
