r"""`task="generate"`: class-conditional samples from a trained diffusion run.

    python main.py --config=configs/mnist_sym.py:task=generate \
        --config.generate.run_dir=DIFFUSION_WORKDIR --workdir=OUT

Rebuilds the EMA network of the latest checkpoint in `generate.run_dir` from
its run record (`lnrd.runs.load_diffusion`), samples `generate.per_class`
images for every class with EDM's sampler (`sample.*`: Heun, 18 steps, sigma in
[0.002, 80], rho 7 by default), sharded over the devices, and writes
OUT/samples.npz (`images` uint8 NHWC or float vectors, `labels`) and
OUT/samples.png (one row per class, up to 10 classes).

With `generate.other_run_dir` and `generate.affine_lambda = lam` it samples the
TDSM authors' affine mix D = (1 + lam) D_run - lam D_other of two networks.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lnrd import diffusion as diffusion_lib
from lnrd import images
from lnrd import runs as lnrd_runs
from lnrd import sampler as sampler_lib
from lnrd.tasks import common as lnrd_common
from sgn_jax import errors
from sgn_jax import runs
from sgn_jax.tasks import common
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers


# What the samples of a generate run depend on: a workdir holding samples made with
# other values (another run_dir, seed, sampler, ...) is refused, as task=evaluate
# refuses its own; the batch size and the training-time sample grids may change.
DEFINES = ("generate.run_dir", "generate.other_run_dir", "generate.affine_lambda",
           "generate.per_class", "generate.seed", "sample")
MAY_CHANGE = ("sample.grid_per_class",)


def validate_config(config: ml_collections.ConfigDict) -> None:
  g = config.generate
  lnrd_common.check_run_dir(g.run_dir, "generate.run_dir", "generate")
  if g.per_class < 1 or g.batch_size < 1:
    raise ValueError(f"generate.per_class={g.per_class} and generate.batch_size="
                     f"{g.batch_size} must be >= 1")
  if g.affine_lambda and not g.other_run_dir:
    raise ValueError("generate.affine_lambda != 0 needs generate.other_run_dir")
  lnrd_common.sampler_settings(config)


@runs.one_writer
@lnrd_common.with_matmul_precision
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Samples per class from `config.generate.run_dir`; writes npz + PNG to `workdir`."""
  g = config.generate
  with errors.user_input():
    validate_config(config)
    runs.check_not_inside(workdir, g.run_dir, "generate.run_dir")
    if g.affine_lambda:
      runs.check_not_inside(workdir, g.other_run_dir, "generate.other_run_dir")
    allowed = common.check_resume(config, workdir, "generate", compare=DEFINES,
                                  may_change=MAY_CHANGE)
    mesh = mesh_lib.create_mesh(devices)
    model = lnrd_runs.load_diffusion(g.run_dir, mesh=mesh, what="generate.run_dir",
                                     finished=True)
    other = None
    if g.affine_lambda:
      other = lnrd_runs.load_diffusion(g.other_run_dir, mesh=mesh,
                                       what="generate.other_run_dir", finished=True)
      if other.input_shape != model.input_shape or other.num_classes != model.num_classes:
        raise ValueError(
            f"generate.other_run_dir={g.other_run_dir!r} has inputs {other.input_shape} and "
            f"{other.num_classes} classes, generate.run_dir {model.input_shape} and "
            f"{model.num_classes}: the affine mix needs two networks of the same data")
    runs.start_run(workdir, config.to_dict(), dict(
        task="generate", run_dir=g.run_dir, checkpoint_step=model.step), allowed)
  labels = sampler_lib.class_balanced_labels(g.per_class, model.num_classes)
  key = jax.random.PRNGKey(g.seed)
  settings = lnrd_common.sampler_settings(config)
  start = time.time()
  if other is not None:
    lam = float(g.affine_lambda)
    own = diffusion_lib.make_denoiser(model.model, model.precond, model.num_classes)
    theirs = diffusion_lib.make_denoiser(other.model, other.precond, other.num_classes)

    def mixed(both, x, sigma, y):
      return sampler_lib.affine_denoiser(
          lambda *a: own(both[0], *a), lambda *a: theirs(both[1], *a), lam)(x, sigma, y)
    samples = model.sample(labels, key, mesh, settings, batch_size=g.batch_size,
                           sample_fn=model.sampler(mesh, settings, mixed),
                           variables=(model.variables, other.variables))
  else:
    samples = model.sample(labels, key, mesh, settings, batch_size=g.batch_size)
  seconds = time.time() - start
  logging.info("sampled %d in %.1f s (%.1f samples/s)", len(labels), seconds,
               len(labels) / seconds)
  stored = images.images_to_uint8(samples) if model.is_image else samples.astype(np.float32)
  result = {"num_samples": len(labels), "seconds": seconds,
            "samples_per_second": len(labels) / seconds}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    np.savez_compressed(os.path.join(workdir, "samples.npz"), images=stored, labels=labels)
    if model.is_image:
      grid = writers.image_grid(stored[labels < 10], num_columns=g.per_class)
      images.save_png(os.path.join(workdir, "samples.png"), grid)
    else:
      from lnrd import plots  # pylint: disable=g-import-not-at-top
      plots.scatter_by_class(os.path.join(workdir, "samples.png"), stored, labels,
                             title=f"samples of {g.run_dir}")
    writers.write_metrics_json(os.path.join(workdir, "metrics.json"), result)
  return result
