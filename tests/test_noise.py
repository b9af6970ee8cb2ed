"""Tests for sgn_jax.noise (label-noise models)."""

import json
import math
import pathlib

import numpy as np
import pytest

from sgn_jax import noise

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
N_SAMPLES = 200_000


def _uniform_clean(num_classes, n=N_SAMPLES, seed=1234):
    return np.random.default_rng(seed).integers(0, num_classes, size=n)


def _assert_close_binomial(T_hat, T, clean, num_sigma=5.0):
    """|T̂ − T| <= num_sigma · binomial standard error, per entry; exact zeros stay zero."""
    counts = np.bincount(clean, minlength=T.shape[0]).astype(np.float64)
    se = np.sqrt(T * (1.0 - T) / counts[:, None])
    assert np.all(T_hat[T == 0] == 0), "a zero-probability label was drawn"
    assert np.all(T_hat[T == 1] == 1), "an identity row changed a label"
    excess = np.abs(T_hat - T) - (num_sigma * se + 1e-12)
    assert np.all(excess <= 0), (
        f"max |T̂ − T| / se = {np.max(np.abs(T_hat - T)[se > 0] / se[se > 0]):.2f}")


# --------------------------------------------------------------------------
# Constants and the CIFAR-100 superclass table.
# --------------------------------------------------------------------------

def test_constants():
    assert noise.NOISE_KINDS == ("none", "sym", "asym", "cifar_n")
    assert noise.CONVENTIONS == ("tdsm", "sgn")
    assert noise.DATASET_NUM_CLASSES == {
        "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
        "cifar10_n": 10, "cifar100_n": 100, "gmm2d": None}
    assert issubclass(noise.SingularTransitionError, ValueError)
    coarse = np.asarray(noise.CIFAR100_COARSE_LABELS)
    assert coarse.shape == (100,)
    assert np.all(np.bincount(coarse, minlength=20) == 5)


def test_cifar100_coarse_labels_match_real_data():
    path = SHARED / "data" / "cifar_n" / "cifar100n_labels.npz"
    if not path.exists():
        pytest.skip(f"CIFAR-100N labels not found at {path}")
    with np.load(path) as data:
        fine, coarse = data["clean_label"], data["clean_coarse_label"]
    assert fine.shape == (50_000,) and coarse.shape == (50_000,)
    assert set(np.unique(fine).tolist()) == set(range(100))
    np.testing.assert_array_equal(coarse, np.asarray(noise.CIFAR100_COARSE_LABELS)[fine])


# --------------------------------------------------------------------------
# Asymmetric pairs.
# --------------------------------------------------------------------------

def _expected_targets(num_classes, pairs):
    t = list(range(num_classes))
    for src, dst in pairs.items():
        t[src] = dst
    return t


@pytest.mark.parametrize("convention", ["tdsm", "sgn"])
@pytest.mark.parametrize("dataset,pairs", [
    ("mnist", {2: 7, 3: 8, 5: 6, 6: 5}),
    ("cifar10", {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}),
    ("cifar10_n", {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}),
    ("fashion_mnist", {0: 6, 2: 4, 5: 7, 7: 9}),
])
def test_asymmetric_targets_small(dataset, pairs, convention):
    targets = noise.asymmetric_targets(dataset, convention)
    assert targets.shape == (10,) and np.issubdtype(targets.dtype, np.integer)
    assert targets.tolist() == _expected_targets(10, pairs)


@pytest.mark.parametrize("dataset", ["cifar100", "cifar100_n"])
def test_asymmetric_targets_cifar100_tdsm(dataset):
    targets = noise.asymmetric_targets(dataset, "tdsm")
    coarse = np.asarray(noise.CIFAR100_COARSE_LABELS)
    chain = [4, 30, 55, 72, 95, 4]
    for a, b in zip(chain[:-1], chain[1:]):
        assert targets[a] == b
    # Independent construction: smallest larger member of the superclass, else the smallest.
    for i in range(100):
        members = [j for j in range(100) if coarse[j] == coarse[i]]
        larger = [j for j in members if j > i]
        assert targets[i] == (larger[0] if larger else members[0]), i
    assert np.all(coarse[targets] == coarse)
    assert np.all(targets != np.arange(100))
    assert sorted(targets.tolist()) == list(range(100))  # a permutation


def test_asymmetric_targets_cifar100_sgn():
    targets = noise.asymmetric_targets("cifar100", "sgn")
    assert targets.tolist() == [(i + 1) % 100 for i in range(100)]
    assert targets[99] == 0


def test_asymmetric_transition_formula():
    r = 0.3
    T = noise.asymmetric_transition("mnist", r)
    expected = np.eye(10)
    for src, dst in {2: 7, 3: 8, 5: 6, 6: 5}.items():
        expected[src, src] = 1 - r
        expected[src, dst] = r
    np.testing.assert_allclose(T, expected, atol=0, rtol=0)
    assert T.dtype == np.float64
    T100 = noise.asymmetric_transition("cifar100", r, convention="sgn")
    np.testing.assert_allclose(T100.sum(1), 1.0)
    assert T100[99, 0] == r and T100[99, 99] == 1 - r


@pytest.mark.parametrize("dataset", ["gmm2d", "imagenet", None])
def test_asymmetric_targets_unknown_dataset(dataset):
    with pytest.raises(ValueError) as err:
        noise.asymmetric_targets(dataset)
    msg = str(err.value)
    for known in ("mnist", "cifar10", "cifar100"):
        assert known in msg


def test_asymmetric_targets_unknown_convention():
    with pytest.raises(ValueError, match="tdsm, sgn"):
        noise.asymmetric_targets("cifar100", "paper")


# --------------------------------------------------------------------------
# Symmetric transitions.
# --------------------------------------------------------------------------

def _reference_symmetric(c, r, include_true):
    T = np.zeros((c, c))
    for i in range(c):
        for j in range(c):
            if include_true:
                T[i, j] = (1 - r) * (i == j) + r / c
            else:
                T[i, j] = 1 - r if i == j else r / (c - 1)
    return T


@pytest.mark.parametrize("include_true", [False, True])
@pytest.mark.parametrize("c,r", [(2, 0.3), (10, 0.0), (10, 0.4), (100, 0.6)])
def test_symmetric_transition(c, r, include_true):
    T = noise.symmetric_transition(c, r, include_true)
    assert T.dtype == np.float64 and T.shape == (c, c)
    np.testing.assert_allclose(T, _reference_symmetric(c, r, include_true), atol=1e-15)
    np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(T >= 0)
    noise.check_transition(T, c)


def test_symmetric_diagonals():
    assert noise.symmetric_transition(10, 0.4, False)[0, 0] == pytest.approx(0.6)
    assert noise.symmetric_transition(10, 0.4, True)[0, 0] == pytest.approx(0.64)
    assert noise.symmetric_transition(10, 0.4, True)[0, 1] == pytest.approx(0.04)
    assert noise.symmetric_transition(10, 0.4, False)[0, 1] == pytest.approx(0.4 / 9)


def test_transition_matrix_dispatch():
    np.testing.assert_array_equal(noise.transition_matrix("none", 7), np.eye(7))
    np.testing.assert_array_equal(
        noise.transition_matrix("sym", 10, 0.4),
        noise.symmetric_transition(10, 0.4, include_true_class=False))
    np.testing.assert_array_equal(
        noise.transition_matrix("sym", 10, 0.4, convention="sgn"),
        noise.symmetric_transition(10, 0.4, include_true_class=True))
    np.testing.assert_array_equal(
        noise.transition_matrix("asym", 100, 0.4, dataset="cifar100", convention="sgn"),
        noise.asymmetric_transition("cifar100", 0.4, "sgn"))
    with pytest.raises(ValueError, match="empirical"):
        noise.transition_matrix("cifar_n", 10, 0.0)
    with pytest.raises(ValueError, match="none, sym, asym, cifar_n"):
        noise.transition_matrix("symmetric", 10, 0.4)
    with pytest.raises(ValueError, match="tdsm, sgn"):
        noise.transition_matrix("sym", 10, 0.4, convention="SGN")
    with pytest.raises(ValueError, match="dataset"):
        noise.transition_matrix("asym", 10, 0.4)
    with pytest.raises(ValueError, match="100 classes"):
        noise.transition_matrix("asym", 10, 0.4, dataset="cifar100")
    with pytest.raises(ValueError, match="gmm2d"):
        noise.transition_matrix("sym", 10, 0.4, dataset="svhn")


# --------------------------------------------------------------------------
# Sampling: statistics, determinism, the documented algorithm.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("convention", ["tdsm", "sgn"])
@pytest.mark.parametrize("r", [0.2, 0.6])
def test_sym_sampling_statistics(convention, r):
    c = 10
    clean = _uniform_clean(c)
    noisy, T = noise.make_noisy_labels(
        clean, "sym", num_classes=c, rate=r, convention=convention, seed=7)
    assert noisy.dtype == np.int32 and noisy.shape == clean.shape
    _assert_close_binomial(noise.empirical_transition(clean, noisy, c), T, clean)
    expected_rate = r if convention == "tdsm" else r * (c - 1) / c
    se = math.sqrt(expected_rate * (1 - expected_rate) / clean.size)
    assert abs(noise.realised_noise_rate(clean, noisy) - expected_rate) < 5 * se


def test_sym_sampling_statistics_cifar100():
    c, r = 100, 0.4
    clean = _uniform_clean(c)
    noisy, T = noise.make_noisy_labels(clean, "sym", num_classes=c, rate=r, seed=3)
    _assert_close_binomial(noise.empirical_transition(clean, noisy, c), T, clean)


@pytest.mark.parametrize("dataset,convention", [
    ("mnist", "tdsm"), ("fashion_mnist", "tdsm"), ("cifar10", "sgn"),
    ("cifar100", "tdsm"), ("cifar100", "sgn")])
def test_asym_sampling_statistics(dataset, convention):
    c, r = noise.DATASET_NUM_CLASSES[dataset], 0.4
    clean = _uniform_clean(c)
    noisy, T = noise.make_noisy_labels(clean, "asym", num_classes=c, rate=r,
                                       dataset=dataset, convention=convention, seed=11)
    _assert_close_binomial(noise.empirical_transition(clean, noisy, c), T, clean)
    targets = noise.asymmetric_targets(dataset, convention)
    flipping = targets[clean] != clean
    # Classes without a pair never change; the others go only to their target.
    assert np.all(noisy[~flipping] == clean[~flipping])
    assert np.all((noisy == clean) | (noisy == targets[clean]))
    expected = r * flipping.mean()
    se = math.sqrt(r * (1 - r) / flipping.sum())
    assert abs(noise.realised_noise_rate(clean, noisy) - expected) < 5 * se * flipping.mean()


def test_sampling_is_documented_inverse_cdf():
    c = 10
    T = noise.symmetric_transition(c, 0.5, include_true_class=True)
    T[3] = np.eye(c)[3]  # an identity row
    T[4] = [0, 0, 0.25, 0, 0, 0, 0, 0.75, 0, 0]  # zero-probability tail and head
    clean = _uniform_clean(c, n=5000)
    noisy = noise.sample_noisy_labels(clean, T, seed=42)
    u = np.random.default_rng(42).random(clean.size)
    cdf = np.cumsum(T, axis=1)
    expected = (u[:, None] >= cdf[clean]).sum(axis=1)
    np.testing.assert_array_equal(noisy, expected)
    assert np.all(noisy[clean == 3] == 3)
    assert set(np.unique(noisy[clean == 4]).tolist()) == {2, 7}


def test_sampling_determinism():
    clean = _uniform_clean(10, n=20_000)
    a, _ = noise.make_noisy_labels(clean, "sym", num_classes=10, rate=0.4, seed=5)
    b, _ = noise.make_noisy_labels(clean.copy(), "sym", num_classes=10, rate=0.4, seed=5)
    c, _ = noise.make_noisy_labels(clean, "sym", num_classes=10, rate=0.4, seed=6)
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.1
    # A prefix of the data gets the same labels (independent of how the data is split).
    head, _ = noise.make_noisy_labels(clean[:777], "sym", num_classes=10, rate=0.4, seed=5)
    np.testing.assert_array_equal(head, a[:777])
    # The clean input is not modified.
    np.testing.assert_array_equal(clean, _uniform_clean(10, n=20_000))


def test_none_kind_and_zero_rate_keep_labels():
    clean = _uniform_clean(10, n=1000)
    noisy, T = noise.make_noisy_labels(clean, "none", num_classes=10)
    np.testing.assert_array_equal(noisy, clean)
    np.testing.assert_array_equal(T, np.eye(10))
    noisy, _ = noise.make_noisy_labels(clean, "sym", num_classes=10, rate=0.0, seed=1)
    np.testing.assert_array_equal(noisy, clean)


def test_assumed_rate_keeps_clean_labels_with_an_assumed_symmetric_t():
    """TDSM's clean benchmark: clean labels, T assumed symmetric at 5% (tdsm convention)."""
    clean = _uniform_clean(10, n=1000)
    expected = np.full((10, 10), 0.05 / 9)
    np.fill_diagonal(expected, 0.95)
    for spec in (noise.NoiseSpec(kind="none", assumed_rate=0.05),
                 noise.NoiseSpec(kind="sym", rate=0.0, assumed_rate=0.05)):
        labels, T = spec.draw(clean, num_classes=10, dataset="mnist", seed=3)
        np.testing.assert_array_equal(labels, clean)
        np.testing.assert_allclose(T, expected, rtol=1e-12)
    # The sgn convention's symmetric T includes the true class.
    _, T = noise.NoiseSpec(kind="none", convention="sgn", assumed_rate=0.05).draw(
        clean, num_classes=10, dataset="mnist", seed=3)
    np.testing.assert_allclose(np.diag(T), 0.95 + 0.005, rtol=1e-12)
    # 0 (the default) keeps T = I.
    _, T = noise.NoiseSpec(kind="none").draw(clean, num_classes=10, dataset="mnist", seed=3)
    np.testing.assert_array_equal(T, np.eye(10))


@pytest.mark.parametrize("fields,match", [
    (dict(kind="sym", rate=0.4, assumed_rate=0.05), "noise.kind='sym' at noise.rate=0.4"),
    (dict(kind="none", labels_file="x.npz", assumed_rate=0.05), "noise.labels_file='x.npz'"),
    (dict(kind="cifar_n", label_set="aggre_label", assumed_rate=0.05), "noise.kind='cifar_n'"),
    (dict(kind="none", assumed_rate=1.0), r"noise.assumed_rate: .*\[0, 1\)"),
    (dict(kind="none", assumed_rate=-0.1), r"noise.assumed_rate: .*\[0, 1\)"),
])
def test_assumed_rate_refused_for_noisy_labels(fields, match):
    with pytest.raises(ValueError, match=match):
        noise.NoiseSpec(**fields)


def test_sampling_input_errors():
    T = noise.symmetric_transition(10, 0.4, False)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        noise.sample_noisy_labels(np.array([0, 10]), T, seed=0)
    with pytest.raises(ValueError, match="integer"):
        noise.sample_noisy_labels(np.array([0.0, 1.0]), T, seed=0)
    with pytest.raises(ValueError, match="seed"):
        noise.sample_noisy_labels(np.array([0, 1]), T, seed=None)


# --------------------------------------------------------------------------
# Validation errors.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("rate,shown", [(-0.1, "-0.1"), (1.0, "1.0"), (1.5, "1.5"),
                                        (float("nan"), "nan")])
def test_bad_rates(rate, shown):
    for call in (
            lambda: noise.check_rate(rate),
            lambda: noise.symmetric_transition(10, rate, False),
            lambda: noise.transition_matrix("sym", 10, rate),
            lambda: noise.asymmetric_transition("mnist", rate),
            # The rate is validated before anything else (here: missing label sets).
            lambda: noise.make_noisy_labels(np.zeros(3, int), "cifar_n",
                                            num_classes=10, rate=rate),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert shown in str(err.value) and "[0, 1)" in str(err.value)


def test_good_rates():
    assert noise.check_rate(0) == 0.0
    assert noise.check_rate(np.float32(0.25)) == 0.25
    assert isinstance(noise.check_rate(0.4), float)
    with pytest.raises(ValueError):
        noise.check_rate("0.4")
    with pytest.raises(ValueError):
        noise.check_rate(None)


def test_make_noisy_labels_unknown_names():
    clean = np.zeros(4, int)
    with pytest.raises(ValueError, match="none, sym, asym, cifar_n"):
        noise.make_noisy_labels(clean, "pair", num_classes=10, rate=0.2)
    with pytest.raises(ValueError, match="tdsm, sgn"):
        noise.make_noisy_labels(clean, "sym", num_classes=10, rate=0.2, convention="x")
    with pytest.raises(ValueError, match="fashion_mnist"):
        noise.make_noisy_labels(clean, "asym", num_classes=10, rate=0.2, dataset="svhn")


@pytest.mark.parametrize("bad,what", [
    (np.ones((2, 3)) / 3, "square"),
    (np.array([[0.5, 0.5], [np.nan, 1.0]]), "non-finite"),
    (np.array([[1.2, -0.2], [0.0, 1.0]]), "negative"),
    (np.array([[0.5, 0.4], [0.0, 1.0]]), "sum to 1"),
])
def test_check_transition_errors(bad, what):
    with pytest.raises(ValueError, match=what):
        noise.check_transition(bad)


def test_check_transition_ok_and_num_classes():
    T = noise.check_transition([[1, 0], [0.3, 0.7 + 1e-8]])
    assert T.dtype == np.float64
    with pytest.raises(ValueError, match="num_classes"):
        noise.check_transition(np.eye(3), num_classes=4)


@pytest.mark.parametrize("T", [
    noise.symmetric_transition(10, 0.9, include_true_class=False),  # r = (C-1)/C
    noise.asymmetric_transition("mnist", 0.5),  # 5 <-> 6 at r = 0.5
    noise.asymmetric_transition("cifar10", 0.5),  # 3 <-> 5 at r = 0.5
])
def test_singular_transitions(T):
    with pytest.raises(noise.SingularTransitionError) as err:
        noise.check_invertible(T)
    assert "condition number" in str(err.value)
    assert "(C-1)/C" in str(err.value)


@pytest.mark.parametrize("T", [
    noise.symmetric_transition(10, 0.4, include_true_class=False),
    noise.symmetric_transition(10, 0.8, include_true_class=False),
    noise.symmetric_transition(10, 0.9, include_true_class=True),
    noise.asymmetric_transition("mnist", 0.4),
    noise.asymmetric_transition("cifar100", 0.4),
    noise.asymmetric_transition("cifar100", 0.4, "sgn"),
])
def test_invertible_transitions(T):
    noise.check_invertible(T)


# --------------------------------------------------------------------------
# CIFAR-N path.
# --------------------------------------------------------------------------

def test_cifar_n_returns_supplied_labels():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 10, 500)
    sets = {"aggre_label": rng.integers(0, 10, 500), "worse_label": rng.integers(0, 10, 500)}
    noisy, T = noise.make_noisy_labels(clean, "cifar_n", num_classes=10,
                                       label_sets=sets, label_set="worse_label")
    assert T is None and noisy.dtype == np.int32
    np.testing.assert_array_equal(noisy, sets["worse_label"])
    with pytest.raises(ValueError) as err:
        noise.make_noisy_labels(clean, "cifar_n", num_classes=10, label_sets=sets,
                                label_set="random_label1")
    assert "aggre_label" in str(err.value) and "worse_label" in str(err.value)
    with pytest.raises(ValueError, match="loaded"):
        noise.make_noisy_labels(clean, "cifar_n", num_classes=10, label_set="aggre_label")
    with pytest.raises(ValueError, match="500"):
        noise.make_noisy_labels(clean, "cifar_n", num_classes=10,
                                label_sets={"x": sets["aggre_label"][:499]}, label_set="x")
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        noise.make_noisy_labels(clean, "cifar_n", num_classes=10,
                                label_sets={"x": sets["aggre_label"] + 1}, label_set="x")


def test_cifar_n_real_worse_label_rate():
    path = SHARED / "data" / "cifar_n" / "cifar10n_labels.npz"
    if not path.exists():
        pytest.skip(f"CIFAR-10N labels not found at {path}")
    with np.load(path) as data:
        sets = {k: data[k] for k in data.files}
    clean = sets.pop("clean_label")
    noisy, _ = noise.make_noisy_labels(clean, "cifar_n", num_classes=10,
                                       label_sets=sets, label_set="worse_label")
    assert noise.realised_noise_rate(clean, noisy) == pytest.approx(0.4021, abs=5e-4)


# --------------------------------------------------------------------------
# Diagnostics and the reverse transition.
# --------------------------------------------------------------------------

def test_empirical_transition_small_and_empty_row():
    clean = np.array([0, 0, 0, 0, 2, 2])
    noisy = np.array([0, 1, 1, 2, 2, 0])
    T = noise.empirical_transition(clean, noisy, 3)
    np.testing.assert_allclose(T, [[0.25, 0.5, 0.25], [0, 1, 0], [0.5, 0, 0.5]])
    s = noise.noise_summary(clean, noisy, 3)
    assert s["realised_noise_rate"] == pytest.approx(4 / 6)
    assert s["per_class_flip_rate"] == pytest.approx([0.75, 0.0, 0.5])
    assert s["empirical_transition"] == T.tolist()
    json.dumps(s)
    with pytest.raises(ValueError, match="length"):
        noise.empirical_transition(clean, noisy[:-1], 3)


def test_reverse_transition_bayes():
    rng = np.random.default_rng(0)
    c = 5
    T = rng.random((c, c)) + np.eye(c) * 2
    T /= T.sum(1, keepdims=True)
    prior = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    S = noise.reverse_transition(T, prior * 40)  # counts are normalised
    for yt in range(c):
        p_noisy = sum(T[k, yt] * prior[k] for k in range(c))
        for y in range(c):
            assert S[yt, y] == pytest.approx(T[y, yt] * prior[y] / p_noisy, rel=1e-12)
    np.testing.assert_allclose(S.sum(1), 1.0)
    # Uniform prior by default; a non-uniform prior changes the answer.
    S_uni = noise.reverse_transition(T)
    np.testing.assert_allclose(S_uni, noise.reverse_transition(T, np.ones(c)))
    np.testing.assert_allclose(S_uni, (T / T.sum(0)).T)
    assert not np.allclose(S_uni, S)


def test_reverse_transition_monte_carlo():
    c = 10
    T = noise.asymmetric_transition("cifar10", 0.3)
    prior = np.linspace(1, 3, c)
    prior /= prior.sum()
    clean = np.random.default_rng(1).choice(c, size=N_SAMPLES, p=prior)
    noisy = noise.sample_noisy_labels(clean, T, seed=2)
    S_hat = noise.empirical_transition(noisy, clean, c)  # rows indexed by the noisy label
    S = noise.reverse_transition(T, prior)
    assert np.max(np.abs(S_hat - S)) < 0.02


def test_reverse_transition_unproduced_noisy_class():
    T = noise.asymmetric_transition("mnist", 0.3)
    T[:, 0] = 0.0
    T[0] = np.eye(10)[1]  # nothing is ever labelled 0
    S = noise.reverse_transition(T)
    np.testing.assert_allclose(S[0], np.full(10, 0.1))
    np.testing.assert_allclose(S.sum(1), 1.0)
    with pytest.raises(ValueError, match="clean_prior"):
        noise.reverse_transition(T, np.array([1.0, -1.0] + [0.0] * 8))
