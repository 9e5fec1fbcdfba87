"""Pattern matrices before RDMs: averaging rows into patterns, centring within blocks, and
blanking the pairs across blocks.

When patterns come from different blocks whose features do not correspond (for example test
folds, each seen by its own network), pairs across blocks are blanked (NaN) with
:func:`restrict_pairs`; every comparison, the bootstrap and the noise ceiling then use the
pairs within blocks only, as rsatoolbox does with NaN entries.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from rsatoolbox.rdm import RDMs

__all__ = [
    "average_patterns", "center_patterns", "restrict_pairs",
]


def group_indicator(codes: np.ndarray, n_groups: int) -> np.ndarray:
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
    indicator = group_indicator(codes, len(ids))
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
