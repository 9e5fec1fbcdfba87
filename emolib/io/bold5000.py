"""BOLD5000 RDM files: read, validate and write them; the names of subjects, ROIs and layers.

The study compares ResNet-50 layers (``conv1``, ``layer1`` .. ``layer4``) with 10 ROIs
(LH/RH x EarlyVis, LOC, OPA, PPA, RSC) of BOLD5000 subjects CSI1-3, patterns being images
aligned by image id. Two on-disk layouts of RDM ``.h5`` files are read and written:

``"rsatoolbox"``
    rsatoolbox's own hdf5 layout (:meth:`rsatoolbox.rdm.RDMs.save` with
    ``file_type="hdf5"``, read back by :func:`rsatoolbox.rdm.load_rdm`): a
    ``dissimilarities`` dataset (n_rdm, n(n-1)/2) and groups ``rdm_descriptors`` (e.g.
    ``roi``, ``subject``) and ``pattern_descriptors`` (the ids under ``pattern_key``).
``"plain"``
    One dataset per ROI or layer at the root, each either square (n, n) or condensed
    (n(n-1)/2,) (upper triangle, row-major), plus a dataset of image ids (``image_ids``).
    Root attributes: ``subject`` (e.g. ``"CSI1"``), ``descriptor`` (``"roi"`` or ``"layer"``:
    what the dataset names are) and optionally ``dissimilarity_measure``.

Every reader raises :class:`emolib.errors.InputDataError` naming the file and the problem:
not HDF5, missing ids, a size that is not n(n-1)/2 or not square, NaNs, duplicated ids, and
what users most often get wrong: a similarity (or correlation) matrix where dissimilarities
are expected (a square matrix with ones on its diagonal), or negative dissimilarities (below
``-1e-6``; cross-validated measures such as crossnobis are exempt).

The per-trial ROI patterns of the BOLD5000 Release 1.0 are read by
:mod:`emolib.io.bold5000_release`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import DTypeLike
from rsatoolbox.rdm import RDMs, load_rdm

from emolib.errors import InputDataError
from emolib.rsa import PATTERN_KEY, condense_square
from emolib.rsa.align import find_duplicates

__all__ = [
    "Bold5000RDMs", "HEMISPHERES", "IDS_DATASET", "LAYERS", "LAYOUTS", "NEGATIVE_TOLERANCE",
    "ROIS", "ROI_AREAS", "SIGNED_MEASURES", "SUBJECTS", "SYSTEMS", "detect_layout",
    "load_bold5000", "load_rdms", "roi_area", "roi_system", "save_rdms",
]

#: BOLD5000 subjects used by the study (CSI4 has too few sessions and is excluded).
SUBJECTS = ("CSI1", "CSI2", "CSI3")


#: ROI areas, ordered from early to high-level visual cortex.
ROI_AREAS = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")


HEMISPHERES = ("LH", "RH")


#: The 10 ROIs, named as in BOLD5000's ROI files.
ROIS = tuple(h + a for h in HEMISPHERES for a in ROI_AREAS)


#: ResNet-50 stages compared with the ROIs (torchvision node names).
LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")


#: Visual systems of the grouped figures.
SYSTEMS: dict[str, tuple[str, ...]] = {
    "Early": ("EarlyVis",),
    "Mid": ("LOC", "OPA"),
    "High": ("PPA", "RSC"),
}


#: Name of the ids dataset of the plain layout.
IDS_DATASET = "image_ids"


LAYOUTS = ("rsatoolbox", "plain")


#: Dissimilarities below ``-NEGATIVE_TOLERANCE`` are rejected (float error is allowed).
NEGATIVE_TOLERANCE = 1e-6


#: Cross-validated measures whose estimates may legitimately be negative.
SIGNED_MEASURES = frozenset({"crossnobis", "poisson_cv"})


def roi_area(roi: str) -> str:
    """Return the area of a ROI name without its hemisphere (``"LHPPA"`` -> ``"PPA"``)."""
    for h in HEMISPHERES:
        if roi.startswith(h) and roi[len(h):] in ROI_AREAS:
            return roi[len(h):]
    return roi


def roi_system(roi: str, systems: Mapping[str, Sequence[str]] = SYSTEMS) -> str | None:
    """Return the system (``Early``/``Mid``/``High``) of a ROI or area, or None if none."""
    area = roi_area(roi)
    for name, areas in systems.items():
        if area in areas or roi == name:
            return name
    return None


def _open_h5(path: Path) -> h5py.File:
    if not path.is_file():
        raise InputDataError(path, "file does not exist")
    if not h5py.is_hdf5(path):
        raise InputDataError(path, "not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:  # pragma: no cover - corrupt HDF5 signature
        raise InputDataError(path, f"cannot open as HDF5: {exc}") from exc


def detect_layout(path: str | os.PathLike, ids_dataset: str = IDS_DATASET) -> str:
    """Return the layout (``"rsatoolbox"`` or ``"plain"``) of an RDM ``.h5`` file.

    Parameters
    ----------
    path : str or path-like
        The file.
    ids_dataset : str, default="image_ids"
        Name of the ids dataset of the plain layout.

    Raises
    ------
    InputDataError
        If the file is not HDF5 or matches neither layout.
    """
    path = Path(path)
    with _open_h5(path) as f:
        if "dissimilarities" in f and "pattern_descriptors" in f:
            return "rsatoolbox"
        if ids_dataset in f:
            return "plain"
        datasets = [k for k in f if isinstance(f[k], h5py.Dataset)]
    if datasets:
        raise InputDataError(
            path, f"missing the dataset of image ids {ids_dataset!r} (found {datasets[:10]})"
        )
    raise InputDataError(path, "neither rsatoolbox's RDM layout nor a plain RDM layout")


def _decode_ids(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.ravel(values)]


def _check_ids(path: Path, ids: list[str], where: str) -> None:
    dup = find_duplicates(ids)
    if len(dup):
        raise InputDataError(
            path, f"{where}: {len(dup)} duplicated image ids, e.g. {list(dup[:5])}"
        )


def _check_finite(path: Path, name: str, v: np.ndarray) -> None:
    if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
        bad = int((~np.isfinite(v)).sum())
        raise InputDataError(path, f"RDM {name!r} has {bad} NaN or infinite dissimilarities")


def _check_nonnegative(path: Path, name: str, v: np.ndarray, measure: str | None) -> None:
    """Dissimilarities are >= 0 (float error allowed), except for cross-validated measures."""
    if measure is not None and str(measure).lower() in SIGNED_MEASURES:
        return
    low = float(np.min(v)) if v.size else 0.0
    if low < -NEGATIVE_TOLERANCE:
        bad = int((v < -NEGATIVE_TOLERANCE).sum())
        raise InputDataError(
            path, f"RDM {name!r} has {bad} negative dissimilarities (min {low:.3g}): a "
            "similarity or correlation matrix rather than dissimilarities (e.g. 1 - r)?"
        )


def _check_not_similarity(path: Path, name: str, m: np.ndarray) -> None:
    """A square matrix with ones on its diagonal holds similarities (e.g. Pearson r)."""
    diag = np.diagonal(m)
    if diag.size and np.allclose(diag, 1.0, rtol=0, atol=1e-6):
        in_range = bool(np.all((m >= -1 - 1e-6) & (m <= 1 + 1e-6)))
        kind = "a correlation matrix (values in [-1, 1])" if in_range else "a similarity matrix"
        raise InputDataError(
            path, f"RDM {name!r} has ones on its diagonal: {kind}, not dissimilarities "
            "(an RDM has zeros on its diagonal; use 1 - r)"
        )


def _condensed_length_problem(length: int, n: int) -> str | None:
    want = n * (n - 1) // 2
    if length != want:
        return f"condensed length {length} is not n(n-1)/2 = {want} for {n} image ids"
    return None


def _read_plain(
    path: Path, pattern_key: str, ids_dataset: str, descriptor: str | None, dtype: Any
) -> RDMs:
    with _open_h5(path) as f:
        if ids_dataset not in f or not isinstance(f[ids_dataset], h5py.Dataset):
            raise InputDataError(path, f"missing the dataset of image ids {ids_dataset!r}")
        raw_ids = f[ids_dataset][()]
        if np.ndim(raw_ids) != 1:
            raise InputDataError(path, f"{ids_dataset!r} must be 1D, has shape {np.shape(raw_ids)}")
        ids = _decode_ids(raw_ids)
        _check_ids(path, ids, ids_dataset)
        n = len(ids)
        names = [k for k in f if k != ids_dataset and isinstance(f[k], h5py.Dataset)]
        if not names:
            raise InputDataError(path, "no RDM datasets besides the image ids")
        attrs = dict(f.attrs)
        vectors = []
        for name in names:
            ds = f[name]
            if not np.issubdtype(ds.dtype, np.number):
                raise InputDataError(path, f"dataset {name!r} is not numeric ({ds.dtype})")
            out_dtype = np.dtype(dtype) if dtype is not None else (
                ds.dtype if np.issubdtype(ds.dtype, np.floating) else np.dtype(np.float64)
            )
            if ds.ndim == 1:
                problem = _condensed_length_problem(ds.shape[0], n)
                if problem:
                    raise InputDataError(path, f"RDM {name!r}: {problem}")
                v = np.asarray(ds[()], dtype=out_dtype)
            elif ds.ndim == 2:
                if ds.shape[0] != ds.shape[1]:
                    raise InputDataError(path, f"RDM {name!r} is not square: shape {ds.shape}")
                if ds.shape[0] != n:
                    raise InputDataError(
                        path, f"RDM {name!r} is {ds.shape[0]} x {ds.shape[1]} but there are "
                        f"{n} image ids"
                    )
                m = ds[()]
                _check_finite(path, name, m)
                _check_not_similarity(path, name, m)
                if not np.allclose(m, m.T, rtol=1e-5, atol=1e-6):
                    raise InputDataError(path, f"RDM {name!r} is not symmetric")
                v = condense_square(m, out_dtype)
                del m
            else:
                raise InputDataError(
                    path, f"RDM {name!r} must be square (n, n) or condensed, has shape {ds.shape}"
                )
            _check_finite(path, name, v)
            _check_nonnegative(path, name, v, _attr_str(attrs.get("dissimilarity_measure")))
            vectors.append(v)
    desc = descriptor or _attr_str(attrs.get("descriptor")) or "roi"
    rdm_descriptors: dict[str, list] = {desc: names}
    subject = _attr_str(attrs.get("subject"))
    if subject:
        rdm_descriptors["subject"] = [subject] * len(names)
    return RDMs(
        np.stack(vectors),
        dissimilarity_measure=_attr_str(attrs.get("dissimilarity_measure")) or None,
        rdm_descriptors=rdm_descriptors,
        pattern_descriptors={pattern_key: ids},
    )


def _attr_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _read_rsatoolbox(path: Path, pattern_key: str, dtype: Any) -> RDMs:
    with _open_h5(path) as f:
        if "dissimilarities" not in f or not isinstance(f["dissimilarities"], h5py.Dataset):
            raise InputDataError(
                path, "missing the 'dissimilarities' dataset of rsatoolbox's layout"
            )
        pd_group = f.get("pattern_descriptors")
        if not isinstance(pd_group, h5py.Group) or pattern_key not in pd_group:
            have = list(pd_group) if isinstance(pd_group, h5py.Group) else []
            raise InputDataError(
                path, f"missing the image ids: no pattern descriptor {pattern_key!r} "
                f"(pattern descriptors: {have})"
            )
        ids = _decode_ids(pd_group[pattern_key][()])
        shape = f["dissimilarities"].shape
        if len(shape) != 2:
            raise InputDataError(
                path, f"'dissimilarities' must be 2D (n_rdm, n(n-1)/2), has shape {shape}"
            )
        problem = _condensed_length_problem(shape[1], len(ids))
        if problem:
            raise InputDataError(path, problem)
        _check_ids(path, ids, f"pattern descriptor {pattern_key!r}")
    try:
        rdms = load_rdm(str(path), file_type="hdf5")
    except Exception as exc:  # rsatoolbox raises assorted errors on odd content
        raise InputDataError(path, f"rsatoolbox cannot read it: {exc}") from exc
    if dtype is not None:
        rdms.dissimilarities = np.asarray(rdms.dissimilarities, dtype=dtype)
    for k in range(rdms.n_rdm):
        _check_finite(path, f"#{k}", rdms.dissimilarities[k])
        _check_nonnegative(path, f"#{k}", rdms.dissimilarities[k], rdms.dissimilarity_measure)
    rdms.pattern_descriptors[pattern_key] = ids
    for key, values in list(rdms.rdm_descriptors.items()):
        rdms.rdm_descriptors[key] = np.asarray(values).tolist()
    return rdms


def load_rdms(
    path: str | os.PathLike,
    *,
    layout: str = "auto",
    pattern_key: str = PATTERN_KEY,
    ids_dataset: str = IDS_DATASET,
    descriptor: str | None = None,
    dtype: DTypeLike | None = None,
) -> RDMs:
    """Read an RDM ``.h5`` file (rsatoolbox's layout or the plain layout) and validate it.

    Parameters
    ----------
    path : str or path-like
        The file.
    layout : {"auto", "rsatoolbox", "plain"}, default="auto"
        File layout; ``"auto"`` detects it (see :func:`detect_layout`).
    pattern_key : str, default="id"
        Pattern descriptor holding the image ids (read from, and written to, the RDMs).
    ids_dataset : str, default="image_ids"
        Ids dataset of the plain layout.
    descriptor : str, optional
        Plain layout: rdm descriptor for the dataset names (default: the file's
        ``descriptor`` attribute, else ``"roi"``).
    dtype : dtype, optional
        dtype of the dissimilarities (default: the file's floating dtype).

    Returns
    -------
    rsatoolbox.rdm.RDMs
        With ``pattern_descriptors[pattern_key]`` the image ids (str) in the file's order.

    Raises
    ------
    InputDataError
        Not HDF5, ids missing or duplicated, sizes not n(n-1)/2 or not square, NaNs, a
        similarity matrix (square, ones on the diagonal), negative dissimilarities (below
        ``-NEGATIVE_TOLERANCE``, unless the measure is one of :data:`SIGNED_MEASURES`).
    """
    path = Path(path)
    if layout == "auto":
        layout = detect_layout(path, ids_dataset)
    if layout == "plain":
        return _read_plain(path, pattern_key, ids_dataset, descriptor, dtype)
    if layout == "rsatoolbox":
        return _read_rsatoolbox(path, pattern_key, dtype)
    raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, not {layout!r}")


def _single_value(rdms: RDMs, key: str) -> str | None:
    if key in rdms.rdm_descriptors:
        values = {str(v) for v in rdms.rdm_descriptors[key]}
        if len(values) > 1:
            raise ValueError(f"the plain layout holds one {key} per file, got {sorted(values)}")
        return values.pop() if values else None
    if key in rdms.descriptors:
        return str(rdms.descriptors[key])
    return None


def save_rdms(
    rdms: RDMs,
    path: str | os.PathLike,
    *,
    layout: str = "rsatoolbox",
    pattern_key: str = PATTERN_KEY,
    ids_dataset: str = IDS_DATASET,
    descriptor: str | None = None,
    condensed: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write RDMs to an ``.h5`` file in rsatoolbox's layout or the plain layout.

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
        RDMs with ids in ``pattern_descriptors[pattern_key]``.
    path : str or path-like
        Output file.
    layout : {"rsatoolbox", "plain"}, default="rsatoolbox"
        ``"rsatoolbox"`` calls ``rdms.save(path, file_type="hdf5")``.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.
    ids_dataset : str, default="image_ids"
        Plain layout: name of the ids dataset.
    descriptor : str, optional
        Plain layout: rdm descriptor naming the datasets (default ``roi`` if present, else
        ``layer``).
    condensed : bool, default=True
        Plain layout: write condensed vectors (else square matrices).
    overwrite : bool, default=False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists (pass overwrite=True)")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if pattern_key not in rdms.pattern_descriptors:
        raise ValueError(f"RDMs have no pattern descriptor {pattern_key!r} with the ids")
    if layout == "rsatoolbox":
        rdms.save(str(path), file_type="hdf5")
        return path
    if layout != "plain":
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if descriptor is None:
        descriptor = next((k for k in ("roi", "layer") if k in rdms.rdm_descriptors), None)
        if descriptor is None:
            raise ValueError("pass descriptor= naming the rdm descriptor with dataset names")
    names = [str(v) for v in rdms.rdm_descriptors[descriptor]]
    if len(set(names)) != len(names) or any(n == ids_dataset or "/" in n for n in names):
        raise ValueError(f"dataset names must be unique and valid: {names}")
    ids = [str(v) for v in rdms.pattern_descriptors[pattern_key]]
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["descriptor"] = descriptor
        subject = _single_value(rdms, "subject")
        if subject is not None:
            f.attrs["subject"] = subject
        if rdms.dissimilarity_measure is not None:
            f.attrs["dissimilarity_measure"] = str(rdms.dissimilarity_measure)
        f.create_dataset(ids_dataset, data=np.array(ids, dtype=h5py.string_dtype()))
        for k, name in enumerate(names):
            v = rdms.dissimilarities[k]
            if condensed:
                f.create_dataset(name, data=v)
            else:
                n, pos = rdms.n_cond, 0
                m = np.zeros((n, n), dtype=v.dtype)
                for i in range(n - 1):
                    m[i, i + 1 :] = m[i + 1 :, i] = v[pos : pos + n - 1 - i]
                    pos += n - 1 - i
                f.create_dataset(name, data=m)
                del m
    return path


@dataclass
class Bold5000RDMs:
    """The RDMs of one BOLD5000 folder.

    Attributes
    ----------
    layers : rsatoolbox.rdm.RDMs
        Layer RDMs (``rdm_descriptors["layer"]``).
    rois : dict of str to rsatoolbox.rdm.RDMs
        ROI RDMs per subject (``rdm_descriptors["roi"]`` and ``["subject"]``), each in its
        file's own pattern order.
    files : dict of str to pathlib.Path
        The file each came from (``"layers"`` and subject names).
    """

    layers: RDMs
    rois: dict[str, RDMs]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        """Subjects, in file-name order."""
        return list(self.rois)


def load_bold5000(
    folder: str | os.PathLike,
    *,
    pattern_key: str = PATTERN_KEY,
    ids_dataset: str = IDS_DATASET,
    dtype: DTypeLike | None = None,
) -> Bold5000RDMs:
    """Read every RDM ``.h5`` file of a folder: one file of layer RDMs, one per subject of ROIs.

    A file is a layer file when its RDMs carry a ``layer`` descriptor, and a subject's ROI
    file when they carry ``roi`` (the subject from the ``subject`` descriptor/attribute,
    else the file name's stem).

    Parameters
    ----------
    folder : str or path-like
        Folder with ``*.h5`` files in either layout.
    pattern_key, ids_dataset, dtype
        See :func:`load_rdms`.

    Returns
    -------
    Bold5000RDMs
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.h5"))
    if not files:
        raise InputDataError(folder, "no .h5 RDM files")
    layers = None
    rois: dict[str, RDMs] = {}
    where: dict[str, Path] = {}
    for p in files:
        rdms = load_rdms(p, pattern_key=pattern_key, ids_dataset=ids_dataset, dtype=dtype)
        if "layer" in rdms.rdm_descriptors:
            if layers is not None:
                raise InputDataError(p, f"a second file of layer RDMs (first: {where['layers']})")
            layers, where["layers"] = rdms, p
        elif "roi" in rdms.rdm_descriptors:
            subject = _single_value(rdms, "subject") or p.stem
            if subject in rois:
                raise InputDataError(p, f"a second ROI file of subject {subject}")
            if "subject" not in rdms.rdm_descriptors:
                rdms.rdm_descriptors["subject"] = [subject] * rdms.n_rdm
            rois[subject], where[subject] = rdms, p
        else:
            raise InputDataError(p, "RDMs carry neither a 'layer' nor a 'roi' descriptor")
    if layers is None:
        raise InputDataError(folder, "no file of layer RDMs")
    if not rois:
        raise InputDataError(folder, "no file of ROI RDMs")
    return Bold5000RDMs(layers, rois, where)
