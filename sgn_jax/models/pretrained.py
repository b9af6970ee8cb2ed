"""Pretrained weights: torchvision ResNet state dicts -> `sgn_jax.models.resnet`.

Clothing1M (SPEC §2) fine-tunes an ImageNet-pretrained ResNet-50. The weights
are torchvision's `ResNet50_Weights.IMAGENET1K_V1` (file `resnet50-0676ba61.pth`,
https://download.pytorch.org/models/resnet50-0676ba61.pth, top-1 76.13%; the
model the noisy-label literature fine-tunes). Nothing here downloads: fetch the
file on a machine with internet access and either load the `.pth` directly
(needs torch) or convert it once to `.npz` (needs torch only there)::

    import numpy as np, torch
    sd = torch.load("resnet50-0676ba61.pth", map_location="cpu", weights_only=True)
    np.savez("resnet50-0676ba61.npz", **{k: v.numpy() for k, v in sd.items()})

Usage::

    model = ResNet50(num_outputs=14)
    variables = model.init(key, jnp.zeros((1, 224, 224, 3)), train=False)
    variables = load_torchvision_resnet(
        load_state_dict_file("resnet50-0676ba61.npz"), variables, head="drop")

torchvision models expect RGB inputs scaled to [0, 1] then normalised with
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

_HOW_TO_GET = (
    "Download torchvision's ImageNet ResNet-50 weights (IMAGENET1K_V1) from "
    "https://download.pytorch.org/models/resnet50-0676ba61.pth and pass that "
    "file (needs torch), or convert it to .npz first: `import numpy as np, "
    "torch; sd = torch.load('resnet50-0676ba61.pth', map_location='cpu', "
    "weights_only=True); np.savez('resnet50-0676ba61.npz', **{k: v.numpy() "
    "for k, v in sd.items()})`.")

# Flax leaf name -> torch parameter suffix, per layer kind.
_BN_PARAMS = {"scale": "weight", "bias": "bias"}
_BN_STATS = {"mean": "running_mean", "var": "running_var"}


def _torch_module_name(flax_modules: tuple[str, ...]) -> str:
  """('layer1_0', 'downsample_conv') -> 'layer1.0.downsample.0'; 'classifier' -> 'fc'."""
  parts = []
  for m in flax_modules:
    match = re.fullmatch(r"layer(\d+)_(\d+)", m)
    if match:
      parts += [f"layer{match.group(1)}", match.group(2)]
    elif m == "downsample_conv":
      parts += ["downsample", "0"]
    elif m == "downsample_bn":
      parts += ["downsample", "1"]
    elif m == "classifier":
      parts.append("fc")
    else:
      parts.append(m)
  return ".".join(parts)


def _torch_key_and_convert(collection: str, path: tuple[str, ...]):
  """Torch state-dict key for a Flax leaf, and torch array -> Flax array."""
  *modules, leaf = path
  prefix = _torch_module_name(tuple(modules))
  last = modules[-1] if modules else ""
  if collection == "batch_stats":
    if leaf not in _BN_STATS:
      raise ValueError(f"Unexpected batch_stats leaf {path!r}.")
    return f"{prefix}.{_BN_STATS[leaf]}", lambda a: a
  if leaf == "kernel" and last == "classifier":
    return f"{prefix}.weight", lambda a: a.T                      # (out, in)
  if leaf == "kernel":
    return f"{prefix}.weight", lambda a: np.transpose(a, (2, 3, 1, 0))  # OIHW
  if last == "classifier" and leaf == "bias":
    return f"{prefix}.bias", lambda a: a
  if leaf in _BN_PARAMS:
    return f"{prefix}.{_BN_PARAMS[leaf]}", lambda a: a
  raise ValueError(f"Unexpected parameter {path!r}: not a ResNet layer this "
                   f"loader knows.")


def load_torchvision_resnet(state_dict: Mapping[str, Any],
                            model_variables: Mapping[str, Any], *,
                            head: str = "drop") -> dict:
  """Maps a torchvision ResNet state dict into `sgn_jax.models.resnet` variables.

  Every `params` / `batch_stats` leaf of `model_variables` is taken from the
  state dict (conv kernels OIHW -> HWIO, the linear layer transposed, BN
  weight/bias/running_mean/running_var -> scale/bias/mean/var), with its shape
  checked; `num_batches_tracked` entries are ignored.

  Args:
    state_dict: torch parameter name -> array (numpy, or anything
      `np.asarray` accepts), e.g. from `load_state_dict_file`.
    model_variables: the module's variables, from `model.init` (or, with
      head="keep", also `jax.eval_shape` of it: only shapes are read then).
      Collections other than params/batch_stats are passed through.
    head: "drop": the classifier keeps its values from `model_variables` (a
      fresh init, e.g. 14 Clothing1M classes) and the state dict's `fc.*`
      entries, if any, are ignored; "keep": the classifier is loaded from
      `fc.weight` / `fc.bias` too (same number of classes needed).

  Returns:
    A new variables dict (float32 arrays) of the same structure.

  Raises:
    ValueError: a bad `head`; a key the model needs that the state dict lacks
      (e.g. a 50-layer dict into a ResNet-18); a shape mismatch (e.g. a
      7x7-stem dict into a cifar_stem model); a state-dict entry that the model
      does not use. Each message names the torch key(s).
  """
  if head not in ("drop", "keep"):
    raise ValueError(f"head must be 'drop' or 'keep'; got {head!r}.")
  if "params" not in model_variables:
    raise ValueError("model_variables has no 'params' collection; pass "
                     "model.init(...) output.")
  used = set()
  out = {}
  for collection in ("params", "batch_stats"):
    if collection not in model_variables:
      continue
    flat = traverse_util.flatten_dict(dict(model_variables[collection]))
    new_flat = {}
    for path, leaf in flat.items():
      key, convert = _torch_key_and_convert(collection, path)
      if head == "drop" and path[0] == "classifier":
        new_flat[path] = jnp.asarray(leaf, jnp.float32)
        continue
      if key not in state_dict:
        raise ValueError(
            f"State dict has no key {key!r} (needed for {collection}/"
            f"{'/'.join(path)} of shape {tuple(leaf.shape)}); is it a "
            f"torchvision ResNet of the same depth?")
      raw = np.asarray(state_dict[key], dtype=np.float32)
      try:
        value = convert(raw)
      except ValueError:  # wrong number of dimensions for the transpose
        value = raw
      if value.shape != tuple(leaf.shape):
        layout = ("" if value is raw else
                  f" ({value.shape} in Flax layout)")
        raise ValueError(
            f"Shape mismatch for {key!r}: the state dict has {raw.shape}"
            f"{layout}, the model's {collection}/{'/'.join(path)} has "
            f"{tuple(leaf.shape)}.")
      used.add(key)
      new_flat[path] = jnp.asarray(value)
    out[collection] = traverse_util.unflatten_dict(new_flat)
  ignored = {k for k in state_dict if k.endswith(".num_batches_tracked")}
  if head == "drop":
    ignored |= {k for k in state_dict if k.startswith("fc.")}
  unused = sorted(set(state_dict) - used - ignored)
  if unused:
    more = f" (and {len(unused) - 10} more)" if len(unused) > 10 else ""
    raise ValueError(f"State dict entries not used by the model: "
                     f"{unused[:10]}{more}; is it a torchvision ResNet of the "
                     f"same depth?")
  for name, coll in model_variables.items():
    if name not in out:
      out[name] = coll
  return out


def load_state_dict_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a state dict (name -> numpy array) from `.npz`, or `.pth`/`.pt`.

  `.npz`: the arrays as saved (see the module docstring for the conversion
  snippet). `.pth`/`.pt`: `torch.load(map_location="cpu", weights_only=True)`
  (needs torch), tensors converted to numpy; a checkpoint that wraps the
  weights as {"state_dict": ...} is unwrapped.

  Raises:
    FileNotFoundError: no file at `path` (the message says how to get the
      ImageNet ResNet-50 weights).
    ImportError: a `.pth`/`.pt` file without torch installed.
    ValueError: another extension, or non-array entries.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No pretrained weights file at {path!r}. "
                            + _HOW_TO_GET)
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  if ext in (".pth", ".pt"):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"Reading {path!r} needs torch, which is not installed; convert the "
          f"file to .npz on a machine with torch: {_HOW_TO_GET}") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(
        sd["state_dict"], Mapping):
      sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
      raise ValueError(f"{path!r} does not hold a state dict (got "
                       f"{type(sd).__name__}).")
    out = {}
    for k, v in sd.items():
      if not isinstance(v, torch.Tensor):
        raise ValueError(f"{path!r}: entry {k!r} is a {type(v).__name__}, not "
                         f"a tensor.")
      out[k] = v.detach().cpu().numpy()
    return out
  raise ValueError(f"Unknown weights file type {ext!r} for {path!r}; expected "
                   f".npz, .pth or .pt.")


__all__ = ["load_state_dict_file", "load_torchvision_resnet"]
