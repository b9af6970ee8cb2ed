"""Tests of the host-side data loaders (sgn_jax.data), on real offline data.

The shared data folder (`../shared/data` next to the checkout) holds the MNIST
and Fashion-MNIST archives, the CIFAR-N label files and a partial CIFAR-10;
tests needing it skip when it is absent. MNIST is prepared with TFDS once per
module (about 15-40 s), into $LNRD_TEST_TFDS_DIR when set (and reused from
there), else into a pytest temporary directory.
"""

import csv
import dataclasses
import filecmp
import os
import pathlib
import shutil
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from sgn_jax.data import DATASETS
from sgn_jax.data import DataNotFoundError
from sgn_jax.data import InMemoryDataset
from sgn_jax.data import load_dataset
from sgn_jax.data import split_validation
from sgn_jax.data import array_source
from sgn_jax.data import cifar_n
from sgn_jax.data import gmm as gmm_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# Class counts of the original MNIST train archive.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                      5949]


def shared(sub: str) -> pathlib.Path:
  path = SHARED / sub
  if not path.exists():
    pytest.skip(f"shared data not found: {path}")
  return path


def dataset_cfg(**fields) -> ml_collections.ConfigDict:
  base = dict(name="gmm2d", source="gmm", data_dir=None, manual_dir=None,
              download=False, path=None, cifar_n_dir=None, train_subset=0,
              gmm=dict(num_classes=4, num_train=2000, num_test=500, std=0.5,
                       radius=2.0))
  base.update(fields)
  return ml_collections.ConfigDict(base)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def mnist_idx():
  return array_source.load_idx(shared("mnist"), "mnist")


@pytest.fixture(scope="module")
def cifar_subset():
  return array_source.load_npz(
      shared("cifar10_subset") / "cifar10_subset.npz", "cifar10")


# ---------------------------------------------------------- 1. MNIST via TFDS


def test_mnist_tfds_matches_idx_archives(mnist_tfds_dir, mnist_idx):
  from sgn_jax.data import tfds_source
  ds = tfds_source.load("mnist", data_dir=mnist_tfds_dir)
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.train_images.dtype == np.uint8 == ds.test_images.dtype
  assert ds.train_labels.dtype == np.int32 and ds.num_classes == 10
  assert ds.label_sets == {}
  assert np.bincount(ds.train_labels, minlength=10).tolist() == (
      MNIST_TRAIN_COUNTS)
  assert np.bincount(mnist_idx.train_labels).tolist() == MNIST_TRAIN_COUNTS
  # TFDS does NOT keep archive order (it sorts examples by the md5 hash of
  # their key): the first archive label is 5, TFDS's first row is a 4.
  assert mnist_idx.train_labels[0] == 5 and ds.train_labels[0] == 4
  assert not np.array_equal(ds.train_index, np.arange(60000))
  assert np.array_equal(np.sort(ds.train_index), np.arange(60000))
  # ... and train_index maps every row to its archive position exactly.
  np.testing.assert_array_equal(ds.train_images,
                                mnist_idx.train_images[ds.train_index])
  np.testing.assert_array_equal(ds.train_labels,
                                mnist_idx.train_labels[ds.train_index])
  test_order = tfds_source.tfds_key_order(10000, "test")
  np.testing.assert_array_equal(ds.test_images,
                                mnist_idx.test_images[test_order])
  np.testing.assert_array_equal(ds.test_labels,
                                mnist_idx.test_labels[test_order])


def test_prepare_cli_reuses_prepared_dir(mnist_tfds_dir, capsys):
  from sgn_jax.data import prepare
  rc = prepare.main(["--dataset=mnist", f"--data_dir={mnist_tfds_dir}",
                     f"--manual_dir={shared('mnist')}"])
  assert rc == 0
  assert os.path.join(mnist_tfds_dir, "mnist") in capsys.readouterr().out


def test_load_dataset_tfds_with_subset(mnist_tfds_dir):
  ds = load_dataset(dataset_cfg(name="mnist", source="tfds",
                                data_dir=mnist_tfds_dir, train_subset=1000))
  assert ds.train_images.shape == (1000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.train_index.shape == (1000,)


# ------------------------------------------------------------ 2. idx archives


def test_fashion_mnist_idx():
  ds = array_source.load_idx(shared("fashion_mnist"), "fashion_mnist")
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.train_images.dtype == np.uint8
  assert np.bincount(ds.train_labels).tolist() == [6000] * 10
  assert np.bincount(ds.test_labels).tolist() == [1000] * 10
  assert ds.class_names[0] == "T-shirt/top" and ds.name == "fashion_mnist"
  np.testing.assert_array_equal(ds.train_index, np.arange(60000))


def test_idx_errors(tmp_path, mnist_idx):
  src = shared("mnist")
  with pytest.raises(DataNotFoundError) as e:
    array_source.load_idx(tmp_path, "mnist")
  assert MNIST_URL + "train-images-idx3-ubyte.gz" in str(e.value)
  # A label archive under an image archive's name: wrong magic number.
  for f in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz"):
    shutil.copy(src / f, tmp_path / f)
  shutil.copy(src / "t10k-labels-idx1-ubyte.gz",
              tmp_path / "train-images-idx3-ubyte.gz")
  with pytest.raises(ValueError, match="magic number 0x00000801"):
    array_source.load_idx(tmp_path, "mnist")
  with pytest.raises(ValueError, match="cifar10"):
    array_source.load_idx(src, "cifar10")
  assert mnist_idx.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


# --------------------------------------------------------------- 3. not found


def test_missing_tfds_data_fails_fast(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  from sgn_jax.data import tfds_source
  empty = tmp_path / "tfds"
  empty.mkdir()
  start = time.time()
  with pytest.raises(DataNotFoundError) as e:
    tfds_source.load("mnist", data_dir=str(empty))
  assert time.time() - start < 10
  msg = str(e.value)
  for needle in ("'mnist'", str(empty), "manual_dir", "download=True",
                 MNIST_URL + "train-images-idx3-ubyte.gz",
                 "python -m sgn_jax.data.prepare"):
    assert needle in msg, needle
  assert list(empty.iterdir()) == []  # nothing written, nothing fetched


def test_manual_dir_with_missing_files(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  from sgn_jax.data import tfds_source
  manual = tmp_path / "manual"
  manual.mkdir()
  shutil.copy(shared("mnist") / "train-labels-idx1-ubyte.gz", manual)
  with pytest.raises(DataNotFoundError) as e:
    tfds_source.prepare("mnist", data_dir=str(tmp_path / "tfds"),
                        manual_dir=str(manual))
  msg = str(e.value)
  assert str(manual) in msg and "lacks 3 file(s)" in msg
  assert MNIST_URL + "t10k-images-idx3-ubyte.gz" in msg
  assert "train-labels-idx1-ubyte.gz" not in msg


def test_cifar_n_tfds_needs_download_and_manual_files(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  from sgn_jax.data import tfds_source
  with pytest.raises(DataNotFoundError) as e:
    tfds_source.prepare("cifar10_n", data_dir=str(tmp_path))
  msg = str(e.value)
  assert "CIFAR-10_human_annotations.csv" in msg and "download=True" in msg
  assert "image_order_c10.npy" in msg
  with pytest.raises(DataNotFoundError, match="download=True"):
    tfds_source.prepare("cifar100_n", data_dir=str(tmp_path),
                        manual_dir=str(shared("cifar_n")))


def test_cifar_n_tfds_feature_names():
  tfds = pytest.importorskip("tensorflow_datasets")
  from sgn_jax.data import tfds_source
  for name, mapping in tfds_source.CIFAR_N_FEATURES.items():
    features = tfds.builder(name, data_dir="/nonexistent").info.features
    assert set(mapping) <= set(features), name
    assert {"id", "image", "label"} <= set(features)
  assert set(tfds_source.CIFAR_N_FEATURES["cifar10_n"].values()) == set(
      cifar_n.LABEL_SET_KEYS["cifar10"])


def test_import_does_not_need_tensorflow():
  code = ("import sys; import sgn_jax.data, sgn_jax.data.loading, "
          "sgn_jax.data.tfds_source, sgn_jax.data.prepare; "
          "assert 'tensorflow' not in sys.modules; "
          "assert 'tensorflow_datasets' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                 env=dict(os.environ, PYTHONPATH=str(REPO)))


# ------------------------------------------------------- 4. CIFAR-10 + CIFAR-N


def test_cifar10_subset_with_cifar_n_labels(cifar_subset):
  ds = load_dataset(dataset_cfg(
      name="cifar10", source="npz",
      path=str(shared("cifar10_subset") / "cifar10_subset.npz"),
      cifar_n_dir=str(shared("cifar_n"))))
  assert ds.train_images.shape == (5085, 32, 32, 3)
  assert ds.test_images.shape == (1017, 32, 32, 3)
  assert ds.train_images.dtype == np.uint8 and ds.num_classes == 10
  assert set(ds.label_sets) == {"aggre", "random1", "random2", "random3",
                                "worse"}
  # The alignment proof: CIFAR-N's clean labels at train_index are exactly the
  # labels stored with the images.
  authors = cifar_n.load_authors_labels("cifar10", shared("cifar_n"))
  np.testing.assert_array_equal(authors["clean_label"][ds.train_index],
                                ds.train_labels)
  rates = {k: float(np.mean(v != ds.train_labels))
           for k, v in ds.label_sets.items()}
  assert abs(rates["worse"] - 0.4021) < 0.03, rates
  assert abs(rates["aggre"] - 0.0901) < 0.02, rates
  for k in ("random1", "random2", "random3"):
    assert 0.15 < rates[k] < 0.20, rates
  small = ds.subset(100)
  assert small.train_images.shape[0] == 100 == small.label_sets["worse"].size
  np.testing.assert_array_equal(small.label_sets["worse"],
                                ds.label_sets["worse"][:100])
  assert small.test_images.shape[0] == 1017


def test_cifar_n_misalignment_is_detected(cifar_subset):
  shifted = cifar_subset.train_index + 1
  with pytest.raises(ValueError, match=r"on \d+ of 5085 train rows"):
    cifar_n.load_label_sets("cifar10", shared("cifar_n"), shifted,
                            clean_labels=cifar_subset.train_labels)
  with pytest.raises(ValueError, match="50000"):
    cifar_n.load_label_sets("cifar10", shared("cifar_n"), np.array([50000]))


def test_cifar_n_pt_files_read_without_torch(tmp_path):
  for name, pt in (("cifar10", "CIFAR-10_human.pt"),
                   ("cifar100", "CIFAR-100_human.pt")):
    shutil.copy(shared("cifar_n") / pt, tmp_path / pt)
    from_pt = cifar_n.load_authors_labels(name, tmp_path)
    from_npz = cifar_n.load_authors_labels(name, shared("cifar_n"))
    assert from_pt.keys() == from_npz.keys()
    for k in from_npz:
      np.testing.assert_array_equal(from_pt[k], from_npz[k])
  labels = cifar_n.load_authors_labels("cifar100_n", shared("cifar_n"))
  assert abs(np.mean(labels["noisy_label"] != labels["clean_label"]) -
             0.4020) < 0.001
  with pytest.raises(DataNotFoundError, match="CIFAR-10_human.pt"):
    cifar_n.load_authors_labels("cifar10", tmp_path / "nowhere")


def test_npz_errors(tmp_path):
  with pytest.raises(DataNotFoundError, match="nothere.npz"):
    array_source.load_npz(tmp_path / "nothere.npz", "cifar10")
  bad = tmp_path / "bad.npz"
  np.savez(bad, train_images=np.zeros((2, 32, 32, 3), np.uint8),
           train_labels=np.zeros(2, np.int64),
           test_images=np.zeros((1, 32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="test_labels"):
    array_source.load_npz(bad, "cifar10")
  mnist_like = tmp_path / "mnist.npz"
  np.savez(mnist_like, train_images=np.zeros((3, 28, 28), np.uint8),
           train_labels=np.array([0, 1, 9]),
           test_images=np.zeros((1, 28, 28), np.uint8),
           test_labels=np.array([3]))
  ds = array_source.load_npz(mnist_like, "mnist")
  assert ds.train_images.shape == (3, 28, 28, 1)
  np.testing.assert_array_equal(ds.train_index, np.arange(3))


# ------------------------------------------------- 5. CIFAR-N TFDS row order


def _read_csv(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], np.array(rows[1:], dtype=np.int64)


@pytest.mark.parametrize("name,csv_name,order_name", [
    ("cifar10", "CIFAR-10_human_annotations.csv", "image_order_c10.npy"),
    ("cifar100", "CIFAR-100_human_annotations.csv", "image_order_c100.npy"),
])
def test_tfds_order_labels_match_annotation_csv(name, csv_name, order_name,
                                                tmp_path):
  folder = shared("cifar_n")
  header, table = _read_csv(folder / csv_name)
  assert tuple(header) == cifar_n.CSV_COLUMNS[name]
  order = np.load(folder / order_name)
  labels = cifar_n.load_authors_labels(name, folder)
  labels["noise_label"] = labels.get("noisy_label")
  for j, column in enumerate(header):
    np.testing.assert_array_equal(
        cifar_n.tfds_order_labels(labels[column], order), table[:, j])
  # The converter reproduces the file byte for byte.
  out = cifar_n.write_tfds_annotations_csv(name, folder, tmp_path / "a.csv")
  assert filecmp.cmp(out, folder / csv_name, shallow=False)
  with pytest.raises(ValueError, match="permutation"):
    cifar_n.tfds_order_labels(labels["clean_label"], order[:-1])


def test_image_order_is_tfds_hash_order():
  pytest.importorskip("tensorflow_datasets")
  from sgn_jax.data import tfds_source
  key_order = tfds_source.tfds_key_order(50000, "train")
  c10 = np.load(shared("cifar_n") / "image_order_c10.npy")
  c100 = np.load(shared("cifar_n") / "image_order_c100.npy")
  np.testing.assert_array_equal(key_order, c10)
  assert c10[0] == 16399  # TFDS cifar10's first train row is "train_16399".
  # image_order_c100 departs from TFDS's order in 14 places (permuted among
  # themselves); TFDS's cifar100_n builder uses the same file both ways, so
  # its labels stay aligned.
  differ = np.flatnonzero(c100 != key_order)
  assert differ.size == 14
  assert set(c100[differ]) == set(key_order[differ])


# ---------------------------------------------------------------- 6. GMM


def _scipy_log_densities(g, x, sigma):
  means = np.asarray(g.means, np.float64)
  var = g.std ** 2 + sigma ** 2
  return np.stack([
      stats.multivariate_normal(means[c], var * np.eye(2)).logpdf(x)
      for c in range(g.num_classes)], axis=1)


@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_gmm_posterior_and_density_match_scipy(sigma):
  g = gmm_lib.GaussianMixture2D()
  x = np.random.default_rng(0).normal(size=(200, 2)) * 2.5
  log_dens = _scipy_log_densities(g, x, sigma)
  joint = np.exp(log_dens) * np.asarray(g.weights)
  post = joint / joint.sum(1, keepdims=True)
  got = np.asarray(g.class_posterior(jnp.asarray(x, jnp.float32), sigma))
  np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
  np.testing.assert_allclose(got, post, atol=2e-5)
  np.testing.assert_allclose(
      np.asarray(g.log_prob(jnp.asarray(x, jnp.float32), sigma)),
      np.log(joint.sum(1)), rtol=1e-5, atol=1e-5)
  y = np.arange(200) % 4
  np.testing.assert_allclose(
      np.asarray(g.log_prob_given_class(jnp.asarray(x, jnp.float32), y,
                                        sigma)),
      log_dens[np.arange(200), y], rtol=1e-5, atol=1e-5)
  jitted = jax.jit(g.class_posterior)(jnp.asarray(x, jnp.float32), sigma)
  np.testing.assert_allclose(np.asarray(jitted), got, atol=1e-6)


def test_gmm_scores():
  g = gmm_lib.GaussianMixture2D(num_classes=5, radius=1.5, std=0.4,
                                weights=(1, 2, 3, 2, 1))
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(64, 2)) * 2, jnp.float32)
  y = jnp.asarray(rng.integers(0, 5, size=64), jnp.int32)
  sigma = jnp.asarray(rng.uniform(0.0, 2.0, size=64), jnp.float32)
  score = g.score(x, y, sigma)
  # jax.grad (per point, through vmap).
  grad_fn = jax.vmap(jax.grad(g.log_prob_given_class), in_axes=(0, 0, 0))
  np.testing.assert_allclose(score, grad_fn(x, y, sigma), rtol=1e-5, atol=1e-5)
  # Analytic formula.
  mu = np.asarray(g.means)[np.asarray(y)]
  var = g.std ** 2 + np.asarray(sigma, np.float64) ** 2
  analytic = -(np.asarray(x, np.float64) - mu) / var[:, None]
  np.testing.assert_allclose(score, analytic, rtol=1e-5, atol=1e-5)
  # Central finite differences of scipy's log density (float64).
  h = 1e-5
  fd = np.zeros((64, 2))
  xs = np.asarray(x, np.float64)
  for i in range(64):
    dist = stats.multivariate_normal(mu[i], var[i] * np.eye(2))
    for d in range(2):
      e = np.eye(2)[d] * h
      fd[i, d] = (dist.logpdf(xs[i] + e) - dist.logpdf(xs[i] - e)) / (2 * h)
  np.testing.assert_allclose(score, fd, rtol=1e-4, atol=1e-4)
  # Marginal and noisy-label scores are gradients of their log densities.
  np.testing.assert_allclose(
      g.marginal_score(x, sigma),
      jax.vmap(jax.grad(g.log_prob))(x, sigma), rtol=1e-4, atol=1e-5)
  T = jnp.asarray(0.7 * np.eye(5) + 0.3 / 4 * (1 - np.eye(5)), jnp.float32)
  np.testing.assert_allclose(
      g.noisy_label_score(x, y, T, sigma),
      jax.vmap(jax.grad(g.log_prob_given_noisy_label),
               in_axes=(0, 0, None, 0))(x, y, T, sigma),
      rtol=1e-4, atol=1e-5)


def test_gmm_sampling_statistics():
  g = gmm_lib.GaussianMixture2D()
  x, y = g.sample(jax.random.PRNGKey(0), 40_000)
  assert x.shape == (40_000, 2) and x.dtype == jnp.float32
  assert y.shape == (40_000,) and y.dtype == jnp.int32
  x, y = np.asarray(x, np.float64), np.asarray(y)
  np.testing.assert_allclose(np.bincount(y) / y.size, 0.25, atol=0.015)
  means = np.asarray(g.means)
  for c in range(4):
    xc = x[y == c]
    np.testing.assert_allclose(xc.mean(0), means[c], atol=0.025)
    np.testing.assert_allclose(np.cov(xc.T), 0.25 * np.eye(2), atol=0.02)
  weighted = gmm_lib.GaussianMixture2D(weights=(0.1, 0.2, 0.3, 0.4))
  _, y2 = weighted.sample(jax.random.PRNGKey(1), 40_000)
  np.testing.assert_allclose(np.bincount(np.asarray(y2)) / 40_000,
                             [0.1, 0.2, 0.3, 0.4], atol=0.015)


def test_gmm_clean_given_noisy_posterior_is_bayes():
  g = gmm_lib.GaussianMixture2D()
  c, r = 4, 0.4
  T = np.zeros((c, c))
  for i in range(c):
    for j in range(c):
      T[i, j] = 1 - r if i == j else r / (c - 1)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(100, 2)) * 2,
                  jnp.float32)
  noisy = jnp.asarray(np.arange(100) % c, jnp.int32)
  for sigma in (0.0, 0.7, 3.0):
    post = np.asarray(g.class_posterior(x, sigma), np.float64)
    expected = np.zeros((100, c))
    for n in range(100):
      yt = int(noisy[n])
      num = np.array([T[y, yt] * post[n, y] for y in range(c)])
      expected[n] = num / num.sum()
    w = np.asarray(g.clean_given_noisy_posterior(x, noisy, T, sigma))
    np.testing.assert_allclose(w, expected, atol=1e-5)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    pn = np.asarray(g.noisy_label_posterior(x, T, sigma))
    np.testing.assert_allclose(pn, post @ T, atol=1e-6)
    np.testing.assert_allclose(pn.sum(1), 1.0, atol=1e-6)


def test_load_gmm():
  ds = gmm_lib.load_gmm(num_classes=3, num_train=500, num_test=100, seed=3,
                        std=0.3)
  assert isinstance(ds, InMemoryDataset) and ds.name == "gmm2d"
  assert ds.train_images.shape == (500, 2) and ds.train_images.dtype == (
      np.float32)
  assert ds.test_images.shape == (100, 2) and ds.num_classes == 3
  assert ds.train_labels.dtype == np.int32 and ds.class_names == ("0", "1",
                                                                  "2")
  again = gmm_lib.load_gmm(num_classes=3, num_train=500, num_test=100, seed=3,
                           std=0.3)
  np.testing.assert_array_equal(ds.train_images, again.train_images)
  other = gmm_lib.load_gmm(num_classes=3, num_train=500, num_test=100, seed=4,
                           std=0.3)
  assert not np.array_equal(ds.train_images, other.train_images)


# ------------------------------------------- 7. validation split and config


def test_split_validation():
  train, val = split_validation(50_000, 0.1, seed=0)
  assert val.size == 5_000 and train.size == 45_000
  assert np.intersect1d(train, val).size == 0
  np.testing.assert_array_equal(np.union1d(train, val), np.arange(50_000))
  train2, val2 = split_validation(50_000, 0.1, seed=0)
  np.testing.assert_array_equal(val, val2)
  np.testing.assert_array_equal(train, train2)
  _, val3 = split_validation(50_000, 0.1, seed=1)
  assert not np.array_equal(val, val3)
  train0, val0 = split_validation(7, 0.0, seed=0)
  np.testing.assert_array_equal(train0, np.arange(7))
  assert val0.size == 0
  for bad in (1.0, -0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match="fraction"):
      split_validation(10, bad, seed=0)


def test_load_dataset_gmm_and_plain_objects():
  cfg = dataset_cfg(seed=5)
  ds = load_dataset(cfg)
  ref = gmm_lib.load_gmm(num_classes=4, num_train=2000, num_test=500, seed=5,
                         std=0.5, radius=2.0)
  # Rate-free: the dataset config has no noise fields; labels come out clean.
  assert not any("rate" in k or "noise" in k for k in cfg.keys())
  np.testing.assert_array_equal(ds.train_labels, ref.train_labels)
  np.testing.assert_array_equal(ds.train_images, ref.train_images)
  plain = types.SimpleNamespace(
      name="gmm2d", source="gmm", train_subset=100,
      gmm=types.SimpleNamespace(num_classes=3, num_train=300, num_test=50,
                                std=0.5, radius=2.0))
  small = load_dataset(plain)
  assert small.train_images.shape == (100, 2) and small.num_classes == 3


def test_load_dataset_idx_and_subset():
  ds = load_dataset(dataset_cfg(name="mnist", source="idx",
                                path=str(shared("mnist")), train_subset=1234))
  assert ds.train_images.shape == (1234, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)


@pytest.mark.parametrize("fields,error,needles", [
    (dict(name="mnistt", source="idx"), ValueError, ["'mnistt'", "cifar10"]),
    (dict(name="mnist", source="hdf5"), ValueError, ["'hdf5'", "tfds"]),
    (dict(name="mnist", source="gmm"), ValueError, ["'gmm'", "'mnist'"]),
    (dict(name="gmm2d", source="tfds"), ValueError, ["'tfds'", "'gmm2d'"]),
    (dict(name="cifar10", source="idx", path="/x"), ValueError,
     ["'idx'", "'cifar10'"]),
    (dict(name="cifar10", source="npz", path=None), ValueError,
     ["dataset.path"]),
    (dict(name="cifar10", source="npz", path="/no/such.npz"),
     DataNotFoundError, ["/no/such.npz"]),
    (dict(name="mnist", source="idx", path="/no/such/dir"), DataNotFoundError,
     ["/no/such/dir"]),
    (dict(name="mnist", source="tfds", manual_dir="/no/manual"),
     DataNotFoundError, ["/no/manual"]),
    (dict(name="mnist", source="idx", path="/", cifar_n_dir="/"), ValueError,
     ["cifar_n_dir", "'mnist'"]),
    (dict(name="cifar10", source="tfds", cifar_n_dir="/no/cifar_n"),
     DataNotFoundError, ["/no/cifar_n"]),
    (dict(name="cifar10_n", source="npz", path="/"), ValueError,
     ["cifar_n_dir"]),
    (dict(train_subset=-3), ValueError, ["-3"]),
    (dict(train_subset=5000), ValueError, ["5000", "num_train"]),
    (dict(gmm=dict(num_classes=1, num_train=10, num_test=10, std=0.5,
                   radius=2.0)), ValueError, ["num_classes"]),
])
def test_load_dataset_errors_name_the_bad_value(fields, error, needles):
  with pytest.raises(error) as e:
    load_dataset(dataset_cfg(**fields))
  for needle in needles:
    assert needle in str(e.value), (needle, str(e.value))


def test_datasets_registry():
  assert set(DATASETS) == {"mnist", "fashion_mnist", "cifar10", "cifar100",
                           "cifar10_n", "cifar100_n", "gmm2d"}
  for name, info in DATASETS.items():
    assert info.name == name
    assert len(info.class_names) == info.num_classes
  assert DATASETS["cifar100"].class_names[:2] == ("apple", "aquarium_fish")
  assert dict(DATASETS["mnist"].manual_files)[
      "train-images-idx3-ubyte.gz"] == MNIST_URL + "train-images-idx3-ubyte.gz"


def test_in_memory_dataset_checks():
  ds = gmm_lib.load_gmm(num_train=10, num_test=5)
  with pytest.raises(ValueError, match="out of range"):
    ds.subset(11)
  with pytest.raises(ValueError, match="label set"):
    dataclasses.replace(ds, label_sets={"x": np.zeros(3, np.int32)})
  with pytest.raises(dataclasses.FrozenInstanceError):
    ds.name = "other"
