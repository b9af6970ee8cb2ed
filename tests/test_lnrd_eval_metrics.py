"""Tests of lnrd.metrics.frechet, inception_score and density_coverage against references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from lnrd.metrics import density_coverage as dc
from lnrd.metrics import frechet
from lnrd.metrics import inception_score as is_lib


def _random_spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def _scipy_fid(mu1, s1, mu2, s2):
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  covmean = np.real(covmean)
  diff = mu1 - mu2
  return diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)


# ----------------------------------------------------------------- Fréchet ---

@pytest.mark.parametrize("d", [1, 2, 7, 64])
def test_frechet_distance_matches_scipy_sqrtm(d):
  rng = np.random.default_rng(d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
  got = frechet.frechet_distance(mu1, s1, mu2, s2)
  want = _scipy_fid(mu1, s1, mu2, s2)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_frechet_distance_closed_form_commuting():
  # Diagonal covariances: Tr((S1 S2)^{1/2}) = sum sqrt(a_i b_i).
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
  mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
  want = 9.0 + sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_fid_of_set_with_itself_is_zero():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32))
  s = frechet.statistics_of(x)
  assert abs(frechet.fid_from_statistics(s, s)) < 1e-6
  y = x + 0.5
  assert frechet.fid_from_statistics(s, frechet.statistics_of(y)) == pytest.approx(32 * 0.25, rel=1e-6)


def test_streaming_statistics_with_masks_match_one_shot():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(257, 12)).astype(np.float32) * 3.0 + 5.0
  sizes = [100, 1, 37, 119]
  stats = frechet.zeros(12)
  dev_stats = frechet.zeros(12)
  start = 0
  for size in sizes:
    batch = x[start:start + size]
    start += size
    # Pad to 128 rows; padded rows are garbage and masked out.
    pad = 128 - len(batch)
    padded = np.concatenate([batch, rng.normal(size=(pad, 12)).astype(np.float32) * 100])
    mask = np.arange(128) < len(batch)
    stats = frechet.merge(stats, frechet.statistics_of(padded, mask=mask))
    dev_stats = frechet.merge(dev_stats, frechet.from_sums(*frechet.batch_sums(padded, mask)))
  assert start == len(x)
  mu, sigma = frechet.mean_and_covariance(stats)
  x64 = x.astype(np.float64)
  np.testing.assert_allclose(mu, x64.mean(axis=0), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(x64, rowvar=False), rtol=1e-10, atol=1e-10)
  assert float(stats.count) == len(x)
  # Device sums (float32 products) agree loosely.
  mu_d, sigma_d = frechet.mean_and_covariance(dev_stats)
  np.testing.assert_allclose(mu_d, mu, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sigma_d, sigma, rtol=1e-3, atol=1e-3)
  # Unmasked batch_sums equals statistics_of.
  c, s1, s2 = frechet.batch_sums(x[:50])
  assert float(c) == 50
  np.testing.assert_allclose(np.asarray(s1), x64[:50].sum(0), rtol=1e-5)


def test_merge_is_order_independent_and_single_process_identity():
  rng = np.random.default_rng(2)
  parts = [frechet.statistics_of(rng.normal(size=(n, 5))) for n in (3, 10, 7)]
  ab_c = frechet.merge(frechet.merge(parts[0], parts[1]), parts[2])
  c_ba = frechet.merge(parts[2], frechet.merge(parts[1], parts[0]))
  for u, v in zip(ab_c, c_ba):
    np.testing.assert_allclose(u, v, rtol=1e-14)
  merged = frechet.merge_across_processes(ab_c)
  for u, v in zip(merged, ab_c):
    np.testing.assert_array_equal(u, v)


def test_split64_roundtrip_precision():
  x = np.array([1.0 / 3.0, 1e8 + 0.123456, -2.5e-7])
  hi, lo = frechet._split64(x)  # pylint: disable=protected-access
  assert hi.dtype == np.float32 and lo.dtype == np.float32
  np.testing.assert_allclose(hi.astype(np.float64) + lo, x, rtol=1e-13)


def test_mean_and_covariance_needs_two_rows():
  with pytest.raises(ValueError):
    frechet.mean_and_covariance(frechet.statistics_of(np.ones((1, 3))))


# -------------------------------------------------------- Inception Score ---

def _numpy_is(p, splits):
  n = len(p)
  scores = []
  for s in range(splits):
    part = p[s * n // splits:(s + 1) * n // splits]
    py = part.mean(axis=0)
    kl = []
    for row in part:
      kl.append(sum(pi * (np.log(pi) - np.log(qi)) for pi, qi in zip(row, py) if pi > 0))
    scores.append(np.exp(np.mean(kl)))
  return np.mean(scores), np.std(scores)


@pytest.mark.parametrize("splits", [1, 3, 10])
def test_inception_score_matches_numpy_loop(splits):
  rng = np.random.default_rng(splits)
  logits = rng.normal(size=(203, 7)) * 2.0
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  want = _numpy_is(p, splits)
  got = is_lib.inception_score(p.astype(np.float32), num_splits=splits)
  np.testing.assert_allclose([float(got[0]), float(got[1])], want, rtol=1e-5, atol=1e-6)
  got_l = is_lib.inception_score(logits.astype(np.float32), num_splits=splits, from_logits=True)
  np.testing.assert_allclose([float(got_l[0]), float(got_l[1])], want, rtol=1e-5, atol=1e-6)


def test_inception_score_uniform_is_one():
  p = np.full((100, 10), 0.1, np.float32)
  mean, std = is_lib.inception_score(p, num_splits=10)
  assert float(mean) == pytest.approx(1.0, abs=1e-6)
  assert float(std) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("num_classes", [2, 5, 10])
def test_inception_score_even_one_hot_is_num_classes(num_classes):
  splits = 4
  # Each split holds every class equally often -> IS_s = C for each split.
  labels = np.tile(np.arange(num_classes), 3 * splits)
  p = np.eye(num_classes, dtype=np.float32)[labels]
  mean, std = is_lib.inception_score(p, num_splits=splits)
  with np.errstate(divide="ignore"):
    log_p = np.log(p)  # -inf where p = 0
  scores = np.asarray(is_lib._split_scores(log_p, splits))  # pylint: disable=protected-access
  np.testing.assert_allclose(scores, num_classes, rtol=1e-5)
  assert float(mean) == pytest.approx(num_classes, rel=1e-5)
  assert float(std) == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------- Density and Coverage ---

def test_density_coverage_matches_prdc():
  prdc = pytest.importorskip("prdc")
  rng = np.random.default_rng(0)
  real = rng.normal(size=(500, 16)).astype(np.float32)
  fake = (rng.normal(size=(430, 16)) * 1.1 + 0.2).astype(np.float32)
  want = prdc.compute_prdc(real.astype(np.float64), fake.astype(np.float64), nearest_k=5)
  got = dc.density_coverage(real, fake, k=5, chunk=128)  # chunks < N, uneven last chunk
  assert float(got["density"]) == pytest.approx(want["density"], abs=1e-6)
  assert float(got["coverage"]) == pytest.approx(want["coverage"], abs=1e-6)
  # Chunk size does not change the result.
  got_big = dc.density_coverage(real, fake, k=5, chunk=1024)
  assert float(got_big["density"]) == float(got["density"])
  assert float(got_big["coverage"]) == float(got["coverage"])


def test_knn_radii_match_bruteforce():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(61, 4)).astype(np.float32)
  d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
  want = np.sort(d, axis=1)[:, 3]  # k = 3, column 0 is the point itself
  got = np.sqrt(np.asarray(dc.knn_radii_sq(x, k=3, chunk=16)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_classwise_is_mean_of_per_class_calls():
  rng = np.random.default_rng(4)
  real = rng.normal(size=(120, 6)).astype(np.float32)
  fake = rng.normal(size=(90, 6)).astype(np.float32)
  rl, fl = np.arange(120) % 3, np.arange(90) % 3
  fn = lambda r, f: dc.density_coverage(r, f, k=5, chunk=16)
  got = dc.classwise(fn, real, rl, fake, fl, num_classes=3)
  per = [fn(real[rl == c], fake[fl == c]) for c in range(3)]
  for key in ("density", "coverage"):
    assert got[key] == pytest.approx(np.mean([float(p[key]) for p in per]), abs=1e-7)
  cw_fid = dc.classwise(frechet.fid, real, rl, fake, fl, num_classes=3)
  want_fid = np.mean([frechet.fid(real[rl == c], fake[fl == c]) for c in range(3)])
  assert cw_fid == pytest.approx(want_fid, rel=1e-12)
  with pytest.raises(ValueError):
    dc.classwise(fn, real, rl, fake, fl, num_classes=4)
