"""Representational similarity analysis on rsatoolbox's objects, aligned by pattern id.

Everything here takes and returns :class:`rsatoolbox.rdm.RDMs`, so results interoperate with
the field (``RDMs.save``/``load_rdm`` hdf5 files, rsatoolbox's plots and inference). What this
module adds over rsatoolbox, each proven against it in ``tests/test_rsa.py``:

- **Alignment by pattern id.** Two RDM sets are put in the same pattern order by the ids in
  ``rdms.pattern_descriptors[pattern_key]`` before any comparison; different id sets are an
  error (:class:`PatternMismatchError`). rsatoolbox's ``compare`` only checks lengths, so two
  sets in different orders would be compared silently by position.
- **Vectorised comparison tables.** All model RDMs (layers) against all data RDMs (ROIs of
  all subjects) in one pass over the condensed vectors: means and norms once, ranks once,
  one matrix product per chunk. Works in float32 on condensed vectors in chunks (float64
  accumulation), so BOLD5000's 4916 images (12 million pairs per RDM) fit comfortably.
  Kendall's tau-a is exact: each vector is sorted and ranked once, each pair costs one
  gather and one inversion count (the Fenwick-tree count that rsatoolbox also uses).
- **Fast pattern bootstrap.** Resampling patterns with replacement (as
  ``rsatoolbox.inference.eval_bootstrap_pattern``) turns each original pair ``(a, b)`` into
  ``c_a * c_b`` copies and drops the pairs of a pattern with its own copies; the resampled
  comparison is therefore a *weighted* comparison of the original vectors with weights
  ``c_a c_b``. One matrix product per chunk gives all bootstraps for all layer/ROI pairs.
- Noise ceilings (rsatoolbox's ``boot_noise_ceiling`` definition), tests against zero and
  between layers with FDR correction, the Mantel permutation test (exact for small RDMs),
  and RDMs of torch model layers (forward hooks or torchvision's
  ``create_feature_extractor``) and of brain ROIs (nilearn maskers).
- **A network trained on brain data against the brain** (chapter 04): held-out volumes are
  grouped into patterns with ids shared across subjects (:func:`define_patterns`: class
  means, or label x movie-time moments), averaged (:func:`average_patterns`) and centred
  within folds (:func:`center_patterns`) per subject for the ROIs
  (:func:`calc_brain_rdms`) and, through each volume's own fold model, for the layers
  (:func:`calc_network_rdms`). Pairs of patterns from different folds (different networks)
  can be blanked (:func:`restrict_pairs`); NaN entries are dropped by every comparison, the
  bootstrap and the noise ceiling, as in rsatoolbox. Per-subject bootstraps are joined with
  :func:`concat_bootstraps`; :func:`calc_group_contrast` compares ROI groups layer by layer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import ArrayLike, DTypeLike
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import RDMs, calc_rdm
from scipy.stats._stats import _kendall_dis  # the inversion count rsatoolbox's tau-a uses

#: Default pattern descriptor holding the pattern ids (image names, class names, ...).
PATTERN_KEY = "id"
#: Comparison methods of :func:`compare_vectors` (rsatoolbox's names).
COMPARE_METHODS = ("corr", "cosine", "spearman", "rho-a", "tau-a")
#: Methods whose pattern bootstrap runs on the fast weighted path.
FAST_BOOTSTRAP_METHODS = ("corr", "cosine", "spearman", "rho-a")
#: Condensed entries handled at once by the chunked comparisons.
DEFAULT_CHUNK = 1 << 18
#: Bytes a bootstrap chunk may use for its temporaries.
_BOOT_CHUNK_BYTES = 64 << 20
#: Bytes of one centred row block when building correlation-distance RDMs.
_GRAM_BLOCK_BYTES = 256 << 20


class PatternMismatchError(ValueError):
    """Two RDM sets do not hold the same patterns (compared by id), or ids are unusable."""


# --------------------------------------------------------------------------------------
# condensed-vector helpers
# --------------------------------------------------------------------------------------


def _n_from_length(k: int) -> int:
    """Number of patterns of a condensed RDM vector of length ``k``."""
    n = int(round((1 + math.sqrt(1 + 8 * k)) / 2))
    if n * (n - 1) // 2 != k:
        raise ValueError(f"{k} is not a condensed RDM length n(n-1)/2")
    return n


def _condensed_index(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Index in the condensed vector of the pairs ``(a, b)`` (``a != b``, any order)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    return lo * n - lo * (lo + 1) // 2 + (hi - lo - 1)


def _iter_row_blocks(n: int, chunk: int):
    """Yield ``(start, stop, i, j)``: consecutive blocks of whole rows of the condensed vector.

    ``i`` and ``j`` (``i < j``) are the pattern indices of the entries ``start:stop``.
    """
    rows = np.arange(n - 1, dtype=np.int64)
    lengths = n - 1 - rows
    row_start = np.concatenate([[0], np.cumsum(lengths)])
    r0 = 0
    while r0 < n - 1:
        # as many whole rows as fit into the chunk (at least one)
        r1 = int(np.searchsorted(row_start, row_start[r0] + max(chunk, 1), side="right")) - 1
        r1 = min(max(r1, r0 + 1), n - 1)
        start, stop = int(row_start[r0]), int(row_start[r1])
        block_rows = rows[r0:r1]
        i = np.repeat(block_rows, lengths[r0:r1])
        j = np.arange(start, stop, dtype=np.int64) - np.repeat(row_start[r0:r1], lengths[r0:r1])
        j += i + 1
        yield start, stop, i, j
        r0 = r1


def _condense_square(square: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    """Upper triangle (row-major, diagonal excluded) of a square matrix, as ``dtype``."""
    n = square.shape[0]
    out = np.empty(n * (n - 1) // 2, dtype=dtype)
    pos = 0
    for i in range(n - 1):
        out[pos : pos + n - 1 - i] = square[i, i + 1 :]
        pos += n - 1 - i
    return out


def _chunked_mean(v: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Row means of a 2D array in float64, read chunk by chunk."""
    total = np.zeros(v.shape[0])
    for s in range(0, v.shape[1], chunk):
        total += v[:, s : s + chunk].sum(axis=1, dtype=np.float64)
    return total / v.shape[1]


def _nan_columns(v: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray | None:
    """Boolean mask of columns holding a NaN in any row, or ``None`` when there is none."""
    if not np.issubdtype(v.dtype, np.floating):
        return None
    blocks = []
    found = False
    for s in range(0, v.shape[1], chunk):
        b = np.isnan(v[:, s : s + chunk]).any(axis=0)
        found = found or bool(b.any())
        blocks.append(b)
    return np.concatenate(blocks) if found else None


# --------------------------------------------------------------------------------------
# pattern ids and alignment
# --------------------------------------------------------------------------------------


def _check_unique(ids: np.ndarray, what: str = "pattern ids") -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        raise PatternMismatchError(
            f"{what} are not unique: {len(dup)} duplicated, e.g. {list(dup[:5])}"
        )


def get_pattern_ids(rdms: RDMs, pattern_key: str = PATTERN_KEY) -> np.ndarray:
    """Return the pattern ids of an RDMs object, checked to be present and unique.

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
        The RDMs.
    pattern_key : str, default="id"
        Pattern descriptor that holds the ids.

    Returns
    -------
    numpy.ndarray
        The ids, one per pattern, in the object's pattern order.

    Raises
    ------
    PatternMismatchError
        If the descriptor is missing, has the wrong length or holds duplicates.
    """
    if pattern_key not in rdms.pattern_descriptors:
        raise PatternMismatchError(
            f"RDMs have no pattern descriptor {pattern_key!r} to align by "
            f"(they have {sorted(rdms.pattern_descriptors)})"
        )
    ids = np.asarray(rdms.pattern_descriptors[pattern_key])
    if ids.shape != (rdms.n_cond,):
        raise PatternMismatchError(
            f"pattern descriptor {pattern_key!r} has shape {ids.shape}, "
            f"expected ({rdms.n_cond},)"
        )
    _check_unique(ids)
    return ids


def _alignment_index(own: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Condensed gather index that puts an RDM in ``own`` order into ``target`` order.

    ``None`` when the orders already agree. Raises :class:`PatternMismatchError` when the
    two id sets differ.
    """
    _check_unique(target, "target ids")
    if len(own) == len(target) and np.array_equal(own, target):
        return None
    pos = {v: k for k, v in enumerate(own.tolist())}
    target_list = target.tolist()
    missing = [v for v in target_list if v not in pos]
    extra = sorted(set(pos) - set(target_list), key=str)
    if missing or extra:
        raise PatternMismatchError(
            "pattern ids differ: "
            f"{len(missing)} only in the reference (e.g. {missing[:3]}), "
            f"{len(extra)} only in the RDMs to align (e.g. {extra[:3]})"
        )
    perm = np.fromiter((pos[v] for v in target_list), dtype=np.int64, count=len(target_list))
    n = len(perm)
    k = n * (n - 1) // 2
    index = np.empty(k, dtype=np.int32 if k < 2**31 else np.int64)  # halves the memory
    for start, stop, i, j in _iter_row_blocks(n, DEFAULT_CHUNK * 4):
        index[start:stop] = _condensed_index(perm[i], perm[j], n)
    return index


def _reorder_descriptor(values: Any, perm: np.ndarray) -> list:
    return [values[int(p)] for p in perm]


def reorder_patterns(
    rdms: RDMs, ids: ArrayLike, pattern_key: str = PATTERN_KEY
) -> RDMs:
    """Return the RDMs with their patterns in the order of ``ids``.

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
        RDMs whose ``pattern_descriptors[pattern_key]`` hold unique ids.
    ids : array-like
        The wanted order: the same set of ids, each once.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        ``rdms`` itself when the order already agrees, else a reordered copy (same dtype;
        all pattern descriptors follow the new order except ``index``, which stays the
        position). Works on condensed vectors, never on square matrices.

    Raises
    ------
    PatternMismatchError
        If the id sets differ or ids are duplicated.
    """
    own = get_pattern_ids(rdms, pattern_key)
    target = np.asarray(ids)
    index = _alignment_index(own, target)
    if index is None:
        return rdms
    out = np.empty_like(rdms.dissimilarities)
    for k in range(rdms.n_rdm):
        out[k] = rdms.dissimilarities[k][index]
    pos = {v: k for k, v in enumerate(own.tolist())}
    perm = np.array([pos[v] for v in target.tolist()], dtype=np.int64)
    pattern_descriptors = {
        key: _reorder_descriptor(val, perm) for key, val in rdms.pattern_descriptors.items()
    }
    # "index" stays positional: rsatoolbox's subsample_pattern("index", ...) selects by it
    pattern_descriptors["index"] = list(range(len(perm)))
    return RDMs(
        out,
        dissimilarity_measure=rdms.dissimilarity_measure,
        descriptors=deepcopy(rdms.descriptors),
        rdm_descriptors=deepcopy(rdms.rdm_descriptors),
        pattern_descriptors=pattern_descriptors,
    )


def align_rdms(
    rdms1: RDMs, rdms2: RDMs, pattern_key: str = PATTERN_KEY
) -> tuple[RDMs, RDMs]:
    """Put two RDM sets in the same pattern order, by id.

    Parameters
    ----------
    rdms1, rdms2 : rsatoolbox.rdm.RDMs
        The two sets; both must hold the same ids (each once) in
        ``pattern_descriptors[pattern_key]``.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    tuple of rsatoolbox.rdm.RDMs
        ``rdms1`` unchanged and ``rdms2`` reordered to ``rdms1``'s order.

    Raises
    ------
    PatternMismatchError
        If the id sets differ; alignment is never by position.
    """
    return rdms1, reorder_patterns(rdms2, get_pattern_ids(rdms1, pattern_key), pattern_key)


def _as_rdms_list(data: RDMs | Sequence[RDMs]) -> list[RDMs]:
    if isinstance(data, RDMs):
        return [data]
    out = list(data)
    if not out or not all(isinstance(r, RDMs) for r in out):
        raise TypeError("expected an RDMs object or a non-empty sequence of RDMs objects")
    return out


def _descriptor_values(rdms: RDMs, key: str) -> list:
    """One value of ``key`` per RDM: rdm descriptor, else object descriptor, else None."""
    if key in rdms.rdm_descriptors:
        return list(rdms.rdm_descriptors[key])
    if key in rdms.descriptors:
        return [rdms.descriptors[key]] * rdms.n_rdm
    return [None] * rdms.n_rdm


def _label_frame(rdms: RDMs, keys: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({k: _descriptor_values(rdms, k) for k in keys})


def _model_names(rdms: RDMs, key: str) -> list:
    values = _descriptor_values(rdms, key)
    if all(v is None for v in values):
        values = list(rdms.rdm_descriptors["index"])
    return values


def concat_rdms(rdms_list: Sequence[RDMs], pattern_key: str = PATTERN_KEY) -> RDMs:
    """Concatenate RDMs objects after aligning them to the first one's pattern order by id.

    Parameters
    ----------
    rdms_list : sequence of rsatoolbox.rdm.RDMs
        Objects with the same id set (in any order).
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        All RDMs in the first object's pattern order. Rdm descriptors are merged: a key
        missing from an object's rdm descriptors is taken from its object descriptors
        (e.g. ``subject``), else set to None.
    """
    rdms_list = _as_rdms_list(rdms_list)
    ids = get_pattern_ids(rdms_list[0], pattern_key)
    aligned = [rdms_list[0]] + [reorder_patterns(r, ids, pattern_key) for r in rdms_list[1:]]
    keys: list[str] = []
    for r in aligned:
        for k in list(r.rdm_descriptors) + list(r.descriptors):
            if k != "index" and k not in keys:
                keys.append(k)
    rdm_descriptors = {k: sum((_descriptor_values(r, k) for r in aligned), []) for k in keys}
    measures = {r.dissimilarity_measure for r in aligned}
    diss = np.concatenate([r.dissimilarities for r in aligned], axis=0)
    return RDMs(
        diss,
        dissimilarity_measure=measures.pop() if len(measures) == 1 else None,
        rdm_descriptors=rdm_descriptors,
        pattern_descriptors=deepcopy(rdms_list[0].pattern_descriptors),
    )


# --------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------


def _work_dtype(*arrays: np.ndarray) -> type:
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


def _linear_moments(
    v1: np.ndarray, v2: np.ndarray, center: bool, chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross products and squared norms of (optionally centred) rows, chunk by chunk."""
    work = _work_dtype(v1, v2)
    m1 = _chunked_mean(v1, chunk).astype(work) if center else None
    m2 = _chunked_mean(v2, chunk).astype(work) if center else None
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
    float32 input is processed in float32 chunks with float64 accumulation; float64 input
    in float64 throughout. Positions that are NaN are dropped, as in rsatoolbox, and must be
    the same in both sets.
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
    nan1 = _nan_columns(v1, chunk_size)
    nan2 = _nan_columns(v2, chunk_size)
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
    """
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    names = _model_names(model_rdms, model_descriptor)
    frames = []
    for data in _as_rdms_list(data_rdms):
        model = reorder_patterns(model_rdms, get_pattern_ids(data, pattern_key), pattern_key)
        labels = _label_frame(data, data_descriptors)
        for method in methods:
            values = compare_vectors(
                model.dissimilarities, data.dissimilarities, method,
                chunk_size=chunk_size, n_jobs=n_jobs,
            )
            frame = labels.loc[np.repeat(np.arange(len(labels)), len(names))].reset_index(
                drop=True
            )
            frame[model_descriptor] = list(names) * len(labels)
            frame["method"] = method
            frame["value"] = values.T.reshape(-1)
            frames.append(frame)
        del model
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------
# RDMs from patterns, models and ROIs
# --------------------------------------------------------------------------------------


def _correlation_rdm_vector(
    patterns: np.ndarray, dtype: DTypeLike, ids: np.ndarray | None = None
) -> np.ndarray:
    """Condensed correlation-distance RDM (1 - Pearson r between patterns).

    Row blocks keep the centred copies small: the Gram matrix is built block by block.
    """
    x = np.asarray(patterns)
    work = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    n = x.shape[0]
    x2 = x.reshape(n, -1)
    block_rows = max(
        1, min(n, int(_GRAM_BLOCK_BYTES // max(1, x2.shape[1] * np.dtype(work).itemsize)))
    )

    def centred(i0: int, i1: int) -> np.ndarray:
        z = x2[i0:i1].astype(np.float64 if work == np.float64 else np.float32, copy=True)
        z -= z.mean(axis=1, keepdims=True, dtype=np.float64).astype(z.dtype)
        norms = np.sqrt(np.einsum("ij,ij->i", z, z, dtype=np.float64))
        if (norms == 0).any():
            bad = np.flatnonzero(norms == 0) + i0
            which = list(ids[bad[:5]]) if ids is not None else list(bad[:5])
            raise ValueError(f"patterns with zero variance have no correlation distance: {which}")
        z /= norms[:, None].astype(z.dtype)
        return z

    gram = np.empty((n, n), dtype=work)
    blocks = [(s, min(n, s + block_rows)) for s in range(0, n, block_rows)]
    for bi, (a0, a1) in enumerate(blocks):
        za = centred(a0, a1)
        for b0, b1 in blocks[bi:]:
            zb = za if b0 == a0 else centred(b0, b1)
            gram[a0:a1, b0:b1] = za @ zb.T
    np.subtract(1, gram, out=gram)
    return _condense_square(gram, dtype)


def calc_rdms_from_patterns(
    patterns: Mapping[str, ArrayLike] | ArrayLike,
    ids: Sequence,
    *,
    method: str = "correlation",
    pattern_key: str = PATTERN_KEY,
    descriptor: str = "layer",
    rdm_descriptors: Mapping[str, Any] | None = None,
    dtype: DTypeLike = np.float64,
) -> RDMs:
    """Compute RDMs from activity patterns (one RDM per entry of ``patterns``).

    Parameters
    ----------
    patterns : mapping of name to array, or array
        Each value has shape (n_patterns, ...) (flattened to features). A bare array gives
        one RDM named ``"patterns"``.
    ids : sequence
        One unique id per pattern (row), stored in ``pattern_descriptors[pattern_key]``.
    method : str, default="correlation"
        Dissimilarity of :func:`rsatoolbox.rdm.calc_rdm`. ``"correlation"`` (1 - Pearson
        r, the BOLD5000 study's choice) runs a blocked BLAS path equal to rsatoolbox's
        (tested); other methods call ``calc_rdm``.
    pattern_key : str, default="id"
        Pattern descriptor for the ids.
    descriptor : str, default="layer"
        Rdm descriptor that receives the names (keys of ``patterns``).
    rdm_descriptors : mapping, optional
        Constant descriptors added to every RDM, e.g. ``{"subject": "CSI1"}``.
    dtype : dtype, default=float64
        dtype of the stored dissimilarities (float32 halves the memory at scale).

    Returns
    -------
    rsatoolbox.rdm.RDMs
    """
    if not isinstance(patterns, Mapping):
        patterns = {"patterns": patterns}
    ids_arr = np.asarray(ids)
    _check_unique(ids_arr)
    names = list(patterns)
    n = len(ids_arr)
    vectors = np.empty((len(names), n * (n - 1) // 2), dtype=dtype)  # filled in place
    for k, (name, x) in enumerate(patterns.items()):
        x = np.asarray(x)
        if x.shape[0] != n:
            raise ValueError(f"{name}: {x.shape[0]} patterns but {n} ids")
        if method == "correlation":
            vectors[k] = _correlation_rdm_vector(x, dtype, ids_arr)
        else:
            ds = Dataset(np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1))
            vectors[k] = calc_rdm(ds, method=method).dissimilarities[0]
    rdm_desc: dict[str, list] = {descriptor: names}
    for key, value in (rdm_descriptors or {}).items():
        rdm_desc[key] = [value] * len(names)
    return RDMs(
        vectors,
        dissimilarity_measure=method,
        rdm_descriptors=rdm_desc,
        pattern_descriptors={pattern_key: ids_arr.tolist()},
    )


def _iter_batches(inputs: Any, batch_size: int):
    import torch

    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if isinstance(inputs, torch.Tensor):
        yield from torch.split(inputs, batch_size)
        return
    for batch in inputs:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        yield batch


def _reduce_activation(t: Any, reduce: str | int):
    import torch.nn.functional as F

    if reduce == "flatten" or t.ndim <= 2:
        return t.reshape(t.shape[0], -1)
    if reduce == "mean":
        return t.mean(dim=tuple(range(2, t.ndim)))
    if isinstance(reduce, int):
        pool = {3: F.adaptive_avg_pool1d, 4: F.adaptive_avg_pool2d, 5: F.adaptive_avg_pool3d}
        size = tuple(min(reduce, s) for s in t.shape[2:])  # never upsample a small layer
        return pool[t.ndim](t, size if t.ndim > 3 else size[0]).reshape(t.shape[0], -1)
    raise ValueError(f"reduce must be 'flatten', 'mean' or an int, not {reduce!r}")


def extract_activations(
    model: Any,
    inputs: Any,
    layers: Sequence[str],
    *,
    batch_size: int = 32,
    reduce: str | int = "flatten",
    backend: str = "hooks",
    device: str | None = None,
    dtype: DTypeLike = np.float32,
) -> dict[str, np.ndarray]:
    """Record the activations of named layers of a torch model.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; layers are named as in ``model.named_modules()`` (e.g. ``conv1``,
        ``block1`` of :class:`emolib.model.EmotionCNN`; ``layer1`` of torchvision's ResNet).
    inputs : torch.Tensor, numpy.ndarray or iterable of batches
        Stimuli (N, ...); an iterable may yield tensors or ``(x, ...)`` tuples.
    layers : sequence of str
        Layer (module, or fx node) names.
    batch_size : int, default=32
        Batch size when ``inputs`` is one tensor/array.
    reduce : {"flatten", "mean"} or int, default="flatten"
        ``"flatten"`` keeps every unit; ``"mean"`` averages over spatial dimensions;
        an int average-pools every spatial dimension to at most that size first (memory at
        scale; a dimension that is already smaller is kept, never upsampled).
    backend : {"hooks", "fx"}, default="hooks"
        Forward hooks on modules, or torchvision's ``create_feature_extractor``.
    device : str, optional
        Device to run on (default: the model's).
    dtype : dtype, default=float32
        dtype of the returned arrays.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{layer: (N, n_features)}``, in input order. The model is run in eval mode under
        ``torch.inference_mode`` and its training flag is restored.
    """
    import torch

    layers = list(layers)
    was_training = model.training
    model.eval()
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = "cpu"
    store: dict[str, list[np.ndarray]] = {name: [] for name in layers}

    def keep(name: str, out: Any) -> None:
        t = _reduce_activation(out.detach(), reduce).to("cpu", torch.float32)
        store[name].append(np.array(t.numpy(), dtype=dtype, copy=True))

    handles = []
    extractor = None
    try:
        if backend == "hooks":
            modules = dict(model.named_modules())
            missing = [name for name in layers if name not in modules]
            if missing:
                raise ValueError(
                    f"model has no modules {missing}; it has e.g. {list(modules)[:12]}"
                )
            for name in layers:
                handles.append(
                    modules[name].register_forward_hook(
                        lambda _m, _i, out, name=name: keep(name, out)
                    )
                )
        elif backend == "fx":
            from torchvision.models.feature_extraction import create_feature_extractor

            extractor = create_feature_extractor(model, return_nodes={n: n for n in layers})
            extractor.eval()
        else:
            raise ValueError(f"backend must be 'hooks' or 'fx', not {backend!r}")
        with torch.inference_mode():
            for batch in _iter_batches(inputs, batch_size):
                batch = batch.to(device)
                if extractor is None:
                    model(batch)
                else:
                    for name, out in extractor(batch).items():
                        keep(name, out)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: np.concatenate(chunks, axis=0) for name, chunks in store.items()}


def calc_rdms_from_model(
    model: Any,
    inputs: Any,
    ids: Sequence,
    layers: Sequence[str],
    *,
    method: str = "correlation",
    pattern_key: str = PATTERN_KEY,
    batch_size: int = 32,
    reduce: str | int = "flatten",
    backend: str = "hooks",
    device: str | None = None,
    rdm_descriptors: Mapping[str, Any] | None = None,
    dtype: DTypeLike = np.float64,
) -> RDMs:
    """Compute one RDM per layer of a torch model from its activations to ``inputs``.

    Parameters
    ----------
    model, inputs, layers, batch_size, reduce, backend, device
        See :func:`extract_activations`.
    ids : sequence
        One id per input (pattern), e.g. image file names or class names.
    method : str, default="correlation"
        Dissimilarity (see :func:`calc_rdms_from_patterns`).
    pattern_key : str, default="id"
        Pattern descriptor for the ids.
    rdm_descriptors : mapping, optional
        Constant descriptors added to every RDM, e.g. ``{"model": "resnet50"}``.
    dtype : dtype, default=float64
        dtype of the dissimilarities.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per layer, ``rdm_descriptors["layer"]`` naming it.
    """
    acts = extract_activations(
        model, inputs, layers, batch_size=batch_size, reduce=reduce, backend=backend,
        device=device,
    )
    return calc_rdms_from_patterns(
        acts, ids, method=method, pattern_key=pattern_key, descriptor="layer",
        rdm_descriptors=rdm_descriptors, dtype=dtype,
    )


def calc_roi_rdms(
    images: Any,
    masks: Mapping[str, Any],
    ids: Sequence,
    *,
    method: str = "correlation",
    pattern_key: str = PATTERN_KEY,
    rdm_descriptors: Mapping[str, Any] | None = None,
    dtype: DTypeLike = np.float64,
) -> RDMs:
    """Compute one RDM per brain ROI from pattern images.

    Parameters
    ----------
    images : 4D Niimg-like or numpy.ndarray
        A 4D image (X, Y, Z, n_patterns), e.g. one beta map per stimulus, or an array
        (n_patterns, X, Y, Z).
    masks : mapping of str to Niimg-like or array
        ROI name to mask (image or boolean/0-1 array of the image's spatial shape).
        Images are masked with :class:`nilearn.maskers.NiftiMasker`.
    ids : sequence
        One unique id per pattern.
    method : str, default="correlation"
        Dissimilarity (see :func:`calc_rdms_from_patterns`).
    pattern_key : str, default="id"
        Pattern descriptor for the ids.
    rdm_descriptors : mapping, optional
        Constant descriptors added to every RDM, e.g. ``{"subject": "CSI1"}``.
    dtype : dtype, default=float64
        dtype of the dissimilarities.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per ROI, ``rdm_descriptors["roi"]`` naming it.
    """
    patterns: dict[str, np.ndarray] = {}
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError("an array of patterns must have shape (n_patterns, X, Y, Z)")
        for name, mask in masks.items():
            m = _mask_array(mask, images.shape[1:], name)
            patterns[name] = images[:, m]
    else:
        import nibabel as nib
        from nilearn.image import check_niimg_4d
        from nilearn.maskers import NiftiMasker

        img = check_niimg_4d(images)
        for name, mask in masks.items():
            if isinstance(mask, np.ndarray):
                m = _mask_array(mask, img.shape[:3], name)
                mask = nib.Nifti1Image(m.astype(np.uint8), img.affine)
            masker = NiftiMasker(mask_img=mask, standardize=None, detrend=False)
            patterns[name] = masker.fit_transform(img)
    return calc_rdms_from_patterns(
        patterns, ids, method=method, pattern_key=pattern_key, descriptor="roi",
        rdm_descriptors=rdm_descriptors, dtype=dtype,
    )


def _mask_array(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        from nilearn.image import load_img

        mask = np.asarray(load_img(mask).get_fdata())
    m = np.asarray(mask) > 0
    if m.shape != tuple(shape):
        raise ValueError(f"mask {name!r} has shape {m.shape}, images have {tuple(shape)}")
    if not m.any():
        raise ValueError(f"mask {name!r} is empty")
    return m


def calc_joint_rdms(
    data_rdms: RDMs | Sequence[RDMs],
    *,
    by: str = "roi",
    subject_descriptor: str = "subject",
    joint_name: str = "joint",
    pattern_key: str = PATTERN_KEY,
) -> RDMs:
    """Average the subjects' RDM vectors per ROI, after aligning them by id.

    Parameters
    ----------
    data_rdms : rsatoolbox.rdm.RDMs or sequence of them
        RDMs of several subjects (any pattern orders, same ids).
    by : str, default="roi"
        Rdm descriptor grouping the RDMs that are averaged.
    subject_descriptor : str, default="subject"
        Descriptor set to ``joint_name`` in the result.
    joint_name : str, default="joint"
        Subject label of the joint RDMs.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per ROI (order of first appearance), in the first object's pattern order.
    """
    data_list = _as_rdms_list(data_rdms)
    ids = get_pattern_ids(data_list[0], pattern_key)
    indices = [_alignment_index(get_pattern_ids(r, pattern_key), ids) for r in data_list]
    groups: dict[Any, list[tuple[int, int]]] = {}
    for d, r in enumerate(data_list):
        for k, g in enumerate(_descriptor_values(r, by)):
            groups.setdefault(g, []).append((d, k))
    dtype = np.result_type(*[r.dissimilarities.dtype for r in data_list])
    out = np.empty((len(groups), data_list[0].dissimilarities.shape[1]), dtype=dtype)
    for g_i, members in enumerate(groups.values()):
        acc = np.zeros(out.shape[1])
        for d, k in members:
            v = data_list[d].dissimilarities[k]
            acc += v if indices[d] is None else v[indices[d]]
        out[g_i] = acc / len(members)
    measures = {r.dissimilarity_measure for r in data_list}
    return RDMs(
        out,
        dissimilarity_measure=measures.pop() if len(measures) == 1 else None,
        rdm_descriptors={subject_descriptor: [joint_name] * len(groups), by: list(groups)},
        pattern_descriptors={pattern_key: ids.tolist()},
    )


# --------------------------------------------------------------------------------------
# pattern bootstrap
# --------------------------------------------------------------------------------------


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
    return _condensed_index(a[keep], b[keep], n)


def _boot_linear(
    x: np.ndarray, y: np.ndarray, counts: np.ndarray, center: bool, dtype: type
) -> np.ndarray:
    """Weighted (by ``c_a c_b``) Pearson or cosine of all pairs, for all bootstraps at once."""
    n_boot, n = counts.shape
    nx, ny = x.shape[0], y.shape[0]
    cw = counts.astype(dtype)
    mx = _chunked_mean(x).astype(dtype) if center else None
    my = _chunked_mean(y).astype(dtype) if center else None
    per_entry = (n_boot + 2 * (nx + ny) + nx * ny + 4) * np.dtype(dtype).itemsize
    chunk = max(1024, _BOOT_CHUNK_BYTES // per_entry)
    tot = np.zeros(n_boot)
    sx = np.zeros((n_boot, nx))
    sy = np.zeros((n_boot, ny))
    sxx = np.zeros((n_boot, nx))
    syy = np.zeros((n_boot, ny))
    sxy = np.zeros((n_boot, nx * ny))
    for start, stop, i, j in _iter_row_blocks(n, chunk):
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
    data_list = _as_rdms_list(data_rdms)
    aligned = [reorder_patterns(r, ids, pattern_key) for r in data_list]
    x = model_rdms.dissimilarities
    y = aligned[0].dissimilarities if len(aligned) == 1 else np.concatenate(
        [r.dissimilarities for r in aligned]
    )
    labels = pd.concat([_label_frame(r, data_descriptors) for r in aligned], ignore_index=True)
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
    if _nan_columns(x) is not None or _nan_columns(y) is not None:
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
        method, point, boot, _model_names(model_rdms, model_descriptor), labels,
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


# --------------------------------------------------------------------------------------
# noise ceiling
# --------------------------------------------------------------------------------------


def _pool_vectors(v: np.ndarray, method: str) -> np.ndarray:
    """rsatoolbox's ``pool_rdm``: the RDM that best predicts a set under ``method``."""
    v = np.asarray(v, dtype=np.float64)
    if method == "cosine":
        v = v / np.sqrt(np.nanmean(v**2, axis=1, keepdims=True))
        return v.mean(axis=0)
    if method == "corr":
        v = v - np.nanmean(v, axis=1, keepdims=True)
        v = v / np.nanstd(v, axis=1, keepdims=True)
        pooled = v.mean(axis=0)
        return pooled - np.nanmin(pooled)
    if method in ("spearman", "rho-a", "tau-a", "kendall", "tau-b"):
        return np.stack([scipy.stats.rankdata(row) for row in v]).mean(axis=0)
    raise ValueError(f"unknown comparison method {method!r}")


def _noise_ceiling_vectors(
    v: np.ndarray, groups: np.ndarray, method: str
) -> tuple[float, float]:
    uniq = np.unique(groups)
    if len(uniq) < 2:
        value = float(np.mean(compare_vectors(_pool_vectors(v, method), v, method)))
        return value, value
    preds = [_pool_vectors(v, method)] + [_pool_vectors(v[groups != g], method) for g in uniq]
    sims = compare_vectors(np.stack(preds), v, method)
    upper = np.mean([sims[0, groups == g].mean() for g in uniq])
    lower = np.mean([sims[1 + k, groups == g].mean() for k, g in enumerate(uniq)])
    return float(lower), float(upper)


def calc_noise_ceiling(
    data_rdms: RDMs | Sequence[RDMs],
    method: str = "corr",
    *,
    by: str = "roi",
    rdm_descriptor: str = "subject",
    pattern_key: str = PATTERN_KEY,
) -> pd.DataFrame:
    """Noise ceiling per ROI across subjects (leave one subject out).

    The definition of :func:`rsatoolbox.inference.boot_noise_ceiling`: the upper bound is
    the mean similarity of each subject's RDM to the pooled RDM of all subjects, the lower
    bound to the pooled RDM of the other subjects (pooling as ``rsatoolbox``'s
    ``pool_rdm`` for the method).

    Parameters
    ----------
    data_rdms : rsatoolbox.rdm.RDMs or sequence of them
        RDMs of several subjects (aligned by id here).
    method : str, default="corr"
        Comparison method.
    by : str, default="roi"
        Descriptor grouping the RDMs that share a ceiling.
    rdm_descriptor : str, default="subject"
        Descriptor of the units left out.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    pandas.DataFrame
        Columns ``by``, ``method``, ``lower``, ``upper``, ``n_subjects``.
    """
    data_list = _as_rdms_list(data_rdms)
    ids = get_pattern_ids(data_list[0], pattern_key)
    indices = [_alignment_index(get_pattern_ids(r, pattern_key), ids) for r in data_list]
    members: dict[Any, list[tuple[int, int, Any]]] = {}
    for d, r in enumerate(data_list):
        subj = _descriptor_values(r, rdm_descriptor)
        for k, g in enumerate(_descriptor_values(r, by)):
            members.setdefault(g, []).append((d, k, subj[k]))
    rows = []
    for g, mem in members.items():
        v = np.stack(
            [
                data_list[d].dissimilarities[k]
                if indices[d] is None
                else data_list[d].dissimilarities[k][indices[d]]
                for d, k, _ in mem
            ]
        )
        subjects = np.array([s for _, _, s in mem], dtype=object).astype(str)
        lower, upper = _noise_ceiling_vectors(v, subjects, method)
        rows.append(
            {by: g, "method": method, "lower": lower, "upper": upper,
             "n_subjects": len(np.unique(subjects))}
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------


def _fdr(p: np.ndarray, families: np.ndarray | None) -> np.ndarray:
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if families is None:
        families = np.zeros(len(p), dtype=int)
    for fam in pd.unique(families[ok]):
        sel = ok & (families == fam)
        q[sel] = scipy.stats.false_discovery_control(p[sel], method="bh")
    return q


def _variance_correction(n: int) -> float:
    """rsatoolbox's n / (n - 1) correction of pattern-bootstrap variances."""
    return n / (n - 1) if n > 1 else 1.0


def calc_zero_tests(
    boot: BootstrapResult,
    *,
    test_type: str = "t-test",
    alpha: float = 0.05,
    fdr_by: str | None = None,
) -> pd.DataFrame:
    """Test each layer/ROI comparison against zero, with FDR correction.

    Parameters
    ----------
    boot : BootstrapResult
        From :func:`bootstrap_compare`.
    test_type : {"t-test", "bootstrap"}, default="t-test"
        rsatoolbox's tests: a one-sided t-test of the bootstrap mean with the (corrected,
        see :meth:`BootstrapResult.get_variance`) bootstrap variance and ``n_patterns - 1``
        degrees of freedom, or the bootstrap proportion
        ``(#{samples <= 0} + 1) / n_bootstrap``.
    alpha : float, default=0.05
        FDR level for ``significant``.
    fdr_by : str, optional
        Label column defining separate families (e.g. ``"subject"``); default one family.

    Returns
    -------
    pandas.DataFrame
        :meth:`BootstrapResult.to_frame` columns plus ``p``, ``q`` (Benjamini-Hochberg via
        :func:`scipy.stats.false_discovery_control`) and ``significant``.
    """
    frame = boot.to_frame()
    s = boot.samples[np.isfinite(boot.samples).all(axis=(1, 2))]
    if test_type == "t-test":
        mean = s.mean(axis=0)
        var = s.var(axis=0, ddof=1) * _variance_correction(boot.n_patterns)
        t = mean / np.sqrt(np.maximum(var, np.finfo(float).eps))
        p = scipy.stats.t.sf(t, boot.n_patterns - 1)
        frame["t"] = t.T.reshape(-1)
    elif test_type == "bootstrap":
        p = ((s <= 0).sum(axis=0) + 1) / s.shape[0]
    else:
        raise ValueError("test_type must be 't-test' or 'bootstrap'")
    frame["p"] = p.T.reshape(-1)
    fam = None if fdr_by is None else frame[fdr_by].to_numpy()
    frame["q"] = _fdr(frame["p"].to_numpy(), fam)
    frame["significant"] = frame["q"] < alpha
    return frame


def _difference_test(
    diffs: np.ndarray, n_patterns: int, test_type: str
) -> tuple[np.ndarray, np.ndarray]:
    """Standard error and two-sided p of bootstrap differences (axis 0: samples).

    rsatoolbox's pair tests: a t-test of the mean difference with the corrected bootstrap
    variance and ``n_patterns - 1`` degrees of freedom, or the bootstrap proportion test of
    ``rsatoolbox.util.inference_util.bootstrap_pair_tests`` (ties left out).
    """
    se = np.sqrt(diffs.var(axis=0, ddof=1) * _variance_correction(n_patterns))
    if test_type == "t-test":
        t = diffs.mean(axis=0) / np.sqrt(np.maximum(se**2, np.finfo(float).eps))
        p = 2 * scipy.stats.t.sf(np.abs(t), n_patterns - 1)
    elif test_type == "bootstrap":
        n = diffs.shape[0]
        prop = (diffs < 0).sum(axis=0) / (n - (diffs == 0).sum(axis=0))
        p = (n - 1) / n * np.minimum(prop, 1 - prop) * 2 + 1 / n
    else:
        raise ValueError("test_type must be 't-test' or 'bootstrap'")
    return se, p


def calc_pair_tests(
    boot: BootstrapResult,
    *,
    test_type: str = "t-test",
    alpha: float = 0.05,
    fdr_by: str | None = None,
) -> pd.DataFrame:
    """Test every pair of layers within each data RDM (ROI), with FDR correction.

    Parameters
    ----------
    boot : BootstrapResult
        From :func:`bootstrap_compare`.
    test_type : {"t-test", "bootstrap"}, default="t-test"
        rsatoolbox's pair tests: a two-sided t-test of the difference of bootstrap means
        with the corrected bootstrap variance of the difference (``n_patterns - 1`` dof), or the
        bootstrap proportion test of ``rsatoolbox.util.inference_util.bootstrap_pair_tests``.
    alpha : float, default=0.05
        FDR level for ``significant``.
    fdr_by : str, optional
        Label column defining separate families; default one family for the whole table.

    Returns
    -------
    pandas.DataFrame
        Data labels, ``<model>_a``, ``<model>_b``, ``diff`` (point a - b), ``se``, ``p``,
        ``q``, ``significant``.
    """
    s = boot.samples[np.isfinite(boot.samples).all(axis=(1, 2))]
    n_model = len(boot.model_names)
    ia, ib = np.triu_indices(n_model, 1)
    diffs = s[:, ia, :] - s[:, ib, :]  # (n_boot, n_pairs, n_data)
    se, p = _difference_test(diffs, boot.n_patterns, test_type)
    name = boot.model_descriptor
    rows = []
    for r in range(len(boot.data_labels)):
        base = boot.data_labels.iloc[r].to_dict()
        for k in range(len(ia)):
            rows.append(
                {**base, f"{name}_a": boot.model_names[ia[k]],
                 f"{name}_b": boot.model_names[ib[k]],
                 "diff": boot.point[ia[k], r] - boot.point[ib[k], r],
                 "se": se[k, r], "p": p[k, r]}
            )
    frame = pd.DataFrame(rows)
    fam = None if fdr_by is None else frame[fdr_by].to_numpy()
    frame["q"] = _fdr(frame["p"].to_numpy(), fam)
    frame["significant"] = frame["q"] < alpha
    return frame


def calc_group_contrast(
    boot: BootstrapResult,
    a: Any,
    b: Any,
    *,
    by: str = "roi",
    test_type: str = "t-test",
    alpha: float = 0.05,
    level: float = 0.95,
    fdr_by: str | None = None,
) -> pd.DataFrame:
    """Compare two data columns (e.g. two ROI groups) for every layer, on the paired bootstrap.

    Typically after :meth:`BootstrapResult.aggregate` has averaged ROIs into groups, e.g.
    planted regions against control parcels: is the network more similar to one group than
    to the other?

    Parameters
    ----------
    boot : BootstrapResult
        Bootstrap whose data labels hold ``a`` and ``b`` in column ``by`` (once per value of
        the other label columns, e.g. once per subject).
    a, b : any
        The two values of ``by`` compared (difference ``a - b``).
    by : str, default="roi"
        Data label holding ``a`` and ``b``.
    test_type : {"t-test", "bootstrap"}, default="t-test"
        As :func:`calc_pair_tests`: a two-sided t-test of the difference with the corrected
        bootstrap variance (``n_patterns - 1`` dof), or the bootstrap proportion test.
    alpha : float, default=0.05
        FDR level for ``significant``.
    level : float, default=0.95
        Level of the percentile interval of the difference.
    fdr_by : str, optional
        Column defining separate FDR families (e.g. ``"subject"``); default one family.

    Returns
    -------
    pandas.DataFrame
        The other data labels, the model descriptor, ``a``, ``b``, ``diff`` (point),
        ``ci_low``, ``ci_high``, ``se``, ``p``, ``q``, ``significant``.
    """
    labels = boot.data_labels
    if by not in labels.columns:
        raise ValueError(f"the bootstrap has no data label {by!r}")
    rest = [c for c in labels.columns if c != by]
    s = boot.samples[np.isfinite(boot.samples).all(axis=(1, 2))]
    cut = (1 - level) / 2 * 100
    name = boot.model_descriptor
    rows = []
    keys = labels[rest].drop_duplicates() if rest else pd.DataFrame(index=[0])
    for _, key in keys.iterrows():
        sel = np.ones(len(labels), dtype=bool)
        for c in rest:
            sel &= (labels[c] == key[c]).to_numpy()
        ia = np.flatnonzero(sel & (labels[by] == a).to_numpy())
        ib = np.flatnonzero(sel & (labels[by] == b).to_numpy())
        if len(ia) != 1 or len(ib) != 1:
            raise ValueError(f"need exactly one column {by}={a!r} and one {by}={b!r} per "
                             f"{dict(key[rest]) if rest else 'table'}")
        diffs = s[:, :, ia[0]] - s[:, :, ib[0]]  # (n_boot, n_model)
        point = boot.point[:, ia[0]] - boot.point[:, ib[0]]
        se, p = _difference_test(diffs, boot.n_patterns, test_type)
        lo = np.percentile(diffs, cut, axis=0)
        hi = np.percentile(diffs, 100 - cut, axis=0)
        for m, model in enumerate(boot.model_names):
            rows.append({**{c: key[c] for c in rest}, name: model, "a": a, "b": b,
                         "diff": point[m], "ci_low": lo[m], "ci_high": hi[m], "se": se[m],
                         "p": p[m]})
    frame = pd.DataFrame(rows)
    fam = None if fdr_by is None else frame[fdr_by].to_numpy()
    frame["q"] = _fdr(frame["p"].to_numpy(), fam)
    frame["significant"] = frame["q"] < alpha
    return frame


@dataclass
class MantelResult:
    """Result of :func:`calc_mantel`.

    Attributes
    ----------
    statistic : float
        Observed similarity of the two RDMs.
    p_value : float
        Permutation p-value.
    null_distribution : numpy.ndarray
        Similarities under the permutations (the identity included when exact).
    exact : bool
        Whether all n! permutations were enumerated.
    method, alternative : str
        Comparison method and alternative hypothesis.
    """

    statistic: float
    p_value: float
    null_distribution: np.ndarray = field(repr=False)
    exact: bool
    method: str
    alternative: str


def calc_mantel(
    rdm1: RDMs,
    rdm2: RDMs,
    method: str = "corr",
    *,
    n_permutations: int = 10000,
    exact: bool | None = None,
    alternative: str = "greater",
    seed: int | np.random.Generator | None = None,
    pattern_key: str = PATTERN_KEY,
) -> MantelResult:
    """Mantel test: permute rows and columns of one RDM jointly.

    Parameters
    ----------
    rdm1, rdm2 : rsatoolbox.rdm.RDMs
        One RDM each, aligned here by id.
    method : str, default="corr"
        Comparison method (see :func:`compare_vectors`).
    n_permutations : int, default=10000
        Random permutations when not exact.
    exact : bool, optional
        Enumerate all n! permutations. Default: when n! <= ``n_permutations``
        (5 patterns: 120 permutations).
    alternative : {"greater", "less", "two-sided"}, default="greater"
        As :func:`scipy.stats.permutation_test`.
    seed : int or numpy.random.Generator, optional
        Seed for random permutations.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    MantelResult
        Exact p = share of all permutations at least as extreme (identity included);
        random p = (count + 1) / (n_permutations + 1).
    """
    if rdm1.n_rdm != 1 or rdm2.n_rdm != 1:
        raise ValueError("calc_mantel compares exactly one RDM with one RDM")
    a, b = align_rdms(rdm1, rdm2, pattern_key)
    v1 = a.dissimilarities[0]
    v2 = b.dissimilarities[0]
    n = a.n_cond
    if exact is None:
        exact = math.factorial(n) <= n_permutations
    if exact:
        if math.factorial(n) > 10**7:
            raise ValueError(f"{n}! permutations are too many to enumerate")
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (n_permutations, 1)), axis=1)
    i, j = np.triu_indices(n, 1)
    stat = float(compare_vectors(v1, v2, method)[0, 0])
    block = max(1, (32 << 20) // max(1, len(i) * 8))
    null = np.concatenate(
        [
            compare_vectors(
                v1, v2[_condensed_index(p[:, i], p[:, j], n)], method
            )[0]
            for p in (perms[s : s + block] for s in range(0, len(perms), block))
        ]
    )
    gamma = abs(1e-14 * stat)  # scipy.stats.permutation_test's tolerance
    greater = null >= stat - gamma
    less = null <= stat + gamma

    def pval(hits: np.ndarray) -> float:
        return hits.mean() if exact else (hits.sum() + 1) / (len(hits) + 1)

    if alternative == "greater":
        p = pval(greater)
    elif alternative == "less":
        p = pval(less)
    elif alternative == "two-sided":
        p = min(1.0, 2 * min(pval(greater), pval(less)))
    else:
        raise ValueError("alternative must be 'greater', 'less' or 'two-sided'")
    return MantelResult(stat, float(p), null, bool(exact), method, alternative)



# --------------------------------------------------------------------------------------
# result tables
# --------------------------------------------------------------------------------------


def collect_results(
    table: pd.DataFrame,
    zero_tests: pd.DataFrame | None = None,
    noise_ceiling: pd.DataFrame | None = None,
    *,
    keys: Sequence[str] = ("subject", "roi", "layer"),
    joint_name: str = "joint",
) -> pd.DataFrame:
    """One row per comparison: every method's value, the bootstrap CI, the tests, the ceiling.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy comparison table of :func:`compare_table` (``method`` and ``value`` columns,
        one or more methods).
    zero_tests : pandas.DataFrame, optional
        From :func:`calc_zero_tests`: adds ``boot_mean``, ``se``, ``ci_low``, ``ci_high``,
        ``t`` (t-test only), ``p``, ``q``, ``significant`` (all of the tested method).
    noise_ceiling : pandas.DataFrame, optional
        From :func:`calc_noise_ceiling`: adds ``nc_lower``/``nc_upper`` per ROI to the rows of
        single subjects (the ceiling bounds a single subject's RDM; rows whose subject is
        ``joint_name`` get NaN).
    keys : sequence of str, default=("subject", "roi", "layer")
        Columns identifying a comparison.
    joint_name : str, default="joint"
        Subject label of the joint RDMs.

    Returns
    -------
    pandas.DataFrame
        ``keys``, one column per method, then the columns above, in the table's row order.
    """
    keys = list(keys)
    out = table.pivot_table(index=keys, columns="method", values="value", sort=False)
    out = out.reset_index()
    out.columns.name = None
    if zero_tests is not None:
        cols = [c for c in ("boot_mean", "se", "ci_low", "ci_high", "t", "p", "q", "significant")
                if c in zero_tests.columns]
        out = out.merge(zero_tests[keys + cols], on=keys, how="left")
    if noise_ceiling is not None:
        by = keys[1]
        nc = noise_ceiling[[by, "lower", "upper"]].rename(
            columns={"lower": "nc_lower", "upper": "nc_upper"}
        )
        out = out.merge(nc, on=by, how="left")
        if "subject" in out.columns:
            out.loc[out["subject"] == joint_name, ["nc_lower", "nc_upper"]] = np.nan
    return out


# --------------------------------------------------------------------------------------
# patterns of held-out volumes: a network trained on brain data against the brain
# --------------------------------------------------------------------------------------

#: Pattern kinds of :func:`define_patterns`.
PATTERN_KINDS = ("class", "moment")


def define_patterns(
    predictions: pd.DataFrame,
    *,
    kind: str = "moment",
    moment_s: float = 10.0,
    within_fold: bool = True,
    pool_subjects: bool = False,
    common: bool = True,
    model: str | None = "cnn",
) -> pd.DataFrame:
    """Group held-out samples into RSA patterns, each with an id shared across subjects.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Held-out predictions of :func:`emolib.decoding.run_decoding` (columns ``fold``,
        ``sample``, ``subject``, ``movie_time``, ``label``; ``model`` when ``model`` is
        given).
    kind : {"class", "moment"}, default="moment"
        ``"class"``: one pattern per class (the original analysis: 5 class means).
        ``"moment"``: one pattern per label and bin of ``moment_s`` seconds of movie time,
        the mean of the volumes acquired then; the same movie moment has the same id in
        every subject.
    moment_s : float, default=10.0
        Width of the movie-time bins of ``"moment"`` patterns (2 s: single volumes).
    within_fold : bool, default=True
        Patterns never mix test folds (the fold is part of the id, and ``block`` names the
        fold). Each fold has its own network, whose units need not match another fold's, so
        pairs of patterns from two folds are not comparable for the network
        (:func:`restrict_pairs` blanks them).
    pool_subjects : bool, default=False
        Average over all subjects together (subject ``"all"``), as the original analysis.
    common : bool, default=True
        Keep only ids that every subject has (needed for joint RDMs and noise ceilings).
    model : str, optional
        Keep the rows of this model (predictions hold one row per sample and model).

    Returns
    -------
    pandas.DataFrame
        One row per held-out sample: ``sample`` (row of the prepared volumes), ``subject``,
        ``fold``, ``label``, ``movie_time``, ``id``, ``block``; sorted by subject, block,
        time and label, so that every subject lists its ids in the same order.
    """
    if kind not in PATTERN_KINDS:
        raise ValueError(f"kind must be one of {PATTERN_KINDS}, not {kind!r}")
    rows = predictions
    if model is not None and "model" in rows.columns:
        rows = rows[rows["model"] == model]
    out = rows[["sample", "subject", "fold", "label", "movie_time"]].copy()
    out["subject"] = "all" if pool_subjects else out["subject"].astype(str)
    out["block"] = out["fold"].astype(str) if within_fold else "all"
    if kind == "class":
        out["time"] = 0.0
        out["id"] = out["label"].astype(str)
    else:
        if moment_s <= 0:
            raise ValueError("moment_s must be positive")
        out["time"] = np.floor(out["movie_time"] / moment_s) * moment_s
        out["id"] = out["label"].astype(str) + " @" + out["time"].map("{:05.0f}s".format)
    if within_fold:
        out["id"] = out["block"] + " " + out["id"]
    if common:
        n_subjects = out["subject"].nunique()
        keep = out.groupby("id")["subject"].nunique() == n_subjects
        out = out[out["id"].isin(keep.index[keep])]
    if out.empty:
        raise ValueError("no pattern is left (no held-out sample, or no id shared by all "
                         "subjects)")
    out = out.sort_values(["subject", "block", "time", "label", "sample"], kind="stable")
    return out.drop(columns="time").reset_index(drop=True)


def _group_indicator(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """float32 (n_groups, n) matrix with a 1 where row ``k`` belongs to group ``codes[k]``."""
    indicator = np.zeros((n_groups, len(codes)), dtype=np.float32)
    indicator[np.asarray(codes), np.arange(len(codes))] = 1.0
    return indicator


def average_patterns(x: ArrayLike, groups: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Average rows of ``x`` within groups.

    Parameters
    ----------
    x : array-like, shape (n, ...)
        Patterns (volumes, activations), one per row.
    groups : array-like, shape (n,)
        Group (pattern id) of every row.

    Returns
    -------
    ids : numpy.ndarray
        The groups, in order of first appearance.
    means : numpy.ndarray, shape (n_groups, ...)
        float32 group means (one matrix product with the group indicator).
    """
    x = np.asarray(x)
    codes, ids = pd.factorize(np.asarray(groups), sort=False)
    if len(codes) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} patterns but {len(codes)} group labels")
    indicator = _group_indicator(codes, len(ids))
    indicator /= indicator.sum(axis=1, keepdims=True)
    means = indicator @ x.reshape(len(codes), -1).astype(np.float32, copy=False)
    return np.asarray(ids), means.reshape(len(ids), *x.shape[1:])


def center_patterns(x: ArrayLike, blocks: ArrayLike | None = None) -> np.ndarray:
    """Centre every feature (voxel, unit) across patterns, within blocks.

    Parameters
    ----------
    x : array-like, shape (n_patterns, ...)
        Patterns, one per row.
    blocks : array-like, shape (n_patterns,), optional
        Block of every pattern (e.g. the test fold); each block is centred on its own mean
        pattern. Default: one block.

    Returns
    -------
    numpy.ndarray
        float32 copy of ``x`` minus the mean pattern of its block. What all patterns of a
        block share (the anatomy in every volume, a network's mean activation, a run's
        offset) then no longer dominates their correlation distances.
    """
    x = np.array(x, dtype=np.float32, copy=True)
    flat = x.reshape(len(x), -1)
    codes = np.zeros(len(x), dtype=np.int64) if blocks is None else pd.factorize(
        np.asarray(blocks))[0]
    if len(codes) != len(x):
        raise ValueError(f"{len(x)} patterns but {len(codes)} blocks")
    for b in np.unique(codes):
        rows = codes == b
        flat[rows] -= flat[rows].mean(axis=0, dtype=np.float64).astype(np.float32)
    return x


def restrict_pairs(rdms: RDMs, key: str = "block") -> RDMs:
    """Blank (NaN) the dissimilarities of pattern pairs from different blocks.

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
        RDMs with a pattern descriptor ``key``.
    key : str, default="block"
        Pattern descriptor naming each pattern's block (e.g. the test fold).

    Returns
    -------
    rsatoolbox.rdm.RDMs
        ``rdms`` itself when all patterns share one block, else a copy whose pairs across
        blocks are NaN. Comparisons (:func:`compare_vectors`, the bootstrap, the noise
        ceiling) then use the pairs within blocks only, as rsatoolbox does with NaN entries.
    """
    if key not in rdms.pattern_descriptors:
        raise ValueError(f"RDMs have no pattern descriptor {key!r}")
    blocks = np.asarray(rdms.pattern_descriptors[key])
    if len(np.unique(blocks)) < 2:
        return rdms
    i, j = np.triu_indices(rdms.n_cond, 1)
    across = blocks[i] != blocks[j]
    out = rdms.copy()
    diss = out.dissimilarities.astype(np.result_type(out.dissimilarities.dtype, np.float32))
    diss[:, across] = np.nan
    out.dissimilarities = diss
    return out


def _with_blocks(rdms: RDMs, patterns: pd.DataFrame, within_blocks: bool) -> RDMs:
    ids = np.asarray(rdms.pattern_descriptors["id"])
    rdms.pattern_descriptors["block"] = _blocks_of(ids, patterns).tolist()
    return restrict_pairs(rdms) if within_blocks else rdms


def calc_brain_rdms(
    volumes: np.ndarray,
    patterns: pd.DataFrame,
    masks: Mapping[str, Any],
    *,
    center: bool = True,
    within_blocks: bool = True,
    method: str = "correlation",
    dtype: DTypeLike = np.float64,
) -> list[RDMs]:
    """ROI RDMs of held-out volumes, one RDMs object per subject.

    Parameters
    ----------
    volumes : numpy.ndarray, shape (n_samples, X, Y, Z)
        The prepared volumes (may be a memory map; only the patterns' rows are read).
    patterns : pandas.DataFrame
        From :func:`define_patterns`.
    masks : mapping of str to array or Niimg-like
        ROI masks on the volumes' grid (see :func:`calc_roi_rdms`).
    center : bool, default=True
        Centre every voxel across the subject's patterns of each block
        (:func:`center_patterns`).
    within_blocks : bool, default=True
        Blank pairs across blocks (:func:`restrict_pairs`).
    method : str, default="correlation"
        Dissimilarity (see :func:`calc_rdms_from_patterns`).
    dtype : dtype, default=float64
        dtype of the dissimilarities.

    Returns
    -------
    list of rsatoolbox.rdm.RDMs
        Per subject (order of ``patterns``): one RDM per ROI (``roi``), descriptor
        ``subject``, pattern descriptors ``id`` and ``block``.
    """
    out = []
    for subject, rows in patterns.groupby("subject", sort=False):
        ids, means = average_patterns(volumes[rows["sample"].to_numpy()], rows["id"])
        if center:
            means = center_patterns(means, _blocks_of(ids, rows))
        rdms = calc_roi_rdms(means, masks, ids, method=method,
                             rdm_descriptors={"subject": subject}, dtype=dtype)
        out.append(_with_blocks(rdms, rows, within_blocks))
    return out


def _blocks_of(ids: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    block_of = dict(zip(rows["id"], rows["block"], strict=False))
    return np.array([block_of[i] for i in ids.tolist()])


def calc_network_rdms(
    volumes: np.ndarray,
    patterns: pd.DataFrame,
    models: Mapping[str, Any] | Callable[[str], Any],
    layers: Sequence[str],
    *,
    center: bool = True,
    within_blocks: bool = True,
    reduce: str | int = "flatten",
    batch_size: int = 32,
    device: str | None = None,
    method: str = "correlation",
    dtype: DTypeLike = np.float64,
) -> list[RDMs]:
    """Layer RDMs of a network run on held-out volumes, each volume by its own fold's model.

    For every subject and test fold, the fold's network (trained without that fold) is run
    on the subject's held-out volumes of the fold (:func:`extract_activations`); the
    activations are averaged into the patterns of :func:`define_patterns`.

    Parameters
    ----------
    volumes : numpy.ndarray, shape (n_samples, X, Y, Z)
        The prepared volumes.
    patterns : pandas.DataFrame
        From :func:`define_patterns`.
    models : mapping or callable
        Fold name to torch model, or a function returning it (e.g.
        ``lambda fold: load_trained(result.fold_model_path(fold))``); each fold's model is
        obtained once.
    layers : sequence of str
        Module names (e.g. ``conv1``, ``block1`` .. ``block4``, ``pool``).
    center, within_blocks, method, dtype
        See :func:`calc_brain_rdms`.
    reduce, batch_size, device
        See :func:`extract_activations`.

    Returns
    -------
    list of rsatoolbox.rdm.RDMs
        Per subject (order of ``patterns``): one RDM per layer (``layer``), descriptor
        ``subject``, pattern descriptors ``id`` and ``block``.
    """
    getter = models if callable(models) else models.__getitem__
    cache: dict[str, Any] = {}
    out = []
    for subject, rows in patterns.groupby("subject", sort=False):
        ids = pd.unique(rows["id"].to_numpy())
        code = {v: k for k, v in enumerate(ids.tolist())}
        sums: dict[str, np.ndarray] = {}
        counts = np.zeros(len(ids))
        for fold, part in rows.groupby("fold", sort=False):
            if fold not in cache:
                cache[fold] = getter(fold)
            part = part.sort_values("sample")
            x = np.asarray(volumes[part["sample"].to_numpy()], dtype=np.float32)[:, None]
            acts = extract_activations(cache[fold], x, layers, batch_size=batch_size,
                                       reduce=reduce, device=device)
            indicator = _group_indicator(part["id"].map(code).to_numpy(), len(ids))
            counts += indicator.sum(axis=1)
            for name, a in acts.items():
                part_sum = indicator @ a
                sums[name] = part_sum if name not in sums else sums[name] + part_sum
        blocks = _blocks_of(ids, rows)
        means = {}
        for name, total in sums.items():
            m = (total / counts[:, None]).astype(np.float32)
            means[name] = center_patterns(m, blocks) if center else m
        rdms = calc_rdms_from_patterns(means, ids, method=method, descriptor="layer",
                                       rdm_descriptors={"subject": subject}, dtype=dtype)
        out.append(_with_blocks(rdms, rows, within_blocks))
    return out
