"""Baseline losses of the SGN comparison (Englesson & Azizpour, ICLR 2024), and ECE.

Small pure `jnp` functions. Every loss returns one value per example (shape
`labels.shape`); reduce it yourself (the authors take the batch mean). All are
safe under `jit`, `vmap` and `grad`. Logits/probabilities are computed in
float32 whatever the input dtype.

The exact forms are those of the SGN authors' TensorFlow re-implementations,
which they ran for the paper's tables (`ErikEnglesson/SGN`, `src/cifar/*.py`),
checked against each method's original code. Where the two differ the docstring
says so. Defaults are the authors' flag defaults (their paper says
hyper-parameters were searched per setting, so a config may override them).

  CE   `sgn_jax.losses.softmax_cross_entropy`
  LS   `label_smoothing_cross_entropy`                      (deterministic.py)
  GCE  `generalized_cross_entropy`                          (gce.py)
  NAN  `stochastic_label_noise_cross_entropy`               (sln.py)
  LN   `logistic_normal_nll`, `logistic_normal_predict_probs` (ln.py)
  ELR  `elr_update_targets`, `elr_loss`                     (elr.py)
  SOP  `sop_loss` (+ `sop_init_params`, `sop_sgd_update`)    (sop.py)
  NAL  `nal_update_memory`, `nal_loss` (+ helpers)           (nal.py)
  HET  `sgn_jax.models.heteroscedastic.HeteroscedasticHead` + CE on its output
  ECE  `expected_calibration_error`, `ece_bin_statistics`, `ece_from_bin_statistics`

Per-example state (ELR targets, SOP u/v, NAL memory) lives outside these
functions in arrays indexed by a training example's index; the caller gathers
the batch rows, calls the update/loss, and scatters the rows back. The SGN code
allocates 50,000 rows (CIFAR train set) and indexes them by example id.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sgn_jax.losses import softmax_cross_entropy

_F32 = jnp.float32


def _one_hot(labels: jax.Array, num_classes: int) -> jax.Array:
  return jax.nn.one_hot(labels.astype(jnp.int32), num_classes, dtype=_F32)


def _log_softmax(logits: jax.Array) -> jax.Array:
  return jax.nn.log_softmax(logits.astype(_F32), axis=-1)


# ----------------------------------------------------------------------------
# LS, GCE, SLN
# ----------------------------------------------------------------------------


def label_smoothing_cross_entropy(logits: jax.Array, labels: jax.Array,
                                  smoothing: float) -> jax.Array:
  """LS: cross-entropy against the label-smoothed one-hot target.

      t = (1 - smoothing) * onehot(y) + smoothing / K
      loss = -sum_k t_k log softmax(logits)_k

  As Keras `categorical_crossentropy(..., from_logits=True,
  label_smoothing=smoothing)`, which the SGN authors' `deterministic.py` calls
  (flag `--label_smoothing`, default 0; the LS value of the paper's runs is not
  in the code: it was searched). smoothing=0 is plain CE.

  logits: (..., K); labels: (...) int. Returns (...) float32.
  """
  num_classes = logits.shape[-1]
  target = (1.0 - smoothing) * _one_hot(labels, num_classes) + smoothing / num_classes
  return -jnp.sum(target * _log_softmax(logits), axis=-1)


def generalized_cross_entropy(logits: jax.Array, labels: jax.Array,
                              q: float = 0.7) -> jax.Array:
  """GCE (Zhang & Sabuncu, 2018): (1 - p_y^q) / q.

  p_y = clip(softmax(logits)_y, 1e-7, 1), as the SGN authors' `gce.py` clips
  the probabilities before the power (so an example with p_y < 1e-7 gives no
  gradient). q = 0.7 (their flag default, and SPEC).

  logits: (..., K); labels: (...) int. Returns (...) float32.
  """
  log_p = jnp.take_along_axis(_log_softmax(logits),
                              labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  p_y = jnp.clip(jnp.exp(log_p), 1e-7, 1.0)
  return (1.0 - p_y ** q) / q


def stochastic_label_noise_cross_entropy(logits: jax.Array, labels: jax.Array,
                                         key: jax.Array,
                                         sigma: float = 0.5) -> jax.Array:
  """SLN (Chen et al., ICLR 2021), called "NAN" in the SGN paper.

      t = onehot(y) + sigma * eps,   eps ~ N(0, I_K) fresh every step
      loss = -sum_k t_k log softmax(logits)_k

  The noisy target is used UNNORMALISED (it may be negative and does not sum
  to 1): chenpf1025/SLN `utils.py::train_noise` adds `sigma*randn` to the
  one-hot and takes `-sum(log_softmax * target)`; the SGN `sln.py` passes the
  same unnormalised target to Keras `categorical_crossentropy(from_logits=True)`.
  The loss is linear in t, so E_eps[loss] = CE exactly. sigma = 0.5 (SGN flag
  default). Plain SLN, without SLN's optional momentum/EMA variant.

  logits: (..., K); labels: (...) int; key: a PRNG key (draw a new one per
  step, e.g. `fold_in(key, step)`). Returns (...) float32.
  """
  num_classes = logits.shape[-1]
  onehot = _one_hot(labels, num_classes)
  target = onehot + sigma * jax.random.normal(key, onehot.shape, _F32)
  return -jnp.sum(target * _log_softmax(logits), axis=-1)


# ----------------------------------------------------------------------------
# LN: logistic-normal likelihood
# ----------------------------------------------------------------------------


def _ln_simplex_size(dim: int, num_classes: int) -> int:
  if dim == num_classes:
    return num_classes + 1
  if dim == num_classes - 1:
    return num_classes
  raise ValueError(
      f"logistic_normal: mean has {dim} entries; expected num_classes={num_classes} "
      f"(the SGN authors' form with a dummy reference class) or num_classes-1="
      f"{num_classes - 1} (plain alr with the last class as reference).")


def logistic_normal_nll(mean: jax.Array, r: jax.Array, labels: jax.Array,
                        num_classes: int, smoothing: float = 0.1, *,
                        diag_scale: float = 1.0,
                        simplex_density: bool = False) -> jax.Array:
  """LN (Englesson & Azizpour, TMLR 2023): Gaussian NLL in additive-log-ratio space.

  With M simplex entries and D = M - 1 Gaussian dimensions:

      t     = (1 - smoothing) * onehot_M(y) + smoothing / M        (LS target)
      z     = alr(t) = log t[:D] - log t[M-1]                       (last = reference)
      S     = diag_scale * I_D + r r^T,   Sigma = S S^T             (scale, not covariance)
      nll   = 1/2 |S^-1 (z - mean)|^2 + log det S + D/2 log(2 pi)

  with S^-1 d = (d - r (r.d) / (c + |r|^2)) / c and
  log det S = D log c + log(1 + |r|^2 / c), c = diag_scale.

  Which M: decided by `mean.shape[-1]`.
  * `mean` with K = num_classes entries: the form the SGN authors RAN
    (`ln.py`): the network outputs K locations and K scale entries, the
    bijector is TFP `SoftmaxCentered` (appends a 0 logit), and the targets are
    one-hot over K+1 classes, so class K is a dummy reference class that is
    never a label; the smoothing mass is smoothing/(K+1).
  * `mean` with K-1 entries: the textbook form, alr over the K classes with
    class K-1 as reference.

  Covariance: TFP `MultivariateNormalDiagPlusLowRank(loc=mean,
  scale_diag=min_scale*ones, scale_perturb_factor=r[..., None])`, i.e. the
  SCALE is identity plus rank one, so Sigma = (I + r r^T)^2 = I + (2+|r|^2) r r^T.
  Their `min_scale` is annealed from `max_scale` to `min_scale`, both 1.0 by
  default (so c = 1); `temperature` (a `Scale(1/T)` before the softmax) is 1.0.
  Label smoothing 0.1 (their default; it must be > 0).

  simplex_density=True adds the log-Jacobian of the softmax-centred bijector,
  sum_m log t_m + 1/2 log M, so the value is -log p(t) of the logistic-normal
  density on the simplex, as TFP's `TransformedDistribution.log_prob` that the
  authors minimised (constant in the parameters: the gradients are the same).

  mean, r: (..., D); labels: (...) int in [0, num_classes). Returns (...) float32.
  """
  mean = mean.astype(_F32)
  r = r.astype(_F32)
  dim = mean.shape[-1]
  size = _ln_simplex_size(dim, num_classes)
  if isinstance(smoothing, (int, float)) and not smoothing > 0:
    raise ValueError(f"logistic_normal_nll needs smoothing > 0; got {smoothing}.")
  target = (1.0 - smoothing) * _one_hot(labels, size) + smoothing / size
  log_t = jnp.log(target)
  z = log_t[..., :dim] - log_t[..., dim:]
  d = z - mean
  c = diag_scale
  r_sq = jnp.sum(r * r, axis=-1, keepdims=True)
  s_inv_d = (d - r * jnp.sum(r * d, axis=-1, keepdims=True) / (c + r_sq)) / c
  maha = jnp.sum(s_inv_d * s_inv_d, axis=-1)
  log_det = dim * jnp.log(c) + jnp.log1p(r_sq[..., 0] / c)
  nll = 0.5 * maha + log_det + 0.5 * dim * math.log(2.0 * math.pi)
  if simplex_density:
    nll = nll + jnp.sum(log_t, axis=-1) + 0.5 * math.log(size)
  return nll


def logistic_normal_predict_probs(mean: jax.Array) -> jax.Array:
  """Inverse alr of the location: softmax([mean, 0]), shape (..., D + 1).

  As the authors' prediction `bijector.forward(loc)` (TFP SoftmaxCentered).
  For the SGN-authors' form (D = K) the output has K+1 entries and the last is
  the dummy class; they evaluated accuracy, NLL and ECE on this K+1 vector
  (slice `[..., :K]` and renormalise for a K-class distribution).
  """
  mean = mean.astype(_F32)
  zeros = jnp.zeros(mean.shape[:-1] + (1,), _F32)
  return jax.nn.softmax(jnp.concatenate([mean, zeros], axis=-1), axis=-1)


# ----------------------------------------------------------------------------
# ELR: early-learning regularisation
# ----------------------------------------------------------------------------


def elr_init_targets(num_examples: int, num_classes: int) -> jax.Array:
  """ELR target memory: zeros (num_examples, K) float32 (ELR `loss.py`, SGN `elr.py`)."""
  return jnp.zeros((num_examples, num_classes), _F32)


def elr_update_targets(targets: jax.Array, probs: jax.Array,
                       beta: float = 0.7) -> jax.Array:
  """ELR (Liu et al., NeurIPS 2020) temporal-ensemble target update.

      p_hat = sg(clip(p, 1e-4, 1 - 1e-4));  p_hat = p_hat / sum_k p_hat_k
      t     <- beta * t + (1 - beta) * p_hat

  shengliu66/ELR `ELR/model/loss.py::elr_loss.forward` and SGN `elr.py`.
  beta = 0.7 (SGN flag default, from ELR's `config_cifar10.json`).
  Update the batch rows FIRST, then pass the updated rows to `elr_loss` (both
  codes do it in this order). No gradient flows through the result.

  targets: (B, K) rows of the memory; probs: (B, K) softmax of the logits.
  Returns the new rows (B, K) float32.
  """
  p = jnp.clip(jax.lax.stop_gradient(probs.astype(_F32)), 1e-4, 1.0 - 1e-4)
  p = p / jnp.sum(p, axis=-1, keepdims=True)
  return beta * jax.lax.stop_gradient(targets.astype(_F32)) + (1.0 - beta) * p


def elr_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array,
             lam: float = 3.0) -> jax.Array:
  """ELR loss per example: CE + lam * log(1 - <t, p>).

  p = clip(softmax(logits), 1e-4, 1 - 1e-4) WITH gradient (not renormalised);
  t = the already-updated target rows (`elr_update_targets`), stop-gradient.
  The batch mean of this equals `ce_loss + lambda * elr_reg` of ELR's
  `loss.py` / `loss = nll + reg_scale * elr_loss` of SGN `elr.py`.
  lam = 3.0 (SGN `--reg_scale` default, from ELR's CIFAR-10 config).

  logits: (B, K); labels: (B,) int; targets: (B, K). Returns (B,) float32.
  """
  p = jnp.clip(jax.nn.softmax(logits.astype(_F32), axis=-1), 1e-4, 1.0 - 1e-4)
  t = jax.lax.stop_gradient(targets.astype(_F32))
  reg = jnp.log(1.0 - jnp.sum(t * p, axis=-1))
  return softmax_cross_entropy(logits, labels) + lam * reg


# ----------------------------------------------------------------------------
# SOP: sparse over-parameterisation
# ----------------------------------------------------------------------------


def sop_init_params(key: jax.Array, num_examples: int, num_classes: int,
                    std: float = 1e-8) -> tuple[jax.Array, jax.Array]:
  """SOP per-example parameters u: (N, 1), v: (N, K), both ~ N(0, std^2), std 1e-8.

  SGN `sop.py` (`tf.random.normal(..., stddev=1e-8)`); SOP's config
  (`reparam_arch.args`: mean 0, std 1e-8). Not part of the L2 penalty.
  """
  ku, kv = jax.random.split(key)
  u = std * jax.random.normal(ku, (num_examples, 1), _F32)
  v = std * jax.random.normal(kv, (num_examples, num_classes), _F32)
  return u, v


def sop_sgd_update(u: jax.Array, v: jax.Array, grad_u: jax.Array,
                   grad_v: jax.Array, lr_u: float = 1.0,
                   lr_v: float = 10.0) -> tuple[jax.Array, jax.Array]:
  """Plain SGD on the gathered u, v rows: u - lr_u * g_u, v - lr_v * g_v.

  The gradients are those of the BATCH-MEAN loss (so each row's gradient
  carries a 1/B), as in SGN `sop.py` (`scatter_add(-grad * lr)`) and SOP's
  `train.py` (torch SGD, momentum 0, weight decay 0). lr_u = 1, lr_v = 10.
  """
  return u - lr_u * grad_u, v - lr_v * grad_v


def sop_loss(logits: jax.Array, labels: jax.Array, u: jax.Array, v: jax.Array,
             num_classes: int, *, eps: float = 1e-4,
             normalization: str = "row") -> jax.Array:
  """SOP (Liu et al., ICML 2022) per-example loss: CE on the corrected prediction + MSE.

      Y  = onehot(y)
      U2 = clip(u^2 * Y, 0, 1)              (u: (B, 1), only the label entry)
      V2 = clip(v^2 * (1 - Y), 0, 1)        (v: (B, K), only off-label entries)
      q  = max(softmax(logits) + U2 - sg(V2), eps)
      q  = q / max(sum_k q_k, eps)          (torch F.normalize(p=1), per row)
      q  = clip(q, eps, 1)
      CE  = -log q_y
      MSE = sum_k (Y - (onehot(argmax sg(logits)) + U2 - V2))_k^2
      loss = CE + MSE

  shengliu66/SOP `model/loss.py::overparametrization_loss.forward` (without
  its consistency and class-balance terms, which SGN's `sop.py` also omits).
  Gradients: the net only through softmax in CE; u through CE and MSE; v only
  through MSE (V2 is stop-gradient in CE). Train u, v with `sop_sgd_update`
  (lr_u = 1, lr_v = 10) on the gradient of the batch mean; initialise them
  with `sop_init_params` (N(0, 1e-8^2)).

  normalization="batch" reproduces the SGN authors' TF code instead: there
  `tf.norm(prediction, ord=1)` has no axis, so q is divided by the L1 norm of
  the WHOLE batch (about B), then clipped to [eps, 1] (entries below about
  B*eps of the unnormalised q are floored), then Keras'
  `categorical_crossentropy(from_logits=False)` renormalises each row and clips
  it to [1e-7, 1 - 1e-7]. With this option the value of one example depends
  on the batch (and on its split across devices).

  logits: (B, K); labels: (B,) int; u: (B, 1); v: (B, K). Returns (B,) float32.
  """
  if normalization not in ("row", "batch"):
    raise ValueError(f"sop_loss normalization must be 'row' or 'batch'; got "
                     f"{normalization!r}.")
  y = _one_hot(labels, num_classes)
  u2 = jnp.clip(u.astype(_F32) ** 2 * y, 0.0, 1.0)
  v2 = jnp.clip(v.astype(_F32) ** 2 * (1.0 - y), 0.0, 1.0)
  logits = logits.astype(_F32)
  q = jnp.maximum(jax.nn.softmax(logits, axis=-1) + u2 - jax.lax.stop_gradient(v2), eps)
  if normalization == "row":
    q = q / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), eps)
    q = jnp.clip(q, eps, 1.0)
  else:
    q = q / jnp.maximum(jnp.sum(jnp.abs(q)), eps)
    q = jnp.clip(q, eps, 1.0)
    q = q / jnp.sum(q, axis=-1, keepdims=True)
    q = jnp.clip(q, 1e-7, 1.0 - 1e-7)
  ce = -jnp.sum(y * jnp.log(q), axis=-1)
  hard = _one_hot(jnp.argmax(jax.lax.stop_gradient(logits), axis=-1), num_classes)
  mse = jnp.sum(jnp.square(y - (hard + u2 - v2)), axis=-1)
  return ce + mse


# ----------------------------------------------------------------------------
# NAL: noise attention learning
# ----------------------------------------------------------------------------


def nal_init_memory(labels: jax.Array, num_classes: int) -> jax.Array:
  """NAL label memory initialised to the (noisy) one-hot labels, (N, K) float32.

  SGN `nal.py::buffer_init_step`; MacLLL/NAL `loss.py` (`soft_labels`).
  """
  return _one_hot(labels, num_classes)


def nal_update_memory(memory: jax.Array, probs: jax.Array,
                      momentum: float = 0.98) -> jax.Array:
  """NAL memory update: m <- clip(momentum * m + (1 - momentum) * sg(p), 1e-4, 1).

  p = softmax of the K class logits (unclipped, stop-gradient). As SGN `nal.py`:
  every step, for every example of the batch, momentum 0.98 (`--alpha`). The
  original NAL (MacLLL/NAL `loss.py`) updates only after `es` epochs, every 10th
  epoch and where tau > threshold; the SGN authors dropped these extras (their
  comment in `nal.py`). Update first, then pass the new rows to `nal_loss`.

  memory: (B, K) rows; probs: (B, K). Returns the new rows (B, K) float32.
  """
  m = (momentum * jax.lax.stop_gradient(memory.astype(_F32))
       + (1.0 - momentum) * jax.lax.stop_gradient(probs.astype(_F32)))
  return jnp.clip(m, 1e-4, 1.0)


def nal_split_outputs(outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(..., K+1) network outputs -> (class logits (..., K), attention logit (...))."""
  return outputs[..., :-1], outputs[..., -1]


def nal_predict_probs(outputs: jax.Array) -> jax.Array:
  """Class prediction of a NAL net: softmax over the first K outputs (tau ignored)."""
  return jax.nn.softmax(outputs[..., :-1].astype(_F32), axis=-1)


def nal_loss(outputs: jax.Array, labels: jax.Array, memory: jax.Array, *,
             lam: float = 10.0, use_memory: bool = True,
             renormalize: bool = True) -> jax.Array:
  """NAL (Lu et al., 2022) per-example loss on a net with K + 1 outputs.

  The last output h is the attention (confidence) logit, tau = sigmoid(h)
  (SGN `nal.py` builds the WRN with `num_classes + 1` outputs and splits
  `[K, 1]`; the original has a separate confidence head):

      p   = clip(softmax(logits), 1e-12, 1 - 1e-12)
      tau = clip(sigmoid(h), 1e-12, 1 - 1e-12)
      t   = sg(memory rows, already updated by `nal_update_memory`)
      q   = clip(tau * p + (1 - tau) * t, 1e-7, 1)
      q   = clip(q / sum_k q_k, 1e-7, 1 - 1e-7)    (renormalize=True, Keras)
      loss = -sum_k t_k log q_k  +  lam * (-log tau)

  lam = 10 (SGN `--reg_scale` default; NAL's CIFAR default). renormalize=True
  is the SGN TF code (Keras `categorical_crossentropy(from_logits=False)`
  rescales q per row); False is the original PyTorch `loss.py`.
  use_memory=False uses t = clip(onehot(y), 1e-4, 1) instead: the original
  NAL's target before its label-update epoch `es`. The original's reverse-CE
  term (beta, default 0 in its `train_cifar.py`) is not included; SGN omits
  it too.

  outputs: (B, K+1); labels: (B,) int; memory: (B, K). Returns (B,) float32.
  """
  outputs = outputs.astype(_F32)
  logits, h = nal_split_outputs(outputs)
  num_classes = logits.shape[-1]
  p = jnp.clip(jax.nn.softmax(logits, axis=-1), 1e-12, 1.0 - 1e-12)
  tau = jnp.clip(jax.nn.sigmoid(h), 1e-12, 1.0 - 1e-12)[..., None]
  if use_memory:
    t = jax.lax.stop_gradient(memory.astype(_F32))
  else:
    t = jnp.clip(_one_hot(labels, num_classes), 1e-4, 1.0)
  q = jnp.clip(tau * p + (1.0 - tau) * t, 1e-7, 1.0)
  if renormalize:
    q = jnp.clip(q / jnp.sum(q, axis=-1, keepdims=True), 1e-7, 1.0 - 1e-7)
  ce = -jnp.sum(t * jnp.log(q), axis=-1)
  return ce - lam * jnp.log(tau[..., 0])


# ----------------------------------------------------------------------------
# ECE
# ----------------------------------------------------------------------------


def ece_bin_statistics(probs: jax.Array, labels: jax.Array, num_bins: int = 15,
                       mask: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-bin sums for the expected calibration error; sum them over batches/devices.

  confidence = max_k p_k, prediction = argmax_k p_k; bin = clip(floor(confidence
  * num_bins), 0, num_bins - 1): equal-width bins [i/M, (i+1)/M), 1.0 in the last,
  as `tf.histogram_fixed_width_bins` in robustness_metrics' ECE that the SGN
  authors used (num_bins 15).

  probs: (..., K); labels: (...) int; mask: (...) bool/float weights (padding = 0).
  Returns (counts, confidence_sums, correct_sums), each (num_bins,) float32.
  """
  probs = probs.astype(_F32).reshape(-1, probs.shape[-1])
  labels = labels.reshape(-1)
  w = (jnp.ones(labels.shape, _F32) if mask is None
       else mask.reshape(-1).astype(_F32))
  conf = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels.astype(jnp.int32)).astype(_F32)
  idx = jnp.clip(jnp.floor(conf * num_bins), 0, num_bins - 1).astype(jnp.int32)
  zeros = jnp.zeros((num_bins,), _F32)
  return (zeros.at[idx].add(w), zeros.at[idx].add(w * conf),
          zeros.at[idx].add(w * correct))


def ece_from_bin_statistics(counts: jax.Array, confidence_sums: jax.Array,
                            correct_sums: jax.Array) -> jax.Array:
  """ECE = sum_b (n_b / n) |acc_b - conf_b| = sum_b |correct_b - conf_sum_b| / n (0 if n = 0)."""
  total = jnp.sum(counts)
  gap = jnp.sum(jnp.abs(correct_sums - confidence_sums))
  return jnp.where(total > 0, gap / jnp.maximum(total, 1e-12), 0.0)


def expected_calibration_error(probs: jax.Array, labels: jax.Array,
                               num_bins: int = 15,
                               mask: jax.Array | None = None) -> jax.Array:
  """ECE of one batch (Guo et al., 2017), equal-width confidence bins; scalar float32."""
  return ece_from_bin_statistics(*ece_bin_statistics(probs, labels, num_bins, mask))
