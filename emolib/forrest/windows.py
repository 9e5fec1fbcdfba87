"""Samples that are windows: T consecutive volumes of one run around each labelled moment.

A window sample is the labelled volume's neighbours at ``offsets`` (in volumes, relative to
the labelled one: ``(0, 1, 2, 3)`` takes it and the next three, ``(-1, 0, 1)`` one on each
side), all from the same run of the same subject: a window never crosses a run boundary,
and a labelled volume whose window would is dropped (and counted). The windows are rows of
the volume cache (:class:`WindowedSamples.rows`), gathered batch by batch
(:func:`gather_windows`): no window is ever stored.

Leakage: a window reflects what was on screen over its whole span, from ``span_s`` before
its first volume to the end of its last. :func:`window_samples` writes that into the sample
table the guards and the independent checker read: ``movie_time`` becomes the movie time of
the window's last volume and :attr:`WindowedSamples.span_s` the usual response span widened
by the window's length, so that :func:`emolib.forrest.make_splits` and
:func:`emolib.forrest.assert_no_leak` treat each window as the interval it covers. (Run
overlaps are handled as for single volumes: the guards compare movie times, not volume
numbers.)

The cache must hold the neighbours: ``window=offsets`` in
:func:`emolib.forrest.prepare_dataset` caches exactly those (:func:`window_support`),
``keep="all"`` every volume; :func:`window_cache_bytes` says what a cache costs on disk at a
given size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from emolib.forrest.leaks import HRF_SPAN_S

__all__ = ["WindowedSamples", "as_offsets", "gather_windows", "window_cache_bytes",
           "window_samples", "window_support"]


@dataclass
class WindowedSamples:
    """The selected samples whose whole window is in the cache.

    Attributes
    ----------
    samples : pandas.DataFrame
        One row per window: the labelled volume's row of the prepared sample table (its
        ``subject``, ``run``, ``volume``, ``label``, ``y``, ...), ``movie_time`` moved to the
        window's last volume, ``label_time`` the labelled volume's own movie time, ``sample``
        its row in the prepared table.
    rows : numpy.ndarray
        ``(n_windows, T)`` rows of the volume cache, in the order of ``offsets``.
    offsets : tuple of int
        Volume offsets of the window relative to the labelled volume.
    span_s : float
        Seconds of stimulus history a window reflects before its last volume: the response
        span plus the window's length; what the guards and the checker take as ``span_s``.
    dropped : int
        Selected samples without a whole window (at a run's edge, or neighbours not cached).
    """

    samples: pd.DataFrame
    rows: np.ndarray
    offsets: tuple[int, ...]
    span_s: float
    dropped: int


def as_offsets(offsets) -> tuple[int, ...]:
    """A window's volume offsets (relative to its labelled volume) as integers, checked: at
    least one, whole numbers, consecutive and increasing (``[-1, 0, 1, 2]``; ``[0.0, 1.0]`` from
    a YAML profile is ``(0, 1)``). Raises ValueError naming what is wrong."""
    try:
        out = tuple(int(o) for o in offsets)
    except (TypeError, ValueError):
        raise ValueError(f"offsets must be integers, got {offsets!r}") from None
    if not out:
        raise ValueError("offsets must name at least one volume")
    if any(o != float(v) for o, v in zip(out, offsets, strict=True)):
        raise ValueError(f"offsets must be integers, got {offsets!r}")
    if out != tuple(range(out[0], out[0] + len(out))):
        raise ValueError(f"offsets must be consecutive volumes in increasing order, got "
                         f"{offsets!r}")
    return out


def window_support(table: pd.DataFrame, centres: np.ndarray, offsets) -> np.ndarray:
    """Which volumes of ``table`` the windows around the ``centres`` read.

    Parameters
    ----------
    table : pandas.DataFrame
        Volumes with ``run`` and ``volume`` (one subject's, or with ``subject`` several).
    centres : numpy.ndarray of bool
        The labelled volumes that windows are built around (one flag per row of ``table``).
    offsets : sequence of int
        Consecutive volume offsets of the window (as :func:`window_samples`).

    Returns
    -------
    numpy.ndarray of bool
        True for every row at one of the ``offsets`` from a centre in the same run (the
        centres themselves when 0 is an offset); windows cut by a run's edge keep what lies
        inside the run.
    """
    offsets = as_offsets(offsets)
    centres = np.asarray(centres, dtype=bool)
    if centres.shape != (len(table),):
        raise ValueError(f"centres must flag each of the {len(table)} rows, got shape "
                         f"{centres.shape}")
    group = [c for c in ("subject", "run") if c in table.columns]
    keys = pd.MultiIndex.from_frame(table[[*group, "volume"]])
    wanted = table.loc[centres, [*group, "volume"]]
    need = pd.MultiIndex.from_frame(pd.concat(
        [wanted.assign(volume=wanted["volume"] + o) for o in offsets], ignore_index=True))
    return keys.isin(need)


def window_samples(samples: pd.DataFrame, offsets=(0, 1, 2, 3), tr: float = 2.0,
                   span_s: float = HRF_SPAN_S, sample_window=None) -> WindowedSamples:
    """The windows of the selected samples of a prepared sample table.

    Parameters
    ----------
    samples : pandas.DataFrame
        :attr:`emolib.forrest.PreparedData.samples`: one row per cached volume (``subject``,
        ``run``, ``volume``, ``movie_time``, ``selected``).
    offsets : sequence of int, default=(0, 1, 2, 3)
        Consecutive volume offsets relative to the labelled volume (T = their number).
    tr : float, default=2.0
        Repetition time (seconds between the window's volumes).
    span_s : float, default=HRF_SPAN_S
        The response span a single volume reflects (:mod:`emolib.forrest.splits`).
    sample_window : sequence of int, optional
        Consecutive offsets whose volumes every sample must also have, and whose extent
        (joined with ``offsets``') sets the samples' ``movie_time`` and ``span_s``: give
        the widest window of a comparison, and every model of it (a single volume,
        ``offsets=(0,)``, included) sees the same samples in the same folds. Default
        ``offsets``.

    Returns
    -------
    WindowedSamples
    """
    offsets = as_offsets(offsets)
    support = offsets if sample_window is None else as_offsets(sample_window)
    first, last = min(offsets[0], support[0]), max(offsets[-1], support[-1])
    needed = {"subject", "run", "volume", "movie_time", "selected"}
    missing = needed - set(samples.columns)
    if missing:
        raise ValueError(f"the sample table lacks {sorted(missing)}")
    if not tr > 0:
        raise ValueError(f"tr must be positive, got {tr}")
    keys = pd.MultiIndex.from_frame(samples[["subject", "run", "volume"]].astype(
        {"subject": str, "run": int, "volume": int}))
    if keys.has_duplicates:
        raise ValueError("the sample table holds a volume twice")
    position = pd.Series(np.arange(len(samples)), index=keys)
    sel = np.flatnonzero(samples["selected"].to_numpy(bool))
    chosen = samples.iloc[sel]
    subj = chosen["subject"].astype(str).to_numpy()
    run = chosen["run"].to_numpy(int)
    vol = chosen["volume"].to_numpy(int)

    def cache_rows(offs) -> np.ndarray:
        out = np.full((len(sel), len(offs)), -1, dtype=np.int64)
        for j, o in enumerate(offs):
            want = pd.MultiIndex.from_arrays([subj, run, vol + o])
            out[:, j] = position.reindex(want).fillna(-1).to_numpy(np.int64)
        return out

    rows = cache_rows(offsets)
    whole = (rows >= 0).all(axis=1) & (cache_rows(support) >= 0).all(axis=1)
    out = chosen[whole].reset_index(drop=True)
    out.insert(0, "sample", sel[whole])
    out["label_time"] = out["movie_time"]
    out["movie_time"] = out["movie_time"] + last * tr
    return WindowedSamples(out, rows[whole], offsets, float(span_s + (last - first) * tr),
                           int((~whole).sum()))


def gather_windows(volumes: np.ndarray, rows: np.ndarray, index=None) -> np.ndarray:
    """The windows ``rows[index]`` as one ``(n, T, X, Y, Z)`` float32 array (a copy of those
    windows only: ``volumes`` may be the memory-mapped cache)."""
    rows = np.asarray(rows if index is None else rows[index])
    if rows.ndim != 2:
        raise ValueError(f"rows must be (n_windows, T), got shape {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= len(volumes)):
        raise IndexError(f"window rows outside the cache of {len(volumes)} volumes")
    cached = np.unique(rows)  # each cache row read once, in order (a memory map likes that)
    flat = np.asarray(volumes[cached], dtype=np.float32)
    return flat[np.searchsorted(cached, rows)]


def window_cache_bytes(n_volumes: int, shape=(80, 80, 35), itemsize: int = 4) -> int:
    """Bytes of a volume cache of ``n_volumes`` volumes of ``shape`` (float32 by default):
    e.g. the real ses-movie of 15 subjects, 3,599 volumes each, with ``keep="all"``."""
    return int(n_volumes) * int(np.prod(shape)) * int(itemsize)
