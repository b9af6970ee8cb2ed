r"""2-D Gaussian mixture with 40% symmetric label noise: the quick start, no download.

    python main.py --config=configs/gmm2d.py --workdir=/tmp/gmm2d

By default (`task=gmm_demo`) trains, on 4 Gaussian classes whose labels are 40%
symmetrically corrupted, a time-dependent noisy-label classifier, then a
class-conditional DSM and a TDSM diffusion model (small MLP score networks)
and compares their samples with the clean classes (per-class sliced
Wasserstein distance); writes metrics.json, weight_contours.png and
samples.png (about a minute on a CPU). Arguments: rate, seed, kimg,
classifier_kimg, estimator (see `configs.common.diffusion_config`).

    --config=configs/gmm2d.py:method=tdsm,task=diffusion   one stage on its own
    --config=configs/gmm2d.py:method=ce                    noisy-label classification

Demo keys: demo.samples_per_class (samples per class per model), demo.contour_sigmas
(noise levels of weight_contours.png), demo.noisy_label (the y~ plotted),
demo.exact_weights (also train TDSM with the mixture's exact posteriors as weights).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  pre = common.parse_arg(arg, lazy=True, method="", task="")
  if pre.task == "classify" or pre.method not in ("", *common.DIFFUSION_METHODS):
    config = common.classification_config(
        "gmm2d", "sym", ",".join(i for i in (arg or "").split(",")
                                 if i.split("=", 1)[0].strip() != "task"), epochs=10)
    config.optim.learning_rate = 0.05
    config.optim.weight_decay = 0.0
    config.log_every_steps = 50
    return config
  demo = not pre.task
  if demo:  # the demo runs every stage itself
    arg = ",".join(i for i in (arg or "").split(",") if i.split("=", 1)[0].strip() != "method")
  config = common.diffusion_config("gmm2d", "sym", arg, kimg=256.0, classifier_kimg=128.0)
  if demo:
    config.task = "gmm_demo"
  config.network.hidden = (128, 128, 128)
  config.log_every_steps = 200
  config.classifier.log_every_steps = 200
  config.demo = ml_collections.ConfigDict(dict(
      samples_per_class=1000, contour_sigmas=(0.05, 0.5, 1.0, 2.0), noisy_label=0,
      exact_weights=False))  # True: also TDSM with the exact posteriors
  return config
