r"""FID Inception feature extraction throughput (images/s) on the present devices.

    python benchmarks/inception_throughput.py                          # CPU-sized default
    python benchmarks/inception_throughput.py --batch_sizes=50,200,500 --image_size=32 \
        --weights=inception_fid.npz --steps=10 --json=/tmp/inception.json

Each batch size runs `lnrd.metrics.inception.InceptionFeatures` (jitted resize
of uint8 `--image_size` images to 299x299, then the network to pool3 and, with
weights that have the classifier, logits) with the batch sharded over all
local devices. The images are device-resident; compilation and `--warmup`
calls come first, then `--repeats` windows of `--steps` calls, each window
ended by block_until_ready (`benchmarks.step_timer`); the median window gives
images/s. Without
`--weights` the network has random weights of the same shapes (the speed does
not depend on them).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import jax
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks import step_timer  # pylint: disable=g-import-not-at-top,wrong-import-position
from lnrd.metrics import inception  # pylint: disable=wrong-import-position
from lnrd.metrics import inception_weights  # pylint: disable=wrong-import-position
from sgn_jax.training import mesh as mesh_lib  # pylint: disable=wrong-import-position

_PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": jax.lax.Precision.DEFAULT}


def measure(features, batch_size, args, mesh):
  """Compile + warm-up, then the median seconds per call (benchmarks.step_timer)."""
  rng = np.random.default_rng(batch_size)
  images = rng.integers(0, 256, (batch_size, args.image_size, args.image_size, args.channels),
                        dtype=np.uint8)
  images = jax.device_put(images, mesh_lib.data_sharded(mesh))
  # step_timer times `state, metrics = step(state, inputs)`; the extractor has no state.
  compile_s, seconds, _, _ = step_timer.time_train_step(
      lambda state, x: (state, features(x)), None, images, steps=args.steps,
      repeats=args.repeats, warmup=args.warmup, sync=mesh_lib.needs_step_sync(mesh))
  return {"batch_size": batch_size, "compile_s": compile_s, "ms_per_batch": 1e3 * seconds,
          "images_per_s": batch_size / seconds}


def main(argv=None):
  on_cpu = jax.default_backend() == "cpu"
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_sizes", default="8,16" if on_cpu else "50,200,500")
  parser.add_argument("--image_size", type=int, default=32, help="input height = width")
  parser.add_argument("--channels", type=int, default=3, choices=[1, 3])
  parser.add_argument("--weights", default=None, help=".npz/.pt/.pth; default random weights")
  parser.add_argument("--logits", action="store_true", help="random weights with the fc layer")
  parser.add_argument("--mode", default="tf", choices=list(inception.PREPROCESS_MODES))
  parser.add_argument("--precision", default="highest", choices=list(_PRECISIONS))
  parser.add_argument("--steps", type=int, default=2 if on_cpu else 10)
  parser.add_argument("--warmup", type=int, default=1 if on_cpu else 3)
  parser.add_argument("--repeats", type=int, default=2 if on_cpu else 3)
  parser.add_argument("--json", default=None, help="also write the rows here")
  args = parser.parse_args(argv)

  mesh = mesh_lib.create_mesh(jax.local_devices())
  if args.weights:
    variables = inception_weights.load_variables(args.weights)
  else:
    variables = inception.random_variables(0, inception.NUM_LOGITS if args.logits else None)
  features = inception.InceptionFeatures(variables, mesh=mesh, mode=args.mode,
                                         precision=_PRECISIONS[args.precision])
  devices = jax.local_devices()
  print(f"# {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, {platform.processor() or platform.machine()}; "
        f"{args.image_size}x{args.image_size}x{args.channels} uint8 -> 299x299, "
        f"weights: {args.weights or 'random'}, logits: {features.has_logits}, "
        f"precision: {args.precision}")
  print(f"{'batch':>6} {'compile s':>10} {'ms/batch':>10} {'images/s':>10}")
  rows = []
  for batch_size in (int(b) for b in args.batch_sizes.split(",")):
    mesh_lib.check_divisible(batch_size, mesh, "batch size")
    row = measure(features, batch_size, args, mesh)
    rows.append(row)
    print(f"{row['batch_size']:>6} {row['compile_s']:>10.1f} {row['ms_per_batch']:>10.1f} "
          f"{row['images_per_s']:>10.1f}", flush=True)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"device": devices[0].device_kind, "num_devices": len(devices), "rows": rows,
                 "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
  main()
