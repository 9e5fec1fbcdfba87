"""The time-aware permutation null of held-out decoding: exact where it can be.

The labels are shifted cyclically along movie time within each test fold, which keeps their
autocorrelation (the episode structure) intact while breaking their alignment with the
predictions; the model is fixed, so the null asks whether its held-out predictions follow the
labels beyond what the label sequence alone explains.

The reference set is the group of all cyclic shifts, identity included, independently per fold
(a fold of ``m`` movie moments has ``m`` shifts). The score is the fold-averaged macro AUC, so a
combination of shifts scores the weighted mean of each fold's AUC under its own shift: every
fold's AUC is computed once per shift, and any combination costs an addition.

- When the group is small (at most ``max_exact`` combinations) every combination is scored and
  ``p = #{null >= observed} / |group|``: the exact randomization p-value (never below
  ``1 / |group|``).
- Otherwise ``n_permutations`` combinations are drawn uniformly from the group and
  ``p = (1 + #{null >= observed}) / (1 + n_permutations)`` (a valid Monte Carlo p-value).

A fold whose predictions are exactly constant scores the same under every shift, so it leaves
the group (it adds nothing to the reference set); folds whose outputs vary by less than
``collapse_atol`` (a network that learned nothing) are reported in ``collapsed_folds``, never
hidden. Under the null the test is exact when the label process is stationary within a fold:
its size is checked by simulation (``tests/test_nulls.py``, ``benchmarks/bench_calibration.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.stats

__all__ = [
    "PermutationResult", "cyclic_shift_labels", "fold_shift_aucs", "permutation_test",
]

#: Relative tolerance under which a null score counts as reaching the observed one.
TIE_RTOL = 1e-12


def _moment_labels(y: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each sample's movie moment (in time order), and the label of every moment."""
    moments, inv = np.unique(np.asarray(times), return_inverse=True)
    first = np.full(len(moments), -1, dtype=np.int64)
    first[inv[::-1]] = np.arange(len(inv))[::-1]
    labels = y[first]
    if not np.array_equal(labels[inv], y):
        raise ValueError("samples of the same movie moment have different labels")
    return inv, labels


def cyclic_shift_labels(y: np.ndarray, times: np.ndarray, shift: int | np.random.Generator,
                        ) -> np.ndarray:
    """Shift labels cyclically along movie time.

    Each movie moment takes the label of the moment ``shift`` places later (all samples of a
    moment alike; the moments are those of ``times``, in time order).

    Parameters
    ----------
    y : numpy.ndarray
        Labels, one per sample; samples of the same moment must share their label.
    times : numpy.ndarray
        Movie time of every sample.
    shift : int or numpy.random.Generator
        The shift, in moments (taken modulo their number), or a generator to draw it
        uniformly from all shifts, identity included.

    Returns
    -------
    numpy.ndarray
        The shifted labels, one per sample.
    """
    inv, labels = _moment_labels(np.asarray(y), times)
    m = len(labels)
    k = int(shift.integers(m)) if isinstance(shift, np.random.Generator) else int(shift) % m
    return np.roll(labels, -k)[inv]


def fold_shift_aucs(y: np.ndarray, probs: np.ndarray, times: np.ndarray, n_classes: int
                    ) -> np.ndarray:
    """Macro AUC of one fold's predictions under every cyclic shift of its labels.

    The AUC is the Mann-Whitney statistic of the scores' ranks (ties averaged, so equal to
    :func:`sklearn.metrics.roc_auc_score`). Shifting the labels leaves the ranks alone: with
    the rank sums of every moment computed once, the positives' rank sum and count of every
    class under every shift are circular correlations of the moments' one-hot labels with
    them, all shifts at once.

    Returns
    -------
    numpy.ndarray, shape (n_moments,)
        Entry ``k``: the macro one-vs-rest AUC when the labels are shifted by ``k`` moments
        (as :func:`cyclic_shift_labels`; entry 0 is the observed AUC). NaN when no class is
        scorable.
    """
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    inv, labels = _moment_labels(y, times)
    m, n = len(labels), len(y)
    ranks = scipy.stats.rankdata(probs[:, :n_classes], axis=0)  # (n, C), ties averaged
    rank_sums = np.zeros((m, n_classes))
    np.add.at(rank_sums, inv, ranks)
    sizes = np.bincount(inv, minlength=m).astype(np.float64)
    onehot = (labels[:, None] == np.arange(n_classes)[None, :]).astype(np.float64)  # (m, C)
    shifted = onehot[(np.arange(m)[:, None] + np.arange(m)[None, :]) % m]  # (k, j, C)
    pos_rank = np.einsum("kjc,jc->kc", shifted, rank_sums)
    n_pos = np.einsum("kjc,j->kc", shifted, sizes)
    n_neg = n - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_rank - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    out = np.full(m, np.nan)
    ok = np.isfinite(auc).any(axis=1)
    out[ok] = np.nanmean(auc[ok], axis=1)
    return out


@dataclass
class PermutationResult:
    """Observed score, null distribution and p-value of a permutation test.

    Attributes
    ----------
    observed : float
        The fold-averaged macro AUC with the true labels.
    null : numpy.ndarray
        The reference scores: every combination of shifts when ``exact`` (identity
        included), else the drawn ones.
    p_value : float
        Exact, or Monte Carlo (``(1 + #) / (1 + n)``).
    exact : bool
        Whether ``null`` is the whole group of shift combinations.
    n_group : int
        Number of shift combinations in the group (folds with constant predictions left out).
    shifts_per_fold : dict
        Fold -> number of cyclic shifts (movie moments) of that fold.
    collapsed_folds : list
        Folds whose predictions vary by at most ``collapse_atol``: the network output (almost)
        the same probabilities for every volume.
    """

    observed: float
    null: np.ndarray
    p_value: float
    exact: bool = False
    n_group: int = 0
    shifts_per_fold: dict = field(default_factory=dict)
    collapsed_folds: list = field(default_factory=list)


def permutation_test(
    y: np.ndarray, probs: np.ndarray, times: np.ndarray, folds: np.ndarray, n_classes: int,
    n_permutations: int = 1000, seed: int = 0, *, max_exact: int | None = None,
    collapse_atol: float = 1e-6,
) -> PermutationResult:
    """Time-aware permutation test of the fold-averaged macro AUC of held-out predictions.

    Within every fold the labels are shifted cyclically along movie time
    (:func:`cyclic_shift_labels`), independently per fold; the score is the macro AUC within
    folds, averaged with the folds' sizes as weights (:func:`emolib.decoding.macro_auc`).

    Parameters
    ----------
    y, probs, times, folds
        Labels, class probabilities (n, n_classes), movie times and test folds of the held-out
        samples.
    n_classes : int
        Number of classes.
    n_permutations : int, default=1000
        Drawn shift combinations when the group is larger than ``max_exact``.
    seed : int, default=0
        Seed of the draws.
    max_exact : int, optional
        Largest group enumerated exactly (default: ``max(n_permutations, 10000)``).
    collapse_atol : float, default=1e-6
        Folds whose probabilities vary by at most this much are reported as collapsed.

    Returns
    -------
    PermutationResult
    """
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    times = np.asarray(times)
    folds = np.asarray(folds)
    if max_exact is None:
        max_exact = max(int(n_permutations), 10_000)
    tables, weights, shifts, collapsed = [], [], {}, []
    constant_score, constant_weight = 0.0, 0.0
    for f in np.unique(folds):
        sel = folds == f
        name = f.item() if hasattr(f, "item") else f
        spread = float(np.ptp(probs[sel], axis=0).max()) if sel.sum() > 1 else 0.0
        if spread <= collapse_atol:
            collapsed.append(name)
        aucs = fold_shift_aucs(y[sel], probs[sel], times[sel], n_classes)
        shifts[name] = len(aucs)
        if not np.isfinite(aucs[0]):
            continue  # no class is scorable in this fold (as macro_auc: it is left out)
        if spread == 0.0:  # every shift scores the same: the fold leaves the group
            constant_score += sel.sum() * aucs[0]
            constant_weight += sel.sum()
            continue
        tables.append(aucs)
        weights.append(float(sel.sum()))
    total = constant_weight + sum(weights)
    if total == 0:
        raise ValueError("no fold has a scorable class")
    observed = (constant_score + sum(w * t[0] for w, t in zip(weights, tables, strict=True))
                ) / total
    n_group = int(np.prod([len(t) for t in tables], dtype=np.float64)) if tables else 1
    if n_group <= max_exact:
        null = np.full(1, constant_score)
        for w, t in zip(weights, tables, strict=True):  # every combination, identity first
            null = (null[:, None] + w * t[None, :]).ravel()
        null = null / total
        exact = True
    else:
        rng = np.random.default_rng(seed)
        null = np.full(n_permutations, constant_score)
        for w, t in zip(weights, tables, strict=True):
            null += w * t[rng.integers(len(t), size=n_permutations)]
        null = null / total
        exact = False
    reach = int((null >= observed - TIE_RTOL * max(1.0, abs(observed))).sum())
    p = reach / len(null) if exact else (1 + reach) / (1 + len(null))
    return PermutationResult(float(observed), null, float(p), exact, n_group, shifts, collapsed)
