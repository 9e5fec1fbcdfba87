"""Coverage of the decoding intervals, measured over many simulated null decodings.

An interval promises to contain the true value in 95 % of datasets; one dataset cannot show
that, many can. :func:`simulate_held_out` draws the held-out predictions of one decoding whose
model knows nothing (labels in episodes along the movie, outputs that drift slowly, several
subjects per moment, a class-balanced selection of labelled moments, one fold per run), so
that the true macro AUC is 0.5; :func:`interval_coverage` counts how often the bootstrap
interval of :func:`emolib.decoding.evaluate.cluster_bootstrap` contains it, resampling single
moments or blocks of movie time (:func:`emolib.decoding.evaluate.time_blocks`).
``benchmarks/bench_interval_coverage.py`` runs it at scale; the suite runs a small version.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from emolib.decoding.calibration import clopper_pearson
from emolib.decoding.evaluate import cluster_bootstrap, time_blocks

__all__ = ["interval_coverage", "simulate_held_out"]


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Held-out predictions of one decoding by a model that learned nothing.

    Per fold (a run of ``run_steps`` steps of ``step_s`` s): a label per step from a Markov
    chain that keeps its class with probability ``stay`` (episodes of ``1 / (1 - stay)``
    steps on average); the model's class scores an AR(1) series along the run (coefficient
    ``phi`` per step) shared by the subjects of a moment, plus each subject's own AR(1)
    part; ``n_selected`` moments drawn at random, and every subject's volume of each, as the
    class-balanced selection does with the real movie (70 steps per class over about 3,500).
    Labels and scores are independent, so the true AUC of every class is 0.5.

    Returns
    -------
    y, probs, movie_time, folds : numpy.ndarray
        Labels, softmax outputs ``(n, n_classes)``, movie time (s) and fold of each sample.
    """
    ys, ps, ts, fs = [], [], [], []
    innov = np.sqrt(1 - phi**2)

    def ar(size):
        x = np.empty((run_steps, size))
        x[0] = rng.standard_normal(size)
        for t in range(1, run_steps):
            x[t] = phi * x[t - 1] + innov * rng.standard_normal(size)
        return x

    for f in range(n_folds):
        lab = np.empty(run_steps, dtype=np.int64)
        lab[0] = rng.integers(n_classes)
        for t in range(1, run_steps):
            lab[t] = lab[t - 1] if rng.random() < stay else rng.integers(n_classes)
        shared = ar(n_classes)
        moments = np.sort(rng.choice(run_steps, size=min(n_selected, run_steps), replace=False))
        for _ in range(subjects):
            scores = (shared + 0.5 * ar(n_classes))[moments]
            e = np.exp(scores - scores.max(1, keepdims=True))
            ps.append(e / e.sum(1, keepdims=True))
            ys.append(lab[moments])
            ts.append(f * run_steps * step_s * 1.1 + step_s * moments)
            fs.append(np.full(moments.size, f"run-{f + 1}"))
    return (np.concatenate(ys), np.concatenate(ps), np.concatenate(ts), np.concatenate(fs))


def interval_coverage(
    n: int,
    block_s: Sequence[float | None] = (None, 60.0),
    *,
    seed: int = 0,
    n_boot: int = 200,
    level: float = 0.95,
    progress: bool = True,
    **simulation,
) -> pd.DataFrame:
    """How often the bootstrap interval of the macro AUC contains the true 0.5.

    Parameters
    ----------
    n : int
        Simulated null decodings (:func:`simulate_held_out`, seeded by ``seed``).
    block_s : sequence of float or None, default=(None, 60.0)
        Resampling units compared on the same datasets: ``None`` resamples single movie
        moments (all subjects of a moment together), a number blocks of that many seconds.
    n_boot, level
        Bootstrap draws and level of :func:`cluster_bootstrap`.
    **simulation
        Passed to :func:`simulate_held_out` (``phi``, ``stay``, ``n_selected`` ...).

    Returns
    -------
    pandas.DataFrame
        One row per resampling unit: ``unit``, ``n_datasets``, ``covered``, ``coverage`` and
        its Clopper-Pearson interval (``low``, ``high``), ``mean_width``.
    """
    rng = np.random.default_rng(seed)
    hits = {b: 0 for b in block_s}
    widths: dict[float | None, list[float]] = {b: [] for b in block_s}
    for k in tqdm(range(n), desc="simulated decodings", disable=not progress):
        y, p, t, f = simulate_held_out(rng, **simulation)
        n_classes = p.shape[1]
        for b in block_s:
            clusters = t if b is None else time_blocks(t, b)
            ci = cluster_bootstrap(y, p, clusters, n_classes, n_boot=n_boot, seed=k,
                                   level=level, folds=f).set_index("metric").loc["macro_auc"]
            hits[b] += int(ci["low"] <= 0.5 <= ci["high"])
            widths[b].append(float(ci["high"] - ci["low"]))
    rows = []
    for b in block_s:
        lo, hi = clopper_pearson(hits[b], n)
        rows.append({"unit": "moment" if b is None else f"{b:g}-s block", "n_datasets": n,
                     "covered": hits[b], "coverage": hits[b] / n, "low": lo, "high": hi,
                     "mean_width": float(np.mean(widths[b]))})
    return pd.DataFrame(rows)
