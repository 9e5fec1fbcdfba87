"""Consensus emotion labels on the movie-time grid, class selection and balancing.

Two labelling modes:

``mode="seed"`` -- the original project's rule, kept exactly so its numbers can be reproduced:
on the grid of ``tr``-second steps of movie time, an annotation row covers steps
``floor(start/tr)`` to ``ceil(end/tr) - 1``; rows with an empty emotion are dropped; for one
observer a later row (file order) overwrites an earlier one; the label is the whole emotion
string (so ``"LOVE HAPPINESS"`` is a label of its own); a step is kept when at least
``min_observers`` observers give the same label string (ties between strings go to the one
seen first, in observer order, as :meth:`collections.Counter.most_common` does). The grid runs
from step 0 to the last step any row covers: ``range(max(ceil(end/tr)))``.

``mode="category"`` -- our improved rule: agreement is counted per emotion *category*. An
observer endorses a category at a step when any of their rows covering the step names it (rows
for different characters no longer overwrite each other, and ``"LOVE HAPPINESS"`` counts for
both LOVE and HAPPINESS). The label is the category endorsed by most observers, kept when at
least ``min_observers`` endorse it and no other category does; when two or more categories each
reach ``min_observers`` (a tie at the top, or a second category with a majority of its own) the
step is *ambiguous* and left unlabelled: labelled with one of them, it would serve as a negative
for the others in one-vs-rest evaluation although a majority saw them.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from emolib.io.annotations import EMOTIONS

__all__ = [
    "LABEL_STEP_S", "MODES", "class_counts", "consensus_labels", "select_classes",
]

MODES = ("seed", "category")

#: Step (s) of the movie-time grid the labels are agreed on: the original project's 2 s. It
#: is the annotations' resolution, not the scanner's: volumes are mapped onto the grid by
#: their stimulus time (:func:`emolib.forrest.timing.label_volumes`), so it need not equal
#: the TR (it does for ds000113).
LABEL_STEP_S = 2.0


def _grid_length(annotations: pd.DataFrame, tr: float) -> int:
    if annotations.empty:
        return 0
    return int(max(math.ceil(e / tr) for e in annotations["end"]))


def _covered(start: float, end: float, tr: float) -> range:
    return range(math.floor(start / tr), math.ceil(end / tr))


def consensus_labels(
    annotations: pd.DataFrame,
    tr: float = LABEL_STEP_S,
    min_observers: int | None = None,
    mode: str = "seed",
) -> pd.DataFrame:
    """Label each step of the movie-time grid with the emotion the observers agree on.

    Parameters
    ----------
    annotations : pandas.DataFrame
        Rows of :func:`emolib.io.annotations.read_observers` (columns ``start``, ``end``,
        ``emotion``, ``observer``), in file order.
    tr : float, default=2.0
        Grid step (s).
    min_observers : int, optional
        Observers that must agree for a step to be kept; default ``ceil(n_observers / 2)``.
    mode : {"seed", "category"}, default="seed"
        Labelling rule, see the module docstring.

    Returns
    -------
    pandas.DataFrame
        One row per grid step with columns ``tr`` (step index), ``onset`` (s), ``label``
        (the agreed label, missing when not kept), ``n_agree`` (observers giving the top
        label) and ``status`` (``"kept"``, ``"unannotated"``, ``"no majority"`` or
        ``"ambiguous"``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    missing = {"start", "end", "emotion", "observer"} - set(annotations.columns)
    if missing:
        raise ValueError(f"annotations lack column(s) {sorted(missing)}")
    observers = list(dict.fromkeys(annotations["observer"]))
    if min_observers is None:
        min_observers = math.ceil(len(observers) / 2)
    if min_observers < 1:
        raise ValueError(f"min_observers must be >= 1, got {min_observers}")
    n_steps = _grid_length(annotations, tr)
    emotion = annotations["emotion"].fillna("").astype(str)
    rows = annotations.assign(emotion=emotion)[emotion.str.strip() != ""]

    labels: list[object] = [pd.NA] * n_steps
    n_agree = np.zeros(n_steps, dtype=int)
    status = np.full(n_steps, "unannotated", dtype=object)
    if mode == "seed":
        per_obs = {}
        for obs, grp in rows.groupby("observer", sort=False):
            arr: list[str | None] = [None] * n_steps
            for start, end, emo in zip(grp["start"], grp["end"], grp["emotion"], strict=True):
                for k in _covered(start, end, tr):
                    arr[k] = emo
            per_obs[obs] = arr
        for k in range(n_steps):
            counts = Counter(a[k] for a in per_obs.values() if a[k] is not None)
            if not counts:
                continue
            label, count = counts.most_common(1)[0]
            n_agree[k] = count
            if count >= min_observers:
                labels[k], status[k] = label, "kept"
            else:
                status[k] = "no majority"
    else:
        cats = {c: i for i, c in enumerate(EMOTIONS)}
        endorse = np.zeros((len(observers), n_steps, len(cats)), dtype=bool)
        obs_index = {o: i for i, o in enumerate(observers)}
        for obs, start, end, emo in zip(rows["observer"], rows["start"], rows["end"],
                                        rows["emotion"], strict=True):
            sl = slice(math.floor(start / tr), math.ceil(end / tr))
            for word in emo.split():
                endorse[obs_index[obs], sl, cats[word]] = True
        counts = endorse.sum(axis=0)  # (steps, categories)
        top = counts.max(axis=1)
        n_majorities = (counts >= min_observers).sum(axis=1)
        best = counts.argmax(axis=1)
        for k in np.flatnonzero(top > 0):
            n_agree[k] = top[k]
            if top[k] < min_observers:
                status[k] = "no majority"
            elif n_majorities[k] > 1:
                status[k] = "ambiguous"
            else:
                labels[k], status[k] = EMOTIONS[best[k]], "kept"
    return pd.DataFrame({
        "tr": np.arange(n_steps),
        "onset": np.arange(n_steps) * float(tr),
        "label": pd.array(labels, dtype="string"),
        "n_agree": n_agree,
        "status": status.astype(str),
    })


def class_counts(labels: pd.DataFrame) -> pd.Series:
    """Kept steps per label, most frequent first."""
    return labels["label"].dropna().value_counts().rename("n")


def select_classes(
    labels: pd.DataFrame,
    min_count: int = 70,
    n_per_class: int | None = 70,
    classes: list[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Keep the classes with enough labelled steps and sample each down to the same size.

    Parameters
    ----------
    labels : pandas.DataFrame
        Output of :func:`consensus_labels` (any table with a ``label`` column).
    min_count : int, default=70
        Classes with fewer labelled rows are dropped (the original used 70).
    n_per_class : int or None, default=70
        Rows kept per class, sampled without replacement (seeded); ``None`` keeps all.
    classes : list of str, optional
        Use exactly these classes instead of selecting by count (each must still have at
        least ``n_per_class`` rows when sampling).
    seed : int, default=0
        Seed of the sampling.

    Returns
    -------
    pandas.DataFrame
        The kept rows in their original order.
    """
    counts = class_counts(labels)
    if classes is None:
        classes = sorted(counts.index[counts >= min_count])
    else:
        unknown = sorted(set(classes) - set(counts.index))
        if unknown:
            raise ValueError(f"classes {unknown} have no labelled rows")
    if not classes:
        raise ValueError(f"no class has at least {min_count} labelled rows "
                         f"(largest: {counts.head(3).to_dict()})")
    rng = np.random.default_rng(seed)
    keep = []
    for c in sorted(classes):
        idx = np.flatnonzero((labels["label"] == c).fillna(False).to_numpy())
        if n_per_class is not None:
            if len(idx) < n_per_class:
                raise ValueError(f"class {c!r} has {len(idx)} rows, fewer than "
                                 f"n_per_class={n_per_class}")
            idx = rng.choice(idx, size=n_per_class, replace=False)
        keep.append(idx)
    return labels.iloc[np.sort(np.concatenate(keep))]
