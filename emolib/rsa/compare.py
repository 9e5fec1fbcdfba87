"""Comparing RDMs: rsatoolbox's methods, vectorised over all model x data pairs.

All model RDMs (layers) against all data RDMs (ROIs of all subjects) in one pass over the
condensed vectors: means and norms once, ranks once, one matrix product per chunk. Works in
float32 on condensed vectors in chunks (float64 accumulation), so BOLD5000's 4916 images (12
million pairs per RDM) fit comfortably. Kendall's tau-a is exact: each vector is sorted and
ranked once, each pair costs one gather and one inversion count (the Fenwick-tree count that
rsatoolbox also uses). NaN entries (blanked pairs) are dropped pair by pair, as in rsatoolbox.
Each method equals :func:`rsatoolbox.rdm.compare` (``tests/test_rsa.py``).

:func:`compare_table` computes ``corr`` and ``cosine`` without reordering whole stacks: the
model is read through its square matrices, built once for all data objects, and put in each
data object's pattern order one chunk of rows at a time (see :func:`_aligned_linear`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import ArrayLike
from rsatoolbox.rdm import RDMs
from scipy.stats._stats import _kendall_dis  # the inversion count rsatoolbox's tau-a uses

from emolib.rsa.align import (
    PATTERN_KEY,
    align_rdms,
    alignment_perm,
    as_rdms_list,
    get_pattern_ids,
    label_frame,
    model_names,
    permute_vectors,
)
from emolib.rsa.vectors import (
    DEFAULT_CHUNK,
    chunked_mean,
    fill_square,
    n_from_length,
    n_squares,
    nan_columns,
    row_chunks,
    row_starts,
    take_permuted_rows,
)

__all__ = [
    "COMPARE_METHODS", "compare_rdms", "compare_table", "compare_vectors",
]

#: Comparison methods of :func:`compare_vectors` (rsatoolbox's names).
COMPARE_METHODS = ("corr", "cosine", "spearman", "rho-a", "tau-a")
#: Most condensed entries per chunk of :func:`compare_table`'s aligned corr/cosine pass:
#: float32 products are summed in float32 within a chunk (each chunk sum rounded to float32,
#: about 6e-8 relative), the chunk sums in float64.
ALIGNED_CHUNK = 1 << 15


def _work_dtype(*arrays: np.ndarray) -> type:
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


def _linear_moments(
    v1: np.ndarray, v2: np.ndarray, center: bool, chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross products and squared norms of (optionally centred) rows, chunk by chunk."""
    work = _work_dtype(v1, v2)
    m1 = chunked_mean(v1, chunk).astype(work) if center else None
    m2 = chunked_mean(v2, chunk).astype(work) if center else None
    dots = np.zeros((v1.shape[0], v2.shape[0]))
    ss1 = np.zeros(v1.shape[0])
    ss2 = np.zeros(v2.shape[0])
    for s in range(0, v1.shape[1], chunk):
        a = v1[:, s : s + chunk].astype(work, copy=True)
        b = v2[:, s : s + chunk].astype(work, copy=True)
        if center:
            a -= m1[:, None]
            b -= m2[:, None]
        dots += a @ b.T
        ss1 += np.einsum("ij,ij->i", a, a, dtype=np.float64)
        ss2 += np.einsum("ij,ij->i", b, b, dtype=np.float64)
    return dots, ss1, ss2


def _cosine_from_moments(dots: np.ndarray, ss1: np.ndarray, ss2: np.ndarray) -> np.ndarray:
    n1 = np.sqrt(ss1)
    n2 = np.sqrt(ss2)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dots / n1[:, None] / n2[None, :]
    out[(n1 == 0)[:, None] | (n2 == 0)[None, :]] = 0.0  # rsatoolbox's convention
    return out


def _centred_ranks(v: np.ndarray, work: type) -> np.ndarray:
    """Average ranks minus their mean, row by row.

    Centred ranks are multiples of 1/2 of magnitude below ``K/2``, hence exact in float32
    while ``K < 2**24`` (BOLD5000's 12 million pairs included).
    """
    k = v.shape[1]
    out_dtype = np.float32 if (work == np.float32 and k < 2**24) else np.float64
    out = np.empty(v.shape, dtype=out_dtype)
    for i in range(v.shape[0]):
        r = scipy.stats.rankdata(v[i])
        r -= (k + 1) / 2
        out[i] = r
    return out


@dataclass
class _TauRanks:
    ranks: np.ndarray  # dense ranks 1..m, original order (int32 when it fits)
    ties: int  # pairs tied in this vector
    n_levels: int


def _tau_ranks(x: np.ndarray) -> _TauRanks:
    uniq, inv = np.unique(x, return_inverse=True)
    dtype = np.int32 if len(uniq) < 2**31 - 1 else np.int64
    ranks = (inv.reshape(-1) + 1).astype(dtype)
    cnt = np.bincount(ranks).astype(np.int64)
    cnt = cnt[cnt > 1]
    return _TauRanks(ranks, int((cnt * (cnt - 1) // 2).sum()), len(uniq))


def _tau_a_row(x: np.ndarray, y_ranks: list[_TauRanks], n_jobs: int) -> np.ndarray:
    """Kendall's tau-a of one vector against many (exact integer counts, as rsatoolbox)."""
    k = x.size
    tot = k * (k - 1) // 2
    px = _tau_ranks(x)
    order = np.argsort(px.ranks, kind="stable")
    xs = px.ranks[order].astype(np.intp)

    def one(py: _TauRanks) -> float:
        ys = py.ranks[order].astype(np.intp)
        dis = int(_kendall_dis(xs, ys))
        ntie = 0
        if px.ties and py.ties:  # pairs tied in both vectors
            key = px.ranks.astype(np.int64) * (py.n_levels + 1) + py.ranks
            _, c = np.unique(key, return_counts=True)
            c = c[c > 1].astype(np.int64)
            ntie = int((c * (c - 1) // 2).sum())
        tau = (tot - px.ties - py.ties + ntie - 2 * dis) / tot
        return min(1.0, max(-1.0, tau))

    if n_jobs > 1 and len(y_ranks) > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:  # the count releases the GIL
            return np.array(list(pool.map(one, y_ranks)))
    return np.array([one(py) for py in y_ranks])


def compare_vectors(
    vectors1: ArrayLike,
    vectors2: ArrayLike,
    method: str = "corr",
    *,
    chunk_size: int = DEFAULT_CHUNK,
    n_jobs: int = 1,
) -> np.ndarray:
    """Compare every condensed RDM vector of one set with every vector of another.

    The vectorised counterpart of :func:`rsatoolbox.rdm.compare` (same methods, same
    results to rounding), for vectors that are already aligned.

    Parameters
    ----------
    vectors1 : array-like, shape (n1, n_pairs) or (n_pairs,)
        First set of condensed RDM vectors.
    vectors2 : array-like, shape (n2, n_pairs) or (n_pairs,)
        Second set, same pattern order.
    method : {"corr", "cosine", "spearman", "rho-a", "tau-a"}, default="corr"
        Comparison, as rsatoolbox defines it (``tau-a``: Kendall's tau without tie
        correction; ``rho-a``: Spearman's rho without tie correction).
    chunk_size : int, default=262144
        Condensed entries processed at once (bounds the temporaries).
    n_jobs : int, default=1
        Threads for ``tau-a`` (its inversion count releases the GIL).

    Returns
    -------
    numpy.ndarray, shape (n1, n2)
        Similarities in float64.

    Notes
    -----
    float32 input is processed in float32 chunks, each chunk's sums rounded to float32
    (about 6e-8 relative) and accumulated in float64; float64 input in float64 throughout.
    Positions that are NaN are dropped, as in rsatoolbox, and must be the same in both sets.
    """
    v1 = np.asarray(vectors1)
    v2 = np.asarray(vectors2)
    if v1.ndim == 1:
        v1 = v1[None]
    if v2.ndim == 1:
        v2 = v2[None]
    if v1.ndim != 2 or v2.ndim != 2:
        raise ValueError("RDM vectors must be 1D or 2D arrays (n_rdm, n_pairs)")
    if v1.shape[1] != v2.shape[1]:
        raise ValueError(
            f"RDM vectors differ in length ({v1.shape[1]} vs {v2.shape[1]} pairs)"
        )
    if not np.issubdtype(v1.dtype, np.floating):
        v1 = v1.astype(np.float64)
    if not np.issubdtype(v2.dtype, np.floating):
        v2 = v2.astype(np.float64)
    nan1 = nan_columns(v1, chunk_size)
    nan2 = nan_columns(v2, chunk_size)
    if nan1 is not None or nan2 is not None:
        if nan1 is None or nan2 is None or not np.array_equal(nan1, nan2):
            raise ValueError("the two RDM sets have NaNs in different positions")
        v1 = v1[:, ~nan1]
        v2 = v2[:, ~nan2]
    work = _work_dtype(v1, v2)
    if method in ("corr", "cosine"):
        return _cosine_from_moments(*_linear_moments(v1, v2, method == "corr", chunk_size))
    if method in ("spearman", "rho-a"):
        r1 = _centred_ranks(v1, work)
        r2 = _centred_ranks(v2, work)
        dots, ss1, ss2 = _linear_moments(r1, r2, False, chunk_size)
        if method == "spearman":
            return _cosine_from_moments(dots, ss1, ss2)
        k = v1.shape[1]
        return dots / (k**3 - k) * 12
    if method == "tau-a":
        y_ranks = [_tau_ranks(v2[j]) for j in range(v2.shape[0])]
        return np.stack([_tau_a_row(v1[i], y_ranks, n_jobs) for i in range(v1.shape[0])])
    raise ValueError(f"unknown comparison method {method!r}; choose one of {COMPARE_METHODS}")


def compare_rdms(
    rdms1: RDMs,
    rdms2: RDMs,
    method: str = "corr",
    *,
    pattern_key: str = PATTERN_KEY,
    chunk_size: int = DEFAULT_CHUNK,
    n_jobs: int = 1,
) -> np.ndarray:
    """Compare two RDM sets after aligning their patterns by id.

    A drop-in for :func:`rsatoolbox.rdm.compare` that refuses to compare by position.

    Parameters
    ----------
    rdms1, rdms2 : rsatoolbox.rdm.RDMs
        The two sets (same ids, any order).
    method : str, default="corr"
        See :func:`compare_vectors`.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.
    chunk_size, n_jobs : int
        See :func:`compare_vectors`.

    Returns
    -------
    numpy.ndarray, shape (rdms1.n_rdm, rdms2.n_rdm)
    """
    a, b = align_rdms(rdms1, rdms2, pattern_key)
    return compare_vectors(
        a.dissimilarities, b.dissimilarities, method, chunk_size=chunk_size, n_jobs=n_jobs
    )


def _row_ss(x: np.ndarray) -> np.ndarray:
    """Sum of squares of each row in float64 (a float32 row is summed in float32 by BLAS dot:
    about 6e-8 relative per chunk)."""
    return np.array([np.dot(r, r) for r in x], dtype=np.float64)


def _aligned_linear(
    model: np.ndarray,
    datas: Sequence[np.ndarray],
    perms: Sequence[np.ndarray | None],
    center: bool,
    chunk: int,
) -> list[np.ndarray] | None:
    """Pearson (``center``) or cosine of every model vector with every vector of each data
    stack, the model put in each stack's pattern order (``perms``) on the fly.

    The model is never copied whole in another order: its square matrices (a few at a
    time, :data:`~emolib.rsa.vectors.SQUARES_BYTES`) are built once for all data stacks,
    and each chunk of output rows is gathered from their rows (cache-friendly) right before
    its matrix product. Means and sums of squares do not depend on the order: each vector's
    once. ``None`` when a vector is not finite (NaNs: the caller's general path drops them).
    """
    work = _work_dtype(model, *datas)
    means_m = chunked_mean(model)
    means_d = [chunked_mean(d) for d in datas]
    if not (np.isfinite(means_m).all() and all(np.isfinite(m).all() for m in means_d)):
        return None
    if not center:
        means_m = np.zeros_like(means_m)
        means_d = [np.zeros_like(m) for m in means_d]
    mm = means_m.astype(work)[:, None]
    md = [m.astype(work)[:, None] for m in means_d]
    n_model, k = model.shape
    n = n_from_length(k)
    starts = row_starts(n)
    chunks = row_chunks(n, chunk)
    width = max((int(starts[r1] - starts[r0]) for r0, r1 in chunks), default=0)
    permuted = any(p is not None for p in perms)
    group = n_squares(n, work, n_model) if permuted else n_model
    squares = np.empty((group, n, n), dtype=work) if permuted else None
    lbuf = np.empty((group, width), dtype=work)
    rbuf = np.empty((max(d.shape[0] for d in datas), width), dtype=work)
    ss_m = np.zeros(n_model)
    dots = [np.zeros((n_model, d.shape[0])) for d in datas]
    ss_d = [np.zeros(d.shape[0]) for d in datas]
    for g0 in range(0, n_model, group):
        rows = slice(g0, min(n_model, g0 + group))
        size = rows.stop - rows.start
        if permuted:
            for q in range(size):
                fill_square(model[g0 + q], squares[q])
        for r0, r1 in chunks:  # the model's sums of squares, in its own order
            a = np.subtract(model[rows, starts[r0] : starts[r1]], mm[rows],
                            out=lbuf[:size, : starts[r1] - starts[r0]])
            ss_m[rows] += _row_ss(a)
        for d_i, (data, perm) in enumerate(zip(datas, perms, strict=True)):
            perm = None if perm is None else np.asarray(perm, dtype=np.intp)
            for r0, r1 in chunks:
                s, e = starts[r0], starts[r1]
                a = lbuf[:size, : e - s]
                if perm is None:
                    np.subtract(model[rows, s:e], mm[rows], out=a)
                else:
                    for q in range(size):
                        take_permuted_rows(squares[q], perm, r0, r1, a[q])
                    a -= mm[rows]
                b = np.subtract(data[:, s:e], md[d_i], out=rbuf[: data.shape[0], : e - s])
                dots[d_i][rows] += a @ b.T
                if g0 == 0:
                    ss_d[d_i] += _row_ss(b)
    return [_cosine_from_moments(dots[i], ss_m, ss_d[i]) for i in range(len(datas))]


def compare_table(
    model_rdms: RDMs,
    data_rdms: RDMs | Sequence[RDMs],
    methods: str | Sequence[str] = ("corr",),
    *,
    pattern_key: str = PATTERN_KEY,
    model_descriptor: str = "layer",
    data_descriptors: Sequence[str] = ("subject", "roi"),
    chunk_size: int = DEFAULT_CHUNK,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Compare all model RDMs (layers) with all data RDMs (ROIs of all subjects).

    Parameters
    ----------
    model_rdms : rsatoolbox.rdm.RDMs
        Model RDMs, named by ``rdm_descriptors[model_descriptor]``.
    data_rdms : rsatoolbox.rdm.RDMs or sequence of them
        Data RDMs, e.g. one object per subject, each in its own pattern order. Every
        object must hold the model's ids; the model is aligned to each object by id.
    methods : str or sequence of str, default=("corr",)
        Comparison methods (see :func:`compare_vectors`).
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.
    model_descriptor : str, default="layer"
        Rdm descriptor naming the model RDMs (the ``index`` when absent).
    data_descriptors : sequence of str, default=("subject", "roi")
        Descriptors labelling the data RDMs, read from ``rdm_descriptors`` or, for
        constants such as the subject, from the object's ``descriptors``.
    chunk_size, n_jobs : int
        See :func:`compare_vectors`.

    Returns
    -------
    pandas.DataFrame
        Tidy table, one row per (data RDM, model RDM, method), with columns
        ``*data_descriptors, model_descriptor, "method", "value"``.

    Raises
    ------
    PatternMismatchError
        If a data object does not hold exactly the model's ids.

    Notes
    -----
    ``corr`` and ``cosine`` of NaN-free floating RDMs never copy a whole stack: the model's
    square matrices (as many at a time as fit :data:`emolib.rsa.vectors.SQUARES_BYTES`, at
    least one) are built
    once for all data objects, and chunks of at most ``min(chunk_size, 32768)`` entries are
    put in each data object's order right before their matrix product (float32 input:
    float32 products summed in float32 within a chunk, in float64 across chunks). Other
    methods, and RDMs with NaNs, reorder the model to each data object and call
    :func:`compare_vectors`.
    """
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    names = model_names(model_rdms, model_descriptor)
    data_list = as_rdms_list(data_rdms)
    model_ids = get_pattern_ids(model_rdms, pattern_key)
    # position in the model of each pattern of each data object (None: same order)
    perms = [alignment_perm(model_ids, get_pattern_ids(d, pattern_key)) for d in data_list]
    mv = model_rdms.dissimilarities
    stacks = [d.dissimilarities for d in data_list]
    values: dict[tuple[int, str], np.ndarray] = {}
    if all(np.issubdtype(v.dtype, np.floating) for v in [mv, *stacks]):
        for method in dict.fromkeys(m for m in methods if m in ("corr", "cosine")):
            sims = _aligned_linear(mv, stacks, perms, method == "corr",
                                   min(chunk_size, ALIGNED_CHUNK))
            if sims is None:  # NaNs: the general path drops them pair by pair
                break
            values.update({(i, method): v for i, v in enumerate(sims)})
    frames = []
    for i, (data, perm) in enumerate(zip(data_list, perms, strict=True)):
        labels = label_frame(data, data_descriptors)
        model = None
        for method in methods:
            if (i, method) not in values:
                if model is None:
                    model = mv if perm is None else permute_vectors(mv, perm)
                values[i, method] = compare_vectors(
                    model, data.dissimilarities, method, chunk_size=chunk_size,
                    n_jobs=n_jobs,
                )
            frame = labels.loc[np.repeat(np.arange(len(labels)), len(names))].reset_index(
                drop=True
            )
            frame[model_descriptor] = list(names) * len(labels)
            frame["method"] = method
            frame["value"] = values.pop((i, method)).T.reshape(-1)
            frames.append(frame)
        del model
    return pd.concat(frames, ignore_index=True)
