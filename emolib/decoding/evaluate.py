"""Held-out metrics and intervals: ROC/AUC per class and fold, confusion, block intervals.

Metrics come from scikit-learn (``roc_curve``, ``balanced_accuracy_score``,
``confusion_matrix``), the per-class AUC from its rank form (equal to ``roc_auc_score``, a
test checks, and fast enough to resample). Volumes of different subjects at the same moment
are not independent, nor are neighbouring moments (labels come in episodes, outputs drift),
so intervals treat whole stretches of movie time (:func:`time_blocks`) as the unit, within
folds. Two interval methods:

:func:`block_jackknife` (the default of :func:`emolib.decoding.summarize_decoding`)
    delete-one-block jackknife standard error, stratified by fold, and a Student-t interval
    with as many degrees of freedom as blocks minus folds. Measured over simulated decodings
    (``benchmarks/bench_interval_coverage.py``), its 95 % intervals cover the true AUC at the
    nominal rate within binomial error on null data and on planted data with moderate
    autocorrelation, and at about 0.91 with a planted signal and strongly autocorrelated
    outputs (see :func:`block_jackknife`).
:func:`cluster_bootstrap`
    percentile block bootstrap. Its intervals are too narrow with the few positive
    episodes per class and fold that a movie gives (the bootstrap distribution of an AUC
    from a handful of clusters is too tight); kept to show that in the same benchmark.
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
    "auc_per_class", "block_jackknife", "classification_metrics", "cluster_bootstrap",
    "difference_jackknife", "time_blocks",
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

    Labels come in episodes and a network's outputs drift slowly, so neighbouring moments are
    not independent; treating whole stretches of the movie as the unit (left out together by
    the jackknife, drawn together by the bootstrap) keeps that dependence inside each unit,
    where single moments would be treated as independent and give intervals that are too
    narrow. Used as the blocks of :func:`block_jackknife` (and of
    :func:`cluster_bootstrap`); ``benchmarks/bench_interval_coverage.py`` measures the
    coverage for 30-, 60- and 120-s blocks.
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


def _fold_parts(y: np.ndarray, probs: np.ndarray, n_classes: int) -> tuple:
    """One fold's share of :func:`_combine`: its class AUCs, size, hits and counts per class."""
    hit = probs.argmax(1) == y
    return (auc_per_class(y, probs, n_classes), len(y),
            np.bincount(y[hit], minlength=n_classes), np.bincount(y, minlength=n_classes))


def _combine(parts: list[tuple]) -> np.ndarray:
    """Fold-averaged macro AUC, per-class AUCs and the pooled balanced accuracy.

    The macro AUC is :func:`macro_auc` with folds; each class's AUC is averaged over the
    folds where it is defined, weighted by fold size, as in the chapter's tables; the
    balanced accuracy is the mean recall over the classes present (pooled over folds).
    """
    macro_v, macro_w = [], []
    n_classes = parts[0][0].size
    cls_v, cls_w = np.zeros(n_classes), np.zeros(n_classes)
    hits, counts = np.zeros(n_classes), np.zeros(n_classes)
    for auc, n, h, c in parts:
        ok = np.isfinite(auc)
        if ok.any():
            macro_v.append(auc[ok].mean())
            macro_w.append(n)
        cls_v[ok] += n * auc[ok]
        cls_w[ok] += n
        hits += h
        counts += c
    macro = float(np.average(macro_v, weights=macro_w)) if macro_v else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = cls_v / cls_w
        present = counts > 0
        bacc = float(np.mean(hits[present] / counts[present])) if present.any() else np.nan
    return np.r_[macro, per_class, bacc]


def block_jackknife(
    y: np.ndarray, probs: np.ndarray, blocks: np.ndarray, n_classes: int,
    folds: np.ndarray | None = None, level: float = 0.95,
) -> pd.DataFrame:
    """Delete-one-block jackknife intervals of the macro AUC, per-class AUCs and balanced
    accuracy.

    Each block (a stretch of movie time, :func:`time_blocks`, within a fold) is left out in
    turn and every metric recomputed on the rest (AUCs within folds and averaged, as
    :func:`macro_auc`). The variance is the jackknife's, stratified by fold (blocks of
    different folds are not exchangeable: each fold has its own network):
    ``sum_f (G_f - 1) / G_f * sum_g (theta_(fg) - mean_g theta_(fg))^2``; the interval is
    ``estimate -/+ t * se`` with ``t`` the Student quantile on ``sum_f (G_f - 1)`` degrees of
    freedom, clipped to [0, 1].

    Why not the percentile bootstrap (:func:`cluster_bootstrap`): with a movie, each class
    comes in a few episodes per fold, and the bootstrap distribution of an AUC over a handful
    of clusters is too narrow (as the cluster-robust sandwich is with few clusters); the
    jackknife's leave-one-out spread does not shrink that way. Measured
    (``benchmarks/bench_interval_coverage.py``: 400 simulated decodings per setting, 4 run
    folds, episodic labels, outputs AR(phi) per 2-s step, 60-s blocks), the share of 95 %
    intervals containing the true AUC: null data 0.938 (phi 0.9) and 0.943 (phi 0.5);
    planted (true AUC 0.77) 0.905 (phi 0.9) and 0.940 (phi 0.5). The percentile bootstrap
    over the same blocks covered 0.84-0.93 in the same simulation (100 datasets each).

    Parameters
    ----------
    y, probs : numpy.ndarray
        Labels and class scores ``(n, n_classes)``.
    blocks : numpy.ndarray
        Block of each sample (e.g. :func:`time_blocks` of its movie time); blocks are
        nested in folds (the same number in two folds is two blocks).
    n_classes : int
        Number of classes.
    folds : numpy.ndarray, optional
        Fold of each sample (default: one fold).
    level : float, default=0.95
        Coverage of the intervals.

    Returns
    -------
    pandas.DataFrame
        One row per metric (``macro_auc``, ``auc[c]``, ``balanced_accuracy``) with
        ``estimate``, ``low``, ``high``, ``se`` and ``dof``; NaN bounds when no fold has two
        blocks.
    """
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    folds_arr = np.zeros(len(y), dtype=int) if folds is None else np.asarray(folds)
    blocks = np.asarray(blocks)
    fold_ids = pd.unique(folds_arr)
    members = [np.flatnonzero(folds_arr == f) for f in fold_ids]
    parts = [_fold_parts(y[m], probs[m], n_classes) for m in members]
    point = _combine(parts)
    var = np.zeros(point.size)
    dof = 0
    for k, m in enumerate(members):  # leaving out a block changes only its own fold's part
        ids = pd.unique(blocks[m])
        if ids.size < 2:
            continue
        thetas = []
        for b in ids:
            rest = m[blocks[m] != b]
            thetas.append(_combine([*parts[:k], _fold_parts(y[rest], probs[rest], n_classes),
                                    *parts[k + 1:]]))
        thetas = np.stack(thetas)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from a fold
            dev = thetas - np.nanmean(thetas, axis=0)
        g = ids.size
        var += (g - 1) / g * np.nansum(dev**2, axis=0)
        dof += g - 1
    se = np.sqrt(var) if dof else np.full(point.size, np.nan)
    q = scipy.stats.t.ppf(0.5 + level / 2, dof) if dof else np.nan
    low = np.clip(point - q * se, 0.0, 1.0)
    high = np.clip(point + q * se, 0.0, 1.0)
    names = ["macro_auc", *[f"auc[{c}]" for c in range(n_classes)], "balanced_accuracy"]
    return pd.DataFrame({"metric": names, "estimate": point, "low": low, "high": high,
                         "se": se, "dof": dof})


def difference_jackknife(
    first: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n_classes: int, block_s: float = 60.0, level: float = 0.95,
) -> dict[str, float]:
    """Interval of the difference of two fold-averaged macro AUCs on the same movie.

    ``first`` and ``second`` are ``(y, probs, movie_time, folds)`` of two decodings of the
    same volumes (e.g. the random and the run split): their AUCs are dependent, so the
    difference is jackknifed jointly, leaving out each ``block_s``-second stretch of movie
    time from *both* (every subject and fold of it), with a Student-t interval on blocks - 1
    degrees of freedom.

    Returns
    -------
    dict
        ``estimate`` (first minus second), ``se``, ``low``, ``high``, ``dof``.
    """
    parts = [(np.asarray(y), np.asarray(p, dtype=float), time_blocks(t, block_s),
              np.asarray(f)) for y, p, t, f in (first, second)]

    def diff(drop=None):
        vals = []
        for y, p, b, f in parts:
            keep = np.ones(len(y), bool) if drop is None else b != drop
            vals.append(macro_auc(y[keep], p[keep], n_classes, f[keep]))
        return vals[0] - vals[1]

    point = diff()
    ids = np.union1d(parts[0][2], parts[1][2])
    if ids.size < 2:
        return {"estimate": point, "se": np.nan, "low": np.nan, "high": np.nan, "dof": 0}
    thetas = np.array([diff(b) for b in ids])
    g = ids.size
    se = float(np.sqrt((g - 1) / g * np.nansum((thetas - np.nanmean(thetas)) ** 2)))
    q = scipy.stats.t.ppf(0.5 + level / 2, g - 1)
    return {"estimate": point, "se": se, "low": point - q * se, "high": point + q * se,
            "dof": g - 1}
