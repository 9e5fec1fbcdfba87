"""The leak checker: an independent count of what a split shares between training and test.

The guards of :mod:`emolib.forrest.splits` remove training samples that share a movie moment
with the test set; this module checks their work with code of its own (nothing here is
shared with the guards), so that "the splits do not leak" is not the guards vouching for
themselves.

What a volume shares with another: a volume acquired at movie time ``t`` reflects what was
on screen during ``[t - span_s, t + tr)``, where ``span_s`` is how long the hemodynamic
response lasts, not its peak lag: the canonical (Glover) response stays above 5 % of its
peak for 18.4 s after the stimulus (nilearn's ``glover_hrf``; a test checks), so two volumes
less than ``span_s + tr`` seconds of movie time apart carry responses to the same scene
(:data:`HRF_SPAN_S`, 20 s by default). A 6-s window (lag plus one TR) would count only the
neighbours at the response's peak, and undercount the leak of a random split of volumes.

Counted per split, each training sample once, under the first kind that applies:

``same volume``
    the very volume (subject, run, volume index) of a test sample;
``same moment``
    a volume less than one TR of movie time from a test volume (the same scene), of any
    subject, in any run (the runs' overlaps show some moments twice);
``response window``
    otherwise less than ``span_s + tr`` from a test volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["HRF_SPAN_S", "LeakReport", "LeakageError", "assert_no_leak", "find_leaks",
           "leak_table"]

#: Seconds of stimulus history one volume reflects: the support of the canonical HRF
#: (Glover: above 5 % of its peak until 18.4 s), rounded up.
HRF_SPAN_S = 20.0


class LeakageError(AssertionError):
    """A split puts the same volume or the same movie moment on both sides."""


@dataclass
class LeakReport:
    """What :func:`find_leaks` found in one split (training samples, each counted once)."""

    split: str
    same_volume: int
    same_moment: int
    response_window: int
    span_s: float

    @property
    def leaks(self) -> bool:
        """Whether anything leaks."""
        return bool(self.same_volume or self.same_moment or self.response_window)


def _count_within(times: np.ndarray, ref: np.ndarray, radius: float) -> np.ndarray:
    """For each of ``times``, how many of ``ref`` lie strictly closer than ``radius``."""
    ref = np.sort(ref)
    lo = np.searchsorted(ref, times - radius, side="right")
    hi = np.searchsorted(ref, times + radius, side="left")
    return hi - lo


def find_leaks(samples: pd.DataFrame, split, *, tr: float = 2.0,
               span_s: float = HRF_SPAN_S) -> LeakReport:
    """Count the training samples of ``split`` that share something with its test samples.

    Parameters
    ----------
    samples : pandas.DataFrame
        Sample table (columns ``subject``, ``run``, ``volume``, ``movie_time``: acquisition
        onset in movie time, s).
    split : Split
        Any object with ``name``, ``train`` and ``test`` (row positions into ``samples``).
    tr : float, default=2.0
        Repetition time (s): volumes less than one TR apart show the same scene.
    span_s : float, default=HRF_SPAN_S
        Seconds of stimulus history one volume reflects (see the module docstring).

    Returns
    -------
    LeakReport
    """
    if not span_s >= 0:
        raise ValueError(f"span_s must be >= 0, got {span_s}")
    train = np.asarray(split.train, dtype=np.int64)
    test = np.asarray(split.test, dtype=np.int64)
    ident = pd.MultiIndex.from_frame(
        samples[["subject", "run", "volume"]].astype(str).reset_index(drop=True))
    same_volume = ident[train].isin(ident[test])
    t = samples["movie_time"].to_numpy(dtype=float)
    eps = 1e-9
    near = _count_within(t[train], t[test], tr - eps) > 0
    window = _count_within(t[train], t[test], span_s + tr - eps) > 0
    moment = near & ~same_volume
    response = window & ~near & ~same_volume
    return LeakReport(split.name, int(same_volume.sum()), int(moment.sum()),
                      int(response.sum()), float(span_s))


def leak_table(samples: pd.DataFrame, splits: Sequence, *, tr: float = 2.0,
               span_s: float = HRF_SPAN_S) -> pd.DataFrame:
    """One row per split: train and test sizes and the counts of :func:`find_leaks`."""
    rows = []
    for split in splits:
        r = find_leaks(samples, split, tr=tr, span_s=span_s)
        rows.append({"split": r.split, "train": len(split.train), "test": len(split.test),
                     "same volume": r.same_volume, "same moment": r.same_moment,
                     f"within {span_s + tr:g} s": r.response_window})
    return pd.DataFrame(rows)


def assert_no_leak(samples: pd.DataFrame, splits: Sequence, *, tr: float = 2.0,
                   span_s: float = HRF_SPAN_S) -> None:
    """Raise :class:`LeakageError` naming the first split whose sides share anything."""
    for split in splits:
        r = find_leaks(samples, split, tr=tr, span_s=span_s)
        if r.leaks:
            raise LeakageError(
                f"split {r.split!r} leaks: {r.same_volume} identical volume(s), "
                f"{r.same_moment} training sample(s) at a test moment, "
                f"{r.response_window} within {span_s + tr:g} s of movie time of a test "
                f"volume (one hemodynamic response)")
