"""Classification methods: how network outputs become a loss and predictions.

A method is selected by `config.method`; its hyper-parameters live in
`config.method_args` (defaults from SPEC §2, set by `configs/common.py`). Each
method says
  * how many outputs the network has (`num_outputs`),
  * which per-example state it keeps (`init_example_state`: row tables placed
    on the devices next to the data, sharded, checkpointed, gathered and
    scattered by example index inside the train step),
  * which of that state is trained by SGD alongside the net (`trainable_state`:
    name -> learning rate; SOP's u and v),
  * the per-example loss (`loss`), and
  * the predicted class log-probabilities (`log_probs`), used for accuracy,
    NLL and ECE.

Methods: ce, ls, gce, nan (stochastic label noise), ln (logistic-normal), het
(heteroscedastic head), elr, sop, nal, sgn.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from sgn_jax import baselines
from sgn_jax import ilr
from sgn_jax import losses


@dataclasses.dataclass(frozen=True)
class LossInputs:
  """What a method's loss sees for one batch.

  outputs: (B, num_outputs) of the net; labels: (B,) noisy labels;
  example_state: rows of the per-example state for this batch; soft_labels:
  (B, K) mixed label distributions under mixup (methods with
  `supports_soft_labels`), else None; ema_outputs:
  (B, num_outputs) of the EMA net in training mode (methods with
  `uses_ema_outputs`), else None; epoch: continuous epoch e = step /
  steps_per_epoch; key: a per-step key; num_classes: K.
  """
  outputs: jax.Array
  labels: jax.Array
  example_state: Mapping[str, jax.Array]
  ema_outputs: jax.Array | None
  epoch: jax.Array
  key: jax.Array
  num_classes: int
  soft_labels: jax.Array | None = None


SOP_NORMALIZATIONS = ("row", "batch")


class Method:
  """Cross-entropy; the base of every method."""
  name = "ce"
  uses_ema_outputs = False
  supports_soft_labels = True  # can train on mixup's soft labels (subclasses say False if not)
  defaults: dict[str, Any] = {}

  def __init__(self, args: Mapping[str, Any] | None = None):
    args = dict(args or {})
    unknown = sorted(set(args) - set(self.defaults))
    if unknown:
      raise ValueError(
          f"method {self.name!r} has no argument(s) {unknown}; its arguments are "
          f"{sorted(self.defaults)}")
    self.args = {**self.defaults, **args}

  @property
  def trainable_state(self) -> dict[str, float]:
    """Per-example state trained by plain SGD with the net: name -> learning rate."""
    return {}

  def num_outputs(self, num_classes: int) -> int:
    return num_classes

  def output_groups(self, num_classes: int) -> tuple[int, ...]:
    """The network outputs split into the parts the method reads apart (e.g. SGN's
    mean and scale parameters); one group for methods that read logits."""
    return (self.num_outputs(num_classes),)

  def init_example_state(self, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    del labels, num_classes
    return {}

  def loss(self, inputs: LossInputs):
    """Returns (per-example loss (B,), updated example-state rows, metrics)."""
    if inputs.soft_labels is not None:
      return losses.soft_cross_entropy(inputs.outputs, inputs.soft_labels), {}, {}
    return losses.softmax_cross_entropy(inputs.outputs, inputs.labels), {}, {}

  def log_probs(self, outputs: jax.Array, key: jax.Array | None = None) -> jax.Array:
    del key
    return jax.nn.log_softmax(outputs.astype(jnp.float32), axis=-1)


class LabelSmoothing(Method):
  name = "ls"
  supports_soft_labels = False
  defaults = {"smoothing": 0.1}

  def loss(self, inputs):
    return baselines.label_smoothing_cross_entropy(
        inputs.outputs, inputs.labels, self.args["smoothing"]), {}, {}


class GeneralizedCrossEntropy(Method):
  name = "gce"
  supports_soft_labels = False
  defaults = {"q": 0.7}

  def loss(self, inputs):
    return baselines.generalized_cross_entropy(
        inputs.outputs, inputs.labels, self.args["q"]), {}, {}


class StochasticLabelNoise(Method):
  name = "nan"
  supports_soft_labels = False
  defaults = {"sigma": 0.5}

  def loss(self, inputs):
    return baselines.stochastic_label_noise_cross_entropy(
        inputs.outputs, inputs.labels, inputs.key, self.args["sigma"]), {}, {}


class LogisticNormal(Method):
  """LN as the SGN authors ran it: outputs = [mean (K), r (K)] over K + 1 classes.

  The (K+1)-th class is a dummy reference class that is never a label
  (`baselines.logistic_normal_nll` picks this form from the shape); predictions
  are softmax([mean, 0]) over K + 1 entries, and accuracy, NLL and ECE are
  computed on them as the authors did.
  """
  name = "ln"
  supports_soft_labels = False
  defaults = {"smoothing": 0.1}

  def num_outputs(self, num_classes):
    return 2 * num_classes

  def output_groups(self, num_classes):
    return (num_classes, num_classes)  # mean, r

  def loss(self, inputs):
    mean, r = jnp.split(inputs.outputs.astype(jnp.float32), 2, axis=-1)
    return baselines.logistic_normal_nll(
        mean, r, inputs.labels, inputs.num_classes, self.args["smoothing"]), {}, {}

  def log_probs(self, outputs, key=None):
    mean, _ = jnp.split(outputs.astype(jnp.float32), 2, axis=-1)
    return jnp.log(jnp.clip(baselines.logistic_normal_predict_probs(mean), 1e-12, 1.0))


class Heteroscedastic(Method):
  """HET: the network ends in `HeteroscedasticHead`, whose output is log-probabilities."""
  name = "het"
  supports_soft_labels = False
  defaults = {"temperature": 1.3, "num_factors": 2, "num_mc_samples": 10000}

  def loss(self, inputs):
    log_p = inputs.outputs.astype(jnp.float32)
    return -jnp.take_along_axis(log_p, inputs.labels[:, None], axis=-1)[:, 0], {}, {}

  def log_probs(self, outputs, key=None):
    return outputs.astype(jnp.float32)


class EarlyLearningRegularization(Method):
  """ELR: a per-example target memory t and CE + lambda * log(1 - <t, p>)."""
  name = "elr"
  supports_soft_labels = False
  defaults = {"beta": 0.7, "lam": 3.0}

  def init_example_state(self, labels, num_classes):
    return {"targets": np.asarray(baselines.elr_init_targets(len(labels), num_classes))}

  def loss(self, inputs):
    probs = jax.nn.softmax(inputs.outputs.astype(jnp.float32), axis=-1)
    targets = baselines.elr_update_targets(
        inputs.example_state["targets"], probs, self.args["beta"])
    per_example = baselines.elr_loss(inputs.outputs, inputs.labels, targets, self.args["lam"])
    return per_example, {"targets": targets}, {}


class SparseOverParameterization(Method):
  """SOP: per-example u (B,1) and v (B,K) trained by SGD beside the net.

  `normalization` (`baselines.sop_loss`): "row" (default), the SOP paper's per-example
  L1 normalisation of the corrected prediction; "batch", the SGN authors' TF code
  (`tf.norm(prediction, ord=1)` without an axis, src/cifar/sop.py:405-406), which
  divides by the whole batch's L1 norm and so floors the probabilities at about
  batch_size * 1e-4 (their CIFAR / CIFAR-N numbers were made with it).
  """
  name = "sop"
  supports_soft_labels = False
  defaults = {"lr_u": 1.0, "lr_v": 10.0, "init_std": 1e-8, "normalization": "row"}

  def __init__(self, args=None):
    super().__init__(args)
    if self.args["normalization"] not in SOP_NORMALIZATIONS:
      raise ValueError(
          f"method_args.normalization={self.args['normalization']!r} is not known for "
          f"method 'sop'; allowed: {list(SOP_NORMALIZATIONS)} (row: the SOP paper's; "
          "batch: the SGN authors' whole-batch L1 norm)")

  @property
  def trainable_state(self):
    return {"u": self.args["lr_u"], "v": self.args["lr_v"]}

  def init_example_state(self, labels, num_classes):
    u, v = baselines.sop_init_params(
        jax.random.PRNGKey(0), len(labels), num_classes, std=self.args["init_std"])
    return {"u": np.asarray(u), "v": np.asarray(v)}

  def loss(self, inputs):
    per_example = baselines.sop_loss(
        inputs.outputs, inputs.labels, inputs.example_state["u"], inputs.example_state["v"],
        inputs.num_classes, normalization=self.args["normalization"])
    return per_example, {}, {}


class NoiseAttentionLearning(Method):
  """NAL: K logits + 1 attention output, a per-example label memory."""
  name = "nal"
  supports_soft_labels = False
  defaults = {"lam": 10.0, "momentum": 0.98}

  def num_outputs(self, num_classes):
    return num_classes + 1

  def init_example_state(self, labels, num_classes):
    return {"memory": np.asarray(baselines.nal_init_memory(labels, num_classes))}

  def loss(self, inputs):
    logits = inputs.outputs[:, :inputs.num_classes].astype(jnp.float32)
    memory = baselines.nal_update_memory(
        inputs.example_state["memory"], jax.nn.softmax(logits, axis=-1),
        self.args["momentum"])
    per_example = baselines.nal_loss(inputs.outputs, inputs.labels, memory, lam=self.args["lam"])
    return per_example, {"memory": memory}, {}

  def log_probs(self, outputs, key=None):
    return jax.nn.log_softmax(outputs[:, :-1].astype(jnp.float32), axis=-1)


class ShiftedGaussianNoise(Method):
  """SGN: regression on ilr(LS(y)) with a shifted Gaussian noise model.

  outputs = [mu (K-1), scale parameters (K-1 for "rank_one"/"diagonal", 1 for
  "isotropic")]; the shift uses the EMA net's mu on the same batch.
  """
  name = "sgn"
  uses_ema_outputs = True
  supports_soft_labels = True
  defaults = {"gamma": 0.001, "alpha": 0.995, "covariance": "rank_one",
              "loss_reweighting": True, "label_correction": True, "ema_prediction": True,
              "target_scale": 1.0}

  def _scale_dim(self, num_classes):
    return 1 if self.args["covariance"] == "isotropic" else num_classes - 1

  def num_outputs(self, num_classes):
    return num_classes - 1 + self._scale_dim(num_classes)

  def output_groups(self, num_classes):
    return (num_classes - 1, self._scale_dim(num_classes))  # mu, scale parameters

  def loss(self, inputs):
    k1 = inputs.num_classes - 1
    outputs = inputs.outputs.astype(jnp.float32)
    mean, scale = outputs[:, :k1], outputs[:, k1:]
    ema_mean = inputs.ema_outputs[:, :k1].astype(jnp.float32)
    per_example = losses.sgn_loss(
        mean, scale, inputs.labels, ema_mean, num_classes=inputs.num_classes,
        gamma=self.args["gamma"], alpha=self.args["alpha"], epoch=inputs.epoch,
        covariance=self.args["covariance"],
        loss_reweighting=self.args["loss_reweighting"],
        label_correction=self.args["label_correction"], soft_labels=inputs.soft_labels,
        target_scale=self.args["target_scale"])
    return per_example, {}, {}

  def log_probs(self, outputs, key=None):
    k1 = (outputs.shape[-1] - 1) if self.args["covariance"] == "isotropic" \
        else outputs.shape[-1] // 2
    return ilr.ilr_inverse_log(outputs[:, :k1].astype(jnp.float32) / self.args["target_scale"])


METHODS = {m.name: m for m in (
    Method, LabelSmoothing, GeneralizedCrossEntropy, StochasticLabelNoise, LogisticNormal,
    Heteroscedastic, EarlyLearningRegularization, SparseOverParameterization,
    NoiseAttentionLearning, ShiftedGaussianNoise)}


def get_method(name: str, args: Mapping[str, Any] | None = None) -> Method:
  """The method `name` with `args` (unknown names or arguments are ValueErrors)."""
  if name not in METHODS:
    raise ValueError(f"method={name!r} is not known; allowed: {sorted(METHODS)}")
  return METHODS[name](args)
