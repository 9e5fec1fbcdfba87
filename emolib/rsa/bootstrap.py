"""Fast pattern bootstrap of RDM comparisons.

Resampling patterns with replacement (as ``rsatoolbox.inference.eval_bootstrap_pattern``)
turns each original pair ``(a, b)`` into ``c_a * c_b`` copies and drops the pairs of a pattern
with its own copies; the resampled comparison is therefore a *weighted* comparison of the
original vectors with weights ``c_a c_b``. One matrix product per chunk gives all bootstraps
for all layer/ROI pairs. Per-subject bootstraps are joined with :func:`concat_bootstraps`.

Dependent patterns (e.g. neighbouring moments of a movie) can be resampled in groups, as
``eval_bootstrap_pattern(..., pattern_descriptor=...)`` does: the groups are drawn with
replacement and every pattern of a drawn group enters the sample, so ``c_a`` is the number of
draws of the group of ``a`` and the same weighted comparison applies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import ArrayLike, DTypeLike
from rsatoolbox.rdm import RDMs

from emolib.rsa.align import (
    PATTERN_KEY,
    as_rdms_list,
    get_pattern_ids,
    label_frame,
    model_names,
    reorder_patterns,
)
from emolib.rsa.compare import compare_vectors
from emolib.rsa.vectors import chunked_mean, condensed_index, iter_row_blocks, nan_columns

__all__ = [
    "BootstrapResult", "FAST_BOOTSTRAP_METHODS", "bootstrap_compare", "concat_bootstraps",
]

#: Methods whose pattern bootstrap runs on the fast weighted path.
FAST_BOOTSTRAP_METHODS = ("corr", "cosine", "spearman", "rho-a")


#: Bytes a bootstrap chunk may use for its temporaries.
_BOOT_CHUNK_BYTES = 64 << 20


@dataclass
class BootstrapResult:
    """Bootstrap-over-patterns distribution of a model x data comparison table.

    Attributes
    ----------
    method : str
        Comparison method.
    point : numpy.ndarray, shape (n_model, n_data)
        Comparison on all patterns (:func:`compare_table`'s, up to float32 rounding of
        float32 inputs).
    samples : numpy.ndarray, shape (n_bootstrap, n_model, n_data)
        Comparisons on the resampled patterns; NaN for samples with fewer than 3 distinct
        patterns (rsatoolbox's rule).
    model_names : list
        Names of the model RDMs (layers).
    data_labels : pandas.DataFrame
        One row per data RDM (e.g. columns ``subject``, ``roi``).
    model_descriptor : str
        Column name of the model names in tables.
    n_patterns : int
        Number of patterns.
    pattern_samples : numpy.ndarray, shape (n_bootstrap, n_patterns), optional
        Resampled pattern indices, in the model's pattern order; None when groups were
        resampled (see ``group_samples`` and :attr:`pattern_counts`).
    n_groups : int, optional
        Number of groups when patterns were resampled in groups, else None.
    groups : numpy.ndarray, shape (n_patterns,), optional
        Group of every pattern (model order) when patterns were resampled in groups.
    group_samples : numpy.ndarray, shape (n_bootstrap, n_groups), optional
        Drawn groups, as indices into :attr:`group_names` (what rsatoolbox's
        ``bootstrap_sample_pattern`` draws before taking the descriptor values).
    """

    method: str
    point: np.ndarray
    samples: np.ndarray
    model_names: list
    data_labels: pd.DataFrame
    model_descriptor: str = "layer"
    n_patterns: int = 0
    pattern_samples: np.ndarray | None = field(default=None, repr=False)
    n_groups: int | None = None
    groups: np.ndarray | None = field(default=None, repr=False)
    group_samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_bootstrap(self) -> int:
        """Number of bootstrap samples."""
        return self.samples.shape[0]

    @property
    def group_names(self) -> np.ndarray | None:
        """Sorted distinct groups (``numpy.unique`` order), None without groups."""
        return None if self.groups is None else np.unique(self.groups)

    @property
    def n_units(self) -> int:
        """Number of resampled units: the groups when resampled in groups, else the patterns.

        It sets the variance correction n / (n - 1) and the t-tests' n - 1 degrees of
        freedom. rsatoolbox's ``eval_bootstrap_pattern`` keeps the number of patterns even
        with a ``pattern_descriptor``; here the independent units are the groups, so a
        grouped bootstrap uses their number (fewer degrees of freedom: more conservative).
        """
        return self.n_patterns if self.n_groups is None else int(self.n_groups)

    @property
    def pattern_counts(self) -> np.ndarray | None:
        """How often each pattern (model order) occurs in each sample, (n_bootstrap, n_patterns).

        Defined for both kinds of draws (a pattern of a group drawn twice counts twice);
        None when the draws were not kept.
        """
        if self.groups is not None and self.group_samples is not None:
            names, code = np.unique(self.groups, return_inverse=True)
            return _pattern_counts(self.group_samples, len(names))[:, code.ravel()]
        if self.pattern_samples is not None:
            return _pattern_counts(self.pattern_samples, self.n_patterns)
        return None

    def get_means(self) -> np.ndarray:
        """Mean of the bootstrap samples (rsatoolbox's ``Result.get_means``)."""
        return np.nanmean(self.samples, axis=0)

    def get_variance(self, corrected: bool = True) -> np.ndarray:
        """Bootstrap variance of each comparison (ddof=1).

        With ``corrected`` (default) it is multiplied by n / (n - 1), n = :attr:`n_units`
        (the patterns, or the groups when resampled in groups), the small-sample correction
        rsatoolbox's ``Result`` applies to pattern bootstraps.
        """
        var = np.nanvar(self.samples, axis=0, ddof=1)
        n = self.n_units
        if corrected and n > 1:
            var = var * n / (n - 1)
        return var

    def get_se(self, corrected: bool = True) -> np.ndarray:
        """Bootstrap standard error: rsatoolbox's ``Result.get_sem`` when ``corrected``."""
        return np.sqrt(self.get_variance(corrected))

    def get_ci(self, level: float = 0.95, test_type: str = "t-test"
               ) -> tuple[np.ndarray, np.ndarray]:
        """Confidence interval ``(low, high)`` at ``level``.

        ``"t-test"`` (default, rsatoolbox's ``Result.get_ci``): the bootstrap mean plus or
        minus the corrected standard error times Student's t on ``n_units - 1`` degrees of
        freedom, the interval of the t-tests. ``"bootstrap"``: the percentile interval of the
        samples. In simulation with dependent patterns resampled in blocks
        (``benchmarks/bench_rsa_coverage.py``) the t interval covered 92-95 % where the
        percentile one covered 90-92 %.
        """
        if test_type == "t-test":
            half = self.get_se() * scipy.stats.t.ppf(0.5 + level / 2, max(self.n_units - 1, 1))
            mean = self.get_means()
            return mean - half, mean + half
        if test_type == "bootstrap":
            cut = (1 - level) / 2 * 100
            return (
                np.nanpercentile(self.samples, cut, axis=0),
                np.nanpercentile(self.samples, 100 - cut, axis=0),
            )
        raise ValueError(f"test_type must be 't-test' or 'bootstrap', got {test_type!r}")

    def to_frame(self, level: float = 0.95, test_type: str = "t-test") -> pd.DataFrame:
        """Tidy table: data labels, model name, method, value, boot_mean, se, ci_low, ci_high.

        The interval is :meth:`get_ci`'s of ``test_type``.
        """
        lo, hi = self.get_ci(level, test_type)
        n_model = len(self.model_names)
        frame = self.data_labels.loc[
            np.repeat(np.arange(len(self.data_labels)), n_model)
        ].reset_index(drop=True)
        frame[self.model_descriptor] = list(self.model_names) * len(self.data_labels)
        frame["method"] = self.method
        frame["value"] = self.point.T.reshape(-1)
        frame["boot_mean"] = self.get_means().T.reshape(-1)
        frame["se"] = self.get_se().T.reshape(-1)
        frame["ci_low"] = lo.T.reshape(-1)
        frame["ci_high"] = hi.T.reshape(-1)
        return frame

    def aggregate(
        self, groups: Mapping[Any, Any] | Callable[[Any], Any], by: str = "roi"
    ) -> BootstrapResult:
        """Average data RDM columns within groups (e.g. ROIs into systems), per sample.

        Parameters
        ----------
        groups : mapping or callable
            Maps each value of ``by`` to its group (e.g. ``emolib.bold5000.roi_system``);
            values mapped to None are left out.
        by : str, default="roi"
            Data label to group.

        Returns
        -------
        BootstrapResult
            Same models; data labels with ``by`` replaced by the group (other labels kept).
            Averaging each bootstrap sample gives the exact bootstrap of the group mean.
        """
        mapper = groups if callable(groups) else (lambda v: groups.get(v))
        labels = self.data_labels.copy()
        labels[by] = [mapper(v) for v in labels[by]]
        keep = labels[by].notna().to_numpy()
        labels = labels[keep]
        cols = np.flatnonzero(keep)
        keys = list(labels.columns)
        new_labels = labels.drop_duplicates().reset_index(drop=True)
        point = np.empty((self.point.shape[0], len(new_labels)))
        samples = np.empty((self.samples.shape[0], self.samples.shape[1], len(new_labels)))
        for g, row in new_labels.iterrows():
            sel = cols[(labels[keys] == row[keys]).all(axis=1).to_numpy()]
            point[:, g] = self.point[:, sel].mean(axis=1)
            samples[:, :, g] = self.samples[:, :, sel].mean(axis=2)
        return replace(self, point=point, samples=samples, model_names=list(self.model_names),
                       data_labels=new_labels)


def _pattern_counts(samples: np.ndarray, n: int) -> np.ndarray:
    """How often each pattern occurs in each bootstrap sample, shape (n_boot, n)."""
    b = samples.shape[0]
    flat = samples + n * np.arange(b)[:, None]
    return np.bincount(flat.ravel(), minlength=b * n).reshape(b, n)


def _resampled_index(counts: np.ndarray, n: int) -> np.ndarray:
    """Condensed indices of the resampled RDM vector, self-pairs dropped (as rsatoolbox).

    ``counts`` holds how often each pattern is in the sample; the sample, sorted, is what
    ``RDMs.subsample_pattern`` selects (with a descriptor too: every pattern of each drawn
    value, sorted), and the pairs of a pattern with its own copies are its NaN diagonal.
    """
    s = np.repeat(np.arange(n), counts)
    i, j = np.triu_indices(len(s), 1)
    a, b = s[i], s[j]
    keep = a != b
    return condensed_index(a[keep], b[keep], n)


def _pattern_groups(model_rdms: RDMs, pattern_groups: str | ArrayLike, n: int) -> np.ndarray:
    """Group label of every pattern (model order), from a descriptor name or an array."""
    if isinstance(pattern_groups, str):
        if pattern_groups not in model_rdms.pattern_descriptors:
            raise ValueError(
                f"model RDMs have no pattern descriptor {pattern_groups!r} to group by "
                f"(they have {sorted(model_rdms.pattern_descriptors)})"
            )
        groups = np.asarray(model_rdms.pattern_descriptors[pattern_groups])
    else:
        groups = np.asarray(pattern_groups)
    if groups.shape != (n,):
        raise ValueError(f"pattern_groups must give one group per pattern ({n}), "
                         f"not shape {groups.shape}")
    try:
        np.unique(groups)
    except TypeError as err:
        raise ValueError("pattern group labels must be sortable (one type)") from err
    return groups


def _boot_linear(
    x: np.ndarray, y: np.ndarray, counts: np.ndarray, center: bool, dtype: type
) -> np.ndarray:
    """Weighted (by ``c_a c_b``) Pearson or cosine of all pairs, for all bootstraps at once."""
    n_boot, n = counts.shape
    nx, ny = x.shape[0], y.shape[0]
    cw = counts.astype(dtype)
    mx = chunked_mean(x).astype(dtype) if center else None
    my = chunked_mean(y).astype(dtype) if center else None
    per_entry = (n_boot + 2 * (nx + ny) + nx * ny + 4) * np.dtype(dtype).itemsize
    chunk = max(1024, _BOOT_CHUNK_BYTES // per_entry)
    tot = np.zeros(n_boot)
    sx = np.zeros((n_boot, nx))
    sy = np.zeros((n_boot, ny))
    sxx = np.zeros((n_boot, nx))
    syy = np.zeros((n_boot, ny))
    sxy = np.zeros((n_boot, nx * ny))
    for start, stop, i, j in iter_row_blocks(n, chunk):
        w = cw[:, i] * cw[:, j]  # (n_boot, c): copies of each original pair
        a = x[:, start:stop].astype(dtype, copy=True)
        b = y[:, start:stop].astype(dtype, copy=True)
        if center:
            a -= mx[:, None]
            b -= my[:, None]
        tot += w.sum(axis=1, dtype=np.float64)
        sx += w @ a.T
        sy += w @ b.T
        sxx += w @ (a * a).T
        syy += w @ (b * b).T
        sxy += w @ (a[:, None, :] * b[None, :, :]).reshape(nx * ny, -1).T
    sxy = sxy.reshape(n_boot, nx, ny)
    if center:
        sxy = sxy - sx[:, :, None] * sy[:, None, :] / tot[:, None, None]
        sxx = sxx - sx**2 / tot[:, None]
        syy = syy - sy**2 / tot[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sxy / np.sqrt(sxx[:, :, None] * syy[:, None, :])


def _boot_ranks(x: np.ndarray, y: np.ndarray, counts: np.ndarray, method: str) -> np.ndarray:
    """Weighted-rank Spearman / rho-a for all bootstraps (exact average ranks of ties)."""
    n_boot, n = counts.shape
    v = np.concatenate([x, y]).astype(np.float64)
    nx = x.shape[0]
    order = np.argsort(v, axis=1, kind="stable")
    vs = np.take_along_axis(v, order, axis=1)
    k = v.shape[1]
    pos = np.broadcast_to(np.arange(k), vs.shape)
    new_group = np.ones(vs.shape, dtype=bool)
    new_group[:, 1:] = vs[:, 1:] != vs[:, :-1]
    gstart = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
    last = np.ones(vs.shape, dtype=bool)
    last[:, :-1] = new_group[:, 1:]
    gend = np.minimum.accumulate(np.where(last, pos, k - 1)[:, ::-1], axis=1)[:, ::-1]
    i, j = np.triu_indices(n, 1)
    out = np.empty((n_boot, nx, v.shape[0] - nx))
    ranks = np.empty_like(v)
    for b in range(n_boot):
        w = (counts[b, i] * counts[b, j]).astype(np.float64)
        ws = w[order]
        cum = np.cumsum(ws, axis=1)
        before = np.take_along_axis(cum - ws, gstart, axis=1)
        size = np.take_along_axis(cum, gend, axis=1) - before
        np.put_along_axis(ranks, order, before + (size + 1) / 2, axis=1)
        total = w.sum()
        ranks -= (total + 1) / 2
        rw = ranks * w
        dots = rw[:nx] @ ranks[nx:].T
        if method == "spearman":
            ss = np.einsum("ij,ij->i", rw, ranks)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[b] = dots / np.sqrt(ss[:nx, None] * ss[None, nx:])
        else:
            out[b] = dots * 12 / (total**3 - total)
    return out


def bootstrap_compare(
    model_rdms: RDMs,
    data_rdms: RDMs | Sequence[RDMs],
    method: str = "corr",
    n_bootstrap: int = 1000,
    *,
    seed: int | np.random.Generator | None = None,
    pattern_samples: ArrayLike | None = None,
    pattern_groups: str | ArrayLike | None = None,
    pattern_key: str = PATTERN_KEY,
    model_descriptor: str = "layer",
    data_descriptors: Sequence[str] = ("subject", "roi"),
    dtype: DTypeLike = np.float32,
) -> BootstrapResult:
    """Bootstrap the model x data comparison table over patterns (or groups of patterns).

    Patterns are resampled with replacement, the same index set for every layer/ROI pair,
    exactly as :func:`rsatoolbox.inference.eval_bootstrap_pattern` does for one data RDM:
    a pattern drawn ``c`` times contributes ``c_a c_b`` copies of each of its pairs, and
    the pairs of a pattern with its own copies (NaN in rsatoolbox) are dropped.

    With ``pattern_groups``, groups are resampled instead, as ``eval_bootstrap_pattern``
    with a ``pattern_descriptor`` (``bootstrap_sample_pattern``): each sample draws as many
    groups as there are, with replacement, and takes every pattern of each drawn group (a
    group drawn twice contributes its patterns twice; pairs of two patterns of one group are
    kept, only a pattern's pairs with its own copies are dropped). Use it when neighbouring
    patterns are dependent (moments of a movie: labels come in episodes, BOLD drifts), where
    resampling single patterns gives too narrow intervals.

    Parameters
    ----------
    model_rdms : rsatoolbox.rdm.RDMs
        Model RDMs (layers).
    data_rdms : rsatoolbox.rdm.RDMs or sequence of them
        Data RDMs (ROIs of all subjects), any pattern order; aligned to the model by id.
    method : str, default="corr"
        ``corr``, ``cosine``, ``spearman`` and ``rho-a`` run on the fast weighted path;
        other methods (``tau-a``) and RDMs with NaN (blanked) pairs resample the vectors
        explicitly (exact, slower).
    n_bootstrap : int, default=1000
        Number of bootstrap samples (ignored when ``pattern_samples`` is given).
    seed : int or numpy.random.Generator, optional
        Seed of the resampling.
    pattern_samples : array-like of int, shape (n_bootstrap, k), optional
        Explicit draws, e.g. to reproduce another tool's: pattern indices (model order) or,
        with ``pattern_groups``, indices into the sorted distinct groups (``numpy.unique``
        order, as ``bootstrap_sample_pattern`` draws them; k = number of groups there).
    pattern_groups : str or array-like, optional
        Resample groups of patterns: the name of a pattern descriptor of ``model_rdms`` or
        one group label per pattern in the model's pattern order. Default: single patterns.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.
    model_descriptor : str, default="layer"
        Rdm descriptor naming the model RDMs.
    data_descriptors : sequence of str, default=("subject", "roi")
        Descriptors labelling the data RDMs.
    dtype : dtype, default=float32
        Working precision of the bootstrap products (float64 accumulation); the point
        estimate is always computed as in :func:`compare_table`.

    Returns
    -------
    BootstrapResult
        Samples with fewer than 3 distinct patterns (with groups: 3 distinct groups, as
        ``eval_bootstrap_pattern``) are NaN. With groups, ``groups`` and ``group_samples``
        hold the draws (``pattern_samples`` is None) and :attr:`BootstrapResult.n_units`,
        the number of groups, sets the tests' degrees of freedom.
    """
    ids = get_pattern_ids(model_rdms, pattern_key)
    n = len(ids)
    data_list = as_rdms_list(data_rdms)
    aligned = [reorder_patterns(r, ids, pattern_key) for r in data_list]
    x = model_rdms.dissimilarities
    y = aligned[0].dissimilarities if len(aligned) == 1 else np.concatenate(
        [r.dissimilarities for r in aligned]
    )
    labels = pd.concat([label_frame(r, data_descriptors) for r in aligned], ignore_index=True)
    point = compare_vectors(x, y, method)
    groups = None if pattern_groups is None else _pattern_groups(model_rdms, pattern_groups, n)
    if groups is None:
        n_units, code = n, None
    else:
        names, code = np.unique(groups, return_inverse=True)
        n_units, code = len(names), code.ravel()
    if pattern_samples is None:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n_units, size=(n_bootstrap, n_units))
    else:
        draws = np.asarray(pattern_samples, dtype=np.int64)
        if draws.ndim != 2 or draws.min() < 0 or draws.max() >= n_units:
            what = "groups" if groups is not None else "patterns"
            raise ValueError(f"pattern_samples must be (n_bootstrap, k) indices of {what} "
                             f"in [0, {n_units})")
    unit_counts = _pattern_counts(draws, n_units)
    counts = unit_counts if code is None else unit_counts[:, code]
    valid = (unit_counts > 0).sum(axis=1) >= 3
    if nan_columns(x) is not None or nan_columns(y) is not None:
        fast = False
    else:
        fast = method in FAST_BOOTSTRAP_METHODS
    if fast and method in ("corr", "cosine"):
        work = np.float32 if np.dtype(dtype) == np.float32 else np.float64
        boot = _boot_linear(x, y, counts, method == "corr", work)
    elif fast:
        boot = _boot_ranks(x, y, counts, method)
    else:
        boot = np.full((len(draws), x.shape[0], y.shape[0]), np.nan)
        for b in range(len(draws)):
            if valid[b]:
                idx = _resampled_index(counts[b], n)
                boot[b] = compare_vectors(x[:, idx], y[:, idx], method)
    boot[~valid] = np.nan
    return BootstrapResult(
        method, point, boot, model_names(model_rdms, model_descriptor), labels,
        model_descriptor, n,
        pattern_samples=draws if groups is None else None,
        n_groups=None if groups is None else n_units,
        groups=groups,
        group_samples=None if groups is None else draws,
    )


def concat_bootstraps(results: Sequence[BootstrapResult]) -> BootstrapResult:
    """Put bootstrap results of the same layers side by side (data columns concatenated).

    For analyses where every subject has its own model RDMs (chapter 04: the CNN sees each
    subject's own volumes), :func:`bootstrap_compare` runs once per subject; this joins the
    runs into one result for :func:`calc_zero_tests`, :meth:`BootstrapResult.aggregate` and
    the figures. Pass the same ``seed`` (or ``pattern_samples``) and the same pattern order
    to every run to keep the bootstrap paired across subjects.

    Parameters
    ----------
    results : sequence of BootstrapResult
        Same method, model names, number of patterns and of samples, and the same kind of
        resampling (single patterns, or the same number of groups).

    Returns
    -------
    BootstrapResult
        The draws (``pattern_samples``, or ``groups`` and ``group_samples``) are kept when
        all runs drew the same, else None (the groups are kept when all runs share them).

    Raises
    ------
    ValueError
        If the runs are not comparable.
    """
    results = list(results)
    if not results:
        raise ValueError("no bootstrap results to concatenate")
    first = results[0]
    for r in results[1:]:
        same = (r.method == first.method and list(r.model_names) == list(first.model_names)
                and r.n_patterns == first.n_patterns and r.n_bootstrap == first.n_bootstrap
                and r.model_descriptor == first.model_descriptor
                and r.n_groups == first.n_groups)
        if not same:
            raise ValueError("bootstrap results differ in method, models, patterns, groups or "
                             "samples")

    def shared(name: str) -> np.ndarray | None:
        value = getattr(first, name)
        if value is None or not all(
            getattr(r, name) is not None and np.array_equal(getattr(r, name), value)
            for r in results[1:]
        ):
            return None
        return value

    groups = shared("groups")
    return BootstrapResult(
        first.method,
        np.concatenate([r.point for r in results], axis=1),
        np.concatenate([r.samples for r in results], axis=2),
        list(first.model_names),
        pd.concat([r.data_labels for r in results], ignore_index=True),
        first.model_descriptor, first.n_patterns, shared("pattern_samples"),
        n_groups=first.n_groups,
        groups=groups,
        group_samples=shared("group_samples") if groups is not None else None,
    )
