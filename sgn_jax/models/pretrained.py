"""Pretrained weights: torchvision ResNet state dicts -> `sgn_jax.models.resnet`, and
Keras HDF5 ResNet-50 weights -> `sgn_jax.models.keras_resnet` (model "resnet50_keras").

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

The SGN authors' own Clothing1M start is instead the Keras ImageNet ResNet-50
(`tf.keras.applications.ResNet50(weights="imagenet")`, ResNet v1): model
"resnet50_keras" and `load_keras_resnet50` (`KERAS_HOW_TO_GET` says where the
file comes from). `load_pretrained_variables` picks the loader from the file
type and checks that the model fits the file.
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sgn_jax import safe_load
from sgn_jax.models import keras_resnet

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
    UnsafeFileError: a file that holds more than arrays (a pickled object, an
      object array): never unpickled.
    ValueError: another extension, or non-array entries.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No pretrained weights file at {path!r}. "
                            + _HOW_TO_GET)
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    # allow_pickle=False: object arrays are refused; a damaged file is named
    return safe_load.load_npz(path, fix=f"get the weights file again: {_HOW_TO_GET}")
  if ext in (".pth", ".pt"):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"Reading {path!r} needs torch, which is not installed; convert the "
          f"file to .npz on a machine with torch: {_HOW_TO_GET}") from e
    sd = safe_load.torch_load_weights(path, advice=_HOW_TO_GET)  # weights_only=True
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


# ----------------------------------------------------------------------------
# Keras HDF5 weights -> `sgn_jax.models.keras_resnet` (model "resnet50_keras").
# ----------------------------------------------------------------------------

KERAS_HOW_TO_GET = (
    "Get the Keras ImageNet ResNet-50 weights (keras-applications' ResNet v1, the SGN "
    "authors' Clothing1M start): download https://storage.googleapis.com/tensorflow/"
    "keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 "
    "(without the 1000-class top; resnet50_weights_tf_dim_ordering_tf_kernels.h5 has it), "
    "or run `tf.keras.applications.ResNet50(weights='imagenet', include_top=False)` once "
    "on a machine with internet, which caches that file under ~/.keras/models/. It loads "
    "into model 'resnet50_keras'. These weights were trained on Caffe-preprocessed "
    "inputs: RGB -> BGR, pixel values 0..255 minus the per-channel mean (103.939, "
    "116.779, 123.68) in BGR order, no scaling (`keras.applications.resnet50."
    "preprocess_input`, `sgn_jax.data.streaming.CLOTHING1M_CAFFE`); the SGN authors "
    "fine-tune them on RGB inputs normalised with the Clothing1M mean / std instead "
    "(`sgn_jax.data.streaming.CLOTHING1M`).")

KERAS_FORMATS = (
    "Keras weights in HDF5: the legacy Keras 2 / tf.keras layout (root attribute "
    "`layer_names` and per-layer `weight_names`: keras-applications' .h5 files, "
    "tf.keras `model.save_weights('x.h5')`, or a whole tf.keras model saved as .h5), or "
    "Keras 3's `model.save_weights('x.weights.h5')` (groups `layers/.../vars`)")

KERAS_EXTENSIONS = (".h5", ".hdf5")
TORCHVISION_EXTENSIONS = (".npz", ".pth", ".pt")
KERAS_MODELS = ("resnet50_keras",)
TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50")

# Keras 3 `.weights.h5` stores a layer's variables as vars/0, vars/1, ... in the
# order the layer creates them.
_KERAS3_BN_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")
_KERAS3_KERNEL_ORDER = ("kernel", "bias")


def _h5_strings(attrs, name: str) -> list[str] | None:
  """A list-of-strings HDF5 attribute (also when Keras split a long one into
  `name0`, `name1`, ...); None when absent."""
  if name in attrs:
    values = list(np.asarray(attrs[name]).reshape(-1))
  elif f"{name}0" in attrs:
    values, i = [], 0
    while f"{name}{i}" in attrs:
      values += list(np.asarray(attrs[f"{name}{i}"]).reshape(-1))
      i += 1
  else:
    return None
  return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _add_weight(out: dict, layer: str, var: str, value, path: str) -> None:
  if var in out.setdefault(layer, {}):
    raise ValueError(f"{path!r} holds the weight {layer}/{var} twice; expected one "
                     f"Keras model with unique layer names.")
  out[layer][var] = np.asarray(value, dtype=np.float32)


def _read_legacy_h5(root, layer_names: list[str], path: str) -> dict:
  """Keras 2 layout: one group per layer, its `weight_names` attribute naming the
  datasets ("conv1_conv/kernel:0"; Keras 3's legacy writer: "conv1_conv/kernel")."""
  out = {}
  for group_name in layer_names:
    if group_name not in root:
      raise ValueError(f"{path!r}: layer {group_name!r} is listed in `layer_names` but "
                       f"has no group; the file is damaged.")
    group = root[group_name]
    weight_names = _h5_strings(group.attrs, "weight_names") or []
    # A group holds one layer's weights, or, for a nested model (e.g. a
    # "resnet50" layer inside a bigger model), the weights of many layers,
    # named "<layer>/<weight>".
    one_layer = len({"/".join(n.split("/")[:-1]) for n in weight_names}) <= 1
    for weight_name in weight_names:
      parts = weight_name.split("/")
      var = re.sub(r":\d+$", "", parts[-1])
      layer = group_name if one_layer or len(parts) < 2 else parts[-2]
      _add_weight(out, layer, var, group[weight_name], path)
  return out


def _read_keras3_h5(root, path: str) -> dict:
  """Keras 3 layout: groups `.../vars` with the layer's name as attribute `name` and
  datasets "0", "1", ... in creation order."""
  import h5py  # pylint: disable=g-import-not-at-top
  out = {}

  def visit(name, obj):
    if not (isinstance(obj, h5py.Group) and name.split("/")[-1] == "vars"):
      return
    arrays = {k: v for k, v in obj.items() if isinstance(v, h5py.Dataset)}
    if not arrays:
      return
    layer = obj.attrs.get("name")
    if layer is None:
      raise ValueError(
          f"{path!r}: group {name!r} has no `name` attribute (written by an older Keras 3), "
          f"so its layer is unknown; re-save the weights in the legacy layout with "
          f"`keras.src.legacy.saving.legacy_h5_format.save_weights_to_hdf5_group("
          f"h5py.File('x.h5', 'w'), model)`.")
    layer = layer.decode("utf8") if isinstance(layer, bytes) else str(layer)
    order = _KERAS3_BN_ORDER if layer.endswith("_bn") else _KERAS3_KERNEL_ORDER
    names = [str(i) for i in range(len(order))]
    # Other layouts (a BN without gamma, a conv without bias) keep their indices
    # as names, so they show up as unmatched rather than under a wrong name.
    mapping = dict(zip(names, order)) if sorted(arrays) == names else {}
    for key in sorted(arrays):
      _add_weight(out, layer, mapping.get(key, key), arrays[key], path)

  root.visititems(visit)
  return out


def read_keras_weights(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
  """Reads Keras HDF5 weights as data (h5py; no Keras, no pickle).

  Formats (`KERAS_FORMATS`): the legacy Keras 2 / tf.keras layout
  (keras-applications' `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`,
  tf.keras `save_weights("x.h5")`, a whole model's .h5 with its `model_weights`
  group; weights of a nested model, e.g. the authors' `ResNet50` layer inside
  their model, are found by their own layer names), and Keras 3
  `save_weights("x.weights.h5")`.

  Returns:
    Keras layer name -> {weight name ("kernel", "bias", "gamma", "beta",
    "moving_mean", "moving_variance") -> float32 array}.

  Raises:
    FileNotFoundError: no file at `path` (the message says where to get the
      ImageNet ResNet-50 weights).
    ImportError: h5py is not installed.
    ValueError: not an HDF5 file, or HDF5 in neither Keras layout (the message
      names the formats); a weight stored twice.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No Keras weights file at {path!r}. " + KERAS_HOW_TO_GET)
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"Reading the Keras weights {path!r} needs h5py, which is not "
                      f"installed: `pip install h5py`.") from e
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ValueError(
        f"{path!r} is not an HDF5 file (a Keras 3 `.keras` archive is a zip: save its "
        f"weights with `model.save_weights('x.weights.h5')`); expected "
        f"{KERAS_FORMATS}.") from e
  with f:
    root = f
    if _h5_strings(f.attrs, "layer_names") is None and "model_weights" in f:
      root = f["model_weights"]  # a whole tf.keras model saved as .h5
    layer_names = _h5_strings(root.attrs, "layer_names")
    if layer_names is not None:
      return _read_legacy_h5(root, layer_names, path)
    if "layers" in f:
      return _read_keras3_h5(f, path)
    raise ValueError(f"{path!r} is an HDF5 file but holds no Keras weights (top-level "
                     f"entries {sorted(f)[:10]}); expected {KERAS_FORMATS}.")


def _listed(items: list[str], limit: int = 10) -> str:
  more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
  return f"{items[:limit]}{more}"


def load_keras_resnet50(path: str | os.PathLike, model_variables: Mapping[str, Any], *,
                        head: str = "drop") -> dict:
  """Fills `sgn_jax.models.keras_resnet` variables from Keras ResNet-50 weights.

  Every `params` / `batch_stats` leaf of `model_variables` is taken by name
  from the file (`keras_resnet.keras_weight_name`: Flax `conv3_block1/0_bn/
  scale` <- Keras `conv3_block1_0_bn/gamma`; BN mean/var <- moving_mean /
  moving_variance; kernels need no transpose), exactly once, with its shape
  checked.

  Args:
    path: Keras HDF5 weights (`read_keras_weights`), e.g.
      resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 (`KERAS_HOW_TO_GET`).
    model_variables: the variables of model "resnet50_keras", from
      `model.init` (or, with head="keep" or a model built with head=False,
      also `jax.eval_shape` of it: only shapes are read then). Collections
      other than params/batch_stats are passed through.
    head: "drop": the dense head `classifier` keeps its values from
      `model_variables` (a fresh init, e.g. for 14 Clothing1M classes, as the
      authors' new Dense layers) and the file's `predictions` layer, if any,
      is ignored (the notop file has none); "keep": the head is loaded from
      `predictions` too (1000 ImageNet classes, the file with the top).

  Returns:
    A new variables dict (float32 arrays) of the same structure.

  Raises:
    ValueError: a bad `head`; variables that are not of model "resnet50_keras"
      (e.g. the torchvision-layout "resnet50"); weights the model needs that
      the file lacks, shape mismatches and file weights the model does not
      use, all listed in one message by Keras layer/weight name. See also
      `read_keras_weights`.
  """
  if head not in ("drop", "keep"):
    raise ValueError(f"head must be 'drop' or 'keep'; got {head!r}.")
  params = model_variables.get("params") if isinstance(model_variables, Mapping) else None
  if params is None:
    raise ValueError("model_variables has no 'params' collection; pass "
                     "model.init(...) output.")
  if "conv1_conv" not in params:
    layout = ("the torchvision-layout ResNet (model 'resnet50')" if "conv1" in params
              else f"a model with top-level modules {sorted(params)[:6]}")
    raise ValueError(f"Keras ResNet-50 weights load into model 'resnet50_keras' "
                     f"(sgn_jax.models.keras_resnet), but the variables are of {layout}; "
                     f"set model.name='resnet50_keras'.")
  path = os.fspath(path)
  weights = read_keras_weights(path)
  out, used, missing, mismatched = {}, set(), [], []
  for collection in ("params", "batch_stats"):
    if collection not in model_variables:
      continue
    flat = traverse_util.flatten_dict(dict(model_variables[collection]))
    new_flat = {}
    for var_path, leaf in flat.items():
      if head == "drop" and var_path[0] == keras_resnet.HEAD_NAME:
        new_flat[var_path] = jnp.asarray(leaf, jnp.float32)
        continue
      layer, var = keras_resnet.keras_weight_name(collection, var_path)
      where = f"{layer}/{var} (for {collection}/{'/'.join(var_path)}"
      if (layer, var) in used:  # two Flax leaves with one Keras name: a mapping bug
        raise ValueError(f"{where}) would fill two Flax variables.")
      if var not in weights.get(layer, {}):
        missing.append(f"{where}, shape {tuple(leaf.shape)})")
        continue
      value = weights[layer][var]
      if value.shape != tuple(leaf.shape):
        mismatched.append(f"{where}: file {value.shape}, model {tuple(leaf.shape)})")
        continue
      used.add((layer, var))
      new_flat[var_path] = jnp.asarray(value)
    out[collection] = traverse_util.unflatten_dict(new_flat)
  unused = sorted(f"{layer}/{var}" for layer, vs in weights.items() for var in vs
                  if (layer, var) not in used
                  and not (head == "drop" and layer == keras_resnet.KERAS_HEAD_NAME))
  if missing or mismatched or unused:
    problems = []
    if missing:
      problems.append(f"missing from the file: {_listed(missing)}")
    if mismatched:
      problems.append(f"shape mismatch: {_listed(mismatched)}")
    if unused:
      problems.append(f"in the file but not used by the model: {_listed(unused)}")
    raise ValueError(
        f"{path!r} does not fit model 'resnet50_keras' (head={head!r}): "
        + "; ".join(problems) + ". Is it the Keras applications ResNet50 (v1) with "
        "include_top=False, or with the top and head='keep'? " + KERAS_HOW_TO_GET)
  for name, coll in model_variables.items():
    if name not in out:
      out[name] = coll
  return out


def _model_family(model_name: str | None, variables: Mapping[str, Any]) -> str:
  """The weights family of a model, "keras" or "torchvision": from the model name, else
  from the variables' layout."""
  if model_name is not None:
    if model_name in KERAS_MODELS:
      return "keras"
    if model_name in TORCHVISION_MODELS:
      return "torchvision"
    raise ValueError(
        f"No pretrained weights load into model {model_name!r}; pretrained weights exist "
        f"for {list(TORCHVISION_MODELS)} (torchvision, .npz/.pth) and "
        f"{list(KERAS_MODELS)} (Keras, .h5). Set model.name to one of them, or no "
        f"pretrained file.")
  params = variables.get("params", {})
  if "conv1_conv" in params:
    return "keras"
  if "conv1" in params and "bn1" in params:
    return "torchvision"
  raise ValueError(f"The model (top-level modules {sorted(params)[:6]}) is neither a "
                   f"torchvision-layout ResNet ({list(TORCHVISION_MODELS)}) nor the Keras "
                   f"ResNet-50 ({list(KERAS_MODELS)}); no pretrained weights load into it.")


def load_pretrained_variables(path: str | os.PathLike, variables: Mapping[str, Any],
                              model_name: str | None = None, *, head: str = "drop") -> dict:
  """Loads pretrained backbone weights with the loader the file type calls for.

  `.h5` / `.hdf5`: Keras weights (`load_keras_resnet50`) into model
  "resnet50_keras". `.npz` / `.pth` / `.pt`: a torchvision state dict
  (`load_state_dict_file` + `load_torchvision_resnet`) into "resnet18",
  "resnet34" or "resnet50".

  Args:
    path: the weights file.
    variables: the model's variables (`model.init` output).
    model_name: the `sgn_jax.models` name of the model; None: judged from the
      variables' layout (Keras or torchvision module names).
    head: "drop" (the head keeps its fresh init) or "keep", as in the loaders.

  Returns:
    A new variables dict of the same structure.

  Raises:
    FileNotFoundError: no file at `path` (the message says how to get it).
    ValueError: a file type and model that do not fit (e.g. an .h5 file for
      model "resnet50", which names "resnet50_keras"), an unknown file type, a
      model without pretrained weights, or what the loader raises.
  """
  path = os.fspath(path)
  lower = path.lower()
  family = _model_family(model_name, variables)
  shown = f"model {model_name!r}" if model_name is not None else "this model"
  if lower.endswith(KERAS_EXTENSIONS):
    if family != "keras":
      raise ValueError(
          f"{path!r} is a Keras HDF5 weights file; it loads into model 'resnet50_keras' "
          f"(the Keras applications ResNet50, v1), not {shown} (torchvision layout, "
          f"v1.5). Set model.name='resnet50_keras', or pass torchvision weights "
          f"(.npz/.pth).")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"No pretrained weights file at {path!r}. " + KERAS_HOW_TO_GET)
    return load_keras_resnet50(path, variables, head=head)
  if lower.endswith(TORCHVISION_EXTENSIONS):
    if family != "torchvision":
      raise ValueError(
          f"{path!r} is a torchvision state dict; it loads into models "
          f"{list(TORCHVISION_MODELS)} (torchvision layout, v1.5), not {shown} (Keras "
          f"layout, v1). Set model.name='resnet50', or pass Keras weights (.h5).")
    return load_torchvision_resnet(load_state_dict_file(path), variables, head=head)
  raise ValueError(
      f"Unknown pretrained weights file type for {path!r}; expected "
      f"{list(KERAS_EXTENSIONS)} (Keras, model 'resnet50_keras') or "
      f"{list(TORCHVISION_EXTENSIONS)} (torchvision, models {list(TORCHVISION_MODELS)}).")


__all__ = ["KERAS_FORMATS", "KERAS_HOW_TO_GET", "load_keras_resnet50",
           "load_pretrained_variables", "load_state_dict_file", "load_torchvision_resnet",
           "read_keras_weights"]
