"""Argument parsing and the builders that turn a config file's cell into a ConfigDict.

Every config file is `get_config(arg)`; `arg` is the part after the colon in
`--config=configs/mnist_sym.py:method=ce,rate=0.4` (comma-separated key=value
pairs). Values are typed from the defaults of the file (`parse_arg`), and an
unknown key is an error that lists the allowed ones. Single values can be
overridden afterwards on the command line with `--config.optim.learning_rate=0.1`
(the config is locked, so a misspelt key is an error too).

A config file declares its experiment (a cell of the papers' tables) in one dict,
`CELL`: every value that differs between datasets is there, what is the same for all
cells is written once here. Its keys (named as the config keys they fill):

  dataset, num_classes, source (default of `:source=`), noise (noise.kind), rate (default
  of `:rate=`), label_set (CIFAR-N; default of `:label_set=`), gmm (dataset.gmm).
  classify    the SGN paper's classification: convention and epochs (defaults of
              `:convention=` / `:epochs=`), val_fraction, val_split, model, input (mean,
              std, crop_padding, flip), model_by_method ({method: model keys added for
              it; split_head=True: model.head_groups = the method's output groups}),
              optim (incl. optional l2_params, warmup_epochs),
              batch_size, ema_decay, method_args ({method: values over its SPEC §2
              defaults}), select (model selection), any key of CLASSIFY_LOOP; streamed
              datasets (`streaming_config`) also method (default of `:method=`),
              samples_per_class, model_pretrained, model_pretrained_required,
              input.mixup_alpha.
  diffusion   the TDSM paper's diffusion: convention, duration_kimg (default of `:kimg=`),
              pad_to, precond.sigma_data, network (arch, dropout, hidden), augment.p, optim
              (learning_rate, warmup_kimg), batch_size, ema_halflife_kimg,
              snapshot_every_kimg, any key of DIFFUSION_LOOP, classifier (arch,
              duration_kimg: default of `:classifier_kimg=`, batch_size, eval_batch_size,
              eval_every_kimg, optim, any key of CLASSIFIER_LOOP), evaluate (per_class,
              num_real, metrics, feature_nets).

A file whose experiment differs from another file's in a few values builds its cell
with `derive` (e.g. `cifar100_asym.py`: `cifar100_sym.py`'s cell with asymmetric
noise), so each value is written once and the differences stand in the file.

`get_config` hands the cell to `experiment_config` (classification or diffusion by
method/task), `classification_config`, `diffusion_config` or `streaming_config`.

Config reference (classification task, `task="classify"`):

  seed                 global seed: parameters, noisy labels, data order.
  method               ce | ls | gce | nan | ln | het | elr | sop | nal | sgn
                       (choose it with the argument `:method=...`).
  method_args.*        the method's hyper-parameters (SPEC §2 defaults), e.g.
                       method_args.alpha / gamma / covariance / loss_reweighting /
                       label_correction / ema_prediction for SGN.
  dataset.name         mnist | fashion_mnist | cifar10 | cifar100 | cifar10_n |
                       cifar100_n | gmm2d.
  dataset.source       tfds (TFDS builders) | idx (raw MNIST archives) |
                       npz (arrays) | gmm (synthetic 2-D mixture).
  dataset.data_dir     TFDS data dir (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
  dataset.manual_dir   folder with manually downloaded archives (offline preparation).
  dataset.download     let TFDS download when the data is not prepared (needs internet).
  dataset.path         npz file or folder of idx archives.
  dataset.cifar_n_dir  folder with the CIFAR-N authors' label files.
  dataset.train_subset use only the first n training examples (0: all).
  dataset.val_fraction fraction of the train set held out as a (noisy) validation set.
  dataset.val_split    which rows it holds out: random (seeded by `seed`) | last (the
                       last rows in the dataset's order, the same for every seed: the
                       SGN authors' CIFAR split, the TFDS train split's last 5,000).
  dataset.seed         seed of the synthetic data (gmm2d), fixed across runs.
  dataset.gmm.*        the synthetic 2-D mixture (gmm2d): num_classes, num_train, num_test.
  noise.kind           none | sym | asym | cifar_n.
  noise.rate           noise rate r in [0, 1).
  noise.convention     sgn (symmetric includes the true class, CIFAR-100 asym
                       (i+1) mod 100) | tdsm (other classes only, within superclass).
  noise.label_set      CIFAR-N label set: aggre | random1 | random2 | random3 | worse
                       (CIFAR-10N), noisy (CIFAR-100N).
  noise.labels_file    npz with `labels` (one per training example, original order)
                       and optionally `transition`: train on these instead of drawing
                       noise (a corrector's output, `python -m sgn_jax.corrector`).
  model.name           cnn | wrn | mlp, with its keyword arguments in `model`.
  model.head_init      (wrn) kernel init of the dense head: he_normal (UB's) |
                       glorot_uniform (Keras' default; the SGN authors' SGN/LN heads).
  model.head_groups    (wrn) () one dense layer, else one per group of these sizes
                       (SGN: mu and scale, LN: mean and r; `model_by_method` sets it).
  input.*              normalisation mean/std and on-device augmentation
                       (crop_padding: pad-and-random-crop; flip: horizontal flips).
  optim.*              SGD with (Nesterov) momentum, learning rate (times
                       lr_decay_factor at each of lr_decay_epochs, after a linear
                       warm-up from 0 over warmup_epochs, 0: none), L2 penalty
                       weight_decay * sum(w^2) over l2_params: all (every parameter) |
                       no_batchnorm (kernels and biases; BatchNorm scale/bias excluded).
  batch_size           global batch size (divisible by the number of devices).
  num_epochs           training length in epochs (steps_per_epoch = n_train // batch).
  ema_decay            decay of the EMA network evaluated beside the net.
  ema_warmup           False: the fixed decay after every step (SGN's authors; the
                       CIFAR/CIFAR-N/Clothing1M/WebVision paper cells, whose runs are
                       long: 0.9999^210,600 ~ 7e-10 of the initialisation is left
                       after 600 CIFAR epochs); True: min(ema_decay, (1 + t) / (10 + t))
                       at step t (TF's EMA with num_updates), for short runs (the
                       MNIST / Fashion-MNIST files, 3 epochs). A run whose reported
                       prediction is the EMA's while the EMA still weighs its random
                       start by more than half is warned about in the log.
  eval_batch_size      global evaluation batch size.
  eval_every_epochs    evaluate the net and its EMA every so many epochs and at the end.
  select.*             model selection ("early stopping") of the reported net (the EMA
                       for SGN): split ("" = off; an evaluated split, e.g. val, or test
                       = WebVision's val set), metric (accuracy | top5_accuracy | nll |
                       ece), after_epochs (candidates: evaluations at epoch >
                       after_epochs). metrics.json adds selected/step, selected/epoch,
                       selected/<split>/<metric>; checkpoints keep the selected net
                       (extra.selected).
  log_every_steps, checkpoint_every_steps, keep_checkpoints, stop_after_steps.
  allow_changes        rerunning in a workdir that holds a run resumes it only if the
                       keys that define the run are unchanged; the keys that may
                       change are the durations (num_epochs, duration_kimg,
                       classifier.duration_kimg), intervals, logging, evaluation
                       sizes, stop_after_steps and the data locations (dataset.path,
                       data_dir, manual_dir, cifar_n_dir, download: the training
                       labels' checksum must still match). Anything else is refused
                       with the list of differing keys, unless named here
                       (comma-separated dotted keys, e.g. "optim.learning_rate"); the
                       changes allowed are recorded in WORKDIR/run.json.
  model.batch_norm     (cnn) BatchNorm after each layer; on for (Fashion-)MNIST.
  model.dtype          compute dtype of the network (e.g. bfloat16); params stay float32.

Diffusion (`diffusion_config`; `:method=dsm|tdsm`, tasks noisy_classifier, diffusion,
generate, evaluate, discover, pipeline; the dataset/noise keys are as above):
  method               dsm (plain DSM on the noisy labels) | tdsm.
  pad_to               zero-pad images to this size (MNIST: 32); conditional.
  precond.*            kind edm|vp|ve, sigma_data, p_mean, p_std (lnrd.edm).
  network.*            arch ddpmpp|ddpmpp_mnist|ncsnpp|adm|mlp, dropout, size overrides
                       model_channels / channel_mult / num_blocks / attn_resolutions,
                       overrides.* (any other preset argument), hidden (mlp).
  augment.*            EDM augmentation: p (0 = off) and per-transform multipliers.
  tdsm.*               estimator exact|official|topk|sampled, num_samples (m), top_k,
                       tau, weight_form released|paper, weight_source classifier|exact
                       (exact: the 2-D mixture's posteriors), classifier_dir (the
                       noisy_classifier run), use_clean_prior, residual_capacity
                       (sampled: fraction of the batch evaluated forward-only when
                       the residual label differs; 0 = always the whole batch).
  optim.*              Adam learning_rate, warmup_kimg (linear ramp), beta1, beta2, eps.
  batch_size, duration_kimg, ema_halflife_kimg, ema_rampup_ratio,
  snapshot_every_kimg (sample grids), log/checkpoint intervals, stop_after_steps.
  sample.*             EDM sampler: num_steps, rho, s_churn, s_min, s_max, s_noise,
                       solver heun|euler, sigma_min/max (None: the preconditioning's),
                       grid_per_class.
  classifier.*         the time-dependent classifier: arch cnn|resnet18|resnet34|mlp,
                       kwargs (module arguments), transition known|learned|none,
                       volmin_weight, batch_size, eval_batch_size,
                       duration_kimg, eval_every_kimg, optim.*.
  generate.*           run_dir (a diffusion workdir), per_class, batch_size, seed,
                       other_run_dir + affine_lambda (affine mix of two networks).
  evaluate.*           run_dir, checkpoint_step (-1: latest), per_class, batch_size
                       (sampling), feature_batch_size, num_real (real reference, 0: all),
                       k, metrics (fid is density_coverage cw_fid cw_density_coverage
                       cas), feature_nets (inception, classifier), inception_weights,
                       feature_classifier_dir (classifier trained on CLEAN labels),
                       seed, cas.arch/epochs/batch_size/learning_rate (lnrd.tasks.evaluate).
  discover.*           classifier_dir, sigmas, top_k, grid_count, batch_size,
                       assumed_rate, seed (lnrd.discovery: suspects of mislabelling).
  pipeline.*           corrector ("" or a classification method, e.g. sgn; argument
                       `:corrector=sgn`), corrector_epochs (argument `:corrector_epochs=N`;
                       0: the file's default epochs), corrector_floor, corrector_params
                       (net | ema | best), evaluate, classify (task=pipeline with a known
                       corrector: the corrector's whole classification config, what the
                       same file gives for `:method=<corrector>` with the config's rate,
                       seed, source, convention and subset, and epochs=corrector_epochs)
                       (lnrd.tasks.pipeline: one config runs the whole chain).

Streamed datasets (`streaming_config`: clothing1m, mini_webvision, source=stream):
  dataset.from_files   read the JPEGs of manual_dir directly instead of a TFDS dir.
  dataset.samples_per_class  >0: class-balanced subset of the noisy train set per epoch.
  dataset.crop_size, dataset.resize  0: the authors' sizes (224/227 crops of 256x256).
  input.mixup_alpha    >0: mixup on the device (methods with soft labels: ce, sgn).
  model_pretrained     ImageNet weights for the backbone: Keras .h5 (resnet50_keras) or
                       torchvision .npz/.pth (resnet18/34/50); "" = none, "none" = none
                       on purpose (where the cell requires weights).
  model_pretrained_required  the cell fine-tunes pretrained weights (Clothing1M): an
                       empty model_pretrained is an error before any data is read.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import difflib

import ml_collections

from lnrd.discovery import DiscoverSettings
from lnrd.sampler import SamplerSettings
from lnrd.tdsm_loss import TDSMSettings
from lnrd.time_classifier import VOLMIN_WEIGHT

_placeholder = ml_collections.config_dict.placeholder


def parse_arg(arg: str | None, lazy: bool = False, **defaults) -> ml_collections.ConfigDict:
  """Parses `key=value,key=value` into a ConfigDict typed from `defaults`.

  Values are converted to the type of the default (bools accept
  true/false/1/0/yes/no, None-defaults take Python literals or strings). A key
  not in `defaults` raises ValueError naming it and the allowed keys, unless
  `lazy` is set (then it is kept as a string/literal). A key given twice raises
  ValueError naming it (which of the two was meant is not known).
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  given: dict[str, str] = {}
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    if "=" not in item:
      raise ValueError(
          f"config argument {item!r} is not of the form key=value; "
          f"allowed keys: {sorted(defaults)}")
    key, value = (s.strip() for s in item.split("=", 1))
    if key in given:
      raise ValueError(
          f"config argument {key!r} is given twice ({key}={given[key]}, {key}={value}); give "
          f"each key once, e.g. :{key}={value}")
    given[key] = value
    if key not in defaults and not lazy:
      near = difflib.get_close_matches(key, list(defaults), n=2, cutoff=0.6)
      raise ValueError(
          f"unknown config argument {key!r}; allowed keys: {sorted(defaults)}"
          + (f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""))
    result[key] = _convert(key, value, defaults.get(key))
  return result


def _convert(key: str, value: str, default):
  if isinstance(default, bool):
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "y", "on"):
      return True
    if lowered in ("0", "false", "no", "n", "off"):
      return False
    raise ValueError(f"config argument {key}={value!r} is not a boolean")
  if isinstance(default, (int, float)):
    try:
      number = float(value)
    except ValueError:
      raise ValueError(
          f"config argument {key}={value!r} is not a number "
          f"(default {default!r})") from None
    if isinstance(default, float):
      return number
    if not number.is_integer():
      raise ValueError(f"config argument {key}={value!r} is not an integer")
    return int(number)
  if isinstance(default, str):
    return value
  try:
    return ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value


def drop_arg(arg: str | None, key: str) -> str:
  """`arg` without its `key=...` items (a selector that the next builder does not take)."""
  return ",".join(item for item in (arg or "").split(",")
                  if item.split("=", 1)[0].strip() != key)


def method_args(method: str, per_method: dict | None = None) -> ml_collections.ConfigDict:
  """The hyper-parameters of `method` (SPEC §2 defaults) as a ConfigDict.

  `per_method` is a cell's `classify.method_args`: {method: {argument: value}} over the
  defaults (e.g. SGN's gamma and alpha per dataset). Choose the method with the config
  argument (`:method=sgn`), not with `--config.method=...`: the arguments are filled in
  for the method chosen there.
  """
  from sgn_jax import methods  # pylint: disable=g-import-not-at-top
  if method not in methods.METHODS:
    raise ValueError(f"method={method!r} is not known; classification methods: "
                     f"{sorted(methods.METHODS)}, diffusion methods: {list(DIFFUSION_METHODS)}; "
                     "choose one with the config argument, e.g. "
                     "--config=configs/mnist_sym.py:method=sgn")
  args = dict(methods.METHODS[method].defaults)
  args.update((per_method or {}).get(method, {}))
  return ml_collections.ConfigDict(args)


def derive(cell: dict, **changes) -> dict:
  """A new cell: `cell` with `changes`, nested dicts merged key by key (a value of None
  removes the key). For config files that differ from another file's cell in a few
  values, e.g. `derive(cifar10_sym.CELL, noise="asym")`."""
  out = copy.deepcopy(cell)
  for key, value in changes.items():
    if value is None:
      out.pop(key, None)
    elif isinstance(value, dict) and isinstance(out.get(key), dict):
      out[key] = derive(out[key], **value)
    else:
      out[key] = copy.deepcopy(value)
  return out


def _set_defaults(config: ml_collections.ConfigDict, block: dict, defaults: dict) -> None:
  """Sets each key of `defaults` on `config`: the cell block's value, else the default."""
  for key, default in defaults.items():
    config[key] = block.get(key, default)


def _pick(block: dict, *keys: str) -> ml_collections.ConfigDict:
  """`block`'s values of `keys`, in that order (a missing key is a KeyError naming it)."""
  return ml_collections.ConfigDict({key: block[key] for key in keys})


# ---- classification (sgn_jax) -------------------------------------------------

# The classification loop's bookkeeping, the same for every cell unless `classify` sets it.
CLASSIFY_LOOP = dict(
    eval_batch_size=1000,
    eval_every_epochs=1,  # evaluate net and EMA every so many epochs (and at the end)
    log_every_steps=100,
    checkpoint_every_steps=2000,
    keep_checkpoints=3,
    stop_after_steps=0,  # >0: save and stop this run after so many steps.
    allow_changes="",  # resume although these keys changed (comma-separated; see above)
)
# dataset.gmm, the synthetic 2-D mixture (read only for gmm2d; a cell's `gmm` replaces it).
GMM = dict(num_classes=4, num_train=20_000, num_test=4_000)


def _dataset(cell: dict, source: str, subset: int, val_fraction: float,
             val_split: str | None = None) -> ml_collections.ConfigDict:
  from sgn_jax.data import loading  # pylint: disable=g-import-not-at-top
  dataset = ml_collections.ConfigDict()
  dataset.name = cell["dataset"]
  dataset.source = source
  dataset.data_dir = _placeholder(str)
  dataset.manual_dir = _placeholder(str)
  dataset.download = False
  dataset.path = _placeholder(str)
  dataset.cifar_n_dir = _placeholder(str)
  dataset.train_subset = subset
  dataset.val_fraction = val_fraction
  # random (seeded by `seed`) | last (the last rows in the dataset's order, every seed)
  dataset.val_split = val_split or loading.DatasetSpec.val_split
  dataset.seed = 0  # seed of synthetic data (gmm2d); the run's seed is `seed`
  dataset.gmm = ml_collections.ConfigDict(cell.get("gmm", GMM))
  return dataset


def _noise(cell: dict, rate: float, convention: str, label_set: str,
           assumed_rate: float = 0.0) -> ml_collections.ConfigDict:
  noise = ml_collections.ConfigDict()
  noise.kind = cell["noise"]
  noise.rate = rate
  noise.convention = convention
  noise.label_set = label_set
  noise.labels_file = ""  # npz of labels (+ transition) replacing the draw, e.g. a corrector's
  # kind=none: T assumed symmetric at this rate for clean labels (TDSM's clean benchmark: 0.05)
  noise.assumed_rate = assumed_rate
  return noise


def _classification(cell: dict, *, method: str, seed: int, epochs: int,
                    dataset: ml_collections.ConfigDict, noise: ml_collections.ConfigDict,
                    input_: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The classification config around given dataset/noise/input blocks."""
  from sgn_jax import classification  # pylint: disable=g-import-not-at-top
  from sgn_jax import methods  # pylint: disable=g-import-not-at-top
  from sgn_jax.tasks import common as task_common  # pylint: disable=g-import-not-at-top
  block = cell["classify"]
  config = ml_collections.ConfigDict()
  config.task = "classify"
  config.seed = seed
  config.method = method
  # the method whose keys this builds; --config.method=<another> is refused at validation
  task_common.record_built_method(config, method)
  config.method_args = method_args(method, block.get("method_args"))
  if method == "sgn" and "sgn_alpha_like" in block:
    # SGN's alpha scaled to the run: the label correction 1 - alpha^epochs reached at the
    # end equals that of the reference (alpha, epochs), e.g. CIFAR's 0.995 after 600.
    alpha, reference_epochs = block["sgn_alpha_like"]
    config.method_args.alpha = alpha ** (reference_epochs / max(epochs, 1))
  config.dataset = dataset
  config.noise = noise
  config.num_classes = cell["num_classes"]
  # the cell's model, with the chosen method's additions (`model_by_method`; its
  # `split_head=True` becomes head_groups, one dense layer per output group of the method)
  model = dict(block["model"])
  per_method = dict(block.get("model_by_method", {}).get(method, {}))
  if per_method.pop("split_head", False):
    per_method["head_groups"] = methods.get_method(
        method, config.method_args.to_dict()).output_groups(cell["num_classes"])
  config.model = ml_collections.ConfigDict({**model, **per_method})
  config.input = input_
  # SGD; lr times lr_decay_factor at each of lr_decay_epochs; L2 weight_decay * sum(w^2).
  config.optim = _pick(block["optim"], "learning_rate", "momentum", "nesterov", "weight_decay",
                       "lr_decay_epochs", "lr_decay_factor")
  # the weights of the L2 penalty: all | no_batchnorm (kernels and biases only)
  config.optim.l2_params = block["optim"].get("l2_params", classification.Settings.l2_params)
  # linear warm-up of the learning rate from 0 over so many epochs (0: none)
  config.optim.warmup_epochs = float(
      block["optim"].get("warmup_epochs", classification.Settings.warmup_epochs))
  config.batch_size = block["batch_size"]
  config.num_epochs = epochs
  config.ema_decay = block["ema_decay"]
  config.ema_warmup = block.get("ema_warmup", False)  # min(decay, (1+t)/(10+t)) per step t
  # model selection of the reported net: split ("" = off), metric, after_epochs
  select = dataclasses.asdict(classification.Selection(**block.get("select", {})))
  config.select = ml_collections.ConfigDict({**select, "after_epochs": float(
      select["after_epochs"])})
  _set_defaults(config, block, CLASSIFY_LOOP)
  return config


def _classification_args(cell: dict, arg: str | None) -> ml_collections.ConfigDict:
  block = cell["classify"]
  return parse_arg(
      arg, method=block.get("default_method", "sgn"), rate=cell["rate"], seed=0,
      epochs=block["epochs"], subset=0,
      source=cell["source"], convention=block["convention"], label_set=cell.get("label_set", ""))


def _classification_from_args(cell: dict,
                              args: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  block = cell["classify"]
  return _classification(
      cell, method=args.method, seed=args.seed, epochs=args.epochs,
      dataset=_dataset(cell, args.source, args.subset, block["val_fraction"],
                       block.get("val_split")),
      noise=_noise(cell, args.rate, args.convention, args.label_set),
      input_=_pick(block["input"], "mean", "std", "crop_padding", "flip"))


def classification_config(cell: dict, arg: str | None) -> ml_collections.ConfigDict:
  """The classification config of a config file's `cell` (its `classify` block).

  Arguments accepted in `arg`: method, rate, seed, epochs, subset, source,
  convention, label_set (CIFAR-N); the cell gives their defaults.
  """
  return _classification_from_args(cell, _classification_args(cell, arg))


def streaming_config(cell: dict, arg: str | None) -> ml_collections.ConfigDict:
  """Config for the streamed datasets with real label noise (Clothing1M, mini-WebVision).

  The images stay on disk (`dataset.manual_dir`, the official layout) or in a
  prepared TFDS dir (`dataset.data_dir`); each host streams its block of every
  global batch. Arguments: method, seed, epochs, from_files.
  """
  block = cell["classify"]
  args = parse_arg(arg, method=block["method"], seed=0, epochs=block["epochs"], from_files=False)
  dataset = ml_collections.ConfigDict()
  dataset.name = cell["dataset"]
  dataset.source = cell["source"]
  dataset.data_dir = _placeholder(str)
  dataset.manual_dir = _placeholder(str)
  dataset.from_files = args.from_files  # read JPEGs from manual_dir (no preparation)
  dataset.samples_per_class = block.get("samples_per_class", 0)  # >0: class-balanced per epoch
  dataset.crop_size = 0  # 0: the authors' crop (224 Clothing1M, 227 WebVision)
  dataset.resize = 0  # 0: the authors' 256x256 resize before cropping
  input_ = ml_collections.ConfigDict()
  input_.crop_padding = 0  # crops and flips happen in the host pipeline
  input_.flip = False
  input_.mixup_alpha = block["input"].get("mixup_alpha", 0.0)
  input_.mean = block["input"]["mean"]
  input_.std = block["input"]["std"]
  config = _classification(
      cell, method=args.method, seed=args.seed, epochs=args.epochs, dataset=dataset,
      noise=_noise(cell, cell["rate"], block["convention"], cell.get("label_set", "")),
      input_=input_)
  if "model_pretrained" in block:
    # ImageNet weights of the backbone; "" = none, "none" = none on purpose
    config.model_pretrained = block["model_pretrained"]
    # True: "" is an error naming how to get the weights (before any data is read)
    config.model_pretrained_required = block.get("model_pretrained_required", False)
  return config


# ---- diffusion (lnrd) ---------------------------------------------------------

DIFFUSION_METHODS = ("dsm", "tdsm")
DIFFUSION_TASKS = ("diffusion", "noisy_classifier", "generate", "evaluate", "discover", "pipeline")
# EDM's default CIFAR augmentation (train.py): p (the cell's) with these probability multipliers.
EDM_AUGMENT = dict(xflip=1e8, yflip=1.0, scale=1.0, rotate_frac=1.0, aniso=1.0,
                   translate_frac=1.0)
ADAM = dict(beta1=0.9, beta2=0.999, eps=1e-8)
# The diffusion loop's bookkeeping, the same for every cell unless `diffusion` sets it.
DIFFUSION_LOOP = dict(log_every_steps=100, checkpoint_every_steps=5_000, keep_checkpoints=3,
                      stop_after_steps=0, allow_changes="")
CLASSIFIER_LOOP = dict(log_every_steps=100, checkpoint_every_steps=5_000)


def experiment_config(cell: dict, arg: str | None) -> ml_collections.ConfigDict:
  """A dataset/noise config file's `get_config`: classification or diffusion by method/task.

  `:method=dsm|tdsm` (or `task=diffusion|noisy_classifier|generate|...`) selects the
  lnrd diffusion config (`diffusion_config`); any other method is the
  classification config (`classification_config`).
  """
  pre = parse_arg(arg, lazy=True, method="ce", task="")
  if pre.task and pre.task not in DIFFUSION_TASKS + ("classify",):
    raise ValueError(f"task={pre.task!r} is not known; allowed: "
                     f"{['classify', *DIFFUSION_TASKS]}")
  if pre.task in DIFFUSION_TASKS or pre.method in DIFFUSION_METHODS:
    return diffusion_config(cell, arg)
  return classification_config(cell, drop_arg(arg, "task"))


def diffusion_config(cell: dict, arg: str | None) -> ml_collections.ConfigDict:
  """Config of the TDSM paper's experiments: diffusion, its classifier and generation.

  One config serves the whole chain, `config.task` picks the stage:
    noisy_classifier  the time-dependent classifier (`classifier.*`)
    diffusion         DSM or TDSM training (`method`, `network.*`, `tdsm.*`)
    generate          samples per class from a trained run (`generate.*`)
    evaluate          the paper's metrics of a trained run (`evaluate.*`)
    discover          suspects of mislabelling ranked by TDSM's weights (`discover.*`)
    pipeline          all stages in WORKDIR/<stage>/, optionally after a label
                      corrector (`pipeline.*`, `:corrector=sgn`)

  Arguments: method (dsm | tdsm), task, rate, seed, kimg (diffusion duration),
  classifier_kimg, estimator, classifier_dir, subset, source, convention,
  corrector (pipeline: a classification method whose labels TDSM trains on),
  corrector_epochs (its epochs; 0: the cell's), assumed_rate (clean labels, `rate=0`: the
  symmetric rate of the T assumed for them; the paper's clean benchmark is
  `:rate=0,assumed_rate=0.05`). The cell's `diffusion` block gives the per-dataset values.
  """
  block = cell["diffusion"]
  classifier = block["classifier"]
  args = parse_arg(
      arg, method="tdsm", task="diffusion", rate=cell["rate"], seed=0,
      kimg=block["duration_kimg"], classifier_kimg=classifier["duration_kimg"],
      estimator=block.get("estimator", TDSMSettings.estimator), classifier_dir="", subset=0, source=cell["source"],
      convention=block["convention"], corrector="", corrector_epochs=0, assumed_rate=0.0)
  if args.method not in DIFFUSION_METHODS:
    raise ValueError(f"method={args.method!r} is not a diffusion method; allowed: "
                     f"{list(DIFFUSION_METHODS)}")
  if args.task not in DIFFUSION_TASKS:
    raise ValueError(f"task={args.task!r}; allowed: {list(DIFFUSION_TASKS)}")
  config = ml_collections.ConfigDict()
  config.task = args.task
  config.method = args.method
  config.seed = args.seed
  # Data and noise: the classification config's fields, no validation split.
  config.dataset = _dataset(cell, args.source, args.subset, val_fraction=0.0)
  config.noise = _noise(cell, args.rate, args.convention, cell.get("label_set", ""),
                        args.assumed_rate)
  config.num_classes = cell["num_classes"]
  config.pad_to = block["pad_to"]
  config.conditional = True
  # f32 matmul/convolution precision of the networks (the authors disable TF32): highest |
  # high | default (jax.default_matmul_precision; on CPUs all are float32)
  config.matmul_precision = "highest"

  config.precond = ml_collections.ConfigDict(dict(
      kind="edm", sigma_data=block["precond"]["sigma_data"], p_mean=-1.2, p_std=1.2))
  config.network = _pick(block["network"], "arch", "dropout")
  config.network.hidden = block["network"].get("hidden", (256, 256, 256))  # mlp only
  # U-Net size overrides of the preset (None: the preset's value), e.g. for CPU runs.
  for key, kind in (("model_channels", int), ("channel_mult", tuple), ("num_blocks", int),
                    ("attn_resolutions", tuple)):
    config.network[key] = _placeholder(kind)
  config.network.overrides = ml_collections.ConfigDict()  # any other preset argument
  config.augment = ml_collections.ConfigDict(dict(p=block["augment"]["p"], **EDM_AUGMENT))

  # estimator exact|official|topk|sampled and its knobs: lnrd.tdsm_loss.TDSMSettings' defaults
  config.tdsm = ml_collections.ConfigDict(dataclasses.asdict(TDSMSettings(args.estimator)))
  config.tdsm.weight_form = "released"  # released | paper
  config.tdsm.weight_source = "classifier"  # classifier | exact (gmm2d only)
  config.tdsm.classifier_dir = args.classifier_dir  # workdir of the noisy_classifier run
  config.tdsm.use_clean_prior = False  # S from T with the clean class counts (else uniform)

  config.optim = _pick(block["optim"], "learning_rate", "warmup_kimg")
  config.optim.update(ADAM)
  config.batch_size = block["batch_size"]
  config.duration_kimg = args.kimg
  config.ema_halflife_kimg = block["ema_halflife_kimg"]
  config.ema_rampup_ratio = 0.05  # EDM's
  config.snapshot_every_kimg = block["snapshot_every_kimg"]
  _set_defaults(config, block, DIFFUSION_LOOP)

  # EDM's sampler (lnrd.sampler.SamplerSettings' defaults: Heun, 18 steps, deterministic);
  # sigma_min / sigma_max None: the preconditioning's range.
  config.sample = ml_collections.ConfigDict({
      k: _placeholder(float) if v is None else v
      for k, v in dataclasses.asdict(SamplerSettings()).items()})
  config.sample.grid_per_class = 8  # sample grids during training: images per class

  config.classifier = ml_collections.ConfigDict()
  config.classifier.arch = classifier["arch"]
  config.classifier.kwargs = ml_collections.ConfigDict()
  config.classifier.transition = "known"  # known | learned (VolMinNet) | none (noisy target)
  config.classifier.volmin_weight = VOLMIN_WEIGHT
  # transition=learned (VolMinNet), the authors' classifier loop: lr times 1, 0.1, 0.01, 1
  # between these kimg boundaries (no warm-up), theta frozen from freeze_transition_kimg
  # (0: never); `volmin_lr_kimg=()` keeps the warm-up schedule of classifier.optim.
  config.classifier.volmin_lr_kimg = (1_500.0, 3_000.0, 7_500.0)
  config.classifier.volmin_lr_factors = (1.0, 0.1, 0.01, 1.0)
  config.classifier.freeze_transition_kimg = 7_500.0
  config.classifier.batch_size = classifier["batch_size"]
  config.classifier.eval_batch_size = classifier["eval_batch_size"]
  config.classifier.duration_kimg = args.classifier_kimg
  config.classifier.eval_every_kimg = classifier["eval_every_kimg"]
  _set_defaults(config.classifier, classifier, CLASSIFIER_LOOP)
  config.classifier.optim = _pick(classifier["optim"], "learning_rate", "warmup_kimg")
  config.classifier.optim.update(ADAM)

  config.generate = ml_collections.ConfigDict()
  config.generate.run_dir = ""  # the diffusion run's workdir (its config.json + checkpoints)
  config.generate.per_class = 10
  config.generate.batch_size = 256
  config.generate.other_run_dir = ""  # affine mix D = (1+lam) D_run - lam D_other
  config.generate.affine_lambda = 0.0
  config.generate.seed = 0

  # task=evaluate (lnrd.tasks.evaluate): the paper's metrics of a trained run.
  evaluate = block["evaluate"]
  config.evaluate = ml_collections.ConfigDict()
  config.evaluate.run_dir = ""  # the diffusion run's workdir
  config.evaluate.checkpoint_step = -1  # -1: the latest checkpoint
  config.evaluate.per_class = evaluate["per_class"]
  config.evaluate.batch_size = 500  # sampling batch (images per saved batch)
  config.evaluate.feature_batch_size = 250
  config.evaluate.num_real = evaluate["num_real"]  # 0: all
  config.evaluate.k = 5  # Density/Coverage nearest neighbours
  config.evaluate.metrics = evaluate["metrics"]
  config.evaluate.feature_nets = evaluate["feature_nets"]
  config.evaluate.inception_weights = ""  # npz/.pth/.pt; "": lnrd.metrics.inception_weights default
  config.evaluate.feature_classifier_dir = ""  # noisy_classifier run on CLEAN labels (rate=0)
  config.evaluate.seed = 0
  # CAS classifier; ""/0: lnrd.metrics.cas.CAS_DEFAULTS (2-conv CNN 10 epochs on MNIST,
  # ResNet-50 100 epochs with lr 0.1 decayed at 50 and 75 on CIFAR)
  config.evaluate.cas = ml_collections.ConfigDict(dict(
      arch=evaluate.get("cas_arch", ""), epochs=0, batch_size=0, learning_rate=0.0))

  # task=discover (lnrd.discovery): rank training examples by the weight of their label.
  # (lnrd.discovery.DiscoverSettings' defaults; assumed_rate: clean data's assumed T)
  config.discover = ml_collections.ConfigDict(dataclasses.asdict(
      DiscoverSettings(classifier_dir=args.classifier_dir)))

  # task=pipeline (lnrd.tasks.pipeline): [corrector ->] classifier -> diffusion -> evaluate.
  config.pipeline = ml_collections.ConfigDict()
  config.pipeline.corrector = args.corrector  # "": none; else a classification method (sgn)
  config.pipeline.corrector_epochs = args.corrector_epochs  # 0: the cell's default epochs
  config.pipeline.corrector_floor = 1e-3  # uniform mixed into the corrected labels' T
  config.pipeline.corrector_params = "best"  # net | ema | best (more agreement with given labels)
  config.pipeline.evaluate = True
  if args.task == "pipeline" and _is_classification_method(args.corrector):
    config.pipeline.classify = _corrector_config(cell, args)
  return config


def _is_classification_method(name: str) -> bool:
  from sgn_jax import methods  # pylint: disable=g-import-not-at-top
  return name in methods.METHODS


def _corrector_config(cell: dict, args: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The corrector's classification config: the cell's for `:method=<corrector>`.

  Same rate, seed, source, convention and subset as the diffusion config, epochs from
  `:corrector_epochs=` (0: the cell's). An unknown corrector gets none; lnrd.tasks.pipeline's
  validate_config names it.
  """
  cls_args = _classification_args(cell, None)
  cls_args.update(dict(method=args.corrector, rate=args.rate, seed=args.seed,
                       source=args.source, convention=args.convention, subset=args.subset))
  if args.corrector_epochs:
    cls_args.epochs = args.corrector_epochs
  return _classification_from_args(cell, cls_args)
