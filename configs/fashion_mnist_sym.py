r"""fashion_mnist classification with sym label noise.

    python main.py --config=configs/fashion_mnist_sym.py --workdir=WORKDIR
    python main.py --config=configs/fashion_mnist_sym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

Classification (SGN and baselines) by default; `:method=dsm|tdsm` trains a diffusion model
(TDSM paper), `:task=noisy_classifier` its time-dependent classifier, `:task=generate`
samples. Arguments after the colon: see `configs.common.classification_config` and
`configs.common.diffusion_config`.
"""

from configs import common


def get_config(arg=None):
  return common.experiment_config("fashion_mnist", "sym", arg)
