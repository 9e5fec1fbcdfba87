"""Native scanner space and the files that sit beside ds000113's BOLD runs, for the generator.

Each subject of ds000113 lies in its own scanner space: the head sits at another place and
angle in the field of view, so the same voxel index is a different piece of brain in every
subject, and the affines differ (rotations of a few degrees, shifts of millimetres). After the
break between runs 4 and 5 the subject was repositioned, so runs 5-8 may sit slightly apart
from runs 1-4. :func:`subject_affines` draws such affines; :func:`template_index` maps a
subject's voxels onto the template grid the generator plants its brain in, so that the
brain is sampled anew in every subject's grid.

:func:`write_sidecars` writes what the real tree has beside each run: a top-level
``task-movie_bold.json`` with the BIDS ``RepetitionTime`` (2.00000061 s in ds000113), per-run
dcmstack JSON dumps *without* a top-level ``RepetitionTime``, ``_events.tsv`` with one row
per video frame and ``_defacemask.nii.gz``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "BIDS_TR", "FRAME_RATE", "brain_mask", "rigid_transform", "subject_affines", "template_index",
    "write_run_sidecars", "write_top_sidecar",
]

#: RepetitionTime of ds000113's top-level ``task-movie_bold.json`` (s), for a 2 s header TR.
BIDS_TR = 2.00000061
#: Video frames per second of the movie stimulus (one ``events.tsv`` row per frame).
FRAME_RATE = 25.0


def rigid_transform(angles_deg, shift_mm) -> np.ndarray:
    """4 x 4 world-space rotation (x, then y, then z, degrees) about the origin, then a shift."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rz @ ry @ rx
    out[:3, 3] = np.asarray(shift_mm, dtype=float)
    return out


def subject_affines(
    template_affine: np.ndarray,
    n_runs: int,
    rng: np.random.Generator,
    *,
    max_rotation: float = 3.0,
    max_shift: float = 4.0,
    break_shift: float = 0.5,
    break_after: int = 4,
) -> list[np.ndarray]:
    """Affines of one subject's runs in its own scanner space.

    The subject's head is rotated by up to ``max_rotation`` degrees about each axis and shifted
    by up to ``max_shift`` mm along each axis (uniform draws) relative to the template;
    runs after ``break_after`` are moved once more by ``break_shift`` mm in a random
    direction (repositioning after the break). ``max_rotation = max_shift = break_shift = 0``
    gives the template affine for every run (aligned data).

    Returns
    -------
    list of numpy.ndarray
        One affine per run (runs 1..n_runs).
    """
    head = rigid_transform(rng.uniform(-max_rotation, max_rotation, 3),
                           rng.uniform(-max_shift, max_shift, 3))
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction) or 1.0
    moved = rigid_transform((0, 0, 0), break_shift * direction) @ head
    return [(head if r <= break_after else moved) @ template_affine
            for r in range(1, n_runs + 1)]


def template_index(affine: np.ndarray, template_affine: np.ndarray,
                   shape: tuple[int, int, int]) -> np.ndarray:
    """For every voxel of a grid with ``affine``, the flat index of the nearest template voxel.

    Both grids have ``shape``; voxels whose centre falls outside the template grid get -1.

    Returns
    -------
    numpy.ndarray
        int64 array of ``prod(shape)`` entries (C order).
    """
    ijk = np.indices(shape).reshape(3, -1)
    to_template = np.linalg.inv(template_affine) @ affine
    uvw = np.rint(to_template[:3, :3] @ ijk + to_template[:3, 3:]).astype(np.int64)
    inside = np.all((uvw >= 0) & (uvw < np.asarray(shape)[:, None]), axis=0)
    flat = np.full(ijk.shape[1], -1, dtype=np.int64)
    flat[inside] = np.ravel_multi_index(tuple(uvw[:, inside]), shape)
    return flat


def write_top_sidecar(bids_dir: str | os.PathLike, tr: float, task: str = "movie") -> Path:
    """The top-level ``task-<task>_bold.json`` holding the BIDS ``RepetitionTime``.

    For a 2 s TR the value is ds000113's 2.00000061 s (the header says 2.0).
    """
    value = BIDS_TR if abs(tr - 2.0) < 1e-9 else tr
    path = Path(bids_dir) / f"task-{task}_bold.json"
    path.write_text(json.dumps({"RepetitionTime": value, "TaskName": task,
                                "CogAtlasID": "trm_4c8a834779883"}, indent=2))
    return path


def write_run_sidecars(bold: Path, affine: np.ndarray, shape: tuple[int, ...], tr: float,
                       movie_start: float, rng: np.random.Generator) -> list[Path]:
    """Files beside one run: dcmstack JSON, ``_events.tsv`` and ``_defacemask.nii.gz``.

    The JSON is a dcmstack dump (``dcmmeta_*`` keys, the DICOM values under
    ``global.const``, TR in ms there): no top-level ``RepetitionTime``, as in ds000113.
    ``events.tsv`` has one row per video frame (``onset duration frameidx videotime
    audiotime lasttrigger``).
    """
    stem = bold.name[: -len("_bold.nii.gz")]
    js = bold.with_name(f"{stem}_bold.json")
    js.write_text(json.dumps({
        "dcmmeta_shape": list(shape), "dcmmeta_affine": np.asarray(affine).tolist(),
        "dcmmeta_reorient_transform": np.eye(4).tolist(), "dcmmeta_slice_dim": 2,
        "dcmmeta_version": 0.6,
        "global": {"const": {"RepetitionTime": tr * 1000.0, "EchoTime": 30.0,
                             "FlipAngle": 90, "MagneticFieldStrength": 3,
                             "Manufacturer": "Philips Medical Systems",
                             "ImagingFrequency": 127.7}},
    }))
    n_vol = shape[3]
    n_frames = int(np.floor(n_vol * tr * FRAME_RATE))
    onset = np.arange(n_frames) / FRAME_RATE + float(rng.uniform(0.0, 0.02))
    video = movie_start + np.arange(n_frames) / FRAME_RATE
    last = np.floor(onset / tr) * tr
    ev = bold.with_name(f"{stem}_events.tsv")
    with open(ev, "w") as fh:
        fh.write("onset\tduration\tframeidx\tvideotime\taudiotime\tlasttrigger\n")
        np.savetxt(fh, np.column_stack([onset, np.full(n_frames, 1 / FRAME_RATE),
                                        np.arange(n_frames), video, video, last]),
                   fmt=["%.3f", "%.3f", "%d", "%.2f", "%.2f", "%.3f"], delimiter="\t")
    deface = np.ones(shape[:3], dtype=np.uint8)
    deface[:, : max(1, shape[1] // 6), : max(1, shape[2] // 3)] = 0  # the face corner
    dm = bold.with_name(f"{stem}_defacemask.nii.gz")
    nib.save(nib.Nifti1Image(deface, affine), dm)
    return [js, ev, dm]


def brain_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """A brain-shaped (ellipsoidal, flattened at the bottom) boolean mask of the grid."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    x, y, z = grid
    inside = (x / 0.85) ** 2 + (y / 0.92) ** 2 + ((z - 0.05) / 0.9) ** 2 <= 1.0
    return inside & (z > -0.75)
