"""Classification Accuracy Score (CAS; Ravuri & Vinyals, 2019).

A class-conditional generator is scored by how well a classifier trained ONLY on
its samples works on real data:

  1. draw samples x~_i ~ p_G(x | y_i) for conditioning labels y_i;
  2. train a classifier from scratch on {(x~_i, y_i)};
  3. CAS = (1 / N_test) sum_j 1[argmax_k f(x_j)_k = y_j] on the REAL test set.

A generator that ignores its labels gives chance accuracy; one whose samples of
class y are not recognisable as y in real data scores low, however sharp they
look. Here the classifier is trained by the repo's own classification pipeline
(`sgn_jax.classification.train` with `cas_settings`, method `ce`, no label noise): the
samples and the real test set are written as an npz dataset into
WORKDIR/cas/data.npz and the run lives in WORKDIR/cas/ (checkpoints, TensorBoard,
metrics.json), so a preempted CAS run resumes when called again with the same
inputs.

Architectures (`arch`, `ARCHS`):
  tdsm_cnn                the TDSM authors' MNIST CAS CNN (`ClassifierCAS_CNN_MNIST`,
                          `sgn_jax.models.TdsmCasCNN`: conv5x5 16, conv5x5 32,
                          one linear layer, no BatchNorm) on the digits padded to 32x32
                          inside the network; default for mnist / fashion_mnist;
  resnet50_imagenet_stem  the authors' CIFAR CAS network (`ClassifierCAS`): torchvision's
                          ResNet-50 from scratch with the ImageNet stem (7x7 stride-2
                          conv and 3x3 max-pool) on 32x32 inputs,
                          `sgn_jax.models.ResNet50(cifar_stem=False)`; default for CIFAR;
  cnn                     the repo's 2-conv MNIST CNN (`SmallCNN` with BatchNorm, 28x28);
  resnet50                ResNet-50 v1.5 with the CIFAR stem (3x3 stride-1 conv, no
                          max-pool; `sgn_jax.models.ResNet50(cifar_stem=True)`);
  any other name of `sgn_jax.models.MODELS` is passed through (e.g. wrn28_2).
The authors' two networks see their inputs as the diffusion model does, x / 127.5 - 1
in [-1, 1] (`lnrd.images.to_model_range`), and the MNIST border padded to 32x32 is -1
(black), as the authors' zero padding of the uint8 digits; the other archs take the
dataset's mean/std normalisation. The evaluation's MNIST samples are the 28x28 crops
of the generated 32x32 images (`lnrd.images.crop_to`), so the CAS CNN sees them with
an exactly black border, as the real test digits.

Budget knobs (defaults in `CAS_DEFAULTS`, per dataset): `epochs` (training
length; steps = epochs * floor(n_samples / batch_size)), `batch_size`,
`learning_rate` (SGD with Nesterov momentum 0.9, multiplied by 0.1 at each of
`lr_decay_epochs`), `weight_decay` (the pipeline's penalty lambda * sum w^2,
gradient 2 lambda w: the default 2.5e-4 is torch's weight_decay=5e-4). The test
set is evaluated once, at the end (the net, not its EMA, is reported). On CIFAR
the pipeline's on-device random crops (pad 2) and horizontal flips apply. The TDSM
authors released no CAS training script, so this recipe is the library's, also for
their networks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import numpy as np

# Datasets CAS can be run for (their real test sets are plain arrays).
DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
RUN_DIR = "cas"

# Per-dataset defaults of the budget knobs (any of them can be overridden).
CAS_DEFAULTS = {
    "mnist": dict(arch="tdsm_cnn", epochs=10, batch_size=128, learning_rate=0.01,
                  weight_decay=2.5e-4, lr_decay_epochs=()),
    "fashion_mnist": dict(arch="tdsm_cnn", epochs=20, batch_size=128, learning_rate=0.01,
                          weight_decay=2.5e-4, lr_decay_epochs=()),
    "cifar10": dict(arch="resnet50_imagenet_stem", epochs=100, batch_size=128,
                    learning_rate=0.1, weight_decay=2.5e-4, lr_decay_epochs=(50, 75)),
    "cifar100": dict(arch="resnet50_imagenet_stem", epochs=100, batch_size=128,
                     learning_rate=0.1, weight_decay=2.5e-4, lr_decay_epochs=(50, 75)),
}

# `sgn_jax.models.TdsmCasCNN`'s name in `sgn_jax.models.MODELS` (the classification
# pipeline builds its models by name).
TDSM_CNN_MODEL = "tdsm_cas_cnn"
# arch -> (sgn_jax.models name, its keyword arguments, whether the inputs are in the
# model range [-1, 1] (else normalised with the dataset's mean/std)); see the module doc.
ARCHS = {
    "tdsm_cnn": (TDSM_CNN_MODEL, {}, True),
    "resnet50_imagenet_stem": ("resnet50", dict(cifar_stem=False), True),
    "cnn": ("cnn", dict(batch_norm=True), False),
    "resnet50": ("resnet50", dict(cifar_stem=True), False),
}


def _model(arch: str) -> tuple[str, dict[str, Any], bool]:
  """(model name, keyword arguments, model-range inputs) of `arch` (see `ARCHS`)."""
  from sgn_jax import models  # pylint: disable=g-import-not-at-top
  if arch in ARCHS:
    name, kwargs, model_range = ARCHS[arch]
    return name, dict(kwargs), model_range
  if arch not in models.MODELS:
    raise ValueError(f"arch={arch!r} is not known; allowed: {sorted(ARCHS)} or a model of "
                     f"sgn_jax.models.MODELS {sorted(models.MODELS)}")
  return arch, {}, False


def _check_arrays(samples, labels, test_images, test_labels, num_classes: int):
  samples, test_images = np.asarray(samples), np.asarray(test_images)
  labels, test_labels = np.asarray(labels), np.asarray(test_labels)
  for name, x in (("samples", samples), ("test_images", test_images)):
    if x.dtype != np.uint8 or x.ndim != 4:
      raise ValueError(
          f"{name} must be uint8 NHWC images (N, H, W, C) in [0, 255]; got {x.dtype} "
          f"{x.shape} (model-range samples: lnrd.images.images_to_uint8)")
  if samples.shape[1:] != test_images.shape[1:]:
    raise ValueError(f"samples {samples.shape[1:]} and test_images {test_images.shape[1:]} "
                     "must have the same image shape")
  for name, y, x in (("labels", labels, samples), ("test_labels", test_labels, test_images)):
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f"{name} must be integers of shape ({len(x)},); got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(f"{name} take values in [{y.min()}, {y.max()}]; allowed: "
                       f"[0, {num_classes})")
  return samples, labels.astype(np.int32), test_images, test_labels.astype(np.int32)


def _fingerprint(arrays, settings) -> str:
  h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
  for a in arrays:
    h.update(str((a.dtype, a.shape)).encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def cas_settings(dataset: str, npz_path: str, *, arch: str, epochs: int, batch_size: int,
                 learning_rate: float, weight_decay: float, lr_decay_epochs=(),
                 seed: int = 0, eval_batch_size: int = 1000):
  """The `sgn_jax.classification.Settings` of a CAS run: ce on the npz's train split.

  No label noise, no validation split, the model of `arch` with its input range
  (`ARCHS`: [-1, 1] for the authors' networks, else the dataset's usual
  normalisation), random crops (pad 2) and flips for CIFAR, SGD with Nesterov
  momentum 0.9 at the given budget, one evaluation, at the end.
  """
  from sgn_jax import classification  # pylint: disable=g-import-not-at-top
  from sgn_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  from sgn_jax.data import loading  # pylint: disable=g-import-not-at-top
  for name, value in (("epochs", epochs), ("batch_size", batch_size),
                      ("eval_batch_size", eval_batch_size)):
    if int(value) != value or value <= 0:
      raise ValueError(f"{name}={value} must be a positive integer")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate={learning_rate} must be > 0")
  info = dataset_lib.DATASETS[dataset]
  model, model_kwargs, model_range = _model(arch)
  # (x / 255 - 0.5) / 0.5 = x / 127.5 - 1, as lnrd.images.to_model_range
  mean, std = ((0.5,) * len(info.mean), (0.5,) * len(info.std)) if model_range else (
      tuple(info.mean), tuple(info.std))
  is_cifar = dataset.startswith("cifar")
  return classification.Settings(
      dataset=loading.DatasetSpec(name=dataset, source="npz", path=str(npz_path)),
      num_classes=info.num_classes, model=model, model_kwargs=model_kwargs,
      mean=mean, std=std, seed=int(seed), method="ce",
      crop_padding=2 if is_cifar else 0, flip=is_cifar,
      learning_rate=float(learning_rate), weight_decay=float(weight_decay),
      lr_decay_epochs=tuple(lr_decay_epochs), batch_size=int(batch_size),
      num_epochs=int(epochs), eval_batch_size=int(eval_batch_size),
      eval_every_epochs=int(epochs))


def classification_accuracy_score(samples, labels, test_images, test_labels, *,
                                  dataset: str, workdir: str, arch: str | None = None,
                                  epochs: int | None = None, batch_size: int | None = None,
                                  learning_rate: float | None = None,
                                  weight_decay: float | None = None,
                                  lr_decay_epochs=None, seed: int = 0,
                                  eval_batch_size: int = 1000, devices=None,
                                  overwrite: bool = False) -> dict[str, Any]:
  """CAS: accuracy on the real test set of a classifier trained on generated samples.

  Args:
    samples: (N, H, W, C) uint8 generated images (H, W, C of `dataset`).
    labels: (N,) int conditioning labels the samples were generated with.
    test_images: (M, H, W, C) uint8 REAL test images.
    test_labels: (M,) int their true labels.
    dataset: one of `DATASETS` (sets the classes, image shape, normalisation).
    workdir: folder of the evaluation; the run goes to WORKDIR/cas/.
    arch: a name of `ARCHS` ('tdsm_cnn', 'resnet50_imagenet_stem', 'cnn',
      'resnet50') or of `sgn_jax.models.MODELS` (None: `CAS_DEFAULTS[dataset]`).
    epochs, batch_size, learning_rate, weight_decay, lr_decay_epochs: the
      training budget; None takes `CAS_DEFAULTS[dataset]`.
    seed: seed of the initialisation and the data order.
    eval_batch_size: global batch of the test evaluation.
    devices: devices of the data-parallel mesh (default: all); batch sizes
      must be multiples of their number.
    overwrite: delete an existing WORKDIR/cas/ made from other inputs (else
      ValueError); a run with the same inputs and settings is resumed.

  Returns:
    {'accuracy': CAS (the trained net's test top-1 accuracy), 'ema_accuracy',
     'nll', 'ece', 'num_train', 'num_test', 'arch', 'epochs', 'steps',
     'completed', 'run_dir'}.

  Raises:
    ValueError: unknown dataset/arch, malformed arrays, bad budget values, or
      a WORKDIR/cas/ of different inputs without overwrite.
  """
  from sgn_jax import classification  # pylint: disable=g-import-not-at-top
  from sgn_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  if dataset not in DATASETS:
    raise ValueError(f"dataset={dataset!r} is not supported by CAS; allowed: {list(DATASETS)}")
  samples, labels, test_images, test_labels = _check_arrays(
      samples, labels, test_images, test_labels, dataset_lib.DATASETS[dataset].num_classes)
  defaults = CAS_DEFAULTS[dataset]
  settings = dict(
      arch=arch or defaults["arch"],
      epochs=defaults["epochs"] if epochs is None else epochs,
      batch_size=defaults["batch_size"] if batch_size is None else batch_size,
      learning_rate=defaults["learning_rate"] if learning_rate is None else learning_rate,
      weight_decay=defaults["weight_decay"] if weight_decay is None else weight_decay,
      lr_decay_epochs=tuple(defaults["lr_decay_epochs"] if lr_decay_epochs is None
                            else lr_decay_epochs),
      seed=seed, eval_batch_size=eval_batch_size)
  if settings["batch_size"] > len(samples):
    raise ValueError(f"batch_size={settings['batch_size']} is larger than the number of "
                     f"samples ({len(samples)})")

  run_dir = os.path.join(workdir, RUN_DIR)
  npz_path = os.path.join(run_dir, "data.npz")
  fingerprint = _fingerprint((samples, labels, test_images, test_labels),
                             dict(settings, dataset=dataset))
  stamp = os.path.join(run_dir, "fingerprint.txt")
  if os.path.exists(run_dir):
    old = open(stamp).read().strip() if os.path.exists(stamp) else None
    if old != fingerprint:
      if old is not None and not overwrite:  # (no stamp: an interrupted set-up)
        raise ValueError(
            f"workdir={workdir!r} already holds a CAS run ({run_dir}) of other samples or "
            "settings; pass overwrite=True to replace it, or use another workdir")
      shutil.rmtree(run_dir)
  os.makedirs(run_dir, exist_ok=True)
  if not os.path.exists(stamp):
    np.savez(npz_path, train_images=samples, train_labels=labels,
             test_images=test_images, test_labels=test_labels)
    with open(stamp, "w") as f:
      f.write(fingerprint + "\n")

  final = classification.train(cas_settings(dataset, npz_path, **settings), run_dir,
                               devices=devices)
  return {
      "accuracy": float(final["test/accuracy"]),
      "ema_accuracy": float(final["ema_test/accuracy"]),
      "nll": float(final["test/nll"]),
      "ece": float(final["test/ece"]),
      "num_train": int(len(samples)),
      "num_test": int(len(test_images)),
      "arch": settings["arch"],
      "epochs": settings["epochs"],
      "steps": int(final["step"]),
      "completed": bool(final["completed"]),
      "run_dir": run_dir,
  }
