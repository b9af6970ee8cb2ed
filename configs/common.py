"""Shared defaults and argument parsing for all experiment configs.

Every config file is `get_config(arg)`; `arg` is the part after the colon in
`--config=configs/mnist_sym.py:method=ce,rate=0.4` (comma-separated key=value
pairs). Values are typed from the defaults of the file (`parse_arg`), and an
unknown key is an error that lists the allowed ones. Single values can be
overridden afterwards on the command line with `--config.optim.learning_rate=0.1`
(the config is locked, so a misspelt key is an error too).

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
  dataset.seed         seed of the synthetic data (gmm2d), fixed across runs.
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
  input.*              normalisation mean/std and on-device augmentation
                       (crop_padding: pad-and-random-crop; flip: horizontal flips).
  optim.*              SGD with (Nesterov) momentum, learning rate (times
                       lr_decay_factor at each of lr_decay_epochs), L2 penalty
                       weight_decay * sum(w^2) on all weights.
  batch_size           global batch size (divisible by the number of devices).
  num_epochs           training length in epochs (steps_per_epoch = n_train // batch).
  ema_decay            decay of the EMA network evaluated beside the net.
  eval_batch_size      global evaluation batch size.
  eval_every_epochs    evaluate the net and its EMA every so many epochs and at the end.
  log_every_steps, checkpoint_every_steps, keep_checkpoints, stop_after_steps.
  model.batch_norm     (cnn) BatchNorm after each layer; on for (Fashion-)MNIST.
  model.dtype          compute dtype of the network (e.g. bfloat16); params stay float32.

Diffusion (`diffusion_config`; `:method=dsm|tdsm`, tasks noisy_classifier,
diffusion, generate; the dataset/noise keys are as above):
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
                       seed, cas.arch/epochs/batch_size/learning_rate (lnrd.evaluate).
  discover.*           classifier_dir, sigmas, top_k, grid_count, batch_size,
                       assumed_rate, seed (lnrd.discovery: suspects of mislabelling).
  pipeline.*           corrector ("" or a classification method, e.g. sgn; argument
                       `:corrector=sgn`), corrector_epochs, corrector_floor, corrector_params
                       (net | ema | best), evaluate
                       (lnrd.pipeline: one config runs the whole chain).

Streamed datasets (`streaming_config`: clothing1m, mini_webvision, source=stream):
  dataset.from_files   read the JPEGs of manual_dir directly instead of a TFDS dir.
  dataset.samples_per_class  >0: class-balanced subset of the noisy train set per epoch.
  dataset.crop_size, dataset.resize  0: the authors' sizes (224/227 crops of 256x256).
  input.mixup_alpha    >0: mixup on the device (methods with soft labels: ce, sgn).
  model_pretrained     torchvision ResNet weights (.npz/.pth) for the backbone.
"""

from __future__ import annotations

import ast

import ml_collections

# Per-dataset facts used by configs (not data: these select defaults).
NUM_CLASSES = {
    "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
    "cifar10_n": 10, "cifar100_n": 100, "gmm2d": 4, "clothing1m": 14, "mini_webvision": 50,
}
# Per-channel normalisation. SGN normalises CIFAR-100 with CIFAR-10's statistics.
_CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": _CIFAR10_MEAN_STD,
    "cifar100": _CIFAR10_MEAN_STD,
    "cifar10_n": _CIFAR10_MEAN_STD,
    "cifar100_n": _CIFAR10_MEAN_STD,
    "gmm2d": ((0.0, 0.0), (1.0, 1.0)),
}


def parse_arg(arg: str | None, lazy: bool = False, **defaults) -> ml_collections.ConfigDict:
  """Parses `key=value,key=value` into a ConfigDict typed from `defaults`.

  Values are converted to the type of the default (bools accept
  true/false/1/0/yes/no, None-defaults take Python literals or strings). A key
  not in `defaults` raises ValueError naming it and the allowed keys, unless
  `lazy` is set (then it is kept as a string/literal).
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    if "=" not in item:
      raise ValueError(
          f"config argument {item!r} is not of the form key=value; "
          f"allowed keys: {sorted(defaults)}")
    key, value = (s.strip() for s in item.split("=", 1))
    if key not in defaults and not lazy:
      raise ValueError(
          f"unknown config argument {key!r}; allowed keys: {sorted(defaults)}")
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


# SGN's gamma (label smoothing) and alpha (label-correction speed) per dataset.
SGN_GAMMA_ALPHA = {"clothing1m": (0.1, 0.7), "mini_webvision": (0.01, 0.999)}


def method_args(method: str, dataset: str) -> ml_collections.ConfigDict:
  """The hyper-parameters of `method` (SPEC §2 defaults) as a ConfigDict.

  Choose the method with the config argument (`:method=sgn`), not with
  `--config.method=...`: the arguments are filled in for the method chosen there.
  """
  from sgn_jax import methods  # pylint: disable=g-import-not-at-top
  if method not in methods.METHODS:
    raise ValueError(f"method={method!r} is not known; allowed: {sorted(methods.METHODS)}")
  args = dict(methods.METHODS[method].defaults)
  if method == "sgn":
    args["gamma"], args["alpha"] = SGN_GAMMA_ALPHA.get(dataset, (0.001, 0.995))
    if dataset == "mini_webvision":
      args["target_scale"] = 0.3  # the authors' WebVision "temperature"
  return ml_collections.ConfigDict(args)


def classification_config(dataset: str, noise_kind: str, arg: str | None,
                          **arg_defaults) -> ml_collections.ConfigDict:
  """The classification config for `dataset` under `noise_kind` label noise.

  Arguments accepted in `arg`: method, rate, seed, epochs, subset, source,
  convention, label_set (CIFAR-N). `arg_defaults` changes their defaults (a
  config file's own choices; the command line still wins).
  """
  is_image_small = dataset in ("mnist", "fashion_mnist")
  is_cifar = dataset.startswith("cifar")
  default_rate = {"none": 0.0, "sym": 0.4, "asym": 0.4, "cifar_n": 0.0}[noise_kind]
  defaults = dict(
      method="ce",
      rate=default_rate,
      seed=0,
      epochs=3 if is_image_small else (600 if is_cifar else 200),
      subset=0,
      source="tfds" if dataset != "gmm2d" else "gmm",
      # SGN's convention for CIFAR; TDSM's (flip to another class) elsewhere.
      convention="sgn" if is_cifar else "tdsm",
      label_set="worse" if dataset == "cifar10_n" else ("noisy" if dataset == "cifar100_n" else ""),
  )
  unknown = set(arg_defaults) - set(defaults)
  if unknown:
    raise ValueError(f"unknown argument defaults {sorted(unknown)}; allowed: {sorted(defaults)}")
  defaults.update(arg_defaults)
  args = parse_arg(arg, **defaults)

  config = ml_collections.ConfigDict()
  config.task = "classify"
  config.seed = args.seed
  config.method = args.method
  config.method_args = method_args(args.method, dataset)

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = dataset
  config.dataset.source = args.source
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.download = False
  config.dataset.path = ml_collections.config_dict.placeholder(str)
  config.dataset.cifar_n_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.train_subset = args.subset
  config.dataset.val_fraction = 0.1 if is_cifar else 0.0
  config.dataset.seed = 0  # seed of synthetic data (gmm2d); the run's seed is `seed`
  config.dataset.gmm = ml_collections.ConfigDict(dict(
      num_classes=NUM_CLASSES["gmm2d"], num_train=20_000, num_test=4_000))

  config.noise = ml_collections.ConfigDict()
  config.noise.kind = noise_kind
  config.noise.rate = args.rate
  config.noise.convention = args.convention
  config.noise.label_set = args.label_set
  config.noise.labels_file = ""  # npz of labels (+ transition) replacing the draw, e.g. a corrector's

  config.num_classes = NUM_CLASSES[dataset]
  config.model = ml_collections.ConfigDict()
  if is_cifar:
    config.model.name = "wrn"
    config.model.depth = 28
    config.model.width = 2
  elif dataset == "gmm2d":
    config.model.name = "mlp"
    config.model.hidden = (128, 128)
  else:
    config.model.name = "cnn"
    config.model.batch_norm = True  # SGN's regression loss diverges on it without BN

  mean, std = NORMALIZATION[dataset]
  config.input = ml_collections.ConfigDict()
  config.input.mean = mean
  config.input.std = std
  config.input.crop_padding = 2 if is_cifar else 0
  config.input.flip = is_cifar

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 0.01
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.weight_decay = 2.5e-4
  config.optim.lr_decay_epochs = ()  # epochs at which lr is multiplied by lr_decay_factor
  config.optim.lr_decay_factor = 0.1

  config.batch_size = 128
  config.num_epochs = args.epochs
  config.ema_decay = 0.9999
  config.eval_batch_size = 1000
  config.eval_every_epochs = 1  # evaluate net and EMA every so many epochs (and at the end)
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  config.stop_after_steps = 0  # >0: save and stop this run after so many steps.
  return config


def streaming_config(dataset: str, arg: str | None, **arg_defaults) -> ml_collections.ConfigDict:
  """Config for the streamed datasets with real label noise (Clothing1M, mini-WebVision).

  The images stay on disk (`dataset.manual_dir`, the official layout) or in a
  prepared TFDS dir (`dataset.data_dir`); each host streams its block of every
  global batch. Arguments: method, seed, epochs, from_files.
  """
  defaults = dict(method="sgn", seed=0, epochs=10, from_files=False)
  defaults.update(arg_defaults)
  args = parse_arg(arg, **defaults)
  config = classification_config("cifar10", "none", f"method={args.method},seed={args.seed}")
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = dataset
  config.dataset.source = "stream"
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.from_files = args.from_files  # read JPEGs from manual_dir (no preparation)
  config.dataset.samples_per_class = 0  # >0: class-balanced subset per epoch
  config.dataset.crop_size = 0  # 0: the authors' crop (224 Clothing1M, 227 WebVision)
  config.dataset.resize = 0  # 0: the authors' 256x256 resize before cropping
  config.num_classes = NUM_CLASSES[dataset]
  config.method_args = method_args(args.method, dataset)
  config.noise.kind = "none"
  config.noise.rate = 0.0
  config.num_epochs = args.epochs
  config.input = ml_collections.ConfigDict()
  config.input.crop_padding = 0  # crops and flips happen in the host pipeline
  config.input.flip = False
  config.input.mixup_alpha = 0.0
  return config


# ---- diffusion (lnrd) ---------------------------------------------------------

DIFFUSION_METHODS = ("dsm", "tdsm")
DIFFUSION_TASKS = ("diffusion", "noisy_classifier", "generate", "evaluate", "discover", "pipeline")
# Per dataset: (network arch, time-dependent classifier arch, zero-pad images to).
DIFFUSION_ARCH = {
    "mnist": ("ddpmpp_mnist", "cnn", 32), "fashion_mnist": ("ddpmpp_mnist", "cnn", 32),
    "cifar10": ("ddpmpp", "resnet18", 0), "cifar100": ("ddpmpp", "resnet34", 0),
    "gmm2d": ("mlp", "mlp", 0),
}
# EDM's default CIFAR augmentation (train.py): p with these probability multipliers.
EDM_AUGMENT = dict(xflip=1e8, yflip=1.0, scale=1.0, rotate_frac=1.0, aniso=1.0,
                   translate_frac=1.0)


def experiment_config(dataset: str, noise_kind: str, arg: str | None,
                      **arg_defaults) -> ml_collections.ConfigDict:
  """A dataset/noise config file's `get_config`: classification or diffusion by method/task.

  `:method=dsm|tdsm` (or `task=diffusion|noisy_classifier|generate`) selects the
  lnrd diffusion config (`diffusion_config`); any other method is the
  classification config (`classification_config`).
  """
  pre = parse_arg(arg, lazy=True, method="ce", task="")
  if pre.task and pre.task not in DIFFUSION_TASKS + ("classify",):
    raise ValueError(f"task={pre.task!r} is not known; allowed: "
                     f"{['classify', *DIFFUSION_TASKS]}")
  if pre.task in DIFFUSION_TASKS or pre.method in DIFFUSION_METHODS:
    return diffusion_config(dataset, noise_kind, arg)
  rest = ",".join(item for item in (arg or "").split(",")
                  if item.split("=", 1)[0].strip() != "task")
  return classification_config(dataset, noise_kind, rest, **arg_defaults)


def diffusion_config(dataset: str, noise_kind: str, arg: str | None,
                     **arg_defaults) -> ml_collections.ConfigDict:
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
  corrector (pipeline: a classification method whose labels TDSM trains on).
  """
  arch, classifier_arch, pad_to = DIFFUSION_ARCH[dataset]
  is_image = dataset != "gmm2d"
  default_rate = {"none": 0.0, "sym": 0.4, "asym": 0.4}[noise_kind]
  defaults = dict(
      method="tdsm", task="diffusion", rate=default_rate, seed=0,
      kimg=200_000.0 if is_image else 500.0,
      classifier_kimg=20_000.0 if is_image else 200.0,
      estimator="sampled", classifier_dir="", subset=0,
      source="tfds" if is_image else "gmm", convention="tdsm", corrector="")
  defaults.update(arg_defaults)
  args = parse_arg(arg, **defaults)
  if args.method not in DIFFUSION_METHODS:
    raise ValueError(f"method={args.method!r} is not a diffusion method; allowed: "
                     f"{list(DIFFUSION_METHODS)}")
  if args.task not in DIFFUSION_TASKS:
    raise ValueError(f"task={args.task!r}; allowed: {list(DIFFUSION_TASKS)}")
  # Data and noise: the classification config's fields, TDSM's convention.
  base = classification_config(
      dataset, noise_kind, f"rate={args.rate},seed={args.seed},subset={args.subset},"
      f"source={args.source},convention={args.convention}")
  config = ml_collections.ConfigDict()
  config.task = args.task
  config.method = args.method
  config.seed = args.seed
  config.dataset = base.dataset
  config.dataset.val_fraction = 0.0
  config.noise = base.noise
  config.num_classes = NUM_CLASSES[dataset]
  config.pad_to = pad_to
  config.conditional = True

  config.precond = ml_collections.ConfigDict(dict(
      kind="edm", sigma_data=0.5 if is_image else 1.5, p_mean=-1.2, p_std=1.2))
  config.network = ml_collections.ConfigDict()
  config.network.arch = arch
  config.network.dropout = 0.13 if is_image else 0.0
  config.network.hidden = (256, 256, 256)  # mlp only
  # U-Net size overrides of the preset (None: the preset's value), e.g. for CPU runs.
  for key, kind in (("model_channels", int), ("channel_mult", tuple), ("num_blocks", int),
                    ("attn_resolutions", tuple)):
    config.network[key] = ml_collections.config_dict.placeholder(kind)
  config.network.overrides = ml_collections.ConfigDict()  # any other preset argument
  config.augment = ml_collections.ConfigDict(dict(p=0.12 if is_image else 0.0, **EDM_AUGMENT))

  config.tdsm = ml_collections.ConfigDict()
  config.tdsm.estimator = args.estimator  # exact | official | topk | sampled
  config.tdsm.num_samples = 1  # sampled: m
  config.tdsm.residual_capacity = 0.25  # sampled: sub-batch for rows with z != y (0: off)
  config.tdsm.top_k = 2  # topk: k
  config.tdsm.tau = 0.01  # official: skip threshold
  config.tdsm.weight_form = "released"  # released | paper
  config.tdsm.weight_source = "classifier"  # classifier | exact (gmm2d only)
  config.tdsm.classifier_dir = args.classifier_dir  # workdir of the noisy_classifier run
  config.tdsm.use_clean_prior = False  # S from T with the clean class counts (else uniform)

  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_kimg=10_000.0 if is_image else 20.0, beta1=0.9, beta2=0.999,
      eps=1e-8))
  config.batch_size = 512 if is_image else 256
  config.duration_kimg = args.kimg
  config.ema_halflife_kimg = 500.0 if is_image else 5.0
  config.ema_rampup_ratio = 0.05
  config.snapshot_every_kimg = 5_000.0 if is_image else 100.0
  config.log_every_steps = 100
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3
  config.stop_after_steps = 0

  config.sample = ml_collections.ConfigDict(dict(
      num_steps=18, rho=7.0, s_churn=0.0, s_min=0.0, s_max=1e9, s_noise=1.0, solver="heun",
      grid_per_class=8))
  config.sample.sigma_min = ml_collections.config_dict.placeholder(float)
  config.sample.sigma_max = ml_collections.config_dict.placeholder(float)

  config.classifier = ml_collections.ConfigDict()
  config.classifier.arch = classifier_arch
  config.classifier.kwargs = ml_collections.ConfigDict()
  config.classifier.transition = "known"  # known | learned (VolMinNet) | none (noisy target)
  config.classifier.volmin_weight = 1e-4
  config.classifier.batch_size = 512 if is_image else 256
  config.classifier.eval_batch_size = 1000 if is_image else 512
  config.classifier.duration_kimg = args.classifier_kimg
  config.classifier.eval_every_kimg = 2_000.0 if is_image else 50.0
  config.classifier.log_every_steps = 100
  config.classifier.checkpoint_every_steps = 5_000
  config.classifier.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_kimg=1_000.0 if is_image else 10.0, beta1=0.9, beta2=0.999,
      eps=1e-8))

  config.generate = ml_collections.ConfigDict()
  config.generate.run_dir = ""  # the diffusion run's workdir (its config.json + checkpoints)
  config.generate.per_class = 10
  config.generate.batch_size = 256
  config.generate.other_run_dir = ""  # affine mix D = (1+lam) D_run - lam D_other
  config.generate.affine_lambda = 0.0
  config.generate.seed = 0

  # task=evaluate (lnrd.evaluate): the paper's metrics of a trained run.
  is_mnist_like = dataset in ("mnist", "fashion_mnist")
  config.evaluate = ml_collections.ConfigDict()
  config.evaluate.run_dir = ""  # the diffusion run's workdir
  config.evaluate.checkpoint_step = -1  # -1: the latest checkpoint
  config.evaluate.per_class = {"cifar100": 500}.get(dataset, 5_000 if dataset == "cifar10" else 1_000)
  config.evaluate.batch_size = 500  # sampling batch (images per saved batch)
  config.evaluate.feature_batch_size = 250
  config.evaluate.num_real = 50_000 if dataset.startswith("cifar") else 10_000  # 0: all
  config.evaluate.k = 5  # Density/Coverage nearest neighbours
  config.evaluate.metrics = (("density_coverage", "cw_density_coverage", "cas") if is_mnist_like
                             else METRICS_ALL)
  config.evaluate.feature_nets = ("inception", "classifier") if is_mnist_like else ("inception",)
  config.evaluate.inception_weights = ""  # npz/.pth/.pt; "": lnrd.metrics.inception_weights default
  config.evaluate.feature_classifier_dir = ""  # noisy_classifier run on CLEAN labels (rate=0)
  config.evaluate.seed = 0
  # CAS classifier; ""/0: lnrd.metrics.cas.CAS_DEFAULTS (2-conv CNN 10 epochs on MNIST,
  # ResNet-50 100 epochs with lr 0.1 decayed at 50 and 75 on CIFAR)
  config.evaluate.cas = ml_collections.ConfigDict(dict(
      arch="", epochs=0, batch_size=0, learning_rate=0.0))

  # task=discover (lnrd.discovery): rank training examples by the weight of their label.
  config.discover = ml_collections.ConfigDict()
  config.discover.classifier_dir = args.classifier_dir  # a noisy_classifier run
  config.discover.sigmas = (0.002, 0.05, 0.2)
  config.discover.top_k = (100, 1000)
  config.discover.grid_count = 64
  config.discover.batch_size = 1000
  config.discover.assumed_rate = 0.05  # clean data: T assumed symmetric at this rate
  config.discover.seed = 0  # key of the x + sigma n draws

  # task=pipeline (lnrd.pipeline): [corrector ->] classifier -> diffusion -> evaluate.
  config.pipeline = ml_collections.ConfigDict()
  config.pipeline.corrector = args.corrector  # "": none; else a classification method (sgn)
  config.pipeline.corrector_epochs = 0  # 0: the classification config's default
  config.pipeline.corrector_floor = 1e-3  # uniform mixed into the corrected labels' T
  config.pipeline.corrector_params = "best"  # net | ema | best (more agreement with given labels)
  config.pipeline.evaluate = True
  return config


METRICS_ALL = ("fid", "is", "density_coverage", "cw_fid", "cw_density_coverage", "cas")
