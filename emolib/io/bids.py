"""Reading and validating the ds000113 ``ses-movie`` BOLD runs, raw or aligned.

Two layouts are read (``layout``):

``"bids"`` (default): OpenNeuro ds000113 as published, each subject in its own scanner space
    ``sub-XX/ses-movie/func/sub-XX_ses-movie_task-movie_run-R_bold.nii.gz`` (R not zero-padded),
    beside it a dcmstack JSON dump without a top-level ``RepetitionTime`` (the BIDS value,
    2.00000061 s, is inherited from the top-level ``task-movie_bold.json``), ``_events.tsv``
    and ``_defacemask.nii.gz``. Subjects of ds000113 without ``ses-movie`` are skipped with a
    note; files with other entities (``acq-``, ``rec-``, ``echo-`` ...) are reported, never
    silently dropped into a "missing run" error, and chosen with ``entities``.
``"aligned"``: the StudyForrest aligned derivative (repository
    ``psychoinformatics-de/studyforrest-data-aligned``):
    ``sub-XX/in_bold3Tp2/sub-XX_task-avmovie_run-R_bold.nii.gz``, every run of a subject
    motion-corrected and resliced into that subject's own BOLD template (``bold3Tp2``). Note
    that this aligns the runs *within* a subject, not subjects to each other: those templates
    are still per subject (group alignment needs the transforms of
    ``studyforrest-data-templatetransforms``). No JSON sidecars: the TR comes from the header.

Every problem with an input file raises :class:`~emolib.errors.InputDataError` naming the
file: unreadable or truncated gzip, not 4D, a TR that disagrees with its sidecar or with the
expected one, grids (shape, voxel size) that differ from the others, a missing run, NaN or
infinite values. Affines that differ between subjects are expected (native space) and never
an error; within a subject a shift beyond a tolerance is a :class:`GridWarning`.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from emolib.errors import InputDataError

try:  # ISA-L's inflate: about 2-3x zlib's speed, the same bytes (tests compare with nibabel)
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - isal is in requirements.txt; zlib is the fallback
    _inflate = zlib
_INFLATE_ERRORS = tuple({zlib.error, _inflate.error})

__all__ = [
    "ALIGNED_TEMPLATE", "BIDS_LAYOUTS", "GridWarning", "RunInfo", "RunScan",
    "STUDYFORREST_SUBJECTS", "affine_shift_mm", "bold_path", "check_grids", "check_runs",
    "decode_bold", "find_runs", "parse_bids_name", "read_bold", "read_run_info",
    "read_sidecar", "read_subject_mask", "scan_runs",
]

#: Subjects of ds000113 with the movie session.
STUDYFORREST_SUBJECTS = (
    "01", "02", "03", "04", "05", "06", "09", "10", "14", "15", "16", "17", "18", "19", "20",
)
#: Layouts :func:`scan_runs` reads.
BIDS_LAYOUTS = ("bids", "aligned")
#: Template space of the StudyForrest aligned derivative.
ALIGNED_TEMPLATE = "bold3Tp2"
_DEFAULT_TASK = {"bids": "movie", "aligned": "avmovie"}
_KEY_RE = re.compile(r"^(?P<key>[A-Za-z]+)-(?P<value>[A-Za-z0-9]+)$")


class GridWarning(UserWarning):
    """Runs of one subject whose affines differ by more than the tolerance."""


def parse_bids_name(name: str) -> tuple[dict[str, str], str, str] | None:
    """Split a BIDS file name into entities, suffix and extension.

    ``"sub-01_ses-movie_task-movie_run-1_bold.nii.gz"`` gives
    ``({"sub": "01", "ses": "movie", "task": "movie", "run": "1"}, "bold", ".nii.gz")``;
    a name that is not ``key-value_..._suffix.ext`` gives ``None``.
    """
    base, dot, ext = name.partition(".")
    parts = base.split("_")
    if len(parts) < 2:
        return None
    entities = {}
    for part in parts[:-1]:
        m = _KEY_RE.match(part)
        if m is None:
            return None
        entities[m["key"]] = m["value"]
    return entities, parts[-1], dot + ext


def bold_path(bids_dir: str | os.PathLike, subject: str, run: int, session: str = "movie",
              task: str = "movie", layout: str = "bids",
              template: str = ALIGNED_TEMPLATE) -> Path:
    """Path of one run's BOLD file in either layout (whether or not it exists)."""
    if layout == "aligned":
        name = f"sub-{subject}_task-{task}_run-{run}_bold.nii.gz"
        return Path(bids_dir) / f"sub-{subject}" / f"in_{template}" / name
    name = f"sub-{subject}_ses-{session}_task-{task}_run-{run}_bold.nii.gz"
    return Path(bids_dir) / f"sub-{subject}" / f"ses-{session}" / "func" / name


@dataclass
class RunScan:
    """What :func:`scan_runs` found.

    Attributes
    ----------
    runs : pandas.DataFrame
        Columns ``subject``, ``run``, ``path``: the runs selected, sorted.
    skipped : dict of str to str
        Subjects left out, with the reason (e.g. no ``ses-movie``).
    other_entities : list of pathlib.Path
        BOLD files of the session and task that carry other entities than those asked for
        (``acq-``, ``rec-``, ``echo-`` ...), not selected.
    """

    runs: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    other_entities: list[Path] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """One sentence per subject skipped and per group of files not selected."""
        out = [f"sub-{s} skipped: {why}" for s, why in sorted(self.skipped.items())]
        if self.other_entities:
            names = ", ".join(p.name for p in self.other_entities[:4])
            more = len(self.other_entities) - 4
            out.append(f"{len(self.other_entities)} BOLD file(s) with other entities not used "
                       f"({names}{f' and {more} more' if more > 0 else ''}); choose them "
                       "with entities=")
        return out


def _layout_dir(root: Path, subject: str, layout: str, session: str, template: str) -> Path:
    if layout == "aligned":
        return root / f"sub-{subject}" / f"in_{template}"
    return root / f"sub-{subject}" / f"ses-{session}" / "func"


def _describe(path: Path, keep: set[str]) -> str:
    parsed = parse_bids_name(path.name)
    extra = {k: v for k, v in (parsed[0] if parsed else {}).items() if k not in keep}
    return f"{path.name} ({', '.join(f'{k}-{v}' for k, v in extra.items()) or 'no extra'})"


def scan_runs(
    root: str | os.PathLike,
    subjects: Sequence[str] | None = None,
    runs: Sequence[int] | None = None,
    *,
    layout: str = "bids",
    session: str = "movie",
    task: str | None = None,
    entities: Mapping[str, str] | None = None,
    template: str = ALIGNED_TEMPLATE,
) -> RunScan:
    """Find the BOLD runs of a ds000113 tree (raw BIDS or the aligned derivative).

    Parameters
    ----------
    root : str or path-like
        Root of the dataset (holds ``sub-*`` folders).
    subjects : sequence of str, optional
        Subject labels without ``sub-``. Default: every ``sub-*`` folder; those without the
        session (most of ds000113 has no ``ses-movie``) are skipped with a note.
    runs : sequence of int, optional
        Runs every subject must have; default: the union of runs found.
    layout : {"bids", "aligned"}, default="bids"
        See the module docstring.
    session : str, default="movie"
        BIDS session (``"bids"`` layout only).
    task : str, optional
        Task entity; default ``"movie"`` (bids) or ``"avmovie"`` (aligned).
    entities : mapping, optional
        Further entities the files must carry, e.g. ``{"acq": "mb"}``; default: none (a
        file with any other entity is listed in ``other_entities`` and not used).
    template : str, default="bold3Tp2"
        Template folder ``in_<template>`` of the aligned layout.

    Returns
    -------
    RunScan

    Raises
    ------
    InputDataError
        If the folder does not exist, has no run, a subject asked for has none, or a subject
        lacks one of the runs (the message lists files found with other entities).
    """
    if layout not in BIDS_LAYOUTS:
        raise ValueError(f"layout must be one of {BIDS_LAYOUTS}, got {layout!r}")
    root = Path(root)
    if not root.is_dir():
        raise InputDataError(root, "BIDS folder does not exist")
    task = task or _DEFAULT_TASK[layout]
    want = {"task": task, **({"ses": session} if layout == "bids" else {}),
            **dict(entities or {})}
    fixed = {"sub", "run", *want}
    explicit = subjects is not None
    if subjects is None:
        subjects = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir())
    found, skipped, others = [], {}, []
    for sub in subjects:
        folder = _layout_dir(root, sub, layout, session, template)
        if not folder.is_dir():
            skipped[sub] = (f"no ses-{session}/func folder" if layout == "bids"
                            else f"no in_{template} folder")
            continue
        n_before = len(found)
        for path in sorted(folder.glob("*_bold.nii*")):
            parsed = parse_bids_name(path.name)
            if parsed is None or parsed[2] not in (".nii", ".nii.gz"):
                continue
            ents, _, _ = parsed
            if ents.get("sub") != sub or "run" not in ents or not ents["run"].isdigit():
                continue
            if any(ents.get(k) != v for k, v in want.items()):
                if ents.get("task") == task and ents.get("ses", session) == session:
                    others.append(path)
                continue
            if set(ents) - fixed:
                others.append(path)
                continue
            found.append((sub, int(ents["run"]), path))
        if len(found) == n_before:
            skipped[sub] = f"no task-{task} BOLD run" + (
                f" with entities {dict(entities)}" if entities else "")
    table = pd.DataFrame(found, columns=["subject", "run", "path"])
    scan = RunScan(table, skipped, others)

    def _others_of(sub, run=None):
        hits = [p for p in others if p.name.startswith(f"sub-{sub}_")
                and (run is None or f"_run-{run}_" in p.name)]
        return ("; found instead: " + ", ".join(_describe(p, fixed) for p in hits)
                + " (select them with entities=)") if hits else ""

    if explicit:
        for sub in subjects:
            if sub in skipped:
                raise InputDataError(_layout_dir(root, sub, layout, session, template),
                                     f"sub-{sub}: {skipped[sub]}{_others_of(sub)}")
    if table.empty:
        raise InputDataError(root, f"no task-{task} BOLD run found in the {layout!r} layout"
                             + ("; " + "; ".join(scan.notes) if scan.notes else ""))
    wanted = sorted(set(table["run"])) if runs is None else sorted(runs)
    for sub, grp in table.groupby("subject"):
        lacking = sorted(set(wanted) - set(grp["run"]))
        if lacking:
            raise InputDataError(
                bold_path(root, sub, lacking[0], session, task, layout, template),
                f"missing run(s) {lacking} of sub-{sub}{_others_of(sub, lacking[0])}")
    scan.runs = table[table["run"].isin(wanted)].sort_values(
        ["subject", "run"]).reset_index(drop=True)
    return scan


def find_runs(
    bids_dir: str | os.PathLike,
    subjects: Sequence[str] | None = None,
    runs: Sequence[int] | None = None,
    session: str = "movie",
    task: str | None = None,
    **options,
) -> pd.DataFrame:
    """The runs table of :func:`scan_runs` (``subject``, ``run``, ``path``), its notes issued
    as warnings. ``options``: ``layout``, ``entities``, ``template``."""
    scan = scan_runs(bids_dir, subjects, runs, session=session, task=task, **options)
    for note in scan.notes:
        warnings.warn(note, stacklevel=2)
    return scan.runs


def read_sidecar(root: str | os.PathLike,
                 path: str | os.PathLike) -> tuple[dict, dict[str, Path]]:
    """Metadata of a BIDS file by the inheritance principle.

    Every ``*_<suffix>.json`` from the dataset root down to the file's folder whose entities
    are a subset of the file's applies; deeper files override shallower ones, and the
    file's own sidecar (same name, ``.json``) comes last.

    Returns
    -------
    dict, dict of str to pathlib.Path
        The merged metadata, and for each key the sidecar its value came from.
    """
    root, path = Path(root), Path(path)
    parsed = parse_bids_name(path.name)
    if parsed is None:
        return {}, {}
    ents, suffix, _ = parsed
    try:
        rel = path.parent.relative_to(root)
    except ValueError:
        rel = Path()
    folders = [root] + [root.joinpath(*rel.parts[:i + 1]) for i in range(len(rel.parts))]
    meta: dict = {}
    origin: dict[str, Path] = {}
    for folder in folders:
        cands = []
        for js in folder.glob(f"*_{suffix}.json"):
            p = parse_bids_name(js.name)
            if p is None or p[1] != suffix:
                continue
            if all(ents.get(k) == v for k, v in p[0].items()):
                cands.append((len(p[0]), js))
        for _, js in sorted(cands):
            try:
                data = json.loads(js.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError) as err:
                raise InputDataError(js, f"not a readable JSON sidecar ({err})") from None
            if not isinstance(data, dict):
                raise InputDataError(js, "JSON sidecar is not an object")
            meta.update(data)
            origin.update(dict.fromkeys(data, js))
    return meta, origin


@dataclass(frozen=True)
class RunInfo:
    """What the header (and the BIDS sidecars) of one BOLD run say."""

    path: Path
    shape: tuple[int, int, int, int]
    affine: np.ndarray
    tr: float
    dtype: np.dtype
    tr_source: str = "header"

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size (mm) from the affine."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def _tr_seconds(header: nib.Nifti1Header) -> float:
    tr = float(header.get_zooms()[3])
    _, t_unit = header.get_xyzt_units()
    return {"msec": tr / 1000.0, "usec": tr / 1e6}.get(t_unit, tr)


def read_run_info(path: str | os.PathLike, expected_tr: float | None = 2.0,
                  tr_tolerance: float = 1e-3,
                  bids_root: str | os.PathLike | None = None) -> RunInfo:
    """Read and check one BOLD run's header (and sidecars) without loading its data.

    Parameters
    ----------
    path : str or path-like
        The BOLD file.
    expected_tr : float or None, default=2.0
        TR (s) the run must have; ``None`` skips the check.
    tr_tolerance : float, default=1e-3
        Seconds by which two TRs may differ.
    bids_root : str or path-like, optional
        Dataset root: the TR is then read by BIDS inheritance (:func:`read_sidecar`) and
        checked against the header's.

    Raises
    ------
    InputDataError
        If the file is missing or not a NIfTI image, is not 4D, its sidecar TR and header TR
        disagree (naming both files), or its TR differs from ``expected_tr``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "file does not exist")
    try:
        img = nib.load(path)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error,
            gzip.BadGzipFile, ValueError) as err:
        raise InputDataError(path, f"not a readable NIfTI image ({err})") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) != 4:
        raise InputDataError(path, f"image is {len(shape)}D with shape {shape}; a 4D BOLD "
                                   "run (x, y, z, time) is needed")
    tr = _tr_seconds(img.header)
    source = "header"
    if bids_root is not None:
        meta, origins = read_sidecar(bids_root, path)
        if "RepetitionTime" in meta:
            origin = origins["RepetitionTime"]
            try:
                side_tr = float(meta["RepetitionTime"])
            except (TypeError, ValueError):
                raise InputDataError(origin, f"RepetitionTime {meta['RepetitionTime']!r} is "
                                             "not a number") from None
            if abs(side_tr - tr) > tr_tolerance:
                raise InputDataError(path, f"TR in the header is {tr:g} s but {origin} says "
                                           f"RepetitionTime {side_tr:g} s")
            tr, source = side_tr, str(origin)
    if expected_tr is not None and abs(tr - expected_tr) > tr_tolerance:
        where = "the header" if source == "header" else source
        raise InputDataError(path, f"TR in {where} is {tr:g} s, expected {expected_tr:g} s")
    return RunInfo(path, shape, img.affine.copy(), tr, img.get_data_dtype(), source)


def affine_shift_mm(a: np.ndarray, b: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance (mm) between where two affines put the corners of a voxel grid."""
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)])
    return float(np.linalg.norm((corners @ (a - b).T)[:, :3], axis=1).max())


def check_grids(
    infos: Mapping[str, Sequence[RunInfo]],
    *,
    shape: Sequence[int] | None = None,
    voxel_size: Sequence[float] | None = None,
    affine_tolerance: float = 1.0,
    voxel_tolerance: float = 1e-3,
) -> list[str]:
    """Check the runs' grids against what the network needs; native-space affines allowed.

    Every run of every subject must have the same spatial shape and voxel size (one input
    shape for the network: the first run's, or ``shape``/``voxel_size`` when given). Affines
    that differ between subjects are expected (each subject is in its own scanner space) and
    pass. Within a subject, a run whose grid sits more than ``affine_tolerance`` mm away from
    the subject's first run (:func:`affine_shift_mm`; e.g. repositioned after the break
    between runs 4 and 5) raises a :class:`GridWarning` naming both files.

    Returns
    -------
    list of str
        The warnings issued.

    Raises
    ------
    InputDataError
        Naming the first run whose shape or voxel size differs, and the reference file.
    """
    runs = [i for sub in infos.values() for i in sub]
    if not runs:
        return []
    ref = runs[0]
    want_shape = tuple(shape) if shape is not None else ref.shape[:3]
    want_vox = tuple(voxel_size) if voxel_size is not None else ref.voxel_size
    where = "the network's input" if shape is not None else ref.path.name
    messages = []
    for sub, sub_infos in infos.items():
        for info in sub_infos:
            if info.shape[:3] != want_shape:
                raise InputDataError(info.path, f"spatial shape {info.shape[:3]} differs from "
                                                f"{want_shape} of {where}: the network needs "
                                                "one grid for every subject and run")
            if not np.allclose(info.voxel_size, want_vox, atol=voxel_tolerance):
                raise InputDataError(info.path, "voxel size "
                                     f"{'x'.join(f'{v:.3g}' for v in info.voxel_size)} mm "
                                     f"differs from {'x'.join(f'{v:.3g}' for v in want_vox)} "
                                     f"mm of {where}")
        first = sub_infos[0]
        for info in sub_infos[1:]:
            shift = affine_shift_mm(info.affine, first.affine, info.shape[:3])
            if shift > affine_tolerance:
                msg = (f"sub-{sub}: the grid of {info.path.name} is {shift:.2f} mm away from "
                       f"that of {first.path.name} (tolerance {affine_tolerance:g} mm): the "
                       "subject moved between runs; voxels no longer correspond exactly")
                warnings.warn(msg, GridWarning, stacklevel=2)
                messages.append(msg)
    return messages


def check_runs(infos: list[RunInfo], atol: float = 1e-4) -> None:
    """Check that runs share one spatial shape and affine (one space, e.g. aligned data).

    Raises
    ------
    InputDataError
        Naming the first run whose shape or affine differs from the first run's.
    """
    if not infos:
        return
    ref = infos[0]
    for info in infos[1:]:
        if info.shape[:3] != ref.shape[:3]:
            raise InputDataError(info.path, f"spatial shape {info.shape[:3]} differs from "
                                            f"{ref.shape[:3]} of {ref.path.name}")
        if not np.allclose(info.affine, ref.affine, atol=atol):
            raise InputDataError(info.path, f"affine differs from that of {ref.path.name}:\n"
                                            f"{info.affine}\nvs\n{ref.affine}")


def read_bold(path: str | os.PathLike, info: RunInfo | None = None,
              expected_tr: float | None = 2.0) -> np.ndarray:
    """Read one BOLD run's data as an array ``(x, y, z, t)`` in its stored dtype.

    The gzip stream is inflated in one call (by ISA-L through ``isal`` when it is installed,
    else by :mod:`zlib`) and the array is a view on that buffer (no further copy; scaling is
    applied only when the header asks for it). Faster than reading through :mod:`gzip`, and
    equal to ``nibabel.load(path).dataobj`` (a test checks). Both libraries release the GIL
    while they inflate, so runs can be read on threads in parallel.

    Raises
    ------
    InputDataError
        For a truncated or corrupt file, a data block shorter than the header says, or NaN
        or infinite values.
    """
    path = Path(path)
    if info is None:
        info = read_run_info(path, expected_tr)
    return decode_bold(path, path.read_bytes(), info)


def decode_bold(path: str | os.PathLike, raw: bytes, info: RunInfo) -> np.ndarray:
    """Decode the bytes of a (gzipped) NIfTI file read from ``path``; see :func:`read_bold`."""
    path = Path(path)
    try:
        if raw[:2] == b"\x1f\x8b":
            d = _inflate.decompressobj(wbits=31)
            raw = d.decompress(raw)
            if not d.eof:
                raise InputDataError(path, "gzip stream is truncated (file cut short)")
    except _INFLATE_ERRORS as err:
        raise InputDataError(path, f"corrupt gzip data ({err})") from None
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))  # BytesIO shares, no copy
    offset = int(header["vox_offset"])
    dtype = header.get_data_dtype()
    n = int(np.prod(info.shape))
    if len(raw) < offset + n * dtype.itemsize:
        raise InputDataError(path, f"data block holds {max(len(raw) - offset, 0)} bytes, the "
                                   f"header needs {n * dtype.itemsize} (file truncated?)")
    data = np.frombuffer(raw, dtype=dtype, count=n, offset=offset).reshape(info.shape, order="F")
    slope, inter = header.get_slope_inter()
    if slope is not None and (slope != 1 or (inter or 0) != 0):
        data = data * np.float32(slope) + np.float32(inter or 0)
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            idx = np.argwhere(bad)[0]
            raise InputDataError(path, f"{int(bad.sum())} NaN or infinite value(s), first at "
                                       f"voxel {tuple(int(i) for i in idx[:3])}, volume "
                                       f"{int(idx[3])}")
    return data


def read_subject_mask(mask: str | os.PathLike, subject: str, shape: tuple[int, ...],
                      affine: np.ndarray, tolerance: float) -> np.ndarray:
    """One subject's mask from a path (``{subject}`` in it is replaced by the subject's
    label), checked against that subject's grid: the same shape, and an affine within
    ``tolerance`` mm (:func:`affine_shift_mm`); ``InputDataError`` naming the file else."""
    path = Path(str(mask).replace("{subject}", subject))
    if not path.is_file():
        raise InputDataError(path, f"mask file of sub-{subject} does not exist")
    try:
        mimg = nib.load(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is an input error
        raise InputDataError(path, f"not a readable NIfTI mask ({err})") from None
    if tuple(mimg.shape[:3]) != tuple(shape):
        raise InputDataError(path, f"mask grid {mimg.shape} does not match the data grid "
                                   f"{tuple(shape)}")
    shift = affine_shift_mm(mimg.affine, affine, shape)
    if shift > tolerance:
        raise InputDataError(path, f"mask grid sits {shift:.2f} mm away from the grid of "
                                   f"sub-{subject} (native space: give one mask per subject "
                                   "with '{subject}' in the path)")
    return np.asanyarray(mimg.dataobj).astype(bool)
