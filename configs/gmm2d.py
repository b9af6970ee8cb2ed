r"""2-D Gaussian mixture with symmetric label noise: the quick start, no download.

    python main.py --config=configs/gmm2d.py --workdir=/tmp/gmm2d

Trains a small MLP with cross-entropy on 4 well-separated Gaussian classes whose
labels are 40% symmetrically corrupted (seconds on a CPU), and reports clean
test accuracy. Arguments: those of `configs.common.classification_config`.
"""

from configs import common


def get_config(arg=None):
  config = common.classification_config("gmm2d", "sym", arg, epochs=10)
  config.optim.learning_rate = 0.05
  config.optim.weight_decay = 0.0
  config.log_every_steps = 50
  return config
