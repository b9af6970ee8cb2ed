r"""Training throughput of classification methods (images/s), side by side in one run.

    python benchmarks/classification_throughput.py                       # SGN and CE, WRN-28-2
    python benchmarks/classification_throughput.py --methods=ce,sgn,elr --batch_sizes=128,512 \
        --dtype=bfloat16 --steps=50 --json=/tmp/throughput.json

Each (method, batch size) pair runs the real jitted train step of
`sgn_jax.classification.make_train_step`, composed with the device-resident batch drawer by
`sgn_jax.training.loop.jit_step` as `task=classify` runs it (CIFAR-shaped data: gather,
crop/flip, forward, loss, backward, SGD, EMA) on all local devices, after a
warm-up that includes compilation. Reported: compile seconds, steps/s and
images/s over `--steps` timed steps (median of `--repeats` windows), and the
ratio to the first method at the same batch size. Absolute numbers only mean
something on an accelerator; on a CPU compare the ratios.
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
from sgn_jax import classification  # pylint: disable=wrong-import-position
from sgn_jax import methods  # pylint: disable=wrong-import-position
from sgn_jax.data import dataset as dataset_lib  # pylint: disable=wrong-import-position
from sgn_jax.data import device_data  # pylint: disable=wrong-import-position
from sgn_jax.training import loop  # pylint: disable=wrong-import-position
from sgn_jax.training import mesh as mesh_lib  # pylint: disable=wrong-import-position

CIFAR10 = dataset_lib.get_info("cifar10")


def build_step(method_name: str, batch_size: int, mesh, images, labels, *, depth: int = 28,
               width: int = 2, dtype: str = "float32"):
  """(jitted step, state, inputs) of a WRN classification step as `task=classify` runs it
  on CIFAR-shaped data: gather, crop/flip, forward, loss, backward, SGD, EMA."""
  method = methods.get_method(method_name)
  kwargs = dict(depth=depth, width=width)
  if dtype != "float32":
    kwargs["dtype"] = dtype
  model = classification.build_model("wrn", 10, method, **kwargs)
  tx = classification.sgd(0.01, momentum=0.9, nesterov=True)
  steps_per_epoch = len(labels) // batch_size
  state = classification.init_state(model, tx, images.shape[1:], jax.random.PRNGKey(0), mesh)
  state = classification.with_example_state(state, method, labels, 10, mesh)
  train_step = classification.make_train_step(
      model, method, tx, num_classes=10, steps_per_epoch=steps_per_epoch, ema_decay=0.9999,
      weight_decay=2.5e-4, preprocess=classification.normalizer(CIFAR10.mean, CIFAR10.std),
      mesh=mesh)
  step = loop.jit_step(train_step, device_data.BatchDrawer(batch_size, steps_per_epoch, mesh,
                                                           crop_padding=2, flip=True))
  return step, state, step_timer.device_inputs(images, labels, mesh)


def measure(method_name, batch_size, args, mesh, images, labels):
  step, state, inputs = build_step(method_name, batch_size, mesh, images, labels,
                                   depth=args.depth, width=args.width, dtype=args.dtype)
  compile_s, seconds, state, metrics = step_timer.time_train_step(
      step, state, inputs, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
      sync=mesh_lib.needs_step_sync(mesh))
  steps_per_s = 1.0 / seconds
  return {"method": method_name, "batch_size": batch_size, "compile_s": compile_s,
          "steps_per_s": steps_per_s, "images_per_s": steps_per_s * batch_size,
          "loss": float(metrics["loss"])}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--methods", default="sgn,ce")
  parser.add_argument("--batch_sizes", default="128,512")
  parser.add_argument("--depth", type=int, default=28)
  parser.add_argument("--width", type=int, default=2)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--num_examples", type=int, default=8192)
  parser.add_argument("--json", default=None, help="also write the rows here")
  args = parser.parse_args(argv)

  mesh = mesh_lib.create_mesh()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(args.num_examples, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, size=(args.num_examples,)).astype(np.int32)
  device = jax.devices()[0]
  print(f"# device: {device.device_kind} x {jax.device_count()} ({device.platform}); "
        f"jax {jax.__version__}; host {platform.node()}; WRN-{args.depth}-{args.width}, "
        f"{args.dtype}")
  rows = []
  for batch_size in (int(b) for b in args.batch_sizes.split(",")):
    for method in args.methods.split(","):
      rows.append(measure(method, batch_size, args, mesh, images, labels))
  print(f"{'method':>8} {'batch':>6} {'compile s':>10} {'steps/s':>9} {'images/s':>10} "
        f"{'vs first':>9}")
  for row in rows:
    first = next(r for r in rows if r["batch_size"] == row["batch_size"])
    print(f"{row['method']:>8} {row['batch_size']:>6} {row['compile_s']:>10.1f} "
          f"{row['steps_per_s']:>9.2f} {row['images_per_s']:>10.1f} "
          f"{row['images_per_s'] / first['images_per_s']:>9.3f}")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"device": str(device.device_kind), "devices": jax.device_count(),
                 "dtype": args.dtype, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
