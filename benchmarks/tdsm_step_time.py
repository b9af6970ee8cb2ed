r"""Train-step time of DSM and of TDSM with each estimator, C = 10 and C = 100, side by side.

    python benchmarks/tdsm_step_time.py                               # CPU-sized U-Net
    python benchmarks/tdsm_step_time.py --arch=ddpmpp --resolution=32 --channels=3 \
        --model_channels=0 --batch_size=512 --steps=20 --json=/tmp/tdsm_steps.json   # GPU, CIFAR

Every row runs the real jitted, state-donating train step of `lnrd.diffusion.make_train_step`
composed with the device-resident batch drawer by `sgn_jax.training.loop.jit_step`, as
`task=diffusion` runs it (EDM augmentation p = 0.12, dropout 0.13, sigma and noise, the time-dependent
classifier's forward pass and the transition-aware weights for TDSM, the loss,
backward, Adam and EMA) with the SAME network and batch; only the loss differs:

  dsm               plain DSM on the given labels
  tdsm/sampled      default TDSM estimator (m = 1: one pass with gradient + one forward)
  tdsm/official     released code's form (1 pass with gradient + C forward, tau = 0.01)
  tdsm/topk         k = 2 heaviest labels, gradient through both
  tdsm/exact        all C labels with gradient

The classifier is the TDSM MNIST CNN (or ResNet-18 with --classifier=resnet18) with
random weights and 40% symmetric noise, or (C = 10, --classifier_dir) a trained
noisy-label classifier on real digits (--data): a random classifier gives
near-uniform weights, the worst case for `sampled` (its forward pass then runs on
the whole batch); a trained one is confident except at high sigma. C changes the
label embedding and the classifier head only. Reported: compile seconds, median ms/step over --repeats
windows of --steps steps, images/s and the ratio to DSM at the same C. On a CPU
compare the ratios only.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys

import jax
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks import step_timer  # pylint: disable=g-import-not-at-top,wrong-import-position
from lnrd import augment as augment_lib  # pylint: disable=wrong-import-position
from lnrd import diffusion  # pylint: disable=wrong-import-position
from lnrd import edm  # pylint: disable=wrong-import-position
from lnrd import images as images_lib  # pylint: disable=wrong-import-position
from lnrd import time_classifier  # pylint: disable=wrong-import-position
from lnrd import weights as weights_lib  # pylint: disable=wrong-import-position
from sgn_jax import noise  # pylint: disable=wrong-import-position
from sgn_jax.data import device_data  # pylint: disable=wrong-import-position
from sgn_jax.training import ema  # pylint: disable=wrong-import-position
from sgn_jax.training import loop  # pylint: disable=wrong-import-position
from sgn_jax.training import mesh as mesh_lib  # pylint: disable=wrong-import-position

ROWS = (("dsm", "dsm", None), ("tdsm/sampled", "tdsm", "sampled"),
        ("tdsm/official", "tdsm", "official"), ("tdsm/topk", "tdsm", "topk"),
        ("tdsm/exact", "tdsm", "exact"))


def random_weight_model(num_classes: int, shape, transition, classifier: str = "cnn",
                        **classifier_kwargs) -> diffusion.WeightModel:
  """TDSM's released-form weights from a random-weight time-dependent classifier."""
  module = time_classifier.get_time_classifier(classifier, num_classes, **classifier_kwargs)
  variables = module.init(jax.random.PRNGKey(3), np.zeros((1,) + tuple(shape), np.float32),
                          np.ones((1,), np.float32))
  return diffusion.WeightModel(
      "released", weights_lib.transition_constants(transition),
      lambda x_t, sigma: jax.nn.softmax(module.apply(variables, x_t, sigma, train=False)))


def build_step(arch: str, shape, num_classes: int, batch_size: int, mesh, images, labels, *,
               method: str, estimator: str | None = None, weight_fn=None, overrides=None,
               dtype=None, augment: bool = True, inputs=None):
  """(jitted step, state, inputs) of DSM or TDSM as `task=diffusion` runs it: EDM
  preconditioning, augmentation p = 0.12 (or none) with its labels to the network,
  dropout 0.13, Adam with warm-up, EDM's EMA, the device-resident batch drawer.
  TDSM's weights: `weight_fn` (default: a random CNN classifier, 40% symmetric noise)."""
  pipe = augment_lib.edm_cifar_pipe(p=0.12)
  model = diffusion.build_network(arch, shape, num_classes, augment_dim=pipe.augment_dim,
                                  dropout=0.13, **({"dtype": dtype} if dtype else {}),
                                  **(overrides or {}))
  precond = edm.get_preconditioning("edm")
  tx = edm.adam_with_warmup(1e-3, warmup_kimg=10_000.0, batch_size=batch_size)
  if method == "tdsm":
    if weight_fn is None:
      weight_fn = random_weight_model(
          num_classes, shape, noise.symmetric_transition(num_classes, 0.4, False))
    settings = diffusion.TDSMSettings(estimator=estimator) if estimator else \
        diffusion.TDSMSettings()
    objective = diffusion.tdsm_objective(precond, weight_fn, settings)
  else:
    objective = diffusion.dsm_objective(precond)
  train_step = diffusion.make_train_step(
      model, tx, objective, precond=precond, num_classes=num_classes,
      ema_decay=ema.edm_schedule(batch_size, 500.0), augment=pipe if augment else None,
      preprocess=functools.partial(images_lib.to_model_range, pad_to=shape[0]))
  state = diffusion.init_state(model, tx, shape, num_classes, jax.random.PRNGKey(0), mesh)
  inputs = step_timer.device_inputs(images, labels, mesh) if inputs is None else inputs
  step = loop.jit_step(train_step, device_data.BatchDrawer(
      batch_size, len(labels) // batch_size, mesh))
  return step, state, inputs


def weight_model(args, num_classes, shape):
  if args.classifier_dir and num_classes == 10:
    from lnrd import runs  # pylint: disable=g-import-not-at-top
    return diffusion.classifier_weights(runs.load_classifier(args.classifier_dir), "released")
  return random_weight_model(num_classes, shape,
                             noise.symmetric_transition(num_classes, 0.4, False),
                             args.classifier)


def measure(name, method, estimator, num_classes, args, mesh, images, labels):
  shape = (args.resolution, args.resolution, images.shape[-1])
  overrides = {}
  if args.model_channels:
    overrides = dict(model_channels=args.model_channels, channel_mult=(1, 2),
                     num_blocks=1, attn_resolutions=(args.resolution // 2,))
  step, state, inputs = build_step(
      args.arch, shape, num_classes, args.batch_size, mesh, images, labels, method=method,
      estimator=estimator, overrides=overrides,
      weight_fn=weight_model(args, num_classes, shape) if method == "tdsm" else None)
  compile_s, seconds, state, metrics = step_timer.time_train_step(
      step, state, inputs, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
      sync=mesh_lib.needs_step_sync(mesh))
  return {"name": name, "num_classes": num_classes, "compile_s": compile_s,
          "ms_per_step": seconds * 1e3, "images_per_s": args.batch_size / seconds,
          "loss": float(metrics["loss"])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="ddpmpp_mnist")
  parser.add_argument("--model_channels", type=int, default=16,
                      help="shrink the U-Net (channel_mult (1,2), 1 block); 0: the preset")
  parser.add_argument("--resolution", type=int, default=32)
  parser.add_argument("--channels", type=int, default=1)
  parser.add_argument("--classifier", default="cnn")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--num_classes", default="10,100")
  parser.add_argument("--rows", default=",".join(r[0] for r in ROWS))
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--json", default="")
  parser.add_argument("--data", default="",
                      help="folder of the raw MNIST idx archives: real digits (else noise)")
  parser.add_argument("--classifier_dir", default="",
                      help="a trained noisy_classifier run (C=10 rows; else random weights)")
  args = parser.parse_args()
  mesh = mesh_lib.create_mesh()
  rng = np.random.default_rng(0)
  n = max(4 * args.batch_size, 256)
  if args.data:
    from sgn_jax.data import loading  # pylint: disable=g-import-not-at-top
    dataset = loading.load_dataset(loading.DatasetSpec(name="mnist", source="idx", path=args.data))
    images = dataset.train_images[:n]
  else:
    images = rng.integers(0, 256, size=(n, args.resolution, args.resolution, args.channels),
                          dtype=np.uint8)
  wanted = args.rows.split(",")
  results = []
  print(f"# {jax.devices()[0].device_kind} x{len(jax.devices())}, {platform.node()}, "
        f"jax {jax.__version__}, arch {args.arch} (model_channels {args.model_channels or 'preset'}), "
        f"batch {args.batch_size}, classifier "
        f"{args.classifier_dir or args.classifier + ' (random weights)'}, "
        f"data {args.data or 'random pixels'}", flush=True)
  print("| C | row | compile s | ms/step | img/s | vs DSM |\n| --- | --- | --- | --- | --- | --- |",
        flush=True)
  for c in (int(v) for v in args.num_classes.split(",")):
    if args.data and c == 10:  # the digits' own labels under 40% symmetric noise
      labels = noise.sample_noisy_labels(
          dataset.train_labels[:n], noise.symmetric_transition(10, 0.4, False), 0)
      labels = np.asarray(labels, np.int32)
    else:
      labels = rng.integers(0, c, size=n).astype(np.int32)
    base = None
    for name, method, estimator in ROWS:
      if name not in wanted:
        continue
      r = measure(name, method, estimator, c, args, mesh, images, labels)
      base = base or (r["ms_per_step"] if name == "dsm" else None)
      r["ratio_to_dsm"] = r["ms_per_step"] / base if base else float("nan")
      results.append(r)
      print(f"| {c} | {name} | {r['compile_s']:.1f} | {r['ms_per_step']:.1f} | "
            f"{r['images_per_s']:.1f} | {r['ratio_to_dsm']:.2f} |", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "device": jax.devices()[0].device_kind,
                 "results": results}, f, indent=2)


if __name__ == "__main__":
  main()
