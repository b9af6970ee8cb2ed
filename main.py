r"""Entry point: `python main.py --config=configs/<file>.py[:args] --workdir=DIR`.

Initialises multi-process JAX when the environment asks for it (see
`sgn_jax.training.distributed`), writes the resolved config to
WORKDIR/config.json and runs the task named by `config.task`:

  classify          sgn_jax.classification.train_and_evaluate   (SGN and baselines)
  noisy_classifier  lnrd.noisy_classifier.train_and_evaluate    (TDSM's time-dependent classifier)
  diffusion         lnrd.diffusion.train_and_evaluate           (DSM / TDSM)
  generate          lnrd.generate.generate                      (samples per class, npz + PNG)
  gmm_demo          lnrd.gmm_demo.run                           (DSM vs TDSM on a 2-D mixture)
  evaluate          lnrd.evaluate.evaluate                      (FID, IS, Density/Coverage, CAS, CW-*)
  discover          lnrd.discovery.train_and_evaluate           (suspects of mislabelling)
  pipeline          lnrd.pipeline.run                           ([corrector ->] classifier -> diffusion -> evaluate)

Each run writes its final metrics to WORKDIR/metrics.json and TensorBoard
summaries under WORKDIR. Override single values with `--config.key=value`.
"""

import logging as logging_std

from absl import app
from absl import flags
from absl import logging
from etils import epath
from ml_collections import config_flags

from sgn_jax.training import distributed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with arguments: configs/x.py:key=value,...",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


TASKS = {
    "classify": ("sgn_jax.classification", "train_and_evaluate"),
    "noisy_classifier": ("lnrd.noisy_classifier", "train_and_evaluate"),
    "diffusion": ("lnrd.diffusion", "train_and_evaluate"),
    "generate": ("lnrd.generate", "generate"),
    "gmm_demo": ("lnrd.gmm_demo", "run"),
    "evaluate": ("lnrd.evaluate", "evaluate"),
    "discover": ("lnrd.discovery", "train_and_evaluate"),
    "pipeline": ("lnrd.pipeline", "run"),
}


def _train_and_evaluate(task: str):
  """The `train_and_evaluate(config, workdir)` of `task` (imported lazily)."""
  if task not in TASKS:
    raise ValueError(f"config.task={task!r} is not known; allowed: {list(TASKS)}")
  import importlib  # pylint: disable=g-import-not-at-top
  module, function = TASKS[task]
  return getattr(importlib.import_module(module), function)


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of orbax and absl internals; warnings still pass."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or not any(
        part in record.pathname for part in ("/orbax/", "/etils/", "/clu/"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  distributed.maybe_initialize()
  import jax  # pylint: disable=g-import-not-at-top
  distributed.log_topology()
  config = FLAGS.config
  train_and_evaluate = _train_and_evaluate(config.task)
  workdir = FLAGS.workdir
  if jax.process_index() == 0:  # workdir may be local or gs://
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    (epath.Path(workdir) / "config.json").write_text(
        config.to_json_best_effort(indent=2, sort_keys=True))
  logging.info("config:\n%s", config)
  train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
