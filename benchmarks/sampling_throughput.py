r"""Sampling images/s (EDM Heun, 18 steps = 35 network evaluations) and, optionally, the
end-to-end time of an evaluation (samples + Inception features) on the device present.

    python benchmarks/sampling_throughput.py                                   # CPU sizes
    python benchmarks/sampling_throughput.py --dataset=cifar10 --batch_sizes=256,512 \
        --end_to_end=50000 --json=/tmp/sampling.json                           # GPU

Every row runs the real jitted, sharded sampler (`lnrd.runs.DiffusionModel.sample`) of
the dataset's diffusion network (as `configs/<dataset>_sym.py:method=dsm`: DDPM++
55.7M parameters for CIFAR-10, ddpmpp_mnist 1.56M for MNIST; `--model_channels`
etc. shrink it) with freshly initialised weights (the speed does not depend on
the values), class-conditional, after one compile call. Reported per batch size:
compile seconds, seconds per batch, images/s and network evaluations/s.

`--end_to_end=N`: the time `task=evaluate` spends on N samples: sampling in
batches (`lnrd.evaluation.sample_in_batches`, saved to a temporary folder) and the
Inception pool3/logits of those samples (`lnrd.evaluation.compute_features`),
with the installed FID Inception weights (`lnrd.metrics.inception_weights`) or
random ones. Kept small on a CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))


# dataset -> (preset, data shape, pad_to, classes), as the dataset configs choose them
PRESETS = {"mnist": ("ddpmpp_mnist", (28, 28, 1), 32, 10), "cifar10": ("ddpmpp", (32, 32, 3), 0, 10),
           "cifar100": ("ddpmpp", (32, 32, 3), 0, 100)}


def _diffusion(args):
  from lnrd import augment  # pylint: disable=g-import-not-at-top
  from lnrd import diffusion as diffusion_lib  # pylint: disable=g-import-not-at-top
  from lnrd import edm  # pylint: disable=g-import-not-at-top
  from lnrd import images  # pylint: disable=g-import-not-at-top
  from lnrd import runs  # pylint: disable=g-import-not-at-top
  from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  arch, data_shape, pad_to, num_classes = PRESETS[args.dataset]
  overrides = {k: getattr(args, k) for k in ("model_channels", "num_blocks") if getattr(args, k)}
  if args.channel_mult:
    overrides["channel_mult"] = tuple(int(v) for v in args.channel_mult.split(","))
  mesh = mesh_lib.create_mesh()
  shape = images.model_input_shape(data_shape, pad_to)
  model = diffusion_lib.build_network(arch, shape, num_classes,
                                      augment_dim=augment.edm_cifar_pipe().augment_dim,
                                      dropout=0.13, **overrides)
  state = diffusion_lib.init_state(model, edm.adam_with_warmup(), shape, num_classes,
                                   jax.random.PRNGKey(0), mesh)
  network = runs.DiffusionModel(run=None, model=model, precond=edm.get_preconditioning("edm"),
                                num_classes=num_classes, input_shape=shape, data_shape=data_shape,
                                variables=diffusion_lib.ema_variables(state), step=0)
  return arch, network, mesh


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="mnist", choices=("mnist", "cifar10", "cifar100"))
  parser.add_argument("--batch_sizes", default="8,32")
  parser.add_argument("--num_steps", type=int, default=18)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--model_channels", type=int, default=0)
  parser.add_argument("--num_blocks", type=int, default=0)
  parser.add_argument("--channel_mult", default="")
  parser.add_argument("--end_to_end", type=int, default=0, help="N samples, 0: skip")
  parser.add_argument("--inception_weights", default="", help="'' default, 'random' none")
  parser.add_argument("--json", default="")
  args = parser.parse_args()

  from lnrd import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from sgn_jax.training.train_state import num_params  # pylint: disable=g-import-not-at-top
  arch, network, mesh = _diffusion(args)
  settings = sampler_lib.SamplerSettings(num_steps=args.num_steps)
  sample_fn = network.sampler(mesh, settings)
  params = num_params(network.variables["params"])
  nfe = 2 * args.num_steps - 1
  rows = []
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} | {platform.node()} | "
        f"{args.dataset} {arch} {params:,} params | Heun {args.num_steps} steps "
        f"({nfe} evaluations)")
  print(f"{'batch':>6} {'compile s':>10} {'s/batch':>9} {'img/s':>9} {'evals/s':>9}")
  for batch in (int(b) for b in args.batch_sizes.split(",")):
    labels = np.arange(batch, dtype=np.int32) % network.num_classes
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    network.sample(labels, key, mesh, batch_size=batch, sample_fn=sample_fn)
    compile_s = time.perf_counter() - start
    times = []
    for r in range(args.repeats):
      start = time.perf_counter()
      network.sample(labels, jax.random.fold_in(key, r), mesh, batch_size=batch,
                     sample_fn=sample_fn)
      times.append(time.perf_counter() - start)
    per_batch = float(np.median(times))
    row = dict(batch=batch, compile_s=compile_s, seconds_per_batch=per_batch,
               images_per_second=batch / per_batch, evals_per_second=batch * nfe / per_batch)
    rows.append(row)
    print(f"{batch:>6} {compile_s:>10.1f} {per_batch:>9.2f} {row['images_per_second']:>9.2f} "
          f"{row['evals_per_second']:>9.1f}")

  result = {"device": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
            "dataset": args.dataset, "arch": arch, "params": params,
            "num_steps": args.num_steps, "rows": rows}
  if args.end_to_end:
    from lnrd import evaluation  # pylint: disable=g-import-not-at-top
    from lnrd import images as images_lib  # pylint: disable=g-import-not-at-top
    from lnrd.metrics import inception  # pylint: disable=g-import-not-at-top
    batch = max(r["batch"] for r in rows)
    labels = sampler_lib.class_balanced_labels(-(-args.end_to_end // network.num_classes),
                                               network.num_classes)[:args.end_to_end]
    with tempfile.TemporaryDirectory() as folder:
      start = time.perf_counter()
      samples = evaluation.sample_in_batches(network, labels, jax.random.PRNGKey(2), mesh,
                                             settings, batch, folder)
      sample_s = time.perf_counter() - start
    images = images_lib.images_to_uint8(samples)
    weights = None if args.inception_weights in ("", "random") else args.inception_weights
    net = (inception.InceptionFeatures(inception.random_variables())
           if args.inception_weights == "random" else inception.InceptionFeatures.load(weights))

    def pool3(variables, x):
      return {"features": net.module.apply(variables, inception.preprocess(x, net.mode))["pool3"]}
    start = time.perf_counter()
    evaluation.compute_features(pool3, images, min(batch, 200), mesh, net.variables)
    feature_s = time.perf_counter() - start
    result["end_to_end"] = dict(num_samples=len(labels), sample_seconds=sample_s,
                                feature_seconds=feature_s, total_seconds=sample_s + feature_s)
    print(f"end to end, {len(labels)} samples: sampling {sample_s:.1f} s + Inception "
          f"{feature_s:.1f} s = {sample_s + feature_s:.1f} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
