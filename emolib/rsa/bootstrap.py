"""Fast pattern bootstrap of RDM comparisons.

Resampling patterns with replacement (as ``rsatoolbox.inference.eval_bootstrap_pattern``)
turns each original pair ``(a, b)`` into ``c_a * c_b`` copies and drops the pairs of a pattern
with its own copies; the resampled comparison is therefore a *weighted* comparison of the
original vectors with weights ``c_a c_b``. One matrix product per chunk gives all bootstraps
for all layer/ROI pairs. Per-subject bootstraps are joined with :func:`concat_bootstraps`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
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
        Comparison on all patterns (equal to :func:`compare_table`).
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
        Number of patterns (sets the t-tests' degrees of freedom, n - 1, as rsatoolbox).
    pattern_samples : numpy.ndarray, shape (n_bootstrap, n_patterns)
        Resampled pattern indices, in the model's pattern order.
    """

    method: str
    point: np.ndarray
    samples: np.ndarray
    model_names: list
    data_labels: pd.DataFrame
    model_descriptor: str = "layer"
    n_patterns: int = 0
    pattern_samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_bootstrap(self) -> int:
        """Number of bootstrap samples."""
        return self.samples.shape[0]

    def get_means(self) -> np.ndarray:
        """Mean of the bootstrap samples (rsatoolbox's ``Result.get_means``)."""
        return np.nanmean(self.samples, axis=0)

    def get_variance(self, corrected: bool = True) -> np.ndarray:
        """Bootstrap variance of each comparison (ddof=1).

        With ``corrected`` (default) it is multiplied by n / (n - 1), n = ``n_patterns``,
        the small-sample correction rsatoolbox's ``Result`` applies to pattern bootstraps.
        """
        var = np.nanvar(self.samples, axis=0, ddof=1)
        if corrected and self.n_patterns > 1:
            var = var * self.n_patterns / (self.n_patterns - 1)
        return var

    def get_se(self, corrected: bool = True) -> np.ndarray:
        """Bootstrap standard error: rsatoolbox's ``Result.get_sem`` when ``corrected``."""
        return np.sqrt(self.get_variance(corrected))

    def get_ci(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile confidence interval ``(low, high)`` at ``level``."""
        cut = (1 - level) / 2 * 100
        return (
            np.nanpercentile(self.samples, cut, axis=0),
            np.nanpercentile(self.samples, 100 - cut, axis=0),
        )

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Tidy table: data labels, model name, method, value, boot_mean, se, ci_low, ci_high."""
        lo, hi = self.get_ci(level)
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
        return BootstrapResult(
            self.method, point, samples, list(self.model_names), new_labels,
            self.model_descriptor, self.n_patterns, self.pattern_samples,
        )


def _pattern_counts(samples: np.ndarray, n: int) -> np.ndarray:
    """How often each pattern occurs in each bootstrap sample, shape (n_boot, n)."""
    b = samples.shape[0]
    flat = samples + n * np.arange(b)[:, None]
    return np.bincount(flat.ravel(), minlength=b * n).reshape(b, n)


def _resampled_index(sample: np.ndarray, n: int) -> np.ndarray:
    """Condensed indices of the resampled RDM vector, self-pairs dropped (as rsatoolbox)."""
    s = np.sort(sample)
    i, j = np.triu_indices(len(s), 1)
    a, b = s[i], s[j]
    keep = a != b
    return condensed_index(a[keep], b[keep], n)


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
    pattern_key: str = PATTERN_KEY,
    model_descriptor: str = "layer",
    data_descriptors: Sequence[str] = ("subject", "roi"),
    dtype: DTypeLike = np.float32,
) -> BootstrapResult:
    """Bootstrap the model x data comparison table over patterns.

    Patterns are resampled with replacement, the same index set for every layer/ROI pair,
    exactly as :func:`rsatoolbox.inference.eval_bootstrap_pattern` does for one data RDM:
    a pattern drawn ``c`` times contributes ``c_a c_b`` copies of each of its pairs, and
    the pairs of a pattern with its own copies (NaN in rsatoolbox) are dropped.

    Parameters
    ----------
    model_rdms : rsatoolbox.rdm.RDMs
        Model RDMs (layers).
    data_rdms : rsatoolbox.rdm.RDMs or sequence of them
        Data RDMs (ROIs of all subjects), any pattern order; aligned to the model by id.
    method : str, default="corr"
        ``corr``, ``cosine``, ``spearman`` and ``rho-a`` run on the fast weighted path;
        other methods (``tau-a``) resample the vectors explicitly (exact, slower).
    n_bootstrap : int, default=1000
        Number of bootstrap samples (ignored when ``pattern_samples`` is given).
    seed : int or numpy.random.Generator, optional
        Seed of the resampling.
    pattern_samples : array-like of int, shape (n_bootstrap, n_patterns), optional
        Explicit resampled pattern indices (in the model's pattern order), e.g. to
        reproduce another tool's draws.
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
    if pattern_samples is None:
        rng = np.random.default_rng(seed)
        samples_idx = rng.integers(0, n, size=(n_bootstrap, n))
    else:
        samples_idx = np.asarray(pattern_samples, dtype=np.int64)
        if samples_idx.ndim != 2 or samples_idx.min() < 0 or samples_idx.max() >= n:
            raise ValueError(f"pattern_samples must be (n_bootstrap, n) indices in [0, {n})")
    counts = _pattern_counts(samples_idx, n)
    valid = (counts > 0).sum(axis=1) >= 3
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
        boot = np.full((len(samples_idx), x.shape[0], y.shape[0]), np.nan)
        for b, s in enumerate(samples_idx):
            if valid[b]:
                idx = _resampled_index(s, n)
                boot[b] = compare_vectors(x[:, idx], y[:, idx], method)
    boot[~valid] = np.nan
    return BootstrapResult(
        method, point, boot, model_names(model_rdms, model_descriptor), labels,
        model_descriptor, n, samples_idx,
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
        Same method, model names, number of patterns and number of samples.

    Returns
    -------
    BootstrapResult
        ``pattern_samples`` is kept when all runs drew the same patterns, else None.

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
                and r.model_descriptor == first.model_descriptor)
        if not same:
            raise ValueError("bootstrap results differ in method, models, patterns or samples")
    draws = first.pattern_samples
    if draws is not None and not all(
        r.pattern_samples is not None and np.array_equal(r.pattern_samples, draws)
        for r in results[1:]
    ):
        draws = None
    return BootstrapResult(
        first.method,
        np.concatenate([r.point for r in results], axis=1),
        np.concatenate([r.samples for r in results], axis=2),
        list(first.model_names),
        pd.concat([r.data_labels for r in results], ignore_index=True),
        first.model_descriptor, first.n_patterns, draws,
    )
