"""BOLD5000 Release 1.0 ROI files: stimulus lists, per-trial ROI patterns, ROI RDMs.

The layout read here is the published one (the ``BOLD5000_ROIs`` and ``BOLD5000_Stimuli``
archives unpacked side by side under one ``root``)::

    root/ROIs/CSI{n}/h5/CSI{n}_ROIs_TR{1,2,3,4,5,34}.h5
    root/ROIs/CSI{n}/mat/CSI{n}_ROIs_TR{1,2,3,4,5,34}.mat       (MATLAB 5, scipy.io.loadmat)
    root/ROIs/stim_lists/CSI0{n}_stim_lists.txt                 (zero-padded)
    root/BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/{COCO,ImageNet,Scene}/<image>

Each ROI file holds 10 arrays named as the ROIs (``LHEarlyVis`` .. ``RHRSC``), one row per
trial in presentation order and one column per voxel, (n_trials, n_voxels); the voxel counts
differ between subjects and ROIs. The stimulus list names the image of each trial, one per
line. An image shown several times carries a ``rep_`` prefix on all showings but one, and the
bare showing is not always the first. ``TR34`` is believed to be the mean of TR3 and TR4.

Public loaders of the release agree with that orientation in both formats
(``mattgorb/cnn_bold5000`` indexes the rows of ``CSI1_ROIs_TR*.h5`` by trial; others treat
``shape[1]`` as voxels, or take ``loadmat(...)[roi][trial]``). MATLAB-written HDF5 (and v7.3
``.mat``) appears transposed to h5py, so the reader keeps the orientation whose rows match the
stimulus list and transposes when only the other one does. Images are matched across
subjects by name (``rep_`` stripped), never by position.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.io
from numpy.typing import DTypeLike
from rsatoolbox.rdm import RDMs
from tqdm.auto import tqdm

from emolib.errors import InputDataError
from emolib.io.bold5000 import ROIS, SUBJECTS
from emolib.rsa import PATTERN_KEY, calc_rdms_from_patterns, get_pattern_ids

__all__ = [
    "IMAGE_CATEGORIES", "RELEASE_TRS", "REPEAT_MODES", "REP_PREFIX", "ROI_FORMATS",
    "STIMULI_SUBPATH", "ImageOverlap", "RoiPatterns", "average_repeats", "common_images",
    "describe_stim_list", "image_category", "load_roi_rdms", "read_roi_patterns",
    "read_stim_list", "roi_file", "rois_dir", "select_images", "stim_list_file",
    "stimulus_path", "strip_rep",
]

#: The TR files of each subject (TR34: believed to be the mean of TR3 and TR4).
RELEASE_TRS = ("TR1", "TR2", "TR3", "TR4", "TR5", "TR34")
#: ROI file formats, each in its own folder (``h5/``, ``mat/``).
ROI_FORMATS = ("h5", "mat")
#: Where the presented images are, below the folder holding ``BOLD5000_Stimuli``.
STIMULI_SUBPATH = Path("BOLD5000_Stimuli", "Scene_Stimuli", "Presented_Stimuli")
#: Image folders, one per source data set.
IMAGE_CATEGORIES = ("COCO", "ImageNet", "Scene")
#: Prefix of all showings of a repeated image but one.
REP_PREFIX = "rep_"
#: How :func:`average_repeats` treats the showings of an image.
REPEAT_MODES = ("average", "first")

_COCO = re.compile(r"COCO_train2014_\d{12}\.jpg")
_IMAGENET = re.compile(r"n\d{8}_\d+\.JPEG")
_SUBJECT = re.compile(r"CSI(\d+)")


def _subject_number(subject: str) -> int:
    m = _SUBJECT.fullmatch(str(subject))
    if not m:
        raise ValueError(f"subject must look like 'CSI1', not {subject!r}")
    return int(m.group(1))


def rois_dir(root: str | os.PathLike) -> Path:
    """The ``ROIs`` folder of a release.

    Parameters
    ----------
    root : str or path-like
        The folder holding ``ROIs/`` (and ``BOLD5000_Stimuli/``), or ``ROIs/`` itself.

    Returns
    -------
    pathlib.Path
        ``root/ROIs``, or ``root`` when it is the ``ROIs`` folder (holds ``stim_lists/``).
    """
    root = Path(root)
    if not (root / "ROIs").is_dir() and (root / "stim_lists").is_dir():
        return root
    return root / "ROIs"


def roi_file(root: str | os.PathLike, subject: str, tr: str = "TR34", fmt: str = "h5") -> Path:
    """Path of a subject's ROI file, e.g. ``root/ROIs/CSI1/h5/CSI1_ROIs_TR34.h5``.

    Parameters
    ----------
    root : str or path-like
        See :func:`rois_dir`.
    subject : str
        ``"CSI1"`` .. ``"CSI4"``.
    tr : str, default="TR34"
        One of :data:`RELEASE_TRS`.
    fmt : {"h5", "mat"}, default="h5"
        File format.

    Returns
    -------
    pathlib.Path
        Whether or not the file exists.
    """
    _subject_number(subject)
    if tr not in RELEASE_TRS:
        raise ValueError(f"tr must be one of {RELEASE_TRS}, not {tr!r}")
    if fmt not in ROI_FORMATS:
        raise ValueError(f"fmt must be one of {ROI_FORMATS}, not {fmt!r}")
    return rois_dir(root) / subject / fmt / f"{subject}_ROIs_{tr}.{fmt}"


def stim_list_file(root: str | os.PathLike, subject: str) -> Path:
    """Path of a subject's stimulus list, e.g. ``root/ROIs/stim_lists/CSI01_stim_lists.txt``.

    Parameters
    ----------
    root : str or path-like
        See :func:`rois_dir`.
    subject : str
        ``"CSI1"`` .. ``"CSI4"`` (the file name is zero-padded: ``CSI01``).
    """
    return rois_dir(root) / "stim_lists" / f"CSI{_subject_number(subject):02d}_stim_lists.txt"


def strip_rep(name: str) -> str:
    """The image name without its ``rep_`` prefix (``"rep_kitchen3.jpg"`` -> ``"kitchen3.jpg"``)."""
    return name[len(REP_PREFIX):] if name.startswith(REP_PREFIX) else name


def image_category(name: str) -> str:
    """The source of an image: ``"COCO"``, ``"ImageNet"`` or ``"Scene"`` (its folder).

    ``COCO_train2014_<12 digits>.jpg`` is COCO, ``n<8 digits>_<digits>.JPEG`` is ImageNet,
    anything else (``kitchen3.jpg``, ``carmechanic4.jpeg``, ``highway.jpg``) is a Scene
    image. A ``rep_`` prefix is ignored.
    """
    name = strip_rep(name)
    if _COCO.fullmatch(name):
        return "COCO"
    if _IMAGENET.fullmatch(name):
        return "ImageNet"
    return "Scene"


def stimulus_path(stimuli_root: str | os.PathLike, name: str) -> Path:
    """Path of the image shown in a trial: ``.../Presented_Stimuli/<category>/<name>``.

    Parameters
    ----------
    stimuli_root : str or path-like
        The folder holding ``BOLD5000_Stimuli/`` (the release root), or the
        ``Presented_Stimuli`` folder itself (the one with ``COCO/``, ``ImageNet/``, ``Scene/``).
    name : str
        The name in a stimulus list (a ``rep_`` prefix is stripped).
    """
    folder = Path(stimuli_root)
    if (folder / STIMULI_SUBPATH).is_dir() or not any(
            (folder / c).is_dir() for c in IMAGE_CATEGORIES):
        folder = folder / STIMULI_SUBPATH
    return folder / image_category(name) / strip_rep(name)


def read_stim_list(path: str | os.PathLike) -> list[str]:
    """Read a stimulus list: one image name per trial, in presentation order.

    Parameters
    ----------
    path : str or path-like
        E.g. ``ROIs/stim_lists/CSI01_stim_lists.txt``. Blank lines (a final newline, CRLF
        endings) are ignored.

    Returns
    -------
    list of str
        The names as written (``rep_`` prefixes kept).

    Raises
    ------
    InputDataError
        The file is missing or unreadable, empty, or a line holds more than one name.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "stimulus list does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(path, f"cannot read the stimulus list as text: {exc}") from exc
    names = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) > 1:
            raise InputDataError(path, f"expected one image name, got {name!r}", line=line_no)
        names.append(name)
    if not names:
        raise InputDataError(path, "stimulus list names no trials")
    return names


def describe_stim_list(names: Sequence[str]) -> dict[str, Any]:
    """Count trials, distinct images and repeats of a stimulus list.

    Parameters
    ----------
    names : sequence of str
        Names in presentation order (``rep_`` prefixes kept).

    Returns
    -------
    dict
        ``n_trials``, ``n_images``, ``n_repeated`` (images shown more than once),
        ``showings`` (number of showings -> number of images), ``bare_not_first`` (repeated
        images whose unprefixed showing is not their first), ``no_bare`` (repeated images
        with no unprefixed showing) and ``categories`` (images per source).
    """
    shows: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        shows.setdefault(strip_rep(name), []).append(k)
    counts = [len(i) for i in shows.values()]
    bare = {b: [i for i in idx if not names[i].startswith(REP_PREFIX)]
            for b, idx in shows.items() if len(idx) > 1}
    images = [image_category(b) for b in shows]
    return {
        "n_trials": len(names), "n_images": len(shows), "n_repeated": len(bare),
        "showings": {c: counts.count(c) for c in sorted(set(counts))},
        "bare_not_first": sum(1 for b, i in bare.items() if i and i[0] != shows[b][0]),
        "no_bare": sum(1 for i in bare.values() if not i),
        "categories": {c: images.count(c) for c in IMAGE_CATEGORIES},
    }


@dataclass
class RoiPatterns:
    """Per-trial ROI patterns of one subject and TR, as read from the release.

    Attributes
    ----------
    patterns : dict of str to numpy.ndarray
        ROI -> (n_trials, n_voxels) array, rows in presentation order.
    names : list of str
        The stimulus list, one name per row (``rep_`` prefixes kept).
    subject, tr : str
        E.g. ``"CSI1"``, ``"TR34"``.
    path, stim_list : pathlib.Path
        The ROI file and the stimulus list read.
    transposed : list of str
        ROIs stored (n_voxels, n_trials), transposed on reading.
    """

    patterns: dict[str, np.ndarray]
    names: list[str]
    subject: str
    tr: str
    path: Path
    stim_list: Path
    transposed: list[str] = field(default_factory=list)


def _read_h5_arrays(path: Path, rois: Sequence[str]) -> dict[str, np.ndarray]:
    if not h5py.is_hdf5(path):
        raise InputDataError(path, "not an HDF5 file")
    with h5py.File(path, "r") as f:
        _check_rois_present(path, rois, [k for k in f if isinstance(f[k], h5py.Dataset)])
        return {roi: f[roi][()] for roi in rois}


def _read_mat_arrays(path: Path, rois: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        mat = scipy.io.loadmat(path, variable_names=list(rois))
    except NotImplementedError:  # MATLAB v7.3: an HDF5 file, transposed as seen by h5py
        return _read_h5_arrays(path, rois)
    except Exception as exc:  # scipy raises assorted errors on non-MATLAB content
        raise InputDataError(path, f"not a readable MATLAB file: {exc}") from exc
    if any(r not in mat for r in rois):  # name what the file does hold
        mat = {name: None for name, _shape, _cls in scipy.io.whosmat(path)}
    _check_rois_present(path, rois, list(mat))
    return {roi: np.asarray(mat[roi]) for roi in rois}


def _check_rois_present(path: Path, rois: Sequence[str], found: Sequence[str]) -> None:
    missing = [r for r in rois if r not in found]
    if missing:
        raise InputDataError(path, f"missing ROI(s) {missing} (it holds {sorted(found)[:12]})")


def _orient(path: Path, roi: str, a: np.ndarray, n_trials: int, stim: Path) -> tuple[
        np.ndarray, bool]:
    if not np.issubdtype(a.dtype, np.number):
        raise InputDataError(path, f"ROI {roi!r} is not numeric ({a.dtype})")
    if a.ndim != 2:
        raise InputDataError(path, f"ROI {roi!r} must be 2D (n_trials, n_voxels): {a.shape}")
    if a.shape[0] == n_trials:
        return a, False
    if a.shape[1] == n_trials:
        return a.T, True
    raise InputDataError(path, f"ROI {roi!r} has shape {a.shape}: neither dimension equals "
                         f"the {n_trials} trials of {stim}")


def read_roi_patterns(
    root: str | os.PathLike,
    subject: str,
    tr: str = "TR34",
    fmt: str = "auto",
    *,
    rois: Sequence[str] = ROIS,
    dtype: DTypeLike = np.float64,
) -> RoiPatterns:
    """Read a subject's per-trial ROI patterns and stimulus list, and validate them.

    Parameters
    ----------
    root, subject, tr
        See :func:`roi_file`.
    fmt : {"auto", "h5", "mat"}, default="auto"
        ``"auto"`` reads the ``.h5`` file if it exists, else the ``.mat`` file.
    rois : sequence of str, default=ROIS
        The ROIs to read (each must be present).
    dtype : dtype, default=float64
        dtype of the returned arrays.

    Returns
    -------
    RoiPatterns
        Arrays (n_trials, n_voxels) in presentation order, with the stimulus list. An array
        stored (n_voxels, n_trials) (as MATLAB-written HDF5 appears to h5py) is transposed
        when only that orientation matches the stimulus list; a square one is kept as is.

    Raises
    ------
    InputDataError
        Naming the file: missing, unreadable, an ROI missing or not numeric, rows that match
        neither the stimulus list's length nor (transposed) its columns, NaN or infinite
        values; or a missing/empty stimulus list.
    """
    if fmt == "auto":
        h5 = roi_file(root, subject, tr, "h5")
        path = h5 if h5.is_file() else roi_file(root, subject, tr, "mat")
        if not path.is_file():
            raise InputDataError(h5, f"ROI file does not exist (nor {path.name} in mat/)")
    else:
        path = roi_file(root, subject, tr, fmt)
    stim = stim_list_file(root, subject)
    names = read_stim_list(stim)
    if not path.is_file():
        raise InputDataError(path, "ROI file does not exist")
    arrays = _read_h5_arrays(path, rois) if path.suffix == ".h5" else _read_mat_arrays(
        path, rois)
    patterns: dict[str, np.ndarray] = {}
    out = RoiPatterns(patterns, names, subject, tr, path, stim)
    for roi in rois:
        a, flipped = _orient(path, roi, arrays.pop(roi), len(names), stim)
        out.transposed += [roi] if flipped else []
        a = np.ascontiguousarray(a, dtype=dtype)
        bad = ~np.isfinite(a)
        if bad.any():
            rows = (np.flatnonzero(bad.any(axis=1))[:5] + 1).tolist()
            raise InputDataError(path, f"ROI {roi!r} has {int(bad.sum())} NaN or infinite "
                                 f"values (trials {rows}, 1-based)")
        patterns[roi] = a
    return out


def average_repeats(
    patterns: Mapping[str, np.ndarray] | np.ndarray,
    names: Sequence[str],
    repeats: str = "average",
) -> tuple[dict[str, np.ndarray] | np.ndarray, list[str]]:
    """One pattern per image: the showings of an image (``rep_`` stripped) combined.

    Parameters
    ----------
    patterns : mapping of str to array, or array
        Arrays (n_trials, n_voxels), rows in the order of ``names``.
    names : sequence of str
        Image of each trial (``rep_`` prefixes allowed).
    repeats : {"average", "first"}, default="average"
        ``"average"``: the mean of all showings; ``"first"``: the first showing in
        presentation order, whether or not it carries the prefix.

    Returns
    -------
    patterns : dict of str to numpy.ndarray, or numpy.ndarray
        Same type as given, (n_images, n_voxels), images in the order of their first showing.
    images : list of str
        The image names without ``rep_``.
    """
    if repeats not in REPEAT_MODES:
        raise ValueError(f"repeats must be one of {REPEAT_MODES}, not {repeats!r}")
    base = [strip_rep(n) for n in names]
    code: dict[str, int] = {}
    inverse = np.fromiter((code.setdefault(b, len(code)) for b in base), dtype=np.int64,
                          count=len(base))
    images = list(code)
    order = np.argsort(inverse, kind="stable")  # trials grouped by image, in showing order
    counts = np.bincount(inverse, minlength=len(images))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first_rows = order[starts]

    def combine(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[0] != len(base):
            raise ValueError(f"{x.shape[0]} rows but {len(base)} names")
        if repeats == "first":
            return x[first_rows]
        sums = np.add.reduceat(x[order].astype(np.result_type(x.dtype, np.float64)), starts,
                               axis=0)
        return (sums / counts.reshape(-1, *([1] * (x.ndim - 1)))).astype(
            np.result_type(x.dtype, np.float32), copy=False)

    if isinstance(patterns, Mapping):
        return {k: combine(v) for k, v in patterns.items()}, images
    return combine(patterns), images


def load_roi_rdms(
    root: str | os.PathLike,
    subjects: Sequence[str] = SUBJECTS,
    tr: str = "TR34",
    repeats: str = "average",
    *,
    method: str = "correlation",
    fmt: str = "auto",
    rois: Sequence[str] = ROIS,
    pattern_key: str = PATTERN_KEY,
    dtype: DTypeLike = np.float64,
    progress: bool = True,
) -> dict[str, RDMs]:
    """ROI RDMs of each subject: :func:`read_roi_patterns`, :func:`average_repeats`, then
    :func:`emolib.rsa.calc_rdms_from_patterns` (one RDM per ROI).

    Parameters
    ----------
    root, tr, fmt, rois
        See :func:`read_roi_patterns`.
    subjects : sequence of str, default=("CSI1", "CSI2", "CSI3")
        Subjects.
    repeats : {"average", "first"}, default="average"
        See :func:`average_repeats`.
    method : str, default="correlation"
        Dissimilarity (1 - Pearson r, the study's choice).
    pattern_key : str, default="id"
        Pattern descriptor receiving the image names (without ``rep_``).
    dtype : dtype, default=float64
        dtype of the dissimilarities (float32 halves the memory of 12 million pairs per RDM).
    progress : bool, default=True
        Show a progress bar over subjects.

    Returns
    -------
    dict of str to rsatoolbox.rdm.RDMs
        Per subject, one RDM per ROI (rdm descriptors ``roi``, ``subject``; descriptors
        ``tr``, ``repeats``, ``file``), ids in the order of first showing. Match subjects by
        id (:func:`common_images`, :func:`select_images`), never by position.
    """
    out: dict[str, RDMs] = {}
    for subject in tqdm(list(subjects), desc="BOLD5000 ROI RDMs", unit="subject",
                        disable=not progress):
        data = read_roi_patterns(root, subject, tr, fmt, rois=rois)
        averaged, images = average_repeats(data.patterns, data.names, repeats)
        try:
            rdms = calc_rdms_from_patterns(averaged, images, method=method, descriptor="roi",
                                           pattern_key=pattern_key, dtype=dtype,
                                           rdm_descriptors={"subject": subject})
        except ValueError as exc:  # e.g. a constant pattern has no correlation distance
            raise InputDataError(data.path, str(exc)) from exc
        rdms.descriptors.update({"tr": tr, "repeats": repeats, "file": str(data.path)})
        out[subject] = rdms
    return out


@dataclass
class ImageOverlap:
    """Which images several inputs hold in common (matched by name).

    Attributes
    ----------
    ids : list of str
        The images every input holds, in the first input's order.
    counts : dict of str to int
        Images per input.
    """

    ids: list[str]
    counts: dict[str, int]

    @property
    def n_common(self) -> int:
        """Number of images common to all inputs."""
        return len(self.ids)

    def table(self) -> pd.DataFrame:
        """A pandas DataFrame: images per input, common images and images left out."""
        table = pd.DataFrame({"images": self.counts}).rename_axis("input")
        return table.assign(common=self.n_common, **{"left out": table["images"] - self.n_common})


def _ids_of(item: Any, pattern_key: str) -> list[str]:
    if isinstance(item, RDMs):
        return [str(v) for v in get_pattern_ids(item, pattern_key)]
    return [Path(str(v)).name if isinstance(v, os.PathLike) else str(v) for v in item]


def common_images(
    rdms_by_subject: Mapping[str, Any] | RDMs | Sequence[str],
    *others: Mapping[str, Any] | RDMs | Sequence[str],
    pattern_key: str = PATTERN_KEY,
) -> ImageOverlap:
    """The images all inputs hold, matched by name, with the count of each input.

    Parameters
    ----------
    rdms_by_subject : mapping of str to RDMs (or id sequences), or RDMs, or ids
        E.g. the output of :func:`load_roi_rdms`; each entry is one input.
    *others : same types
        More inputs, e.g. the layer RDMs of the network (named ``"layers"`` when they carry
        a ``layer`` descriptor, else ``"input<k>"``) or a list of image names or paths.
    pattern_key : str, default="id"
        Pattern descriptor holding the ids of RDMs.

    Returns
    -------
    ImageOverlap
        ``ids`` (in the first input's order), ``counts`` per input, ``n_common`` and
        ``table()``. The original study reported 2,985 common images: exactly the ``.jpg``
        files of the 4,916 (2,000 COCO + 985 Scene), as if its listing matched ``*.jpg`` and
        dropped the ImageNet ``.JPEG`` and Scene ``.jpeg`` ones; CSI1-3 share all 4,916.
    """
    inputs: dict[str, list[str]] = {}
    for k, item in enumerate((rdms_by_subject, *others)):
        if isinstance(item, Mapping):
            for name, value in item.items():
                inputs[str(name)] = _ids_of(value, pattern_key)
        else:
            is_layers = isinstance(item, RDMs) and "layer" in item.rdm_descriptors
            name = "layers" if is_layers and "layers" not in inputs else f"input{k}"
            inputs[name] = _ids_of(item, pattern_key)
    common = set.intersection(*(set(v) for v in inputs.values()))
    first = next(iter(inputs.values()))
    return ImageOverlap([i for i in dict.fromkeys(first) if i in common],
                        {k: len(set(v)) for k, v in inputs.items()})


def select_images(rdms: RDMs, ids: Sequence[str], pattern_key: str = PATTERN_KEY) -> RDMs:
    """The RDMs restricted to the images ``ids``, in that order (a gather on condensed vectors).

    Raises ValueError if an id is missing from ``rdms`` or repeated in ``ids``.

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
        RDMs whose ``pattern_descriptors[pattern_key]`` hold every id of ``ids``.
    ids : sequence of str
        The images to keep, each once (e.g. :attr:`ImageOverlap.ids`).
    pattern_key : str, default="id"
        Pattern descriptor holding the ids.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        Same descriptors; pattern descriptors follow the new order (``index`` renumbered).
    """
    own = get_pattern_ids(rdms, pattern_key).tolist()
    pos_of = {v: k for k, v in enumerate(own)}
    ids = list(ids)
    missing = [i for i in ids if i not in pos_of]
    if missing:
        raise ValueError(f"{len(missing)} ids are not in the RDMs, e.g. {missing[:3]}")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    pos = np.array([pos_of[i] for i in ids], dtype=np.int64)
    n, m = len(own), len(ids)
    a, b = np.triu_indices(m, 1)
    lo, hi = np.minimum(pos[a], pos[b]), np.maximum(pos[a], pos[b])
    diss = rdms.dissimilarities[:, lo * n - lo * (lo + 1) // 2 + (hi - lo - 1)]
    pattern_descriptors = {
        k: [v[int(p)] for p in pos] for k, v in rdms.pattern_descriptors.items() if k != "index"
    }
    pattern_descriptors["index"] = list(range(m))
    return RDMs(
        diss, dissimilarity_measure=rdms.dissimilarity_measure,
        descriptors=dict(rdms.descriptors), rdm_descriptors=dict(rdms.rdm_descriptors),
        pattern_descriptors=pattern_descriptors,
    )
