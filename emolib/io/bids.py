"""Reading and validating the ds000113 ``ses-movie`` BIDS tree.

Files: ``sub-XX/ses-movie/func/sub-XX_ses-movie_task-movie_run-R_bold.nii.gz``, 4D, TR in the
header. Every problem with an input file raises :class:`~emolib.errors.InputDataError` naming
the file: unreadable or truncated gzip, not 4D, wrong TR, runs of one subject with different
shapes or affines, a missing run, NaN or infinite values.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from emolib.errors import InputDataError

__all__ = [
    "RunInfo", "STUDYFORREST_SUBJECTS", "bold_path", "check_runs", "decode_bold",
    "find_runs", "read_bold", "read_run_info",
]

#: Subjects of ds000113 with the movie session.
STUDYFORREST_SUBJECTS = (
    "01", "02", "03", "04", "05", "06", "09", "10", "14", "15", "16", "17", "18", "19", "20",
)
_BOLD_RE = re.compile(
    r"sub-(?P<sub>[A-Za-z0-9]+)_ses-(?P<ses>[A-Za-z0-9]+)_task-(?P<task>[A-Za-z0-9]+)"
    r"_run-(?P<run>\d+)_bold\.nii(\.gz)?$"
)


def bold_path(bids_dir: str | os.PathLike, subject: str, run: int, session: str = "movie",
              task: str = "movie") -> Path:
    """Path of one run's BOLD file in a BIDS tree (whether or not it exists)."""
    name = f"sub-{subject}_ses-{session}_task-{task}_run-{run}_bold.nii.gz"
    return Path(bids_dir) / f"sub-{subject}" / f"ses-{session}" / "func" / name


def find_runs(
    bids_dir: str | os.PathLike,
    subjects: list[str] | None = None,
    runs: list[int] | None = None,
    session: str = "movie",
    task: str = "movie",
) -> pd.DataFrame:
    """List the BOLD runs of a BIDS tree.

    Parameters
    ----------
    bids_dir : str or path-like
        Root of the dataset (holds ``sub-*`` folders).
    subjects : list of str, optional
        Subject labels without ``sub-``; default: every subject that has a run.
    runs : list of int, optional
        Runs every subject must have; default: the union of runs found.
    session, task : str
        BIDS entities of the files.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject``, ``run``, ``path``, sorted.

    Raises
    ------
    InputDataError
        If the folder does not exist, has no run, or a subject lacks one of the runs.
    """
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputDataError(bids_dir, "BIDS folder does not exist")
    found = []
    for path in sorted(bids_dir.glob(f"sub-*/ses-{session}/func/sub-*_bold.nii*")):
        m = _BOLD_RE.search(path.name)
        if m and m["ses"] == session and m["task"] == task:
            found.append((m["sub"], int(m["run"]), path))
    table = pd.DataFrame(found, columns=["subject", "run", "path"])
    if subjects is not None:
        missing = sorted(set(subjects) - set(table["subject"]))
        if missing:
            raise InputDataError(bids_dir, f"no ses-{session} BOLD run for subject(s) "
                                           f"{', '.join('sub-' + s for s in missing)}")
        table = table[table["subject"].isin(subjects)]
    if table.empty:
        raise InputDataError(bids_dir, f"no ses-{session} task-{task} BOLD run found")
    wanted = sorted(set(table["run"])) if runs is None else sorted(runs)
    for sub, grp in table.groupby("subject"):
        lacking = sorted(set(wanted) - set(grp["run"]))
        if lacking:
            raise InputDataError(bold_path(bids_dir, sub, lacking[0], session, task),
                                 f"missing run(s) {lacking} of sub-{sub}")
    table = table[table["run"].isin(wanted)]
    return table.sort_values(["subject", "run"]).reset_index(drop=True)


@dataclass(frozen=True)
class RunInfo:
    """What the header of one BOLD run says."""

    path: Path
    shape: tuple[int, int, int, int]
    affine: np.ndarray
    tr: float
    dtype: np.dtype


def _tr_seconds(header: nib.Nifti1Header) -> float:
    tr = float(header.get_zooms()[3])
    _, t_unit = header.get_xyzt_units()
    return {"msec": tr / 1000.0, "usec": tr / 1e6}.get(t_unit, tr)


def read_run_info(path: str | os.PathLike, expected_tr: float | None = 2.0,
                  tr_tolerance: float = 1e-3) -> RunInfo:
    """Read and check one BOLD run's header without loading its data.

    Raises
    ------
    InputDataError
        If the file is missing or not a NIfTI image, is not 4D, or its TR differs from
        ``expected_tr`` by more than ``tr_tolerance`` seconds.
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
    if expected_tr is not None and abs(tr - expected_tr) > tr_tolerance:
        raise InputDataError(path, f"TR in the header is {tr:g} s, expected {expected_tr:g} s")
    return RunInfo(path, shape, img.affine.copy(), tr, img.get_data_dtype())


def check_runs(infos: list[RunInfo], atol: float = 1e-4) -> None:
    """Check that runs share one spatial shape and affine.

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

    The gzip stream is inflated in one call and the array is a view on that buffer
    (no further copy; scaling is applied only when the header asks for it). Faster than
    reading through :mod:`gzip`, and equal to ``nibabel.load(path).dataobj`` (a test checks).

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
            d = zlib.decompressobj(wbits=31)
            raw = d.decompress(raw)
            if not d.eof:
                raise InputDataError(path, "gzip stream is truncated (file cut short)")
    except zlib.error as err:
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
