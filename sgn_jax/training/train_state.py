"""The train state: one pytree holding everything a resumed run needs."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import numpy as np


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


def init_replicated(init: Callable, key, mesh=None):
  """`init(key)` run once under jit, every leaf born replicated on `mesh` (shapes
  from `jax.eval_shape`, no host copy of the parameters); plain jit without a mesh."""
  if mesh is None:
    return jax.jit(init)(key)
  from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  abstract = jax.eval_shape(init, key)
  sharding = mesh_lib.replicated(mesh)
  return jax.jit(init, out_shardings=jax.tree.map(lambda _: sharding, abstract))(key)


def num_params(tree) -> int:
  """The number of scalars in a parameter pytree."""
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(tree)))
