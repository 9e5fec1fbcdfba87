"""Movie time <-> (run, volume) for the ds000113 ``ses-movie`` acquisition.

The movie was shown in 8 overlapping segments, one per run. Volume ``v`` (0-based) of run
``r`` (1-based) was acquired at movie time ``start[r] + tr * v``. Consecutive segments overlap
by about 16 s, so a movie moment near a segment border was seen in two runs; the original
project ignored this (it used cumulative run lengths, shifting labels by up to 112 s); we
use the real segment starts.

A BOLD volume reflects what was on screen a few seconds earlier (the hemodynamic lag), so the
*stimulus time* of a volume is its movie time minus the lag; its label is read from the
annotation grid at the stimulus time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emolib.forrest.labels import LABEL_STEP_S

__all__ = [
    "RunTiming", "STUDYFORREST", "STUDYFORREST_RUN_STARTS", "STUDYFORREST_TR",
    "STUDYFORREST_VOLUMES", "label_volumes",
]

#: Movie time (s) at which each of the 8 runs of ds000113 ``ses-movie`` starts.
STUDYFORREST_RUN_STARTS = (0.0, 886.0, 1752.08, 2612.16, 3572.2, 4480.28, 5342.36, 6410.44)
#: Volumes per run of ds000113 ``ses-movie``.
STUDYFORREST_VOLUMES = (451, 441, 438, 488, 462, 439, 542, 338)
#: Repetition time (s) of ds000113 ``ses-movie``.
STUDYFORREST_TR = 2.0


@dataclass(frozen=True)
class RunTiming:
    """Where each run sits in movie time.

    Parameters
    ----------
    starts : tuple of float
        Movie time (s) of volume 0 of runs 1, 2, ...
    n_volumes : tuple of int
        Volumes per run.
    tr : float
        Repetition time (s).
    """

    starts: tuple[float, ...] = STUDYFORREST_RUN_STARTS
    n_volumes: tuple[int, ...] = STUDYFORREST_VOLUMES
    tr: float = STUDYFORREST_TR
    _ends: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = tuple(float(s) for s in self.starts)
        n_volumes = tuple(int(n) for n in self.n_volumes)
        if len(starts) != len(n_volumes) or not starts:
            raise ValueError(f"{len(starts)} run starts but {len(n_volumes)} run lengths")
        if any(n <= 0 for n in n_volumes) or self.tr <= 0:
            raise ValueError("run lengths and TR must be positive")
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError(f"run starts must increase: {starts}")
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "n_volumes", n_volumes)
        object.__setattr__(self, "tr", float(self.tr))
        object.__setattr__(
            self, "_ends", tuple(s + self.tr * n for s, n in zip(starts, n_volumes, strict=True))
        )

    @property
    def n_runs(self) -> int:
        """Number of runs."""
        return len(self.starts)

    @property
    def runs(self) -> tuple[int, ...]:
        """Run numbers, 1-based."""
        return tuple(range(1, self.n_runs + 1))

    def with_volumes(self, n_volumes: tuple[int, ...] | list[int]) -> RunTiming:
        """The same segment starts with other run lengths (e.g. read from the data)."""
        return RunTiming(self.starts[: len(n_volumes)], tuple(n_volumes), self.tr)

    def overlaps(self) -> list[tuple[int, int, float]]:
        """``(run, next_run, seconds)`` for each pair of consecutive runs that overlap."""
        out = []
        for r in range(1, self.n_runs):
            sec = self._ends[r - 1] - self.starts[r]
            if sec > 0:
                out.append((r, r + 1, sec))
        return out

    def movie_time(self, run: int | np.ndarray, volume: int | np.ndarray) -> float | np.ndarray:
        """Movie time (s) of volume ``volume`` (0-based) of run ``run`` (1-based).

        Raises
        ------
        ValueError
            If a run or volume index is out of range.
        """
        run_a, vol_a = np.asarray(run), np.asarray(volume)
        if np.any((run_a < 1) | (run_a > self.n_runs)):
            raise ValueError(f"run must be in 1..{self.n_runs}, got {run}")
        n = np.asarray(self.n_volumes)[run_a - 1]
        if np.any((vol_a < 0) | (vol_a >= n)):
            raise ValueError(f"volume out of range for run {run}: {volume}")
        t = np.asarray(self.starts)[run_a - 1] + self.tr * vol_a
        return float(t) if t.ndim == 0 else t

    def run_volumes(self, movie_time: float) -> list[tuple[int, int]]:
        """All ``(run, volume)`` acquired at the movie moment ``movie_time``.

        A volume covers ``[movie_time(run, v), movie_time(run, v) + tr)``. In the overlap
        of two segments a moment has two entries, one per run; outside all runs, none.
        """
        out = []
        for r, (s, n) in enumerate(zip(self.starts, self.n_volumes, strict=True), start=1):
            v = math.floor((movie_time - s) / self.tr + 1e-9)
            if 0 <= v < n:
                out.append((r, v))
        return out

    def volume_table(self, hrf_lag: float = 4.0, label_tr: float = LABEL_STEP_S) -> pd.DataFrame:
        """One row per volume of every run, with its place in movie time.

        Parameters
        ----------
        hrf_lag : float, default=4.0
            Hemodynamic lag (s): the stimulus time of a volume is its movie time minus this.
        label_tr : float, default=2.0
            Step (s) of the annotation grid the labels are read from.

        Returns
        -------
        pandas.DataFrame
            Columns ``run``, ``volume``, ``movie_time`` (acquisition onset), ``stim_time``
            (movie time minus the lag), ``label_tr`` (index of the annotation grid step that
            holds ``stim_time``; -1 when ``stim_time`` precedes its own run's first frame) and
            ``overlap_run`` (the other run that saw the same movie moment, 0 if none).

        Notes
        -----
        The first volumes of every run (``hrf_lag / tr`` of them) reflect no movie moment of
        that run: their stimulus time falls before the run started, when the screen showed
        nothing (runs 2-8 begin after a break; the moment was shown at the end of the
        previous run). They get no label (``label_tr = -1``), as in run 1.
        """
        runs = np.concatenate([np.full(n, r) for r, n in zip(self.runs, self.n_volumes,
                                                               strict=True)])
        vols = np.concatenate([np.arange(n) for n in self.n_volumes])
        t = np.asarray(self.movie_time(runs, vols), dtype=float)
        stim = t - hrf_lag
        grid = np.floor(stim / label_tr + 1e-9).astype(int)
        run_start = np.asarray(self.starts)[runs - 1]
        grid[stim < run_start - 1e-9] = -1
        other = np.zeros(len(t), dtype=int)
        for i, ti in enumerate(t):
            for r, _ in self.run_volumes(ti):
                if r != runs[i]:
                    other[i] = r
        return pd.DataFrame({
            "run": runs, "volume": vols, "movie_time": t, "stim_time": stim,
            "label_tr": grid, "overlap_run": other,
        })


#: The timing of the real ds000113 ``ses-movie`` acquisition.
STUDYFORREST = RunTiming()


def label_volumes(
    timing: RunTiming, labels: pd.DataFrame, selected: pd.DataFrame, hrf_lag: float = 4.0,
    label_step: float = LABEL_STEP_S,
) -> pd.DataFrame:
    """Label every volume of one subject's runs from the consensus labels.

    A volume gets the label of the grid step that holds its stimulus time (movie time minus
    ``hrf_lag``); it is ``selected`` when that step is among the selected (class-filtered and
    balanced) steps.

    Returns
    -------
    pandas.DataFrame
        :meth:`RunTiming.volume_table` plus ``label`` and ``selected``.
    """
    table = timing.volume_table(hrf_lag=hrf_lag, label_tr=label_step)
    grid = labels.set_index("tr")["label"]
    in_grid = (table["label_tr"] >= 0) & (table["label_tr"] < len(grid))
    lab = pd.Series(pd.NA, index=table.index, dtype="string")
    lab[in_grid] = grid.reindex(table.loc[in_grid, "label_tr"]).to_numpy()
    table["label"] = lab
    table["selected"] = table["label_tr"].isin(set(selected["tr"])) & table["label"].notna()
    return table
