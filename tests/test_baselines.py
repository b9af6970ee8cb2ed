"""Tests for sgn_jax.baselines and the HET head against independent NumPy references.

Compilation dominates the run time on CPU, so all loss values for one shape
come from ONE jitted call (`_case`, cached), which the per-baseline tests then
check; gradients and the HET head have their own jitted calls. The NumPy
references are written from the formulas, in float64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from sgn_jax import baselines as bl
from sgn_jax.losses import softmax_cross_entropy
from sgn_jax.models.heteroscedastic import HeteroscedasticHead

SHAPES = [(7, 2), (16, 10), (5, 100)]      # (batch, K)
SMOOTHINGS = (0.0, 0.1, 0.4)
QS = (0.7, 0.3, 1.0)
LN_SETTINGS = ((0.1, 1.0), (0.2, 0.5))    # (smoothing, diag_scale)
NAL_VARIANTS = ((True, True), (True, False), (False, True))   # (use_memory, renormalize)
N_ECE = 300


def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_onehot(labels, k):
  return np.eye(k)[labels]


def _make_inputs(batch, k):
  rng = np.random.default_rng(1000 * k + batch)
  f32 = lambda a: np.asarray(a, np.float32)
  u = 0.5 * rng.standard_normal((batch, 1))
  u[0, 0] = 1.5                                 # u^2 > 1: SOP's clip is active
  return dict(
      logits=f32(6.0 * rng.standard_normal((batch, k))),   # some p_y < 1e-7 (GCE clip)
      mild=f32(rng.standard_normal((batch, k))),
      labels=rng.integers(0, k, size=batch).astype(np.int32),
      mean_dummy=f32(rng.standard_normal((batch, k))),
      r_dummy=f32(0.5 * rng.standard_normal((batch, k))),
      mean_alr=f32(rng.standard_normal((batch, k - 1))),
      r_alr=f32(0.5 * rng.standard_normal((batch, k - 1))),
      targets_rand=f32(0.9 * rng.dirichlet(np.ones(k), size=batch)),
      u=f32(u),
      v=f32(0.3 * rng.standard_normal((batch, k))),
      nal_outputs=f32(3.0 * rng.standard_normal((batch, k + 1))),
      memory_rand=f32(np.clip(rng.dirichlet(np.ones(k), size=batch), 1e-4, 1)),
      ece_probs=f32(np_softmax(2.0 * rng.standard_normal((N_ECE, k)))),
      ece_labels=rng.integers(0, k, size=N_ECE).astype(np.int32),
  )


def _all_outputs(x, key, k):
  """Every baseline function on one shape's inputs (traced once per shape)."""
  logits, labels = x["logits"], x["labels"]
  probs = jax.nn.softmax(logits)
  out = {}
  out["ls"] = jnp.stack([bl.label_smoothing_cross_entropy(logits, labels, s)
                         for s in SMOOTHINGS])
  out["gce"] = jnp.stack([bl.generalized_cross_entropy(logits, labels, q) for q in QS])
  out["gce_small_q"] = bl.generalized_cross_entropy(x["mild"], labels, 1e-4)
  out["sln"] = jnp.stack([bl.stochastic_label_noise_cross_entropy(logits, labels, key, s)
                          for s in (0.0, 0.5, 2.0)])
  out["sln_noise"] = jax.random.normal(key, logits.shape)
  for form in ("dummy", "alr"):
    out[f"ln_{form}"] = jnp.stack([
        bl.logistic_normal_nll(x[f"mean_{form}"], x[f"r_{form}"], labels, k, s,
                               diag_scale=c) for s, c in LN_SETTINGS])
  out["ln_simplex"] = bl.logistic_normal_nll(x["mean_dummy"], x["r_dummy"], labels, k,
                                             simplex_density=True)
  t = bl.elr_init_targets(logits.shape[0], k)
  elr_t = []
  for _ in range(3):
    t = bl.elr_update_targets(t, probs, 0.7)
    elr_t.append(t)
  out["elr_targets"] = jnp.stack(elr_t)
  out["elr_loss"] = bl.elr_loss(logits, labels, x["targets_rand"], 3.0)
  out["sop"] = jnp.stack([bl.sop_loss(x["mild"], labels, x["u"], x["v"], k,
                                      normalization=n) for n in ("row", "batch")])
  m = bl.nal_init_memory(labels, k)
  out["nal_memory_init"] = m
  nal_m = []
  for step in range(3):
    m = bl.nal_update_memory(m, jax.nn.softmax(logits + step * jnp.arange(k)), 0.98)
    nal_m.append(m)
  out["nal_memory"] = jnp.stack(nal_m)
  out["nal_loss"] = jnp.stack([
      bl.nal_loss(x["nal_outputs"], labels, x["memory_rand"], lam=10.0, use_memory=um,
                  renormalize=rn) for um, rn in NAL_VARIANTS])
  out["nal_probs"] = bl.nal_predict_probs(x["nal_outputs"])
  p, y = x["ece_probs"], x["ece_labels"]
  out["ece"] = jnp.stack([bl.expected_calibration_error(p, y, 15),
                          bl.expected_calibration_error(p, y, 10)])
  half = N_ECE // 2
  s1 = bl.ece_bin_statistics(p[:half], y[:half], 15)
  s2 = bl.ece_bin_statistics(p[half:], y[half:], 15)
  out["ece_stats_whole"] = jnp.stack(bl.ece_bin_statistics(p, y, 15))
  out["ece_stats_summed"] = jnp.stack(s1) + jnp.stack(s2)
  out["ece_from_summed"] = bl.ece_from_bin_statistics(*(a + b for a, b in zip(s1, s2)))
  return out


_all_outputs_jit = jax.jit(_all_outputs, static_argnums=2)


@functools.lru_cache(maxsize=None)
def _case(batch, k):
  """(NumPy inputs, NumPy outputs of every baseline) for one shape."""
  x = _make_inputs(batch, k)
  key = jax.random.key(batch)
  out = jax.tree.map(lambda a: np.asarray(a, np.float64), _all_outputs_jit(x, key, k))
  return x, out


# ----------------------------------------------------------------------------
# LS, GCE, SLN
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch,k", SHAPES)
def test_label_smoothing_and_gce(batch, k):
  x, out = _case(batch, k)
  labels = x["labels"]
  logp = np_log_softmax(x["logits"])
  for i, smoothing in enumerate(SMOOTHINGS):
    t = (1 - smoothing) * np_onehot(labels, k) + smoothing / k
    np.testing.assert_allclose(out["ls"][i], -(t * logp).sum(-1), rtol=2e-5, atol=2e-5)
  p_y = np.clip(np.exp(logp[np.arange(batch), labels]), 1e-7, 1.0)
  for i, q in enumerate(QS):
    np.testing.assert_allclose(out["gce"][i], (1 - p_y ** q) / q, rtol=1e-4, atol=1e-6)
  # q -> 0 tends to CE
  ce_mild = -np_log_softmax(x["mild"])[np.arange(batch), labels]
  np.testing.assert_allclose(out["gce_small_q"], ce_mild, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("batch,k", SHAPES)
def test_sln_matches_formula_and_is_unnormalised(batch, k):
  x, out = _case(batch, k)
  logp = np_log_softmax(x["logits"])
  y = np_onehot(x["labels"], k)
  np.testing.assert_allclose(out["sln"][0], -(y * logp).sum(-1), rtol=1e-5, atol=1e-5)
  for i, sigma in ((1, 0.5), (2, 2.0)):
    target = y + sigma * out["sln_noise"]          # used as is: not renormalised
    np.testing.assert_allclose(out["sln"][i], -(target * logp).sum(-1), rtol=1e-4,
                               atol=1e-4)


def test_sln_unbiased_over_keys():
  rng = np.random.default_rng(0)
  logits = (2.0 * rng.standard_normal((8, 10))).astype(np.float32)
  labels = rng.integers(0, 10, size=8).astype(np.int32)
  keys = jax.random.split(jax.random.key(0), 10000)
  losses = np.asarray(jax.jit(jax.vmap(
      lambda kk: bl.stochastic_label_noise_cross_entropy(logits, labels, kk, 0.5)))(keys))
  logp = np_log_softmax(logits)
  ce = -logp[np.arange(8), labels]
  # standard error of the mean over keys: sigma * ||log p|| / sqrt(n)
  se = 0.5 * np.linalg.norm(logp, axis=-1) / np.sqrt(len(keys))
  assert np.all(np.abs(losses.mean(0) - ce) < 5 * se)
  assert np.std(losses[:, 0]) > 0.1           # the noise is really there


# ----------------------------------------------------------------------------
# LN
# ----------------------------------------------------------------------------


def _np_ln(mean, r, labels, num_classes, smoothing, c=1.0):
  d = mean.shape[-1]
  m = d + 1
  assert m in (num_classes, num_classes + 1)
  out = []
  for i in range(mean.shape[0]):
    t = (1 - smoothing) * np.eye(m)[labels[i]] + smoothing / m
    z = np.log(t[:d]) - np.log(t[d])
    s = c * np.eye(d) + np.outer(r[i], r[i])
    out.append(-scipy.stats.multivariate_normal(mean[i], s @ s.T).logpdf(z))
  return np.array(out)


@pytest.mark.parametrize("batch,k", SHAPES)
def test_logistic_normal_nll_vs_scipy(batch, k):
  x, out = _case(batch, k)
  labels = x["labels"]
  for form in ("dummy", "alr"):
    mean = x[f"mean_{form}"].astype(np.float64)
    r = x[f"r_{form}"].astype(np.float64)
    rows = slice(0, 3)            # scipy's PSD set-up is slow at K = 100
    for i, (smoothing, c) in enumerate(LN_SETTINGS):
      np.testing.assert_allclose(out[f"ln_{form}"][i][rows],
                                 _np_ln(mean[rows], r[rows], labels[rows], k, smoothing, c),
                                 rtol=1e-4, atol=1e-3)
  # log-density on the simplex (TFP TransformedDistribution): + sum log t + log(M)/2
  t = 0.9 * np.eye(k + 1)[labels] + 0.1 / (k + 1)     # dummy class k is never a label
  np.testing.assert_allclose(out["ln_simplex"] - out["ln_dummy"][0],
                             np.log(t).sum(-1) + 0.5 * np.log(k + 1), rtol=1e-5, atol=1e-4)


def test_logistic_normal_minimiser_errors_and_inverse():
  rng = np.random.default_rng(2)
  k, batch = 10, 6
  mean = rng.standard_normal((batch, k)).astype(np.float32)
  r = rng.standard_normal((batch, k)).astype(np.float32)
  labels = rng.integers(0, k, size=batch).astype(np.int32)
  # the NLL is minimised in `mean` at alr(t) (dummy class as reference)
  t = 0.9 * np.eye(k + 1)[labels] + 0.1 / (k + 1)
  z = (np.log(t[:, :k]) - np.log(t[:, k:])).astype(np.float32)
  p = rng.dirichlet(np.ones(11), size=batch)
  za = (np.log(p[:, :-1]) - np.log(p[:, -1:])).astype(np.float32)

  @jax.jit
  def run(z, r, za):
    g = jax.grad(lambda a, b: jnp.sum(bl.logistic_normal_nll(a, b, labels, k)),
                 argnums=(0, 1))(z, r)
    return g, bl.logistic_normal_predict_probs(za)
  (g_mu, g_r), probs = run(z, r, za)
  np.testing.assert_allclose(g_mu, 0.0, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(g_r)))
  np.testing.assert_allclose(probs, p, rtol=1e-4, atol=1e-6)      # inverse alr
  with pytest.raises(ValueError):
    bl.logistic_normal_nll(mean[:, :5], r[:, :5], labels, k)
  with pytest.raises(ValueError):
    bl.logistic_normal_nll(mean, r, labels, k, smoothing=0.0)


# ----------------------------------------------------------------------------
# ELR
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch,k", SHAPES)
def test_elr_update_and_loss(batch, k):
  x, out = _case(batch, k)
  assert not np.asarray(bl.elr_init_targets(3, k)).any()
  probs = np_softmax(x["logits"])
  t = np.zeros((batch, k))
  for step in range(3):                        # updates from zeros
    p = np.clip(probs, 1e-4, 1 - 1e-4)
    t = 0.7 * t + 0.3 * p / p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["elr_targets"][step], t, rtol=1e-5, atol=1e-6)
  ce = -np_log_softmax(x["logits"])[np.arange(batch), x["labels"]]
  reg = np.log(1 - (x["targets_rand"] * np.clip(probs, 1e-4, 1 - 1e-4)).sum(-1))
  np.testing.assert_allclose(out["elr_loss"], ce + 3.0 * reg, rtol=1e-4, atol=1e-4)


def test_elr_gradient_through_clamped_probs_only():
  """Targets carry no gradient; the ELR term's gradient is -lam d<t,p>/(1-<t,p>)."""
  rng = np.random.default_rng(5)
  logits = rng.standard_normal((4, 10)).astype(np.float32)
  labels = rng.integers(0, 10, size=4).astype(np.int32)
  t = (rng.dirichlet(np.ones(10), size=4) * 0.5).astype(np.float32)
  reg = lambda z, tt: jnp.sum(bl.elr_loss(z, labels, tt, 3.0)
                              - softmax_cross_entropy(z, labels))
  g_z, g_t = jax.jit(jax.grad(reg, argnums=(0, 1)))(logits, t)
  np.testing.assert_array_equal(g_t, 0.0)
  p = np_softmax(logits)
  s = (t * p).sum(-1, keepdims=True)
  np.testing.assert_allclose(g_z, -3.0 * p * (t - s) / (1 - s), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------
# SOP
# ----------------------------------------------------------------------------


def _np_sop(logits, labels, u, v, k, eps=1e-4, normalization="row"):
  y = np_onehot(labels, k)
  u2 = np.clip(u ** 2 * y, 0, 1)
  v2 = np.clip(v ** 2 * (1 - y), 0, 1)
  q = np.maximum(np_softmax(logits) + u2 - v2, eps)
  if normalization == "row":
    q = np.clip(q / np.maximum(q.sum(-1, keepdims=True), eps), eps, 1)
  else:
    q = np.clip(q / max(np.abs(q).sum(), eps), eps, 1)
    q = np.clip(q / q.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
  ce = -(y * np.log(q)).sum(-1)
  hard = np_onehot(np.argmax(logits, -1), k)
  mse = ((y - (hard + u2 - v2)) ** 2).sum(-1)
  return ce + mse


@pytest.mark.parametrize("batch,k", SHAPES)
def test_sop_loss_values(batch, k):
  x, out = _case(batch, k)
  for i, normalization in enumerate(("row", "batch")):
    ref = _np_sop(x["mild"].astype(np.float64), x["labels"], x["u"].astype(np.float64),
                  x["v"].astype(np.float64), k, normalization=normalization)
    np.testing.assert_allclose(out["sop"][i], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch,k", SHAPES)
def test_sop_gradients_analytic_and_fd(batch, k):
  x, _ = _case(batch, k)
  logits, labels = x["mild"], x["labels"]
  u = 0.5 * x["u"]
  u[0, 0] = 0.4                    # keep u^2, v^2 < 1 (inside the clip)
  v = 0.5 * x["v"]
  mean_loss = lambda z, uu, vv: jnp.mean(bl.sop_loss(z, labels, uu, vv, k))
  gz, gu, gv = jax.jit(jax.grad(mean_loss, argnums=(0, 1, 2)))(logits, u, v)
  # Analytic (NumPy), row form: qt = max(p + U2 - V2, eps) (a = not floored),
  # s = sum qt, CE = -log qt_y + log s, with V2 a constant inside CE.
  y = np_onehot(labels, k)
  p = np_softmax(logits)
  u64, v64 = u.astype(np.float64), v.astype(np.float64)
  u2 = u64 ** 2 * y
  v2 = v64 ** 2 * (1 - y)
  qun = p + u2 - v2
  a = (qun > 1e-4).astype(np.float64)
  qt = np.where(a > 0, qun, 1e-4)
  s = qt.sum(-1, keepdims=True)
  qt_y = (qt * y).sum(-1, keepdims=True)
  assert np.all(qt_y / s > 1e-4) and np.all((a * y).sum(-1) == 1)
  hard = np_onehot(np.argmax(logits, -1), k)
  resid = y - (hard + u2 - v2)
  p_y = (p * y).sum(-1, keepdims=True)
  # d/du: CE -2u/qt_y + 2u/s; MSE sum_k -2 r_k * 2u y_k
  d_u = -2 * u64 / qt_y + 2 * u64 / s - 4 * u64 * (resid * y).sum(-1, keepdims=True)
  # v only through MSE: d/dv_k = 2 r_k * 2 v_k (1 - y_k)
  d_v = 4 * resid * v64 * (1 - y)
  # net only through CE: dp_k/dz_j = p_k (delta_kj - p_j)
  d_z = -p_y * (y - p) / qt_y + (a * p - p * (a * p).sum(-1, keepdims=True)) / s
  np.testing.assert_allclose(gu, d_u / batch, rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(gv, d_v / batch, rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(gz, d_z / batch, rtol=1e-3, atol=1e-6)
  assert np.all(np.asarray(gv)[y.astype(bool)] == 0)   # v's label entry is unused
  # central finite differences (float64 NumPy forward)
  f_u = lambda uu: _np_sop(logits.astype(np.float64), labels, uu, v64, k).mean()
  f_v = lambda vv: ((y - (hard + u2 - np.clip(vv ** 2 * (1 - y), 0, 1))) ** 2
                    ).sum(-1).mean()                  # MSE only: V2 is sg in CE
  h = 1e-5
  for i in range(min(batch, 3)):
    e = np.zeros_like(u64)
    e[i, 0] = h
    np.testing.assert_allclose(gu[i, 0], (f_u(u64 + e) - f_u(u64 - e)) / (2 * h),
                               rtol=2e-3, atol=1e-6)
    j = (labels[i] + 1) % k
    e = np.zeros_like(v64)
    e[i, j] = h
    np.testing.assert_allclose(gv[i, j], (f_v(v64 + e) - f_v(v64 - e)) / (2 * h),
                               rtol=2e-3, atol=1e-6)


def test_sop_helpers():
  u, v = jax.jit(bl.sop_init_params, static_argnums=(1, 2))(jax.random.key(0), 1000, 10)
  u, v = np.asarray(u), np.asarray(v)
  assert u.shape == (1000, 1) and v.shape == (1000, 10)
  assert 0.5e-8 < u.std() < 2e-8 and 0.5e-8 < v.std() < 2e-8
  u2, v2 = bl.sop_sgd_update(u, v, np.ones_like(u), np.ones_like(v))
  np.testing.assert_allclose(u2, u - 1.0)
  np.testing.assert_allclose(v2, v - 10.0)
  with pytest.raises(ValueError):
    bl.sop_loss(np.zeros((2, 3)), np.zeros(2, np.int32), u[:2], v[:2, :3], 3,
                normalization="col")


# ----------------------------------------------------------------------------
# NAL
# ----------------------------------------------------------------------------


def _np_nal(outputs, labels, memory, lam, use_memory=True, renormalize=True):
  k = outputs.shape[-1] - 1
  p = np.clip(np_softmax(outputs[:, :k]), 1e-12, 1 - 1e-12)
  tau = np.clip(1 / (1 + np.exp(-outputs[:, k:])), 1e-12, 1 - 1e-12)
  t = memory if use_memory else np.clip(np_onehot(labels, k), 1e-4, 1)
  q = np.clip(tau * p + (1 - tau) * t, 1e-7, 1)
  if renormalize:
    q = np.clip(q / q.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
  return -(t * np.log(q)).sum(-1) - lam * np.log(tau[:, 0])


@pytest.mark.parametrize("batch,k", SHAPES)
def test_nal_memory_and_loss(batch, k):
  x, out = _case(batch, k)
  labels = x["labels"]
  np.testing.assert_array_equal(out["nal_memory_init"], np_onehot(labels, k))
  m = np_onehot(labels, k)
  for step in range(3):
    probs = np_softmax(x["logits"] + step * np.arange(k))
    m = np.clip(0.98 * m + 0.02 * probs, 1e-4, 1)
    np.testing.assert_allclose(out["nal_memory"][step], m, rtol=1e-5, atol=1e-7)
  outputs = x["nal_outputs"].astype(np.float64)
  for i, (use_memory, renormalize) in enumerate(NAL_VARIANTS):
    ref = _np_nal(outputs, labels, x["memory_rand"].astype(np.float64), 10.0,
                  use_memory, renormalize)
    np.testing.assert_allclose(out["nal_loss"][i], ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["nal_probs"], np_softmax(outputs[:, :k]),
                             rtol=1e-5, atol=1e-7)


def test_nal_gradients():
  """Memory is a stop-gradient target; -lam log tau pushes the attention logit up."""
  rng = np.random.default_rng(6)
  outputs = (2.0 * rng.standard_normal((6, 11))).astype(np.float32)
  labels = rng.integers(0, 10, size=6).astype(np.int32)
  memory = np_onehot(labels, 10).astype(np.float32)
  g_o, g_m = jax.jit(jax.grad(lambda o, m: jnp.mean(bl.nal_loss(o, labels, m, lam=10.0)),
                              argnums=(0, 1)))(outputs, memory)
  np.testing.assert_array_equal(g_m, 0.0)
  assert np.all(np.isfinite(np.asarray(g_o))) and np.all(np.asarray(g_o)[:, -1] < 0)


# ----------------------------------------------------------------------------
# ECE
# ----------------------------------------------------------------------------


def _np_ece(probs, labels, num_bins=15):
  conf = probs.max(-1)
  correct = (probs.argmax(-1) == labels).astype(np.float64)
  edges = np.linspace(0, 1, num_bins + 1)
  ece = 0.0
  for b in range(num_bins):
    upper = conf < edges[b + 1] if b < num_bins - 1 else conf <= 1.0
    sel = (conf >= edges[b]) & upper
    if sel.any():
      ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
  return ece


@pytest.mark.parametrize("batch,k", SHAPES)
def test_ece_vs_numpy_and_streaming(batch, k):
  x, out = _case(batch, k)
  probs, labels = x["ece_probs"].astype(np.float64), x["ece_labels"]
  for i, num_bins in enumerate((15, 10)):
    np.testing.assert_allclose(out["ece"][i], _np_ece(probs, labels, num_bins),
                               rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out["ece_stats_summed"], out["ece_stats_whole"],
                             rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(out["ece_from_summed"], _np_ece(probs, labels, 15),
                             rtol=1e-4, atol=1e-6)
  assert out["ece_stats_whole"][0].sum() == N_ECE


def test_ece_mask_and_edges():
  probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1]], np.float32)
  labels = np.array([0, 1, 1, 0], np.int32)
  mask = np.array([1, 1, 0, 0], bool)

  @jax.jit
  def run(probs, labels, mask):
    return (bl.ece_bin_statistics(probs, labels, 10)[0],
            bl.expected_calibration_error(probs, labels, 10, mask=mask),
            bl.ece_from_bin_statistics(*[jnp.zeros(15)] * 3))
  counts, masked, empty = jax.tree.map(np.asarray, run(probs, labels, mask))
  assert counts[9] == 2 and counts[5] == 1 and counts[8] == 1   # 1.0 in the last bin
  np.testing.assert_allclose(masked, _np_ece(probs[:2].astype(np.float64), labels[:2], 10),
                             atol=1e-7)
  assert float(empty) == 0.0


# ----------------------------------------------------------------------------
# HET head
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _het_run(head):
  """jit(x, key) -> (variables, log_probs): init (fixed keys) and a train-mode apply.

  The parameters depend only on the feature size and the head's layer shapes,
  so heads differing only in sampling settings share them.
  """
  def run(x, key):
    variables = head.init({"params": jax.random.key(1), "het": jax.random.key(2)}, x)
    return variables, head.apply(variables, x, train=True, rngs={"het": key})
  return jax.jit(run)


def _np_het_mc(feats, params, k, r, temperature, n_samples, seed):
  """Independent NumPy Monte-Carlo estimate (float64, fresh noise per example)."""
  rng = np.random.default_rng(seed)
  f = np.asarray(feats, np.float64)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  loc = f @ p["loc_layer"]["kernel"] + p["loc_layer"]["bias"]
  d = np.logaddexp(0, f @ p["diag_layer"]["kernel"] + p["diag_layer"]["bias"]) + 1e-3
  v = (f @ p["scale_layer"]["kernel"] + p["scale_layer"]["bias"]).reshape(-1, k, r)
  out = []
  for i in range(f.shape[0]):
    lat = (loc[i] + rng.standard_normal((n_samples, r)) @ v[i].T
           + d[i] * rng.standard_normal((n_samples, k)))
    out.append(np_softmax(lat / temperature).mean(0))
  return np.array(out)


def test_het_head_valid_log_probs_bf16_leading_dims():
  feats = np.random.default_rng(0).standard_normal((2, 3, 16)).astype(np.float32)
  head = HeteroscedasticHead(num_outputs=100, num_mc_samples=200, eps=1e-30,
                             dtype=jnp.bfloat16)
  variables, out = _het_run(head)(feats, jax.random.key(0))
  out = np.asarray(out)
  assert out.shape == (2, 3, 100) and out.dtype == np.float32
  lse = np.log(np.exp(out.astype(np.float64)).sum(-1))
  np.testing.assert_allclose(lse, 0.0, atol=1e-5)
  params = variables["params"]
  assert set(params) == {"loc_layer", "diag_layer", "scale_layer"}
  assert params["scale_layer"]["kernel"].shape == (16, 2 * 100)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


def test_het_head_zero_noise_is_tempered_softmax():
  feats = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
  head = HeteroscedasticHead(num_outputs=10, num_factors=0, min_scale=0.0,
                             num_mc_samples=7)
  variables, _ = _het_run(head)(feats, jax.random.key(0))
  params = jax.tree.map(np.array, variables["params"])
  assert set(params) == {"loc_layer", "diag_layer"}
  params["diag_layer"]["kernel"][:] = 0.0
  params["diag_layer"]["bias"][:] = -1e4          # softplus(-1e4) = 0: no noise
  out = jax.jit(lambda p, x: head.apply({"params": p}, x, train=True,
                                        rngs={"het": jax.random.key(5)}))(params, feats)
  loc = feats.astype(np.float64) @ params["loc_layer"]["kernel"] + params["loc_layer"]["bias"]
  np.testing.assert_allclose(out, np_log_softmax(loc / 1.3), rtol=1e-5, atol=1e-5)


def test_het_head_mc_converges():
  k = 10
  feats = 2.0 * np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
  probs = {}
  for name, s in (("small", 10), ("big", 20000)):
    run = _het_run(HeteroscedasticHead(num_outputs=k, num_mc_samples=s))
    probs[name] = []
    for seed in (10, 11):
      variables, out = run(feats, jax.random.key(seed))
      probs[name].append(np.exp(np.asarray(out, np.float64)))
  ref = _np_het_mc(feats, variables["params"], k, 2, 1.3, 20000, seed=0)
  assert np.abs(probs["big"][0] - ref).max() < 0.02
  spread_big = np.abs(probs["big"][0] - probs["big"][1]).max()
  spread_small = np.abs(probs["small"][0] - probs["small"][1]).max()
  assert spread_big < 0.02 and spread_small > 3 * spread_big


def test_het_head_rng_sharing_eval_and_grad():
  feats = np.tile(np.random.default_rng(3).standard_normal((1, 8)), (3, 1)).astype(np.float32)
  head = HeteroscedasticHead(num_outputs=10, num_mc_samples=50)
  unshared = HeteroscedasticHead(num_outputs=10, num_mc_samples=50,
                                 share_samples_across_batch=False)
  labels = np.array([0, 3, 9], np.int32)

  @jax.jit
  def run(x):
    variables = head.init({"params": jax.random.key(1)}, x)       # eval mode: no "het"
    not_shared = unshared.apply(variables, x, train=True, rngs={"het": jax.random.key(0)})

    def loss(params):
      lp = head.apply({"params": params}, x, train=True, rngs={"het": jax.random.key(4)})
      return jnp.mean(softmax_cross_entropy(lp, labels)), lp
    grads, shared = jax.grad(loss, has_aux=True)(variables["params"])
    return variables, shared, not_shared, grads, head.apply(variables, x)
  variables, shared, not_shared, grads, ev = jax.tree.map(np.asarray, run(feats))
  np.testing.assert_array_equal(shared[0], shared[1])   # shared noise: equal rows agree
  assert np.abs(not_shared[0] - not_shared[1]).max() > 1e-4
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.abs(grads["scale_layer"]["kernel"]).max() > 0
  # eval without a "het" rng: a fixed key, so repeated evaluation agrees
  np.testing.assert_array_equal(ev, np.asarray(run(feats)[-1]))
  with pytest.raises(Exception, match="het"):     # train mode needs the "het" stream
    jax.jit(lambda v, x: head.apply(v, x, train=True))(variables, feats)


# ----------------------------------------------------------------------------
# Every loss: jit(grad) finite at extreme logits; vmap over examples = batched
# ----------------------------------------------------------------------------


def test_all_losses_grad_finite_and_vmap():
  batch, k = 8, 10
  rng = np.random.default_rng(10)
  logits = (20.0 * rng.standard_normal((batch, k))).astype(np.float32)
  labels = rng.integers(0, k, size=batch).astype(np.int32)
  mem = np.clip(rng.dirichlet(np.ones(k), size=batch), 1e-4, 1).astype(np.float32)
  u = rng.standard_normal((batch, 1)).astype(np.float32)
  v = rng.standard_normal((batch, k)).astype(np.float32)
  r = rng.standard_normal((batch, k)).astype(np.float32)
  h = rng.standard_normal((batch, 1)).astype(np.float32)

  def losses(z, y, m, uu, vv, rr, hh):   # works batched and per example
    return jnp.stack([
        bl.label_smoothing_cross_entropy(z, y, 0.1),
        bl.generalized_cross_entropy(z, y),
        bl.logistic_normal_nll(z, rr, y, k),
        bl.elr_loss(z, y, m),
        bl.sop_loss(z, y, uu, vv, k),
        bl.nal_loss(jnp.concatenate([z, hh], -1), y, m)], -1)

  @jax.jit
  def run(z):
    args = (labels, mem, u, v, r, h)
    grads = jax.jacrev(lambda zz: jnp.mean(losses(zz, *args), axis=0))(z)
    sln_grad = jax.grad(lambda zz: jnp.mean(
        bl.stochastic_label_noise_cross_entropy(zz, labels, jax.random.key(0))))(z)
    return grads, sln_grad, jax.vmap(losses)(z, *args), losses(z, *args)
  grads, sln_grad, per_example, batched = jax.tree.map(np.asarray, run(logits))
  assert np.all(np.isfinite(grads)) and np.all(np.isfinite(sln_grad))
  np.testing.assert_allclose(per_example, batched, rtol=1e-5, atol=1e-5)
