"""Computing RDMs: from pattern matrices, from torch model layers, from brain ROIs.

Every function returns :class:`rsatoolbox.rdm.RDMs` with the pattern ids under
:data:`emolib.rsa.PATTERN_KEY`. Correlation distances of many patterns are computed from a
blocked Gram matrix (exact, bounded memory); layer activations come from
:func:`emolib.models.extract_activations`; ROI patterns from boolean masks or nilearn maskers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import RDMs, calc_rdm

from emolib.rsa.align import (
    PATTERN_KEY,
    alignment_perm,
    as_rdms_list,
    check_unique,
    descriptor_values,
    get_pattern_ids,
    permute_vectors,
)
from emolib.rsa.vectors import (
    condense_square,
    fill_square,
    n_squares,
    row_chunks,
    row_starts,
    take_permuted_rows,
)

__all__ = [
    "GRAM_BLOCK_BYTES", "calc_joint_rdms", "calc_rdms_from_model", "calc_rdms_from_patterns",
    "calc_roi_rdms",
]

#: Bytes of one centred row block when building correlation-distance RDMs.
GRAM_BLOCK_BYTES = 256 << 20
#: Condensed entries summed at once by :func:`calc_joint_rdms`.
JOINT_CHUNK = 1 << 16


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
        1, min(n, int(GRAM_BLOCK_BYTES // max(1, x2.shape[1] * np.dtype(work).itemsize)))
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
    return condense_square(gram, dtype)


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
    check_unique(ids_arr)
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
        See :func:`emolib.models.extract_activations`.
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
    from emolib.models.features import extract_activations  # torch only where it is used

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

    Notes
    -----
    Each mean is summed in float64 in the subjects' order, then stored in the inputs'
    dtype. The RDMs of subjects in another pattern order are read through their square
    matrices (those of one ROI at a time, within :data:`emolib.rsa.vectors.SQUARES_BYTES`;
    beyond it through whole reordered copies, one at a time), chunk by chunk of the result.
    """
    data_list = as_rdms_list(data_rdms)
    ids = get_pattern_ids(data_list[0], pattern_key)
    perms = [alignment_perm(get_pattern_ids(r, pattern_key), ids) for r in data_list]
    perms = [None if p is None else p.astype(np.intp) for p in perms]
    groups: dict[Any, list[tuple[int, int]]] = {}
    for d, r in enumerate(data_list):
        for k, g in enumerate(descriptor_values(r, by)):
            groups.setdefault(g, []).append((d, k))
    dtype = np.result_type(*[r.dissimilarities.dtype for r in data_list])
    n = len(ids)
    out = np.empty((len(groups), data_list[0].dissimilarities.shape[1]), dtype=dtype)
    n_perm = max(sum(perms[d] is not None for d, _ in m) for m in groups.values())
    fits = n_perm == 0 or n_squares(n, dtype, n_perm) >= n_perm
    squares = np.empty((n_perm, n, n), dtype=dtype) if n_perm and fits else None
    starts = row_starts(n)
    chunks = row_chunks(n, JOINT_CHUNK)
    width = max((int(starts[r1] - starts[r0]) for r0, r1 in chunks), default=0)
    acc_buf = np.empty(width)
    take_buf = np.empty(width, dtype=dtype)
    for g_i, members in enumerate(groups.values()):
        vectors = [data_list[d].dissimilarities[k] for d, k in members]
        mperms = [perms[d] for d, _ in members]
        if not fits:  # the squares do not fit: whole permuted copies, one at a time
            acc = np.zeros(out.shape[1])
            for v, perm in zip(vectors, mperms, strict=True):
                acc += v if perm is None else permute_vectors(v[None], perm)[0]
            out[g_i] = acc / len(members)
            continue
        slot = {}
        for m_i, (v, perm) in enumerate(zip(vectors, mperms, strict=True)):
            if perm is not None:
                slot[m_i] = len(slot)
                fill_square(v, squares[slot[m_i]])
        for r0, r1 in chunks:  # the same sums, in the same order, chunk by chunk
            s, e = starts[r0], starts[r1]
            acc = acc_buf[: e - s]
            for m_i, (v, perm) in enumerate(zip(vectors, mperms, strict=True)):
                part = v[s:e] if perm is None else take_permuted_rows(
                    squares[slot[m_i]], perm, r0, r1, take_buf[: e - s])
                if m_i == 0:
                    np.copyto(acc, part)  # = 0 + part, in float64
                else:
                    acc += part
            np.divide(acc, len(members), out=out[g_i, s:e])
    measures = {r.dissimilarity_measure for r in data_list}
    return RDMs(
        out,
        dissimilarity_measure=measures.pop() if len(measures) == 1 else None,
        rdm_descriptors={subject_descriptor: [joint_name] * len(groups), by: list(groups)},
        pattern_descriptors={pattern_key: ids.tolist()},
    )
