"""Pattern ids and alignment: RDMs are compared pattern by pattern, never by position.

Two RDM sets are put in the same pattern order by the ids in
``rdms.pattern_descriptors[pattern_key]`` before any comparison; different id sets are an
error (:class:`PatternMismatchError`). rsatoolbox's ``compare`` only checks lengths, so two
sets in different orders would be compared silently by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from rsatoolbox.rdm import RDMs

from emolib.rsa.vectors import fill_square, row_starts, take_permuted_rows

__all__ = [
    "PATTERN_KEY", "PatternMismatchError", "align_rdms", "concat_rdms", "find_duplicates",
    "get_pattern_ids", "reorder_patterns",
]

#: Default pattern descriptor holding the pattern ids (image names, class names, ...).
PATTERN_KEY = "id"


class PatternMismatchError(ValueError):
    """Two RDM sets do not hold the same patterns (compared by id), or ids are unusable."""


def find_duplicates(ids: ArrayLike) -> np.ndarray:
    """The values that occur more than once in ``ids``, sorted."""
    values, counts = np.unique(np.asarray(ids), return_counts=True)
    return values[counts > 1]


def check_unique(ids: np.ndarray, what: str = "pattern ids") -> None:
    """Raise :class:`PatternMismatchError` if ``ids`` has duplicates."""
    dup = find_duplicates(ids)
    if len(dup):
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
    check_unique(ids)
    return ids


def alignment_perm(own: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Position in ``own`` of each id of ``target``; ``None`` when the orders already agree.

    Raises :class:`PatternMismatchError` when the two id sets differ or ``target`` has
    duplicates.
    """
    check_unique(target, "target ids")
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
    return np.fromiter((pos[v] for v in target_list), dtype=np.int64, count=len(target_list))


def permuted_index(perm: np.ndarray) -> np.ndarray:
    """Condensed gather index of an RDM whose patterns are reordered by ``perm``."""
    perm = np.asarray(perm, dtype=np.int64)
    n = len(perm)
    starts = row_starts(n)
    k = int(starts[-1])
    index = np.empty(k, dtype=np.int32 if k < 2**31 else np.int64)  # halves the memory
    base = starts - np.arange(n) - 1  # the pair (lo, hi), lo < hi, sits at base[lo] + hi
    base_p = base[perm]
    for i in range(n - 1):  # row i: pairs (perm[i], perm[j]) for j > i
        a, b = perm[i], perm[i + 1 :]
        index[starts[i] : starts[i + 1]] = np.where(b > a, b + base[a], base_p[i + 1 :] + a)
    return index


def permute_vectors(vectors: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Condensed RDM vectors (n_rdm, n_pairs) with their patterns reordered by ``perm``
    (new pattern ``t`` is old pattern ``perm[t]``); same dtype.

    Through one square matrix at a time (:func:`~emolib.rsa.vectors.fill_square`): about
    half the time of gathering by :func:`permuted_index`, which reads at random.
    """
    perm = np.asarray(perm, dtype=np.intp)
    n = len(perm)
    out = np.empty_like(vectors)
    if n < 2:
        return out
    square = np.empty((n, n), dtype=vectors.dtype)
    for k in range(vectors.shape[0]):
        fill_square(vectors[k], square)
        take_permuted_rows(square, perm, 0, n - 1, out[k])
    return out


def alignment_index(own: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Condensed gather index that puts an RDM in ``own`` order into ``target`` order.

    ``None`` when the orders already agree. Raises :class:`PatternMismatchError` when the
    two id sets differ.
    """
    perm = alignment_perm(own, target)
    return None if perm is None else permuted_index(perm)


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
        position). One square matrix at a time (:func:`permute_vectors`).

    Raises
    ------
    PatternMismatchError
        If the id sets differ or ids are duplicated.
    """
    own = get_pattern_ids(rdms, pattern_key)
    target = np.asarray(ids)
    perm = alignment_perm(own, target)
    if perm is None:
        return rdms
    out = permute_vectors(rdms.dissimilarities, perm)
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


def as_rdms_list(data: RDMs | Sequence[RDMs]) -> list[RDMs]:
    if isinstance(data, RDMs):
        return [data]
    out = list(data)
    if not out or not all(isinstance(r, RDMs) for r in out):
        raise TypeError("expected an RDMs object or a non-empty sequence of RDMs objects")
    return out


def descriptor_values(rdms: RDMs, key: str) -> list:
    """One value of ``key`` per RDM: rdm descriptor, else object descriptor, else None."""
    if key in rdms.rdm_descriptors:
        return list(rdms.rdm_descriptors[key])
    if key in rdms.descriptors:
        return [rdms.descriptors[key]] * rdms.n_rdm
    return [None] * rdms.n_rdm


def label_frame(rdms: RDMs, keys: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({k: descriptor_values(rdms, k) for k in keys})


def model_names(rdms: RDMs, key: str) -> list:
    values = descriptor_values(rdms, key)
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
    rdms_list = as_rdms_list(rdms_list)
    ids = get_pattern_ids(rdms_list[0], pattern_key)
    aligned = [rdms_list[0]] + [reorder_patterns(r, ids, pattern_key) for r in rdms_list[1:]]
    keys: list[str] = []
    for r in aligned:
        for k in list(r.rdm_descriptors) + list(r.descriptors):
            if k != "index" and k not in keys:
                keys.append(k)
    rdm_descriptors = {k: sum((descriptor_values(r, k) for r in aligned), []) for k in keys}
    measures = {r.dissimilarity_measure for r in aligned}
    diss = np.concatenate([r.dissimilarities for r in aligned], axis=0)
    return RDMs(
        diss,
        dissimilarity_measure=measures.pop() if len(measures) == 1 else None,
        rdm_descriptors=rdm_descriptors,
        pattern_descriptors=deepcopy(rdms_list[0].pattern_descriptors),
    )
