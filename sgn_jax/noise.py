"""Label-noise models: transition matrices, noisy-label sampling, diagnostics.

Notation (shared by TDSM and SGN):

* Forward transition ``T[i, j] = p(Ỹ = j | Y = i)``: the probability that an
  example of clean class ``i`` carries the noisy label ``j``. Rows sum to 1.
* Reverse transition ``S[ỹ, y] = p(Y = y | Ỹ = ỹ)
  = T[y, ỹ]·π_y / Σ_k T[k, ỹ]·π_k`` for a clean-class prior ``π``.

Synthetic noise comes in two conventions (``CONVENTIONS``):

* ``"tdsm"`` (Na et al., ICLR 2024). Symmetric: with probability ``r`` the label
  is replaced by one of the ``C − 1`` OTHER classes, uniformly:
  ``T = (1 − r)·I + r/(C − 1)·(J − I)``. The realised flip rate is ``r``.
  CIFAR-100 asymmetric: the next fine class within the same superclass,
  cyclically in index order (``4 → 30 → 55 → 72 → 95 → 4``).
* ``"sgn"`` (Englesson & Azizpour, ICLR 2024). Symmetric: with probability
  ``r`` the label is replaced by a uniform draw over ALL ``K`` classes (the true
  class included): ``T = (1 − r)·I + r/K·J``, diagonal ``1 − r + r/K``. The
  realised flip rate is ``r·(K − 1)/K``. CIFAR-100 asymmetric:
  ``i → (i + 1) mod 100`` over all fine classes.

Asymmetric noise flips a class to its target with probability ``r``, in both
conventions unless stated: MNIST ``2→7, 3→8, 5↔6``; CIFAR-10 ``9→1`` (truck →
automobile), ``2→0`` (bird → airplane), ``4→7`` (deer → horse), ``3↔5``
(cat ↔ dog). Fashion-MNIST is not in either paper; this library's choice is
``0→6, 2→4, 5→7, 7→9`` (T-shirt/top → Shirt, Pullover → Coat, Sandal → Sneaker,
Sneaker → Ankle boot). Classes without a target keep their label.

``"cifar_n"`` noise is the human label sets of CIFAR-10N / CIFAR-100N, loaded by
the caller; its transition matrix is only known empirically
(`empirical_transition`).

Reproducibility: noise is drawn with ``np.random.default_rng(seed)`` from one
uniform number per example, in example order, on the FULL label array (call
this before sharding across hosts). The same call therefore gives the same
labels on every host, with any number of devices, and on every resume; the
label of example ``i`` depends only on ``seed``, ``i`` and its clean label
(a prefix of the array gets the same noisy labels as the whole array).

Estimating T from data (this module only models and samples it) is in
`sgn_jax.noise_estimation`: anchor points from a classifier's posteriors,
the confusion of a trusted clean subset, the corrector's moment estimate, and
VolMinNet's learned T (with when that recovers T).

All functions are pure and take and return NumPy arrays.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping

import numpy as np

from sgn_jax import safe_load

__all__ = [
    "ASYMMETRIC_PAIRS",
    "CIFAR100_COARSE_LABELS",
    "CONVENTIONS",
    "DATASET_NUM_CLASSES",
    "NOISE_KINDS",
    "SingularTransitionError",
    "asymmetric_targets",
    "asymmetric_transition",
    "check_invertible",
    "check_rate",
    "check_transition",
    "empirical_transition",
    "NoiseSpec",
    "make_noisy_labels",
    "noise_summary",
    "realised_noise_rate",
    "reverse_transition",
    "sample_noisy_labels",
    "symmetric_transition",
    "transition_matrix",
]

# Number of classes per dataset name (None: chosen by the caller).
DATASET_NUM_CLASSES = {
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "cifar10_n": 10,
    "cifar100_n": 100,
    "gmm2d": None,
}

# "cifar_n" = human label sets supplied by the caller.
NOISE_KINDS = ("none", "sym", "asym", "cifar_n")

CONVENTIONS = ("tdsm", "sgn")

# CIFAR-100 fine label -> coarse (superclass) label, in the standard label
# order of the CIFAR-100 python batches (checked against the CIFAR-100N file in
# tests/test_noise.py). Read-only.
CIFAR100_COARSE_LABELS = np.array(
    [4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
     3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
     6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
     0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
     5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
     16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
     10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
     2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
     16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
     18, 1, 2, 15, 6, 0, 17, 8, 14, 13],
    dtype=np.int64)
CIFAR100_COARSE_LABELS.setflags(write=False)

# Asymmetric (class-dependent) flips, (clean, noisy) pairs, shared by both
# conventions. CIFAR-100 is built by `asymmetric_targets` (convention-specific).
# Fashion-MNIST is this library's choice (not in the TDSM or SGN papers).
ASYMMETRIC_PAIRS = {
    "mnist": ((2, 7), (3, 8), (5, 6), (6, 5)),
    "fashion_mnist": ((0, 6), (2, 4), (5, 7), (7, 9)),
    "cifar10": ((9, 1), (2, 0), (4, 7), (3, 5), (5, 3)),
}

# Datasets whose clean classes are those of another one.
_ASYM_ALIASES = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}

_ROW_SUM_TOL = 1e-6


class SingularTransitionError(ValueError):
    """A transition matrix is (numerically) singular where an inverse is needed."""


# --------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------

def check_rate(rate) -> float:
    """Returns ``rate`` as a float, checking ``0 <= rate < 1``.

    ``r = 1`` is excluded: every label would be replaced and no clean signal
    would remain. Raises ValueError (naming the value and ``[0, 1)``) for values
    outside the interval, NaN, and non-numbers.
    """
    value = None
    if not isinstance(rate, (bool, np.bool_, str, bytes)) and np.ndim(rate) == 0:
        try:
            value = float(rate)
        except (TypeError, ValueError):
            value = None
    if value is None:
        raise ValueError(f"noise rate must be a real number in [0, 1), got {rate!r}")
    if not (0.0 <= value < 1.0):  # False for NaN as well.
        raise ValueError(f"noise rate must be in [0, 1), got {value}")
    return value


def _check_num_classes(num_classes, minimum=1) -> int:
    if (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
            or int(num_classes) < minimum):
        raise ValueError(
            f"num_classes must be an integer >= {minimum}, got {num_classes!r}")
    return int(num_classes)


def _check_convention(convention) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(
            f"unknown noise convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    return convention


def _check_kind(kind) -> str:
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
    return kind


def _check_dataset(dataset) -> str:
    if dataset not in DATASET_NUM_CLASSES:
        raise ValueError(
            f"unknown dataset {dataset!r}; known: {', '.join(DATASET_NUM_CLASSES)}")
    return dataset


def _check_seed(seed) -> int:
    if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
            or int(seed) < 0):
        raise ValueError(
            f"seed must be a non-negative integer, got {seed!r} (None is refused: "
            "it would make the noise irreproducible)")
    return int(seed)


def _as_labels(labels, name: str, num_classes: int | None = None) -> np.ndarray:
    """1-D integer label array, values in [0, num_classes) when given."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    if num_classes is not None and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got values in [{lo}, {hi}]")
    return arr


def check_transition(T, num_classes=None) -> np.ndarray:
    """Validates a transition matrix and returns it as float64.

    Requires ``T`` square (``C × C``, and ``C == num_classes`` when given), finite,
    nonnegative, with every row summing to 1 within 1e-6:
    ``T[i, j] >= 0`` and ``|Σ_j T[i, j] − 1| <= 1e-6``. Raises ValueError naming
    what is wrong (and the first offending row).
    """
    arr = np.asarray(T)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(
            f"transition matrix must be square and non-empty, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"transition matrix must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if num_classes is not None:
        num_classes = _check_num_classes(num_classes)
        if arr.shape[0] != num_classes:
            raise ValueError(
                f"transition matrix is {arr.shape[0]}×{arr.shape[1]} but num_classes is "
                f"{num_classes}")
    if not np.all(np.isfinite(arr)):
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"transition matrix has non-finite entries (first T[{i}, {j}] = {arr[i, j]})")
    if np.any(arr < 0):
        i, j = np.argwhere(arr < 0)[0]
        raise ValueError(
            f"transition matrix has negative entries (first T[{i}, {j}] = {arr[i, j]})")
    sums = arr.sum(axis=1)
    bad = np.abs(sums - 1.0) > _ROW_SUM_TOL
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"transition matrix rows must sum to 1 (tol {_ROW_SUM_TOL}); "
            f"{int(bad.sum())} do not (first: row {i} sums to {sums[i]!r})")
    return arr


def check_invertible(T, what="transition matrix", max_condition=1e8) -> None:
    """Raises SingularTransitionError if ``cond₂(T) = σ_max/σ_min > max_condition``.

    Transition-based corrections (TDSM weights with ``S⁻¹``, backward
    correction) need an invertible matrix. The error gives the condition number
    and a hint: symmetric TDSM noise is singular at ``r = (C − 1)/C`` (its
    eigenvalues are 1 and ``1 − r·C/(C − 1)``; e.g. ``r = 0.9`` for ``C = 10``),
    and a swap ``i ↔ j`` (MNIST 5↔6, CIFAR-10 cat↔dog) is singular at ``r = 0.5``.
    """
    arr = np.asarray(T, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{what} must be square and non-empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite entries")
    with np.errstate(all="ignore"):
        cond = float(np.linalg.cond(arr))
    if not math.isfinite(cond) or cond > max_condition:
        raise SingularTransitionError(
            f"{what} is singular or ill-conditioned: condition number {cond:.3g} > "
            f"{max_condition:.3g}. Hint: symmetric TDSM-convention noise with "
            f"r = (C-1)/C makes every label equally likely (e.g. r = 0.9 for C = 10), "
            f"and a label swap i<->j (MNIST 5<->6, CIFAR-10 cat<->dog) at r = 0.5 "
            f"makes two rows equal; choose a smaller rate.")


# --------------------------------------------------------------------------
# Transition matrices.
# --------------------------------------------------------------------------

def uninformative_labels(T) -> list[int]:
    """Noisy labels j whose clean class is not most likely j: T[i, j] >= T[j, j] for some
    i != j (columns of the row-stochastic T, under a uniform clean prior). Such noise
    leaves the labels without information about their class, e.g. symmetric noise
    (TDSM convention) at rate >= (C - 1) / C."""
    T = np.asarray(T, np.float64)
    off = T - np.diag(np.full(T.shape[0], np.inf))
    return [int(j) for j in range(T.shape[0]) if off[:, j].max() >= T[j, j]]


def check_informative(T, what="the noise's transition matrix T") -> None:
    """ValueError when `uninformative_labels(T)` is not empty (a method that inverts T
    needs labels that carry information)."""
    bad = uninformative_labels(T)
    if bad:
        c = np.shape(T)[0]
        raise SingularTransitionError(
            f"{what} leaves the labels without information: for noisy label(s) {bad[:5]} "
            "another clean class is at least as likely as the label's own (T[i, j] >= "
            f"T[j, j]); symmetric noise does this at rate >= (C-1)/C = {(c - 1) / c:.4g}. "
            "Lower noise.rate")


def symmetric_transition(num_classes, rate, include_true_class) -> np.ndarray:
    """Symmetric (class-independent) noise transition, float64 ``C × C``.

    ``include_true_class=False`` (TDSM convention): with probability ``r`` the
    label moves to one of the ``C − 1`` other classes uniformly,
    ``T[i, i] = 1 − r`` and ``T[i, j] = r/(C − 1)`` for ``j ≠ i``.

    ``include_true_class=True`` (SGN convention): with probability ``r`` the
    label is redrawn uniformly over all ``K`` classes,
    ``T = (1 − r)·I + r/K``, i.e. ``T[i, i] = 1 − r + r/K``, ``T[i, j] = r/K``.
    """
    rate = check_rate(rate)
    if not isinstance(include_true_class, (bool, np.bool_)):
        raise ValueError(
            f"include_true_class must be a bool, got {include_true_class!r}")
    c = _check_num_classes(num_classes, minimum=2)
    if include_true_class:
        T = np.full((c, c), rate / c, dtype=np.float64)
        np.fill_diagonal(T, 1.0 - rate + rate / c)
    else:
        T = np.full((c, c), rate / (c - 1), dtype=np.float64)
        np.fill_diagonal(T, 1.0 - rate)
    return T


def _cifar100_superclass_next() -> np.ndarray:
    """Next fine class of the same superclass, cyclically in index order."""
    coarse = CIFAR100_COARSE_LABELS
    targets = np.arange(100, dtype=np.int64)
    for sc in np.unique(coarse):
        members = np.flatnonzero(coarse == sc)  # ascending
        targets[members] = np.roll(members, -1)
    return targets


def asymmetric_targets(dataset, convention="tdsm") -> np.ndarray:
    """Target class of each clean class under asymmetric noise, ``(C,)`` int64.

    ``targets[i] = i`` for classes that keep their label. Pairs (see the module
    docstring): MNIST ``2→7, 3→8, 5↔6``; CIFAR-10 ``9→1, 2→0, 4→7, 3↔5``;
    Fashion-MNIST (this library's choice) ``0→6, 2→4, 5→7, 7→9``; CIFAR-100
    ``"tdsm"``: next fine class within the superclass, cyclically in index
    order; CIFAR-100 ``"sgn"``: ``(i + 1) mod 100``. ``cifar10_n`` and
    ``cifar100_n`` share the classes (and pairs) of ``cifar10`` / ``cifar100``.
    ``gmm2d`` has no asymmetric pairs: ValueError, as for unknown datasets.
    """
    _check_convention(convention)
    _check_dataset(dataset)
    base = _ASYM_ALIASES.get(dataset, dataset)
    if base == "cifar100":
        if convention == "tdsm":
            return _cifar100_superclass_next()
        return (np.arange(100, dtype=np.int64) + 1) % 100
    if base not in ASYMMETRIC_PAIRS:
        known = sorted(set(ASYMMETRIC_PAIRS) | {"cifar100"} | set(_ASYM_ALIASES))
        raise ValueError(
            f"dataset {dataset!r} has no asymmetric noise pairs; datasets with "
            f"asymmetric noise: {', '.join(known)}")
    targets = np.arange(DATASET_NUM_CLASSES[base], dtype=np.int64)
    for src, dst in ASYMMETRIC_PAIRS[base]:
        targets[src] = dst
    return targets


def asymmetric_transition(dataset, rate, convention="tdsm") -> np.ndarray:
    """Asymmetric noise transition, float64 ``C × C``.

    ``T[i] = (1 − r)·e_i + r·e_{t(i)}`` for every class with a target
    ``t(i) ≠ i`` (`asymmetric_targets`), and ``T[i] = e_i`` otherwise.
    """
    rate = check_rate(rate)
    targets = asymmetric_targets(dataset, convention)
    c = targets.shape[0]
    T = np.eye(c, dtype=np.float64)
    flip = np.flatnonzero(targets != np.arange(c))
    T[flip, flip] = 1.0 - rate
    T[flip, targets[flip]] = rate
    return T


def transition_matrix(kind, num_classes, rate=0.0, *, dataset=None,
                      convention="tdsm") -> np.ndarray:
    """The true forward transition ``T`` of synthetic noise, float64 ``C × C``.

    * ``"none"``: ``T = I`` (``rate`` is validated but ignored).
    * ``"sym"``: `symmetric_transition` (``include_true_class`` is
      ``convention == "sgn"``).
    * ``"asym"``: `asymmetric_transition` for ``dataset`` (required).
    * ``"cifar_n"``: ValueError; the human-noise ``T`` is only known
      empirically (`empirical_transition`).

    When ``dataset`` has a fixed number of classes it must equal
    ``num_classes``. Unknown kinds / conventions / datasets raise ValueError
    listing the known ones.
    """
    _check_kind(kind)
    _check_convention(convention)
    rate = check_rate(rate)
    c = _check_num_classes(num_classes)
    if dataset is not None:
        _check_dataset(dataset)
        expected = DATASET_NUM_CLASSES[dataset]
        if expected is not None and expected != c:
            raise ValueError(
                f"dataset {dataset!r} has {expected} classes but num_classes is {c}")
    if kind == "none":
        return np.eye(c, dtype=np.float64)
    if kind == "sym":
        return symmetric_transition(c, rate, include_true_class=(convention == "sgn"))
    if kind == "asym":
        if dataset is None:
            raise ValueError("asymmetric noise needs dataset=... to choose its class pairs")
        return asymmetric_transition(dataset, rate, convention)
    raise ValueError(
        "noise kind 'cifar_n' has no closed-form transition matrix: its T is only "
        "known empirically; use empirical_transition(clean, noisy, num_classes)")


# --------------------------------------------------------------------------
# Sampling.
# --------------------------------------------------------------------------

def sample_noisy_labels(clean_labels, transition, seed) -> np.ndarray:
    """Draws ``ỹ_i ~ T[y_i, :]`` for every example, int32 ``(n,)``.

    Inverse-CDF sampling: ``u = np.random.default_rng(seed).random(n)`` (one
    uniform per example, in example order) and
    ``ỹ_i = min{j : F[y_i, j] > u_i}`` with ``F[c] = cumsum(T[c]) / Σ_j T[c, j]``
    (so ``F[c, C−1] = 1`` exactly). Zero-probability labels are never drawn and
    identity rows keep the clean label exactly. The result depends only on
    ``seed`` and the clean labels, not on hosts or devices: call it on the full
    label array, then shard; a prefix of the array gets the same noisy labels.
    """
    T = check_transition(transition)
    c = T.shape[0]
    clean = _as_labels(clean_labels, "clean_labels", c)
    seed = _check_seed(seed)
    u = np.random.default_rng(seed).random(clean.shape[0])
    cdf = np.cumsum(T, axis=1)
    cdf /= cdf[:, -1:]
    noisy = np.empty(clean.shape[0], dtype=np.int32)
    order = np.argsort(clean, kind="stable")
    classes, starts = np.unique(clean[order], return_index=True)
    bounds = np.append(starts, clean.shape[0])
    for k, cls in enumerate(classes):
        idx = order[bounds[k]:bounds[k + 1]]
        if T[cls, cls] == 1.0:
            noisy[idx] = cls
        else:
            noisy[idx] = np.searchsorted(cdf[cls], u[idx], side="right")
    return noisy


def make_noisy_labels(clean_labels, kind, *, num_classes, rate=0.0, dataset=None,
                      convention="tdsm", seed=0, label_sets=None, label_set=None):
    """Noisy training labels and the true transition used.

    Returns ``(noisy, T)``: ``noisy`` int32 ``(n,)``; ``T`` the forward
    transition from `transition_matrix` for ``"none"``, ``"sym"``, ``"asym"``
    (labels drawn with `sample_noisy_labels(clean, T, seed)`, so
    ``p(ỹ = j | y = i) = T[i, j]``), or None for ``"cifar_n"``.

    ``"cifar_n"``: returns ``label_sets[label_set]`` (e.g. the CIFAR-10N keys
    ``aggre_label``, ``worse_label``, ``random_label1``..``3``, CIFAR-100N
    ``noisy_label``), validated to have the length of ``clean_labels`` and
    values in ``[0, num_classes)``; ``rate`` and ``seed`` are not used.

    ``rate`` is validated first, before any other work.
    """
    rate = check_rate(rate)
    _check_kind(kind)
    _check_convention(convention)
    c = _check_num_classes(num_classes)
    clean = _as_labels(clean_labels, "clean_labels", c)
    if kind == "cifar_n":
        if label_sets is None:
            raise ValueError(
                "noise kind 'cifar_n' uses the human CIFAR-N labels, which must be "
                "loaded by the caller: load dataset 'cifar10_n' / 'cifar100_n' (or the "
                "CIFAR-N files CIFAR-10_human.pt / CIFAR-100_human.pt, or "
                "cifar10n_labels.npz / cifar100n_labels.npz) and pass "
                "label_sets={name: labels} and label_set=name")
        if not isinstance(label_sets, Mapping):
            raise ValueError(
                f"label_sets must be a mapping name -> labels, got {type(label_sets).__name__}")
        if label_set not in label_sets:
            raise ValueError(
                f"unknown CIFAR-N label set {label_set!r}; available: "
                f"{', '.join(map(str, label_sets))}")
        noisy = _as_labels(label_sets[label_set], f"label_sets[{label_set!r}]", c)
        if noisy.shape != clean.shape:
            raise ValueError(
                f"label_sets[{label_set!r}] has {noisy.shape[0]} labels but clean_labels "
                f"has {clean.shape[0]}")
        return noisy.astype(np.int32), None
    T = transition_matrix(kind, c, rate, dataset=dataset, convention=convention)
    if kind == "none":
        _check_seed(seed)
        return clean.astype(np.int32), T
    return sample_noisy_labels(clean, T, seed), T


def load_labels_file(path, num_examples, num_classes):
    """Training labels and their transition matrix from a corrector's ``.npz``.

    The file (e.g. written by `sgn_jax.corrector.correct_labels`) holds
    ``labels``: int ``(n,)`` in ``[0, num_classes)``, one per training example
    in the dataset's original order (before any validation split), and
    optionally ``transition``: ``C × C`` row-stochastic, ``T[y, ŷ] = p(ŷ | y)``
    (the estimated noise of these labels; TDSM's weights use it). Returns
    ``(labels int32, T or None)``. Errors name the file and what is wrong.
    """
    import os  # pylint: disable=g-import-not-at-top
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"noise.labels_file={path!r}: no such file (write one with a corrector: "
            "python -m sgn_jax.corrector --run_dir=CLASSIFY_WORKDIR)")
    with safe_load.open_npz(  # allow_pickle=False
        path, what=f"noise.labels_file={path!r}", fix=(
            "write it again with a corrector: python -m sgn_jax.corrector "
            "--run_dir=CLASSIFY_WORKDIR")) as data:
        if "labels" not in data:
            raise ValueError(f"noise.labels_file={path!r} has no array 'labels' "
                             f"(found: {sorted(data.files)})")
        labels = _as_labels(data["labels"], f"{path}['labels']", num_classes)
        transition = data["transition"] if "transition" in data else None
    if labels.shape[0] != num_examples:
        raise ValueError(f"noise.labels_file={path!r} has {labels.shape[0]} labels but the "
                         f"training set has {num_examples} examples")
    if transition is not None:
        transition = check_transition(transition, num_classes)
    return labels.astype(np.int32), transition


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
    """The label noise of a run, checked when made.

    ``kind``: one of `NOISE_KINDS`; ``rate`` in [0, 1); ``convention``: one of
    `CONVENTIONS` (``tdsm``: symmetric flips go to the other classes and
    CIFAR-100 asymmetric noise stays within the superclass; ``sgn``: symmetric
    noise includes the true class, CIFAR-100 asymmetric is (i+1) mod 100);
    ``label_set``: the CIFAR-N human label set for ``cifar_n``; ``labels_file``:
    an npz of labels (+ transition) used instead of drawing noise
    (`load_labels_file`); ``assumed_rate`` in [0, 1): for CLEAN labels (kind
    ``none`` or rate 0, no labels file), the rate of the symmetric ``T`` (in
    ``convention``) assumed for them instead of the identity: TDSM's clean
    benchmark trains its classifier and TDSM with an assumed 5% (the authors'
    ``--noise_type=sym --noise_rate=0.05`` on clean data); 0 keeps ``T = I``.
    """
    kind: str = "none"
    rate: float = 0.0
    convention: str = "tdsm"
    label_set: str = ""
    labels_file: str = ""
    assumed_rate: float = 0.0

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise.kind={self.kind!r} is not known; allowed: "
                             f"{list(NOISE_KINDS)}")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"noise.convention={self.convention!r}; allowed: "
                             f"{list(CONVENTIONS)}")
        try:
            check_rate(self.rate)
        except ValueError as e:
            raise ValueError(f"noise.rate: {e}") from None
        try:
            assumed = check_rate(self.assumed_rate)
        except ValueError as e:
            raise ValueError(f"noise.assumed_rate: {e}") from None
        clean = self.kind == "none" or (self.kind != "cifar_n" and float(self.rate) == 0.0)
        if assumed > 0 and (not clean or self.labels_file):
            given = (f"noise.labels_file={self.labels_file!r}" if self.labels_file else
                     f"noise.kind={self.kind!r} at noise.rate={self.rate}")
            raise ValueError(
                f"noise.assumed_rate={self.assumed_rate} assumes symmetric noise for CLEAN "
                f"labels, but {given} gives noisy labels with their own T; allowed only "
                "with noise.kind='none' or noise.rate=0 and no noise.labels_file: set "
                "noise.assumed_rate=0, or noise.rate=0 for the clean benchmark")

    def draw(self, clean_labels, *, num_classes, dataset, seed, label_sets=None):
        """``(labels, T or None)`` for every training example, in the dataset's
        original order: `load_labels_file` when ``labels_file`` is set (e.g. a
        corrector's labels and estimated T); the clean labels with the symmetric
        `transition_matrix` at ``assumed_rate`` when it is > 0; else
        `make_noisy_labels` drawn once from ``seed``."""
        if self.labels_file:
            return load_labels_file(self.labels_file, len(clean_labels), num_classes)
        if self.assumed_rate > 0:
            labels, _ = make_noisy_labels(clean_labels, "none", num_classes=num_classes,
                                          seed=seed)
            return labels, transition_matrix("sym", num_classes, self.assumed_rate,
                                             convention=self.convention)
        return make_noisy_labels(
            clean_labels, self.kind, num_classes=num_classes, rate=self.rate,
            dataset=dataset, convention=self.convention, seed=seed, label_sets=label_sets,
            label_set=self.label_set or None)


# --------------------------------------------------------------------------
# Diagnostics.
# --------------------------------------------------------------------------

def _check_pair(clean_labels, noisy_labels, num_classes=None):
    clean = _as_labels(clean_labels, "clean_labels", num_classes)
    noisy = _as_labels(noisy_labels, "noisy_labels", num_classes)
    if clean.shape != noisy.shape:
        raise ValueError(
            f"clean_labels and noisy_labels differ in length: {clean.shape[0]} vs "
            f"{noisy.shape[0]}")
    return clean, noisy


def empirical_transition(clean_labels, noisy_labels, num_classes) -> np.ndarray:
    """Row-normalised confusion counts, float64 ``C × C``.

    ``T̂[i, j] = #{n : y_n = i, ỹ_n = j} / #{n : y_n = i}``. A clean class with no
    examples has no estimate; its row is left as the identity row ``e_i``.
    """
    c = _check_num_classes(num_classes)
    clean, noisy = _check_pair(clean_labels, noisy_labels, c)
    counts = np.bincount(clean.astype(np.int64) * c + noisy.astype(np.int64),
                         minlength=c * c).reshape(c, c).astype(np.float64)
    totals = counts.sum(axis=1)
    T = np.eye(c, dtype=np.float64)
    seen = totals > 0
    T[seen] = counts[seen] / totals[seen, None]
    return T


def realised_noise_rate(clean_labels, noisy_labels) -> float:
    """Fraction of examples whose label changed: ``mean(ỹ ≠ y)``.

    For uniform clean classes this is ``r`` for symmetric TDSM noise and
    ``r·(K − 1)/K`` for symmetric SGN noise. ValueError for empty inputs.
    """
    clean, noisy = _check_pair(clean_labels, noisy_labels)
    if clean.size == 0:
        raise ValueError("realised_noise_rate needs at least one example")
    return float(np.mean(clean != noisy))


def reverse_transition(T, clean_prior=None) -> np.ndarray:
    """Reverse transition ``S[ỹ, y] = p(Y = y | Ỹ = ỹ)``, float64 ``C × C``.

    Bayes: ``S[ỹ, y] = T[y, ỹ]·π_y / Σ_k T[k, ỹ]·π_k``. ``clean_prior`` ``π``
    defaults to uniform; it is normalised to sum 1, so class counts may be
    passed. If a noisy class ``ỹ`` is never produced (``Σ_k T[k, ỹ]·π_k = 0``),
    the conditional is undefined and row ``S[ỹ]`` falls back to uniform
    (``1/C`` everywhere). Rows of ``S`` sum to 1.
    """
    T = check_transition(T)
    c = T.shape[0]
    if clean_prior is None:
        prior = np.full(c, 1.0 / c)
    else:
        prior = np.asarray(clean_prior, dtype=np.float64)
        if prior.shape != (c,):
            raise ValueError(f"clean_prior must have shape ({c},), got {prior.shape}")
        if not np.all(np.isfinite(prior)) or np.any(prior < 0) or prior.sum() <= 0:
            raise ValueError(
                "clean_prior must be finite, nonnegative and not all zero, got "
                f"{prior.tolist()}")
        prior = prior / prior.sum()
    joint = T * prior[:, None]  # p(Y = y, Ỹ = ỹ), indexed [y, ỹ]
    marginal = joint.sum(axis=0)  # p(Ỹ = ỹ)
    S = np.full((c, c), 1.0 / c)
    produced = marginal > 0
    S[produced] = joint[:, produced].T / marginal[produced, None]
    return S


def noise_summary(clean_labels, noisy_labels, num_classes) -> dict:
    """Noise statistics for logging (plain Python types, JSON-serialisable).

    ``{"realised_noise_rate": mean(ỹ ≠ y), "empirical_transition": T̂ as a list
    of lists, "per_class_flip_rate": [1 − T̂[i, i] for each class]}``; a class
    with no examples reports flip rate 0 (identity row of T̂).
    """
    T = empirical_transition(clean_labels, noisy_labels, num_classes)
    return {
        "realised_noise_rate": realised_noise_rate(clean_labels, noisy_labels),
        "empirical_transition": T.tolist(),
        "per_class_flip_rate": (1.0 - np.diag(T)).tolist(),
    }
