"""Condensed RDM vectors: sizes, pair indices, row blocks, chunked reductions.

An RDM of ``n`` patterns is stored condensed, as the ``n(n-1)/2`` entries of its upper
triangle in row-major order (scipy's ``squareform`` order, rsatoolbox's ``dissimilarities``).
The helpers here work on such vectors in chunks, so RDMs of thousands of patterns (12 million
pairs at BOLD5000's 4916 images) are compared without copies of whole stacks. Putting an RDM
in another pattern order is the exception: it goes through the RDM's square matrix
(:func:`fill_square`, :func:`take_permuted_rows`), as many at a time as fit
:data:`SQUARES_BYTES` (at least one, so an RDM of more than about 7,000 float32 patterns
goes over it), because gathering a condensed vector by a pattern permutation reads it
at random (one cache miss per entry) while rows of the square are read whole.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "SQUARES_BYTES", "condense_square",
]

#: Condensed entries handled at once by the chunked comparisons.
DEFAULT_CHUNK = 1 << 18
#: Working memory (bytes) for square copies of RDMs while putting them in another pattern
#: order (:func:`fill_square`): two float32 squares of BOLD5000's 4916 images.
SQUARES_BYTES = 192 << 20


def n_from_length(k: int) -> int:
    """Number of patterns of a condensed RDM vector of length ``k``."""
    n = int(round((1 + math.sqrt(1 + 8 * k)) / 2))
    if n * (n - 1) // 2 != k:
        raise ValueError(f"{k} is not a condensed RDM length n(n-1)/2")
    return n


def condensed_index(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Index in the condensed vector of the pairs ``(a, b)`` (``a != b``, any order)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    return lo * n - lo * (lo + 1) // 2 + (hi - lo - 1)


def iter_row_blocks(n: int, chunk: int):
    """Yield ``(start, stop, i, j)``: consecutive blocks of whole rows of the condensed vector.

    ``i`` and ``j`` (``i < j``) are the pattern indices of the entries ``start:stop``.
    """
    rows = np.arange(n - 1, dtype=np.int64)
    lengths = n - 1 - rows
    row_start = row_starts(n)
    for r0, r1 in row_chunks(n, chunk):  # as many whole rows as fit (at least one)
        start, stop = int(row_start[r0]), int(row_start[r1])
        i = np.repeat(rows[r0:r1], lengths[r0:r1])
        j = np.arange(start, stop, dtype=np.int64) - np.repeat(row_start[r0:r1], lengths[r0:r1])
        j += i + 1
        yield start, stop, i, j


def row_starts(n: int) -> np.ndarray:
    """Position of each row ``i`` (pairs ``(i, i+1..n-1)``) in the condensed vector; the
    last entry (row ``n - 1``, empty) is the vector's length."""
    lengths = n - 1 - np.arange(n - 1, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(lengths)])


def row_chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """Consecutive row ranges ``(r0, r1)`` of about ``chunk`` condensed entries each (at
    least one row), covering rows ``0 .. n - 2``."""
    starts = row_starts(n)
    out = []
    r0 = 0
    while r0 < n - 1:
        r1 = int(np.searchsorted(starts, starts[r0] + max(chunk, 1), side="right")) - 1
        r1 = min(max(r1, r0 + 1), n - 1)
        out.append((r0, r1))
        r0 = r1
    return out


def fill_square(v: np.ndarray, out: np.ndarray, block: int = 256) -> np.ndarray:
    """The symmetric square matrix (zero diagonal) of a condensed vector, written to ``out``.

    Rows are copied from the condensed vector, the lower triangle by transposing
    ``block`` x ``block`` tiles (cache-sized, a few hundred numpy calls).
    """
    n = out.shape[0]
    starts = row_starts(n)
    for i in range(n - 1):
        out[i, i + 1 :] = v[starts[i] : starts[i + 1]]
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        tile = np.triu(out[b0:b1, b0:b1], 1)
        out[b0:b1, b0:b1] = tile + tile.T
        for c0 in range(b1, n, block):
            c1 = min(n, c0 + block)
            out[c0:c1, b0:b1] = out[b0:b1, c0:c1].T
    return out


def n_squares(n: int, dtype: DTypeLike, wanted: int, budget: int | None = None) -> int:
    """How many ``n`` x ``n`` squares of ``dtype`` fit :data:`SQUARES_BYTES` (at least 1,
    at most ``wanted``)."""
    budget = SQUARES_BYTES if budget is None else budget
    return int(max(1, min(wanted, budget // max(1, n * n * np.dtype(dtype).itemsize))))


def take_permuted_rows(
    square: np.ndarray, perm: np.ndarray, r0: int, r1: int, out: np.ndarray
) -> np.ndarray:
    """Rows ``r0:r1`` of the condensed vector of ``square`` with its patterns reordered by
    ``perm`` (new pattern ``t`` is old pattern ``perm[t]``), written to ``out`` (1D, the
    rows' entries). Each row is one gather inside one row of the square: cache-friendly,
    where gathering the condensed vector directly reads it at random."""
    n = len(perm)
    pos = 0
    for i in range(r0, r1):
        m = n - 1 - i
        square[perm[i]].take(perm[i + 1 :], out=out[pos : pos + m], mode="clip")
        pos += m
    return out


def condense_square(square: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    """Upper triangle (row-major, diagonal excluded) of a square matrix, as ``dtype``."""
    n = square.shape[0]
    out = np.empty(n * (n - 1) // 2, dtype=dtype)
    pos = 0
    for i in range(n - 1):
        out[pos : pos + n - 1 - i] = square[i, i + 1 :]
        pos += n - 1 - i
    return out


def chunked_mean(v: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Row means of a 2D array in float64, read chunk by chunk.

    float32 chunks are summed in float32 (numpy's pairwise summation, twice as fast as
    casting; each chunk sum rounded to float32, about 6e-8 relative) and the chunk sums in
    float64.
    """
    total = np.zeros(v.shape[0])
    dtype = v.dtype if v.dtype in (np.float32, np.float64) else np.float64
    for s in range(0, v.shape[1], chunk):
        total += v[:, s : s + chunk].sum(axis=1, dtype=dtype)
    return total / v.shape[1]


def nan_columns(v: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray | None:
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
