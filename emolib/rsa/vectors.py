"""Condensed RDM vectors: sizes, pair indices, row blocks, chunked reductions.

An RDM of ``n`` patterns is stored condensed, as the ``n(n-1)/2`` entries of its upper
triangle in row-major order (scipy's ``squareform`` order, rsatoolbox's ``dissimilarities``).
The helpers here work on such vectors in chunks, so RDMs of thousands of patterns (12 million
pairs at BOLD5000's 4916 images) never need a square copy.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "condense_square",
]

#: Condensed entries handled at once by the chunked comparisons.
DEFAULT_CHUNK = 1 << 18


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
    """Row means of a 2D array in float64, read chunk by chunk."""
    total = np.zeros(v.shape[0])
    for s in range(0, v.shape[1], chunk):
        total += v[:, s : s + chunk].sum(axis=1, dtype=np.float64)
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
