"""Baselines in the same folds as the CNN, and the inner validation set they share.

:func:`inner_validation` carves the early-stopping set out of a fold's training samples (a
whole training run, guarded like the test set, for the run and subject splits; a random tenth
for the random split); :func:`linear_baseline` is an L2-regularised logistic regression on the
voxels of the mask, its strength chosen on that same inner validation set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emolib.forrest.leaks import HRF_SPAN_S
from emolib.forrest.splits import Split, guard

__all__ = [
    "inner_validation", "linear_baseline",
]


def inner_validation(samples: pd.DataFrame, split: Split, kind: str, seed: int = 0,
                     tr: float = 2.0, span_s: float = HRF_SPAN_S) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation set out of ``split.train`` for early stopping.

    For ``"run"`` and ``"subject"`` splits: the training run that follows the test run
    (cyclically) is the validation set, and training samples that share a movie moment with it
    are dropped, so early stopping sees no leak either. For ``"random"``: a random tenth.

    Returns
    -------
    (train, val) : tuple of numpy.ndarray
        Positions into ``samples``.
    """
    if kind == "random":
        rng = np.random.default_rng(seed)
        perm = rng.permutation(split.train)
        n_val = max(1, len(perm) // 10)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    runs = samples["run"].to_numpy()
    test_run = int(pd.Series(runs[split.test]).mode().iloc[0])
    train_runs = sorted(set(runs[split.train]))
    later = [r for r in train_runs if r > test_run]
    val_run = later[0] if later else train_runs[0]
    val = split.train[runs[split.train] == val_run]
    inner = guard(samples, "inner", split.train[runs[split.train] != val_run], val, tr, span_s)
    return inner.train, val


def linear_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                    y_val: np.ndarray, x_test: np.ndarray, n_classes: int,
                    cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1), seed: int = 0) -> np.ndarray:
    """Standardised voxels -> multinomial L2 logistic regression; the strength ``C`` is the
    one with the best validation macro AUC.

    The model of that ``C``, fit on the training samples only, predicts the test set: like the
    CNN, which is trained on the same samples and only early-stopped on the validation run, the
    baseline never learns from the validation run.

    Returns the test-set class probabilities ``(n_test, n_classes)``; when the training samples
    hold a single class (a tiny dataset), that class with probability 1.
    """
    def fit(x, y, c):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300,
                                                                 random_state=seed))
        return clf.fit(x.reshape(len(x), -1), y)

    def full_probs(clf, x):
        out = np.zeros((len(x), n_classes))
        out[:, clf.classes_] = clf.predict_proba(x.reshape(len(x), -1))
        return out

    classes = np.unique(y_train)
    if len(classes) < 2:  # nothing to discriminate: predict the one class seen, as a classifier
        out = np.zeros((len(x_test), n_classes))  # trained on it would (a collapsed fold)
        out[:, classes] = 1.0
        return out
    fits, scores = [], []
    for c in cs:
        clf = fit(x_train, y_train, c)
        p = full_probs(clf, x_val)
        present = [k for k in range(n_classes) if 0 < (y_val == k).sum() < len(y_val)]
        scores.append(np.mean([roc_auc_score(y_val == k, p[:, k]) for k in present])
                      if present else 0.0)
        fits.append(clf)
    return full_probs(fits[int(np.argmax(scores))], x_test)
