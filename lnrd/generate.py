r"""Class-conditional samples from a trained diffusion run (`task="generate"`).

    python main.py --config=configs/mnist_sym.py:task=generate \
        --config.generate.run_dir=DIFFUSION_WORKDIR --workdir=OUT

Restores the EMA network of the latest checkpoint in `generate.run_dir`
(the run's own config.json says how to rebuild it), samples
`generate.per_class` images for every class with EDM's sampler (`sample.*`:
Heun, 18 steps, sigma in [0.002, 80], rho 7 by default), sharded over the
devices, and writes OUT/samples.npz (`images` uint8 NHWC or float vectors,
`labels`) and OUT/samples.png (one row per class, up to 10 classes).

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
from lnrd import sampler as sampler_lib
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers


def _check(config) -> None:
  g = config.generate
  if not g.run_dir:
    raise ValueError("task=generate needs generate.run_dir, the workdir of a diffusion run "
                     "(--config.generate.run_dir=DIR)")
  if not os.path.isdir(os.path.join(g.run_dir, "checkpoints")):
    raise FileNotFoundError(f"generate.run_dir={g.run_dir!r} has no checkpoints/ folder; "
                            "train it first with task=diffusion")
  if g.per_class < 1 or g.batch_size < 1:
    raise ValueError(f"generate.per_class={g.per_class} and generate.batch_size="
                     f"{g.batch_size} must be >= 1")
  if g.affine_lambda and not g.other_run_dir:
    raise ValueError("generate.affine_lambda != 0 needs generate.other_run_dir")


def generate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict[str, Any]:
  """Samples per class from `config.generate.run_dir`; writes npz + PNG to `workdir`."""
  _check(config)
  g = config.generate
  mesh = mesh_lib.create_mesh(devices)
  run_config = diffusion_lib.load_run_config(g.run_dir)
  diffusion, params, _ = diffusion_lib.restore_ema_params(run_config, g.run_dir, mesh)
  labels = sampler_lib.class_balanced_labels(g.per_class, diffusion.num_classes)
  key = jax.random.PRNGKey(g.seed)
  sampler_config = config.sample
  start = time.time()
  if g.affine_lambda:
    other_config = diffusion_lib.load_run_config(g.other_run_dir)
    other, other_params, _ = diffusion_lib.restore_ema_params(other_config, g.other_run_dir,
                                                              mesh)
    if other.input_shape != diffusion.input_shape or other.num_classes != diffusion.num_classes:
      raise ValueError("generate.other_run_dir has a different data shape or class count")
    lam = float(g.affine_lambda)

    def mixed(both, x, sigma, y):
      return sampler_lib.affine_denoiser(diffusion.denoiser(both[0]), other.denoiser(both[1]),
                                         lam)(x, sigma, y)
    samples = diffusion.sample((params, other_params), labels, key, sampler_config,
                               batch_size=g.batch_size, denoise_fn_with_params=mixed)
  else:
    samples = diffusion.sample(params, labels, key, sampler_config, batch_size=g.batch_size)
  seconds = time.time() - start
  logging.info("sampled %d in %.1f s (%.1f samples/s)", len(labels), seconds,
               len(labels) / seconds)
  is_image = samples.ndim == 4
  stored = diffusion_lib.images_to_uint8(samples) if is_image else samples.astype(np.float32)
  result = {"num_samples": len(labels), "seconds": seconds,
            "samples_per_second": len(labels) / seconds}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    np.savez_compressed(os.path.join(workdir, "samples.npz"), images=stored, labels=labels)
    if is_image:
      shown = labels < 10
      grid = writers.image_grid(stored[shown], num_columns=g.per_class)
      diffusion_lib.save_png(os.path.join(workdir, "samples.png"), grid)
    else:
      from lnrd import plots  # pylint: disable=g-import-not-at-top
      plots.scatter_by_class(os.path.join(workdir, "samples.png"), stored, labels,
                             title=f"samples of {g.run_dir}")
    writers.write_metrics_json(os.path.join(workdir, "metrics.json"), result)
  return result

