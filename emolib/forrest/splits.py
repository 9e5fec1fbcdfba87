"""Train/test splits of the sample table that do not leak.

Every sample is a BOLD volume acquired at movie time ``t``; it reflects what was on screen
from ``t - span_s`` until ``t + tr``, where ``span_s`` is how long the hemodynamic response
lasts (:data:`emolib.forrest.leaks.HRF_SPAN_S`, 20 s). Two samples share a movie moment when
these intervals overlap: the same scene seen by another subject, or seen again in the 16-s
overlap of two runs, or close enough in time that the sluggish BOLD response mixes them. A
split leaks when a training sample shares a moment with a test sample (or is the very same
volume): the network can then recognise the scene rather than the emotion. The guards here
remove such training samples; :mod:`emolib.forrest.leaks` checks the result with code of its
own.

Split kinds:

``"run"`` (default)
    Leave one run out: test on run ``r`` of every subject, train on the other runs, minus the
    training samples that share a moment with the test set (the run overlaps and the response).
``"subject"``
    Leave one subject out *across time*: the same movie moments were seen by every subject, so
    holding out a subject alone would leave the test scenes in training. Fold ``k`` tests
    subject ``k`` on one run (rotating through the runs) and trains on the other subjects'
    samples that share no moment with it.
``"random"``
    The original project's random 80/20 split of volumes. It leaks (the same moments, seen by
    other subjects and in neighbouring volumes, fall on both sides) and is kept only to show
    how much that inflates the scores. :func:`emolib.forrest.leaks.find_leaks` counts its
    leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emolib.forrest.leaks import HRF_SPAN_S

__all__ = [
    "KINDS", "Split", "guard", "make_splits", "moment_conflicts", "removal_table",
]

KINDS = ("run", "subject", "random")


@dataclass
class Split:
    """One fold: indices into the sample table.

    Attributes
    ----------
    name : str
        e.g. ``"run-3"``, ``"sub-02/run-1"``, ``"random"``.
    train, test : numpy.ndarray
        Row positions of the training and test samples.
    removed : dict of str to int
        Training samples dropped by each guard: ``"same moment, same subject"``,
        ``"same moment, other subject"``, ``"response window, same subject"``,
        ``"response window, other subject"``.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    removed: dict[str, int] = field(default_factory=dict)


def _nearest_gap(starts: np.ndarray, ref_sorted: np.ndarray) -> np.ndarray:
    """For each value of ``starts``, the distance to the nearest value of ``ref_sorted``."""
    if ref_sorted.size == 0:
        return np.full(starts.shape, np.inf)
    pos = np.searchsorted(ref_sorted, starts)
    left = ref_sorted[np.clip(pos - 1, 0, ref_sorted.size - 1)]
    right = ref_sorted[np.clip(pos, 0, ref_sorted.size - 1)]
    return np.minimum(np.abs(starts - left), np.abs(starts - right))


def moment_conflicts(
    samples: pd.DataFrame, train: np.ndarray, test: np.ndarray, tr: float = 2.0,
    span_s: float = HRF_SPAN_S,
) -> dict[str, np.ndarray]:
    """Training samples that share a movie moment with the test set, by kind.

    A sample covers the stimulus interval ``[t - span_s, t + tr)`` of movie time ``t``; two
    intervals of equal length ``tr + span_s`` overlap when their starts differ by less than
    that length. *Same moment* means within one TR (the same scene); *response window* the rest.
    Each conflicting sample is listed under the first kind that applies, in the order
    same moment (same subject, other subject), then response window (same, other).

    Returns
    -------
    dict of str to numpy.ndarray
        Guard name -> positions (into ``samples``) of conflicting training samples.
    """
    start = samples["movie_time"].to_numpy(float) - span_s
    subj = samples["subject"].to_numpy()
    out: dict[str, list[np.ndarray]] = {}
    span = tr + span_s
    for same in (True, False):
        who = "same subject" if same else "other subject"
        gaps = np.full(train.size, np.inf)
        for s in np.unique(subj[train]):
            tr_mask = subj[train] == s
            ref = start[test][(subj[test] == s) if same else (subj[test] != s)]
            gaps[tr_mask] = _nearest_gap(start[train][tr_mask], np.sort(ref))
        out[f"same moment, {who}"] = train[gaps < tr - 1e-9]
        out[f"response window, {who}"] = train[(gaps >= tr - 1e-9) & (gaps < span - 1e-9)]
    # make the kinds exclusive, in this order, so that each sample is counted once
    order = ["same moment, same subject", "same moment, other subject",
             "response window, same subject", "response window, other subject"]
    seen = np.array([], dtype=train.dtype)
    exclusive = {}
    for k in order:
        exclusive[k] = np.setdiff1d(out[k], seen)
        seen = np.union1d(seen, out[k])
    return exclusive


def guard(samples: pd.DataFrame, name: str, train: np.ndarray, test: np.ndarray,
          tr: float = 2.0, span_s: float = HRF_SPAN_S) -> Split:
    """Drop from ``train`` every sample that shares a movie moment with ``test``."""
    conflicts = moment_conflicts(samples, train, test, tr, span_s)
    drop = np.unique(np.concatenate(list(conflicts.values()))) if conflicts else np.array([])
    keep = np.setdiff1d(train, drop)
    return Split(name, keep, np.sort(test), {k: int(v.size) for k, v in conflicts.items()})


def make_splits(
    samples: pd.DataFrame,
    kind: str = "run",
    tr: float = 2.0,
    span_s: float = HRF_SPAN_S,
    test_size: float = 0.2,
    seed: int = 0,
    folds: list[int] | None = None,
) -> list[Split]:
    """Build the folds of one split kind (see the module docstring).

    Parameters
    ----------
    samples : pandas.DataFrame
        The sample table of :mod:`emolib.forrest.dataprep` (columns ``subject``, ``run``,
        ``volume``, ``movie_time``); only rows to be used should be passed.
    kind : {"run", "subject", "random"}, default="run"
        Split kind.
    tr, span_s : float
        Repetition time and seconds of stimulus history of a volume: define what two
        samples share (see :func:`moment_conflicts`).
    test_size : float, default=0.2
        Test fraction of the random split.
    seed : int, default=0
        Seed of the random split.
    folds : list of int, optional
        Keep only these fold numbers (0-based), e.g. to run fewer folds on a small machine.

    Returns
    -------
    list of Split
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    pos = np.arange(len(samples))
    runs = samples["run"].to_numpy()
    subj = samples["subject"].to_numpy()
    out: list[Split] = []
    if kind == "run":
        for r in sorted(np.unique(runs)):
            out.append(guard(samples, f"run-{r}", pos[runs != r], pos[runs == r], tr, span_s))
    elif kind == "subject":
        run_list = sorted(np.unique(runs))
        for k, s in enumerate(sorted(np.unique(subj))):
            r = run_list[k % len(run_list)]
            test = pos[(subj == s) & (runs == r)]
            out.append(guard(samples, f"sub-{s}/run-{r}", pos[subj != s], test, tr, span_s))
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(pos)
        n_test = int(round(test_size * len(pos)))
        out.append(Split("random", np.sort(perm[n_test:]), np.sort(perm[:n_test]), {}))
    if folds is not None:
        out = [out[i] for i in folds if i < len(out)]
    return out


def removal_table(splits: list[Split]) -> pd.DataFrame:
    """One row per fold: sizes and how many training samples each guard removed."""
    rows = [{"fold": s.name, "train": s.train.size, "test": s.test.size, **s.removed}
            for s in splits]
    return pd.DataFrame(rows).fillna(0)
