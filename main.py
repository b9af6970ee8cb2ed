r"""Entry point: `python main.py --config=configs/<file>.py[:args] --workdir=DIR`.

Initialises multi-process JAX when the environment asks for it (see
`sgn_jax.training.distributed`) and runs `train_and_evaluate(config, workdir)` of
the task named by `config.task`:

  classify          sgn_jax.tasks.classify       (SGN and baselines)
  noisy_classifier  lnrd.tasks.noisy_classifier  (TDSM's time-dependent classifier)
  diffusion         lnrd.tasks.diffusion         (DSM / TDSM)
  generate          lnrd.tasks.generate          (samples per class, npz + PNG)
  gmm_demo          lnrd.tasks.gmm_demo          (DSM vs TDSM on a 2-D mixture)
  evaluate          lnrd.tasks.evaluate          (FID, IS, Density/Coverage, CAS, CW-*)
  discover          lnrd.tasks.discover          (suspects of mislabelling)
  pipeline          lnrd.tasks.pipeline          ([corrector ->] classifier -> diffusion -> evaluate)

The task validates the config, then writes WORKDIR/config.json and run.json
(`sgn_jax.runs`), its checkpoints, TensorBoard summaries and, at the end,
WORKDIR/metrics.json. Override single values with `--config.key=value`.
Errors the user caused (a config value, the data, the workdir, a run that does
not match) are printed as `error: <message>` without a traceback, exit status 2
(`sgn_jax.tasks.cli`).
"""

import logging as logging_std

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from sgn_jax.tasks import cli
from sgn_jax.training import distributed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with arguments: configs/x.py:key=value,...",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


TASKS = {
    "classify": "sgn_jax.tasks.classify",
    "noisy_classifier": "lnrd.tasks.noisy_classifier",
    "diffusion": "lnrd.tasks.diffusion",
    "generate": "lnrd.tasks.generate",
    "gmm_demo": "lnrd.tasks.gmm_demo",
    "evaluate": "lnrd.tasks.evaluate",
    "discover": "lnrd.tasks.discover",
    "pipeline": "lnrd.tasks.pipeline",
}


def _train_and_evaluate(task: str):
  """The `train_and_evaluate(config, workdir)` of `task` (imported lazily)."""
  if task not in TASKS:
    cli.fail(f"config.task={task!r} is not known; allowed: {list(TASKS)} (choose the task "
             "with the config argument, e.g. --config=configs/mnist_sym.py:task=diffusion)")
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(TASKS[task]).train_and_evaluate


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
  distributed.log_topology()
  config = cli.load_config(FLAGS)
  train_and_evaluate = _train_and_evaluate(config.task)
  logging.info("config:\n%s", config)
  cli.run_user_errors(train_and_evaluate, config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
