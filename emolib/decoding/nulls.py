"""The time-aware permutation null of held-out decoding.

The labels are shifted cyclically along movie time within each test fold, which keeps their
autocorrelation (the episode structure) intact while breaking their alignment with the
predictions; the model is fixed, so the null asks whether its held-out predictions follow the
labels beyond what the label sequence alone explains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emolib.decoding.evaluate import macro_auc

__all__ = [
    "PermutationResult", "cyclic_shift_labels", "permutation_test",
]


def cyclic_shift_labels(y: np.ndarray, times: np.ndarray, rng: np.random.Generator,
                        min_shift: float = 0.1) -> np.ndarray:
    """Shift labels cyclically along movie time: each movie moment takes the label of the
    moment ``k`` places later (``k`` drawn away from 0 by at least ``min_shift`` of the
    moments), all samples of a moment alike."""
    moments, inv = np.unique(times, return_inverse=True)
    first = np.array([np.flatnonzero(inv == k)[0] for k in range(len(moments))])
    labels = y[first]
    m = len(moments)
    lo = max(1, int(np.ceil(min_shift * m)))
    hi = max(lo + 1, m - lo + 1)
    k = int(rng.integers(lo, hi)) if m > 1 else 0
    return np.roll(labels, k)[inv]


@dataclass
class PermutationResult:
    """Observed score, null distribution and p-value of a permutation test."""

    observed: float
    null: np.ndarray
    p_value: float


def permutation_test(
    y: np.ndarray, probs: np.ndarray, times: np.ndarray, folds: np.ndarray, n_classes: int,
    n_permutations: int = 1000, seed: int = 0,
) -> PermutationResult:
    """Time-aware permutation test of the fold-averaged macro AUC of held-out predictions.

    Within every fold the labels are shifted cyclically along movie time
    (:func:`cyclic_shift_labels`); the score is :func:`macro_auc` within folds; the p-value
    is ``(1 + #{null >= observed}) / (1 + n)``.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)

    def score(labels):
        return macro_auc(labels, probs, n_classes, folds)

    observed = score(y)
    null = np.empty(n_permutations)
    fold_ids = np.unique(folds)
    for i in range(n_permutations):
        shuffled = y.copy()
        for f in fold_ids:
            sel = folds == f
            shuffled[sel] = cyclic_shift_labels(y[sel], times[sel], rng)
        null[i] = score(shuffled)
    p = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    return PermutationResult(observed, null, p)
