"""Convert the authors' PyTorch EDM/TDSM U-Net weights to and from Flax variables.

Key mapping (EDM's `SongUNet` / `DhariwalUNet` state dict -> Flax variables):

  * an optional `model.` prefix (added by EDMPrecond/VPPrecond/VEPrecond) is
    dropped;
  * `enc.<name>.` / `dec.<name>.` become the submodules `enc_<name>` / `dec_<name>`;
  * `<path>.weight` of a Linear (out, in) -> params `<path>/kernel` (in, out);
    of a Conv2d (O, I, kh, kw) -> `<path>/kernel` (kh, kw, I, O); of a
    GroupNorm (C,) -> `<path>/scale`;
  * `<path>.bias` -> params `<path>/bias`;
  * `map_noise.freqs` (NCSN++'s Fourier frequencies, a buffer) -> the
    'constants' collection `map_noise/freqs`;
  * `<path>.resample_filter` buffers are fixed functions of the network's
    `resample_filter`; they are checked against it and not stored.

Reading the authors' files (as data only: nothing in a file ever runs):

  * a state dict (`.pt`/`.pth`, `torch.save(net.state_dict(), ...)`):
    `load_torch_checkpoint`, through `torch.load(weights_only=True)`; a file
    holding more than tensors (a pickled module) is refused;
  * an EDM/TDSM network snapshot (`network-snapshot-*.pkl`, a pickle of the
    whole network made by EDM's `torch_utils/persistence.py`, which embeds
    each class's module source and `exec()`s it when unpickled normally):
    `load_edm_snapshot` (or `load_torch_checkpoint` on the `.pkl`), a
    restricted unpickler that never imports or runs the pickled source: the
    persistent classes and `torch.nn` modules become inert stubs holding
    their state, tensors are rebuilt with `torch.load(weights_only=True)` on
    their storage bytes, and any other global is refused. It needs neither
    the authors' repository nor a GPU::

    state_dict = load_edm_snapshot('network-snapshot-200000.pkl')  # keys 'model.enc....'
    variables = torch_state_dict_to_variables(state_dict, net, example_inputs(net))
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np

from lnrd.networks import init_shapes
from lnrd.networks.layers import resample_filter_2d
from sgn_jax import safe_load

_PRECOND_PREFIX = "model."


_STATE_DICT_ADVICE = (
    "An EDM/TDSM network snapshot (network-snapshot-*.pkl) needs no conversion: pass the "
    ".pkl itself (load_edm_snapshot reads it as data). For another file, and only if you "
    "trust it, convert it once where it was made, with the code that wrote it importable: "
    "`torch.save(net.state_dict(), 'edm_ema.pt')`, then pass edm_ema.pt.")


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("Reading PyTorch checkpoints needs torch: pip install torch "
                      "(the CPU build is enough).") from error
  return torch


def load_torch_checkpoint(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Reads a PyTorch state-dict file (`.pt`/`.pth`) or an EDM snapshot (`.pkl`) as float32 arrays.

  `.pt`/`.pth`: `torch.load(weights_only=True)` (tensors and plain containers
  only); a plain state dict, or a dict holding one under 'state_dict' or
  'ema'. `.pkl`: `load_edm_snapshot(path)` (its 'ema' network).

  Raises:
    ImportError: torch is not installed.
    UnsafeFileError: the file holds more than tensors and plain containers (a
      pickled module); the message says how to get a plain state dict.
    ValueError: the file holds no state dict.
  """
  if os.fspath(path).lower().endswith(".pkl"):
    return load_edm_snapshot(path)
  _import_torch()
  loaded = safe_load.torch_load_weights(path, advice=_STATE_DICT_ADVICE)
  for key in ("state_dict", "ema"):
    if isinstance(loaded, Mapping) and key in loaded:
      loaded = loaded[key]
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{path}: expected a state dict, got {type(loaded).__name__}.")
  return {key: _to_numpy(value) for key, value in loaded.items()}


class _EasyDict(dict):
  """Inert stand-in for `dnnlib.util.EasyDict` (a dict with attribute access)."""
  __slots__ = ()


def _persistent_stub(label: str, meta: Any) -> safe_load.Stub:
  """Inert `torch_utils.persistence._reconstruct_persistent_obj(meta)`.

  EDM's version execs `meta['module_src']` and builds `meta['class_name']`
  from it; here the source is never looked at: a stub holds `meta['state']`.
  """
  if not (isinstance(meta, dict) and meta.get("type") == "class"
          and isinstance(meta.get("class_name"), str)):
    raise pickle.UnpicklingError(f"{label}: a persistent object without a class meta dict.")
  return safe_load.make_stub(f"torch_utils.persistence.{meta['class_name']}", meta.get("state"))


def load_edm_snapshot(path: str | os.PathLike[str], key: str | None = "ema") -> dict[str, np.ndarray]:
  """The state dict of the network in an EDM/TDSM snapshot pickle, read as data.

  EDM's training loop pickles `dict(ema=net, loss_fn=..., augment_pipe=...,
  dataset_kwargs=...)` (`network-snapshot-*.pkl`); each network class is
  pickled by `torch_utils.persistence` as `_reconstruct_persistent_obj(meta)`
  with its module's source code, which a plain `pickle.load` would `exec`.
  Here a restricted unpickler maps that call to an inert stub holding the
  object's state (the source is never run, nor the authors' code imported),
  `torch.nn.modules.*` classes to stubs, `copyreg._reconstructor`,
  `collections.OrderedDict`, `dnnlib.util.EasyDict` and NumPy scalars to
  plain data, and tensors to `torch.load(weights_only=True)` of their storage
  bytes; any other global is refused before anything runs.

  Args:
    path: the snapshot.
    key: the entry holding the network ('ema'); None when the pickle is the
      network itself.

  Returns:
    `net.state_dict()` as float32 NumPy arrays, keyed as torch names them
    (e.g. 'model.enc.32x32_conv.weight'; non-persistent buffers left out).

  Raises:
    ImportError: torch is not installed.
    UnsafeFileError: the pickle names any other global (e.g. `os.system`);
      also a `pickle.UnpicklingError`.
    ValueError: no `key` entry, or no module under it.
  """
  torch = _import_torch()
  label = os.fspath(path)
  allowed = {
      **safe_load.data_globals(),
      **safe_load.torch_tensor_globals(label),
      ("torch_utils.persistence", "_reconstruct_persistent_obj"):
          functools.partial(_persistent_stub, label),
      ("dnnlib.util", "EasyDict"): _EasyDict,
  }
  with open(path, "rb") as f:
    loaded = safe_load.RestrictedUnpickler(f, label, allowed,
                                           stub_modules=("torch.nn.modules",)).load()
  if key is not None:
    if not isinstance(loaded, Mapping) or key not in loaded:
      found = sorted(map(str, loaded)) if isinstance(loaded, Mapping) else type(loaded).__name__
      raise ValueError(f"{label}: no {key!r} entry in the snapshot (found: {found}).")
    loaded = loaded[key]
  state_dict = safe_load.module_state_dict(loaded, label)
  not_tensors = sorted(name for name, value in state_dict.items() if not isinstance(value, torch.Tensor))
  if not_tensors:
    raise ValueError(f"{label}: parameters or buffers that are not tensors: {not_tensors}.")
  return {name: _to_numpy(value) for name, value in state_dict.items()}


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # torch.Tensor; bfloat16/float16 go through float32
    return value.detach().cpu().float().numpy()
  return np.asarray(value, dtype=np.float32)


def _flax_path(torch_module_path: Sequence[str]) -> tuple[str, ...]:
  """`('enc', '32x32_block0', 'conv0')` -> `('enc_32x32_block0', 'conv0')`."""
  parts = list(torch_module_path)
  if len(parts) >= 2 and parts[0] in ("enc", "dec"):
    parts = [f"{parts[0]}_{parts[1]}"] + parts[2:]
  return tuple(parts)


def _torch_module_path(flax_path: Sequence[str]) -> tuple[str, ...]:
  """Inverse of `_flax_path`."""
  parts = list(flax_path)
  if parts and parts[0].startswith(("enc_", "dec_")):
    head, rest = parts[0].split("_", 1)
    parts = [head, rest] + parts[1:]
  return tuple(parts)


def torch_state_dict_to_variables(state_dict: Mapping[str, Any], module: nn.Module,
                                  example_inputs: Sequence[Any] | None = None) -> dict[str, Any]:
  """Converts an EDM/TDSM U-Net state dict into the Flax variables of `module`.

  Args:
    state_dict: the authors' `SongUNet`/`DhariwalUNet` (or their EDMPrecond/
      VPPrecond/VEPrecond wrapper's) state dict; values are torch tensors or
      numpy arrays.
    module: the matching `SongUNet`/`DhariwalUNet` (same config).
    example_inputs: positional inputs (x, noise_labels, class_labels,
      augment_labels) for shape inference; default zeros from the config.

  Returns:
    {'params': ...} plus {'constants': {'map_noise': {'freqs': ...}}} for
    Fourier embeddings; float32 numpy leaves, ready for `module.apply`.

  Raises:
    ValueError: a torch key that matches no Flax variable, a shape mismatch,
      a Flax variable left unfilled, or a resample filter that differs from
      the module's; the message lists all of them.
  """
  shapes = flax.core.unfreeze(init_shapes(module, example_inputs))
  targets = {path: leaf for path, leaf in flax.traverse_util.flatten_dict(shapes).items()}
  expected_filter = resample_filter_2d(getattr(module, "resample_filter", (1, 1)))
  filled: dict[tuple[str, ...], np.ndarray] = {}
  unmatched, bad_shapes, bad_filters, duplicates = [], [], [], []

  for torch_key, value in state_dict.items():
    key = torch_key[len(_PRECOND_PREFIX):] if torch_key.startswith(_PRECOND_PREFIX) else torch_key
    array = _to_numpy(value)
    *module_path, leaf = key.split(".")
    path = _flax_path(module_path)
    if leaf == "resample_filter":
      if array.shape != (1, 1) + expected_filter.shape or not np.allclose(array[0, 0], expected_filter):
        bad_filters.append(torch_key)
      continue
    if leaf == "freqs":
      target = ("constants",) + path + ("freqs",)
    elif leaf == "weight":
      target = ("params",) + path + ("kernel",)
      if target not in targets:
        target = ("params",) + path + ("scale",)
      if array.ndim == 4:
        array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      elif array.ndim == 2:
        array = array.T  # (out, in) -> (in, out)
    elif leaf == "bias":
      target = ("params",) + path + ("bias",)
    else:
      target = None
    if target is None or target not in targets:
      unmatched.append(torch_key)
      continue
    if target in filled:
      duplicates.append(torch_key)
      continue
    if tuple(array.shape) != tuple(targets[target].shape):
      bad_shapes.append(f"{torch_key}: torch {tuple(np.shape(value))} -> {tuple(array.shape)}, "
                        f"flax {'/'.join(target)} {tuple(targets[target].shape)}")
      continue
    filled[target] = np.ascontiguousarray(array, dtype=np.float32)

  missing = [f"{'/'.join(path)} {tuple(leaf.shape)}" for path, leaf in targets.items() if path not in filled]
  problems = []
  if unmatched:
    problems.append(f"torch keys with no matching Flax variable: {unmatched}")
  if duplicates:
    problems.append(f"torch keys mapping to an already filled Flax variable: {duplicates}")
  if bad_shapes:
    problems.append(f"shape mismatches: {bad_shapes}")
  if bad_filters:
    problems.append(f"resample filters differing from {getattr(module, 'resample_filter', (1, 1))}: "
                    f"{bad_filters}")
  if missing:
    problems.append(f"Flax variables not filled by the state dict: {missing}")
  if problems:
    raise ValueError(f"Cannot convert the state dict to {type(module).__name__}: " + "; ".join(problems))
  return flax.traverse_util.unflatten_dict(filled)


def torch_state_dict_to_params(state_dict: Mapping[str, Any], module: nn.Module,
                               example_inputs: Sequence[Any] | None = None) -> dict[str, Any]:
  """Like `torch_state_dict_to_variables`, returning only the 'params' collection.

  Raises:
    ValueError: as `torch_state_dict_to_variables`, or when the module has
      non-trainable variables too (NCSN++'s Fourier frequencies), which this
      would drop: use `torch_state_dict_to_variables` for those.
  """
  variables = torch_state_dict_to_variables(state_dict, module, example_inputs)
  extra = sorted(set(variables) - {"params"})
  if extra:
    raise ValueError(f"{type(module).__name__} also has the collections {extra}; "
                     "use torch_state_dict_to_variables to keep them.")
  return variables["params"]


def params_to_torch_state_dict(variables: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  """Inverse mapping: Flax variables (or a bare params tree) -> EDM state-dict arrays.

  The `resample_filter` buffers are not produced (they are constants; load
  with `strict=False` or take them from a freshly built torch network).

  Args:
    variables: {'params': ..., ['constants': ...]} or the params tree itself.
    prefix: prepended to every key, e.g. 'model.' for EDMPrecond.

  Returns:
    numpy float32 arrays in PyTorch layouts, keyed as EDM's state dict.
  """
  if "params" not in variables:
    variables = {"params": variables}
  state_dict = {}
  for (collection, *path), value in flax.traverse_util.flatten_dict(flax.core.unfreeze(variables)).items():
    array = np.asarray(jax.device_get(value), dtype=np.float32)
    *module_path, leaf = path
    torch_path = ".".join(_torch_module_path(module_path))
    if collection == "constants" or leaf == "bias":
      torch_leaf = leaf
    elif leaf in ("kernel", "scale"):
      torch_leaf = "weight"
      if array.ndim == 4:
        array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
      elif array.ndim == 2:
        array = array.T
    else:
      raise ValueError(f"Unexpected Flax variable {collection}/{'/'.join(path)}.")
    state_dict[f"{prefix}{torch_path}.{torch_leaf}"] = np.ascontiguousarray(array)
  return state_dict
