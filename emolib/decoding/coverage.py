"""Coverage of the decoding intervals, measured over many simulated decodings.

An interval promises to contain the true value in 95 % of datasets; one dataset cannot show
that, many can. :func:`simulate_held_out` draws the held-out predictions of one decoding
(labels in episodes along the movie, outputs that drift slowly, several subjects per moment,
a selection of labelled moments, one fold per run) by a model that knows nothing
(``signal=0``: the true macro AUC is 0.5) or that knows something (``signal > 0``: the true
AUC is :func:`true_macro_auc`, by Monte Carlo); :func:`interval_coverage` counts how often the
intervals contain it: the block jackknife (:func:`emolib.decoding.evaluate.block_jackknife`)
and the percentile bootstrap (:func:`emolib.decoding.evaluate.cluster_bootstrap`), over
single moments or blocks of movie time (:func:`emolib.decoding.evaluate.time_blocks`).
``benchmarks/bench_interval_coverage.py`` runs it at scale; the suite runs a small version.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.signal
from tqdm.auto import tqdm

from emolib.decoding.calibration import clopper_pearson
from emolib.decoding.evaluate import auc_per_class, block_jackknife, cluster_bootstrap, time_blocks

__all__ = [
    "INTERVAL_METHODS", "consensus_sequence", "interval_coverage", "simulate_held_out",
    "true_macro_auc",
]

#: Interval methods compared by :func:`interval_coverage`.
INTERVAL_METHODS = ("jackknife", "bootstrap")

#: Standard deviation of each subject's own part of the outputs (the shared part has 1).
_SUBJECT_SD = 0.5


def simulate_held_out(
    rng: np.random.Generator,
    *,
    n_folds: int = 4,
    run_steps: int = 450,
    n_selected: int = 44,
    n_classes: int = 5,
    stay: float = 0.95,
    phi: float = 0.9,
    subjects: int = 3,
    step_s: float = 2.0,
    signal: float = 0.0,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Held-out predictions of one decoding by a model that learned nothing (or ``signal``).

    Per fold (a run of ``run_steps`` steps of ``step_s`` s): a label per step from a Markov
    chain that keeps its class with probability ``stay`` (episodes of ``1 / (1 - stay)``
    steps on average); the model's class scores an AR(1) series along the run (coefficient
    ``phi`` per step) shared by the subjects of a moment, plus each subject's own AR(1)
    part; ``n_selected`` moments drawn at random, and every subject's volume of each, as the
    class-balanced selection does with the real movie (70 steps per class over about 3,500).
    With ``signal=0`` labels and scores are independent, so the true AUC of every class is
    0.5; ``signal`` adds that much to the score of each sample's true class (the true AUC is
    then :func:`true_macro_auc`).

    With ``labels`` (a label code per step of a whole movie, -1 where unlabelled, e.g.
    :func:`consensus_sequence` of the real annotations), the folds are consecutive stretches
    of that movie from a random starting point (cyclically), and the moments are drawn among
    its labelled steps: the labels then have the real movie's dependence, which reaches much
    further than the episodes' length (the same emotions return within minutes).

    Returns
    -------
    y, probs, movie_time, folds : numpy.ndarray
        Labels, softmax outputs ``(n, n_classes)``, movie time (s) and fold of each sample.
    """
    ys, ps, ts, fs = [], [], [], []
    innov = np.sqrt(1 - phi**2)

    def ar(size):  # stationary AR(1) along the run: x[0] ~ N(0, 1), x[t] = phi x[t-1] + e
        e = rng.standard_normal((run_steps, size))
        e[1:] *= innov
        return scipy.signal.lfilter([1.0], [1.0, -phi], e, axis=0)

    offset = 0 if labels is None else int(rng.integers(len(labels)))
    for f in range(n_folds):
        if labels is None:
            lab = np.empty(run_steps, dtype=np.int64)
            lab[0] = rng.integers(n_classes)
            for t in range(1, run_steps):
                lab[t] = lab[t - 1] if rng.random() < stay else rng.integers(n_classes)
            candidates = np.arange(run_steps)
        else:
            lab = np.asarray(labels)[(offset + f * run_steps + np.arange(run_steps))
                                     % len(labels)]
            candidates = np.flatnonzero(lab >= 0)
        shared = ar(n_classes)
        moments = np.sort(rng.choice(candidates, size=min(n_selected, candidates.size),
                                     replace=False))
        for _ in range(subjects):
            scores = (shared + _SUBJECT_SD * ar(n_classes))[moments]
            scores[np.arange(moments.size), lab[moments]] += signal
            e = np.exp(scores - scores.max(1, keepdims=True))
            ps.append(e / e.sum(1, keepdims=True))
            ys.append(lab[moments])
            ts.append(f * run_steps * step_s * 1.1 + step_s * moments)
            fs.append(np.full(moments.size, f"run-{f + 1}"))
    return (np.concatenate(ys), np.concatenate(ps), np.concatenate(ts), np.concatenate(fs))


def consensus_sequence(annotations_dir, n_classes: int = 5, pattern: str = "av1o*.csv"
                       ) -> np.ndarray:
    """The consensus label of every 2-s step of the movie as a code of its ``n_classes`` most
    frequent classes (-1 for steps without a kept label or of another class), from
    annotation files (:func:`emolib.forrest.consensus_labels`, seed mode), for
    :func:`simulate_held_out`'s ``labels``."""
    from emolib.forrest.labels import consensus_labels
    from emolib.io.annotations import read_observers

    lab = consensus_labels(read_observers(annotations_dir, pattern))
    kept = lab.loc[lab["status"] == "kept", "label"]
    top = list(kept.value_counts().index[:n_classes])
    codes = {c: i for i, c in enumerate(top)}
    return np.array([codes.get(x, -1) if isinstance(x, str) else -1 for x in lab["label"]],
                    dtype=np.int64)


def true_macro_auc(signal: float, n_classes: int = 5, n: int = 400_000, seed: int = 0
                   ) -> float:
    """True macro AUC of :func:`simulate_held_out`'s outputs, by Monte Carlo over ``n``
    independent samples (standard error about ``0.3 / sqrt(n)``: 5e-4 by default).

    The AUC is a property of the marginal distribution of one sample's outputs (the time
    dependence changes the spread of an estimate, not its mean): scores ``N(0, 1 + 0.25)``
    per class plus ``signal`` on the true class, through a softmax; labels uniform (the
    negatives of a class are any other class alike).
    """
    if signal == 0:
        return 0.5
    rng = np.random.default_rng(seed)
    y = rng.integers(n_classes, size=n)
    scores = rng.standard_normal((n, n_classes)) * np.sqrt(1 + _SUBJECT_SD**2)
    scores[np.arange(n), y] += signal
    e = np.exp(scores - scores.max(1, keepdims=True))
    return float(np.mean(auc_per_class(y, e / e.sum(1, keepdims=True), n_classes)))


def interval_coverage(
    n: int,
    block_s: Sequence[float | None] = (None, 60.0),
    *,
    methods: Sequence[str] = INTERVAL_METHODS,
    seed: int = 0,
    n_boot: int = 200,
    level: float = 0.95,
    progress: bool = True,
    **simulation,
) -> pd.DataFrame:
    """How often the intervals of the fold-averaged macro AUC contain the true value.

    Parameters
    ----------
    n : int
        Simulated decodings (:func:`simulate_held_out`, seeded by ``seed``).
    block_s : sequence of float or None, default=(None, 60.0)
        Units compared on the same datasets: ``None`` single movie moments (all subjects of
        a moment together), a number blocks of that many seconds.
    methods : sequence of {"jackknife", "bootstrap"}
        :func:`~emolib.decoding.evaluate.block_jackknife` and/or
        :func:`~emolib.decoding.evaluate.cluster_bootstrap` (percentile).
    n_boot, level
        Bootstrap draws and level of the intervals.
    **simulation
        Passed to :func:`simulate_held_out` (``phi``, ``stay``, ``n_selected``,
        ``signal`` ...).

    Returns
    -------
    pandas.DataFrame
        One row per method and unit: ``method``, ``unit``, ``truth``, ``n_datasets``,
        ``covered``, ``coverage`` and its Clopper-Pearson interval (``low``, ``high``),
        ``mean_width``.
    """
    unknown = set(methods) - set(INTERVAL_METHODS)
    if unknown:
        raise ValueError(f"unknown interval methods {sorted(unknown)}; "
                         f"choose from {INTERVAL_METHODS}")
    rng = np.random.default_rng(seed)
    cells = [(m, b) for m in methods for b in block_s]
    truth = true_macro_auc(simulation.get("signal", 0.0), simulation.get("n_classes", 5))
    hits = dict.fromkeys(cells, 0)
    widths: dict[tuple, list[float]] = {c: [] for c in cells}
    for k in tqdm(range(n), desc="simulated decodings", disable=not progress):
        y, p, t, f = simulate_held_out(rng, **simulation)
        n_classes = p.shape[1]
        for m, b in cells:
            clusters = t if b is None else time_blocks(t, b)
            if m == "jackknife":
                ci = block_jackknife(y, p, clusters, n_classes, folds=f, level=level)
            else:
                ci = cluster_bootstrap(y, p, clusters, n_classes, n_boot=n_boot, seed=k,
                                       level=level, folds=f)
            ci = ci.set_index("metric").loc["macro_auc"]
            hits[m, b] += int(ci["low"] <= truth <= ci["high"])
            widths[m, b].append(float(ci["high"] - ci["low"]))
    rows = []
    for m, b in cells:
        lo, hi = clopper_pearson(hits[m, b], n)
        rows.append({"method": m, "unit": "moment" if b is None else f"{b:g}-s block",
                     "truth": truth, "n_datasets": n, "covered": hits[m, b],
                     "coverage": hits[m, b] / n, "low": lo, "high": hi,
                     "mean_width": float(np.mean(widths[m, b]))})
    return pd.DataFrame(rows)
