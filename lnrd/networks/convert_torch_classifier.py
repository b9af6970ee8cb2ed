"""Convert the TDSM authors' PyTorch classifier state dicts to the Flax time classifiers.

The classifiers are `lnrd.networks.time_classifiers`' `TimeCNN` (the authors'
`ClassifierSong_MNIST`) and `TimeResNet` (`ClassifierSong` with `ResNet_cond`);
the EDM/TDSM U-Nets have their own converter, `lnrd.networks.convert_torch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lnrd.networks.time_classifiers import get_time_classifier


def _to_numpy(v: Any) -> np.ndarray:
  if hasattr(v, "detach"):  # torch.Tensor, without importing torch
    v = v.detach().cpu().numpy()
  return np.asarray(v)


def _torch_module_path(name: str, flax_path: tuple[str, ...]) -> str:
  """Torch module path (without 'model.') of a Flax module path."""
  if flax_path[0] == "embed":
    return flax_path[1]
  if name == "cnn":
    mod = flax_path[0]
    return f"classifier.{mod}.0" if mod.startswith("conv") else \
        f"classifier.{mod}"
  # ResNet.
  mod = flax_path[0]
  if mod.startswith("layer"):
    stage, block = mod[len("layer"):].split("_")
    sub = {"shortcut_conv": "shortcut.0", "shortcut_bn": "shortcut.1"}.get(
        flax_path[1], flax_path[1])
    return f"classifier.layer{stage}.{block}.{sub}"
  return f"classifier.{mod}"


def torch_state_dict_to_params(state_dict: Mapping[str, Any], name: str,
                               num_classes: int, example_x: Any,
                               **kw: Any) -> dict[str, Any]:
  """Converts the authors' classifier state dict to Flax variables.

  Accepts the state dict of their `EDMPrecond_classifier` (keys 'model.*'),
  of `EDMPrecond_classifier_with_transition_matrix` (plus 'transition_matrix',
  returned as `variables['volmin_theta']`; pop it before `apply`), or of the
  bare `ClassifierSong`/`ClassifierSong_MNIST` (no 'model.' prefix). Linear
  weights (out, in) become kernels (in, out); conv weights (O, I, kh, kw)
  become (kh, kw, I, O); BN weight/bias/running_mean/running_var become
  scale/bias and batch_stats mean/var; `num_batches_tracked` is dropped.

  Args:
    state_dict: name -> torch tensor or array.
    name: 'cnn', 'resnet18' or 'resnet34' ('mlp' has no authors' version).
    num_classes: number of classes.
    example_x: an NHWC example input (B, H, W, C) fixing the shapes.
    **kw: module attributes, as for `get_time_classifier`.

  Returns:
    {'params': ..., ['batch_stats': ...], ['volmin_theta': (K, K)]} as numpy.

  Raises:
    ValueError: 'mlp', a missing key or shape mismatch, or unused keys.
  """
  if name == "mlp":
    raise ValueError("'mlp' has no counterpart in the authors' code")
  model = get_time_classifier(name, num_classes, **kw)
  x = jnp.zeros(np.shape(example_x), jnp.float32)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), x, jnp.ones((x.shape[0],))))

  sd: dict[str, np.ndarray] = {}
  for k, v in state_dict.items():
    kk = k[len("model."):] if k.startswith("model.") else k
    if kk in sd:
      raise ValueError(f"duplicate key after stripping 'model.': {k}")
    sd[kk] = v
  unused = set(sd)

  def take(key: str) -> np.ndarray:
    if key not in sd:
      raise ValueError(f"missing key in state dict: {key}")
    if key not in unused:
      raise ValueError(f"key used twice: {key}")
    unused.remove(key)
    return _to_numpy(sd[key]).astype(np.float32)

  out: dict[str, Any] = {}
  for coll, tree in shapes.items():
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = tuple(p.key for p in path)
      tpath = _torch_module_path(name, keys[:-1])
      leaf_name = keys[-1]
      if coll == "params":
        tname = {"kernel": "weight", "scale": "weight"}.get(leaf_name,
                                                            leaf_name)
        arr = take(f"{tpath}.{tname}")
        if leaf_name == "kernel":
          arr = arr.T if arr.ndim == 2 else np.transpose(arr, (2, 3, 1, 0))
      else:  # batch_stats
        arr = take(f"{tpath}.running_{leaf_name}")
        nbt = f"{tpath}.num_batches_tracked"
        if nbt in unused:
          unused.remove(nbt)
      if arr.shape != tuple(leaf.shape):
        raise ValueError(f"shape mismatch for {tpath}.{leaf_name}: "
                         f"torch {arr.shape} vs flax {tuple(leaf.shape)}")
      flat[keys] = arr
    out[coll] = _unflatten(flat)
  if "transition_matrix" in unused:
    out["volmin_theta"] = take("transition_matrix")
  if unused:
    raise ValueError(f"unused keys in state dict: {sorted(unused)}")
  return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for keys, v in flat.items():
    node = tree
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = v
  return tree
