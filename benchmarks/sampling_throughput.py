r"""Sampling images/s (EDM Heun, 18 steps = 35 network evaluations) and, optionally, the
end-to-end time of an evaluation (samples + Inception features) on the device present.

    python benchmarks/sampling_throughput.py                                   # CPU sizes
    python benchmarks/sampling_throughput.py --dataset=cifar10 --batch_sizes=256,512 \
        --end_to_end=50000 --json=/tmp/sampling.json                           # GPU

Every row runs the real jitted, sharded `lnrd.diffusion.Diffusion.sample` of
the dataset's diffusion config (`configs/<dataset>_sym.py:method=dsm`: DDPM++
55.7M parameters for CIFAR-10, ddpmpp_mnist 1.56M for MNIST; `--model_channels`
etc. shrink it) with freshly initialised weights (the speed does not depend on
the values), class-conditional, after one compile call. Reported per batch size:
compile seconds, seconds per batch, images/s and network evaluations/s.

`--end_to_end=N`: the time `task=evaluate` spends on N samples: sampling in
batches (`lnrd.evaluate.sample_in_batches`, saved to a temporary folder) and the
Inception pool3/logits of those samples (`lnrd.evaluate.compute_features`),
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


def _diffusion(args):
  from configs import common  # pylint: disable=g-import-not-at-top
  from lnrd import diffusion as diffusion_lib  # pylint: disable=g-import-not-at-top
  from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config = common.diffusion_config(args.dataset, "sym", "method=dsm")
  for key in ("model_channels", "num_blocks"):
    if getattr(args, key):
      config.network[key] = getattr(args, key)
  if args.channel_mult:
    config.network.channel_mult = tuple(int(v) for v in args.channel_mult.split(","))
  config.sample.num_steps = args.num_steps
  mesh = mesh_lib.create_mesh()
  data_shape = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1)}.get(args.dataset, (32, 32, 3))
  from lnrd import train_loop  # pylint: disable=g-import-not-at-top
  shape = train_loop.model_input_shape(data_shape, config.pad_to)
  diffusion = diffusion_lib.Diffusion(config, mesh, shape, config.num_classes, 1)
  state = diffusion.init_state(jax.random.PRNGKey(0))
  return config, diffusion, diffusion_lib.ema_variables(state), mesh


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

  config, diffusion, variables, mesh = _diffusion(args)
  from lnrd import train_loop  # pylint: disable=g-import-not-at-top
  params = train_loop.num_params(variables["params"])
  nfe = 2 * args.num_steps - 1
  rows = []
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} | {platform.node()} | "
        f"{args.dataset} {config.network.arch} {params:,} params | Heun {args.num_steps} steps "
        f"({nfe} evaluations)")
  print(f"{'batch':>6} {'compile s':>10} {'s/batch':>9} {'img/s':>9} {'evals/s':>9}")
  for batch in (int(b) for b in args.batch_sizes.split(",")):
    labels = np.arange(batch, dtype=np.int32) % diffusion.num_classes
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    diffusion.sample(variables, labels, key, config.sample, batch_size=batch)
    compile_s = time.perf_counter() - start
    times = []
    for r in range(args.repeats):
      start = time.perf_counter()
      diffusion.sample(variables, labels, jax.random.fold_in(key, r), config.sample,
                       batch_size=batch)
      times.append(time.perf_counter() - start)
    per_batch = float(np.median(times))
    row = dict(batch=batch, compile_s=compile_s, seconds_per_batch=per_batch,
               images_per_second=batch / per_batch, evals_per_second=batch * nfe / per_batch)
    rows.append(row)
    print(f"{batch:>6} {compile_s:>10.1f} {per_batch:>9.2f} {row['images_per_second']:>9.2f} "
          f"{row['evals_per_second']:>9.1f}")

  result = {"device": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
            "dataset": args.dataset, "arch": config.network.arch, "params": params,
            "num_steps": args.num_steps, "rows": rows}
  if args.end_to_end:
    from lnrd import diffusion as diffusion_lib  # pylint: disable=g-import-not-at-top
    from lnrd import evaluate  # pylint: disable=g-import-not-at-top
    from lnrd import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
    from lnrd.metrics import inception  # pylint: disable=g-import-not-at-top
    batch = max(r["batch"] for r in rows)
    labels = sampler_lib.class_balanced_labels(-(-args.end_to_end // diffusion.num_classes),
                                               diffusion.num_classes)[:args.end_to_end]
    with tempfile.TemporaryDirectory() as folder:
      start = time.perf_counter()
      samples = evaluate.sample_in_batches(diffusion, variables, labels, jax.random.PRNGKey(2),
                                           config.sample, batch, folder)
      sample_s = time.perf_counter() - start
    images = diffusion_lib.images_to_uint8(samples)
    weights = None if args.inception_weights in ("", "random") else args.inception_weights
    net = (inception.InceptionFeatures(inception.random_variables())
           if args.inception_weights == "random" else inception.InceptionFeatures.load(weights))

    def pool3(variables, x):
      return {"features": net.module.apply(variables, inception.preprocess(x, net.mode))["pool3"]}
    start = time.perf_counter()
    evaluate.compute_features(pool3, images, min(batch, 200), mesh, net.variables)
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
