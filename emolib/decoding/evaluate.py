"""Held-out metrics and intervals: ROC/AUC per class and fold, confusion, cluster bootstrap.

Metrics come from scikit-learn (``roc_curve``, ``balanced_accuracy_score``,
``confusion_matrix``), the per-class AUC from its rank form (equal to ``roc_auc_score``, a
test checks, and fast enough to bootstrap). Confidence intervals come from a *block*
bootstrap: volumes of different subjects at the same moment are not independent, nor are
neighbouring moments (labels come in episodes, outputs drift), so whole stretches of movie
time (:func:`time_blocks`), not volumes or single moments, are resampled within folds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "auc_per_class", "classification_metrics", "cluster_bootstrap", "time_blocks",
    "fold_metrics", "macro_auc", "roc_curves",
]


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Balanced accuracy over the classes present in ``y`` (silent when a fold lacks some)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def auc_per_class(y: np.ndarray, probs: np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest ROC AUC of each class (NaN for a class absent from ``y`` or alone in it).

    The probabilities are ranked as they are (no rounding): they come from a deterministic
    evaluation (:func:`emolib.models.evaluate_batches`: a volume's output does not depend on
    the volumes batched with it), so tiny differences are the network's, not the batching's;
    a network that learned (almost) nothing gets an AUC that the permutation null
    (:mod:`emolib.decoding.nulls`) judges, and is reported there as collapsed.
    """
    out = np.full(n_classes, np.nan)
    y = np.asarray(y)
    scores = np.asarray(probs, dtype=float)
    if len(y) == 0:
        return out
    # the Mann-Whitney form of the AUC (average ranks for ties): equal to sklearn's
    # roc_auc_score (a test checks), without its per-call validation, which dominated the
    # bootstrap's time
    ranks = scipy.stats.rankdata(scores[:, :n_classes], axis=0)
    for c in range(n_classes):
        pos = y == c
        n_pos = int(pos.sum())
        n_neg = len(y) - n_pos
        if 0 < n_pos < len(y):
            out[c] = (ranks[pos, c].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def macro_auc(y: np.ndarray, probs: np.ndarray, n_classes: int,
              folds: np.ndarray | None = None) -> float:
    """Macro one-vs-rest AUC; with ``folds``, computed within each fold and averaged
    (weighted by fold size).

    Why within folds: a model's scores carry a fold-specific offset per class (it learns the
    class frequencies of its training set, and with a class-balanced sample table the test
    fold's frequencies are the complement of the training fold's). Pooling scores across folds
    then mixes offsets and biases the AUC *below* 0.5 even on null data; AUC within a fold is
    immune to an offset that is constant within the fold.
    """
    if folds is None:
        auc = auc_per_class(y, probs, n_classes)
        return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
    values, weights = [], []
    for f in np.unique(folds):
        sel = folds == f
        auc = auc_per_class(y[sel], probs[sel], n_classes)
        if np.isfinite(auc).any():
            values.append(np.nanmean(auc))
            weights.append(sel.sum())
    return float(np.average(values, weights=weights)) if values else float("nan")


def fold_metrics(y: np.ndarray, probs: np.ndarray, folds: np.ndarray,
                 classes: list[str]) -> pd.DataFrame:
    """One row per fold: test size, macro AUC, balanced accuracy and per-class AUCs."""
    rows = []
    for f in pd.unique(folds):
        sel = folds == f
        m = classification_metrics(y[sel], probs[sel], classes)
        rows.append({"fold": f, "n_test": int(sel.sum()), "macro_auc": m["macro_auc"],
                     "balanced_accuracy": m["balanced_accuracy"],
                     **{f"auc {c}": v for c, v in m["auc"].items()}})
    return pd.DataFrame(rows)


def classification_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Per-class AUC, macro AUC, accuracy, balanced accuracy and the confusion matrix.

    Returns
    -------
    dict
        ``auc`` (class -> AUC), ``macro_auc`` (mean over classes present), ``accuracy``,
        ``balanced_accuracy``, ``confusion`` (DataFrame, rows true, columns predicted).
    """
    y = np.asarray(y)
    n = len(classes)
    auc = auc_per_class(y, probs, n)
    pred = probs.argmax(axis=1)
    return {
        "auc": dict(zip(classes, auc, strict=True)),
        "macro_auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "confusion": pd.DataFrame(confusion_matrix(y, pred, labels=range(n)), index=classes,
                                  columns=classes),
    }


def roc_curves(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One-vs-rest ROC curve points of every class (columns class, fpr, tpr, auc)."""
    rows = []
    for c, name in enumerate(classes):
        pos = np.asarray(y) == c
        if not 0 < pos.sum() < len(pos):
            continue
        fpr, tpr, _ = roc_curve(pos, probs[:, c])
        auc = roc_auc_score(pos, probs[:, c])
        rows.append(pd.DataFrame({"class": name, "fpr": fpr, "tpr": tpr, "auc": auc}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["class", "fpr", "tpr", "auc"])


def time_blocks(movie_time: np.ndarray, block_s: float) -> np.ndarray:
    """Index of the stretch of ``block_s`` seconds of movie time that holds each sample.

    Used as the clusters of :func:`cluster_bootstrap`: labels come in episodes and a
    network's outputs drift slowly, so neighbouring moments are not independent; resampling
    whole stretches of the movie (a block bootstrap) keeps that dependence inside each draw,
    where resampling single moments would treat them as independent and give intervals that
    are too narrow. Measured (``benchmarks/bench_interval_coverage.py``, 100 null decodings,
    outputs AR(0.9) per 2-s step): 95 % percentile intervals covered the true AUC in 85 % of
    datasets with single moments, 91-94 % with 30-120 s blocks; with AR(0.5), 84-89 % for
    every unit, so the percentile intervals remain somewhat narrow even with blocks.
    """
    if not block_s > 0:
        raise ValueError(f"block_s must be positive, got {block_s}")
    return np.floor(np.asarray(movie_time, dtype=float) / float(block_s) + 1e-9).astype(np.int64)


def cluster_bootstrap(
    y: np.ndarray, probs: np.ndarray, clusters: np.ndarray, n_classes: int,
    n_boot: int = 1000, seed: int = 0, level: float = 0.95, folds: np.ndarray | None = None,
) -> pd.DataFrame:
    """Bootstrap CIs of the macro AUC, per-class AUCs and balanced accuracy.

    Clusters (movie moments) are resampled with replacement, within each fold when ``folds``
    is given; every sample of a drawn cluster enters. The macro AUC is the fold-averaged one
    of :func:`macro_auc` when ``folds`` is given. Returns one row per metric with
    ``estimate``, ``low``, ``high`` and ``se``.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    folds_arr = np.zeros(len(y), dtype=int) if folds is None else np.asarray(folds)
    groups = []  # per fold: list of member index arrays of its clusters
    for f in pd.unique(folds_arr):
        sel = np.flatnonzero(folds_arr == f)
        uniq, inv = np.unique(np.asarray(clusters)[sel], return_inverse=True)
        groups.append([sel[inv == k] for k in range(len(uniq))])

    def stats(idx):
        auc = auc_per_class(y[idx], probs[idx], n_classes)
        ba = _balanced_accuracy(y[idx], probs[idx].argmax(1)) if idx.size else np.nan
        macro = macro_auc(y[idx], probs[idx], n_classes,
                          None if folds is None else folds_arr[idx])
        return np.r_[macro, auc, ba]

    point = stats(np.arange(len(y)))
    draws = np.empty((n_boot, point.size))
    for b in range(n_boot):
        picks = [members[k] for members in groups
                 for k in rng.integers(len(members), size=len(members))]
        draws[b] = stats(np.concatenate(picks))
    alpha = (1 - level) / 2
    names = ["macro_auc", *[f"auc[{c}]" for c in range(n_classes)], "balanced_accuracy"]
    return pd.DataFrame({
        "metric": names, "estimate": point,
        "low": np.nanquantile(draws, alpha, axis=0),
        "high": np.nanquantile(draws, 1 - alpha, axis=0),
        "se": np.nanstd(draws, axis=0, ddof=1),
    })
