"""Generated StudyForrest-shaped data with a planted ground truth.

:func:`generate_studyforrest` writes a dataset in exactly the ds000113 ``ses-movie`` layout
(BIDS names, gzipped int16 NIfTI, TR in the header, a 3 x 3 x 3.3 mm affine) in which each
emotion class drives an HRF-convolved response in its own region of a brain-shaped mask, on
top of a global signal, slow drift, physiological-like oscillations and AR(1) noise. The
truth (region masks, brain mask, generating parameters) is written *next to* the BIDS tree,
never inside it::

    <out_dir>/ds000113/              BIDS tree (what a reader of real data would get)
    <out_dir>/annotations/           generated annotation CSVs (only when none are given)
    <out_dir>/truth/generation.json  parameters, classes, timing, region centres
    <out_dir>/truth/brain_mask.nii.gz, truth/region-<CLASS>_mask.nii.gz

The labels that drive the signal are the consensus labels (:func:`emolib.forrest.consensus_labels`)
of the annotation files: the real Labs et al. files when given, otherwise generated files in
the same CSV format (:func:`generate_annotations`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.glm.first_level import compute_regressor
from tqdm.auto import tqdm

from emolib.forrest.labels import consensus_labels, select_classes
from emolib.forrest.timing import STUDYFORREST, RunTiming
from emolib.io.annotations import COLUMNS, read_observers
from emolib.io.bids import STUDYFORREST_SUBJECTS, bold_path
from emolib.paths import atomic_output_dir

__all__ = [
    "DEFAULT_CLASSES", "VOXEL_SIZE", "affine_for", "brain_mask", "find_truth",
    "generate_annotations", "generate_studyforrest", "plant_regions", "read_truth",
]

#: Voxel size (mm) of ds000113 ``ses-movie`` BOLD images.
VOXEL_SIZE = (3.0, 3.0, 3.3)
#: Classes of generated annotations (the 5 the original project used).
DEFAULT_CLASSES = ("ANGERRAGE", "FEAR", "HAPPINESS", "LOVE", "SADNESS")
_CHARACTERS = ("FORREST", "JENNY", "DAN", "BUBBA", "MRSGUMP")
_AVD = {  # plausible arousal, valence, direction per generated class
    "ANGERRAGE": ("HIGH", "NEG", "OTHER"), "FEAR": ("HIGH", "NEG", "SELF"),
    "HAPPINESS": ("LOW", "POS", "SELF"), "LOVE": ("LOW", "POS", "OTHER"),
    "SADNESS": ("LOW", "NEG", "SELF"),
}


def affine_for(shape: tuple[int, int, int], voxel_size=VOXEL_SIZE) -> np.ndarray:
    """A RAS affine with the given voxel size whose grid is centred on the origin."""
    aff = np.diag([*voxel_size, 1.0])
    aff[:3, 3] = -np.asarray(voxel_size) * (np.asarray(shape) - 1) / 2.0
    return aff


def brain_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """A brain-shaped (ellipsoidal, flattened at the bottom) boolean mask of the grid."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    x, y, z = grid
    inside = (x / 0.85) ** 2 + (y / 0.92) ** 2 + ((z - 0.05) / 0.9) ** 2 <= 1.0
    return inside & (z > -0.75)


def plant_regions(mask: np.ndarray, classes: tuple[str, ...], radius: float,
                  rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Place one spherical region per class inside the mask, well apart.

    Centres are chosen among the voxels at least ``radius / 2`` inside the brain by
    farthest-point sampling: the first is a candidate farthest from the middle of the brain,
    each next one a candidate farthest from the centres so far (ties drawn with ``rng``), so
    that regions never touch.

    Returns the region masks and their centres (voxel indices).

    Raises
    ------
    ValueError
        If the grid is too small for the regions to be at least one voxel apart.
    """
    from scipy.ndimage import binary_erosion

    shape = mask.shape
    core = binary_erosion(mask, iterations=max(1, int(math.ceil(radius / 2))))
    candidates = np.argwhere(core if core.any() else mask).astype(float)
    scale = np.array([1.0, 1.0, 1.1])  # voxels are 3 x 3 x 3.3 mm
    idx = np.indices(shape).reshape(3, -1).T
    min_d = np.linalg.norm((candidates - candidates.mean(axis=0)) * scale, axis=1)
    centres_idx: list[int] = []
    for _ in classes:
        far = np.flatnonzero(min_d >= min_d.max() - 1e-9)
        nxt = int(far[rng.integers(len(far))])
        centres_idx.append(nxt)
        d = np.linalg.norm((candidates - candidates[nxt]) * scale, axis=1)
        min_d = d if len(centres_idx) == 1 else np.minimum(min_d, d)
    centres = candidates[centres_idx]
    if len(classes) > 1:
        gaps = [np.linalg.norm((a - b) * scale) for i, a in enumerate(centres)
                for b in centres[i + 1:]]
        if min(gaps) < 2 * radius + 1:
            raise ValueError(f"cannot place {len(classes)} regions of radius {radius} in a "
                             f"grid of shape {shape}; use a larger grid or smaller radius")
    regions, out = {}, {}
    for c, centre in zip(classes, centres, strict=True):
        d2 = (((idx - centre) * scale) ** 2).sum(axis=1)
        regions[c] = (d2 <= radius ** 2).reshape(shape) & mask
        out[c] = [int(v) for v in centre]
    return regions, out


def generate_annotations(
    out_dir: str | os.PathLike,
    duration: float,
    n_observers: int = 9,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    seed: int = 0,
    prefix: str = "av1o",
) -> list[Path]:
    """Write annotation CSVs in the Labs et al. format for a movie of ``duration`` seconds.

    A hidden sequence of emotional episodes (8-40 s, separated by 4-20 s gaps, each of a
    random class) is annotated by every observer with probability 0.85, with jittered start
    and end times, a different class with probability 0.1, and occasional rows with an empty
    emotion (as in the real files).

    Returns
    -------
    list of pathlib.Path
        The files written, ``<prefix>01.csv`` ...
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    episodes = []
    t = float(rng.uniform(2, 10))
    while t < duration - 8:
        length = float(rng.uniform(8, 40))
        episodes.append((t, min(t + length, duration), classes[rng.integers(len(classes))]))
        t += length + float(rng.uniform(4, 20))
    paths = []
    for o in range(1, n_observers + 1):
        path = out_dir / f"{prefix}{o:02d}.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(COLUMNS)
            for start, end, emo in episodes:
                if rng.random() > 0.85:
                    continue
                if rng.random() < 0.1:
                    emo = classes[rng.integers(len(classes))]
                s = max(0.0, start + rng.normal(0, 1.5))
                e = max(s + 1.0, end + rng.normal(0, 1.5))
                arousal, valence, direction = _AVD.get(emo, ("LOW", "POS", "SELF"))
                label = "" if rng.random() < 0.05 else emo
                w.writerow([f"{s:.1f}", f"{e:.1f}", _CHARACTERS[rng.integers(len(_CHARACTERS))],
                            arousal, valence, direction, label,
                            " ".join(sorted(rng.choice(["FACE", "VERBAL", "GESTURE", "CONTEXT"],
                                                       size=rng.integers(1, 3), replace=False))),
                            ["SCENEEND", "EMOCHANGE", "CHARLEFT", "EMOFADED"][rng.integers(4)]])
        paths.append(path)
    return paths


def _class_regressors(labels, classes, frame_times: np.ndarray, tr: float) -> np.ndarray:
    """HRF-convolved (Glover) boxcars of each class's labelled steps, at ``frame_times``."""
    out = np.zeros((len(classes), len(frame_times)))
    for i, c in enumerate(classes):
        onsets = labels.loc[(labels["label"] == c).fillna(False), "onset"].to_numpy(float)
        # steps more than the HRF's 32 s before the first frame cannot reach any frame
        onsets = onsets[(onsets >= frame_times[0] - 32.0) & (onsets <= frame_times[-1])]
        if onsets.size == 0:
            continue
        cond = np.vstack([onsets, np.full(onsets.size, tr), np.ones(onsets.size)])
        reg, _ = compute_regressor(cond, "glover", frame_times, oversampling=4,
                                   min_onset=-(frame_times[0] + 32.0))
        out[i] = reg[:, 0]
    return out


def generate_studyforrest(
    out_dir: str | os.PathLike,
    n_subjects: int = 3,
    shape: tuple[int, int, int] = (80, 80, 35),
    timing: RunTiming = STUDYFORREST,
    annotations_dir: str | os.PathLike | None = None,
    annotation_pattern: str = "av1o*.csv",
    label_mode: str = "seed",
    classes: tuple[str, ...] | None = None,
    effect_size: float = 0.02,
    noise: float = 0.01,
    region_radius: float | None = None,
    null: bool = False,
    seed: int = 0,
    overwrite: bool | str = False,
    progress: bool = True,
) -> Path:
    """Write a ds000113-shaped dataset with emotion-driven responses in planted regions.

    Parameters
    ----------
    out_dir : str or path-like
        Folder to create; see the module docstring for its layout.
    n_subjects : int, default=3
        Subjects, named as the real ones (01, 02, 03, 04, 05, 06, 09, ...); up to 15.
    shape : tuple of int, default=(80, 80, 35)
        Voxel grid (the real one is 80 x 80 x 35 at 3 x 3 x 3.3 mm).
    timing : RunTiming, default=STUDYFORREST
        Movie-time position and length of each run (the real 8 runs by default).
    annotations_dir : str or path-like, optional
        Folder of real annotation CSVs to take the labels from; when ``None``, annotation
        files are generated into ``<out_dir>/annotations``.
    annotation_pattern : str, default="av1o*.csv"
        Glob of the annotation files.
    label_mode : {"seed", "category"}, default="seed"
        Consensus rule of the labels that drive the signal.
    classes : tuple of str, optional
        Classes that get a planted region; default: those with >= 70 consensus steps.
    effect_size : float, default=0.02
        Peak response as a fraction of the baseline intensity (2 % by default).
    noise : float, default=0.01
        Standard deviation of the voxel noise as a fraction of the baseline.
    region_radius : float, optional
        Radius (voxels) of each planted region; default scales with the grid.
    null : bool, default=False
        Plant nothing: the data then carry no information about the labels.
    seed : int, default=0
        Seed of everything random.
    overwrite : bool or "changed", default=False
        ``True`` replaces an existing ``out_dir``. Otherwise an existing complete dataset with
        the same parameters is reused; one with other parameters is an error, or, with
        ``"changed"``, is replaced (for folders the pipeline owns).
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    if not 1 <= n_subjects <= len(STUDYFORREST_SUBJECTS):
        raise ValueError(f"n_subjects must be in 1..{len(STUDYFORREST_SUBJECTS)}")
    shape = tuple(int(s) for s in shape)
    if region_radius is None:
        region_radius = max(1.5, min(shape) / 10)
    params = {
        "n_subjects": n_subjects, "shape": list(shape), "voxel_size": list(VOXEL_SIZE),
        "timing": {"starts": list(timing.starts), "n_volumes": list(timing.n_volumes),
                   "tr": timing.tr},
        "annotations_dir": None if annotations_dir is None else str(Path(annotations_dir)),
        "annotation_pattern": annotation_pattern, "label_mode": label_mode,
        "classes": None if classes is None else list(classes), "effect_size": effect_size,
        "noise": noise, "region_radius": region_radius, "null": null, "seed": seed,
    }
    truth_file = out_dir / "truth" / "generation.json"
    if out_dir.exists():
        if overwrite is True:
            shutil.rmtree(out_dir)
        elif truth_file.is_file():
            done = json.loads(truth_file.read_text())
            if done.get("parameters") == params:
                return out_dir
            if overwrite != "changed":
                raise FileExistsError(f"{out_dir} holds a dataset generated with other "
                                      "parameters; pass overwrite=True or choose another folder")
            shutil.rmtree(out_dir)
        elif any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} exists and is not a generated dataset")
    rng = np.random.default_rng(seed)
    with atomic_output_dir(out_dir) as tmp:
        (tmp / "truth").mkdir()

        # labels
        if annotations_dir is None:
            duration = timing.starts[-1] + timing.tr * timing.n_volumes[-1]
            generate_annotations(tmp / "annotations", duration, seed=seed)
            ann_dir, ann_pattern = tmp / "annotations", "av1o*.csv"
        else:
            ann_dir, ann_pattern = Path(annotations_dir), annotation_pattern
        labels = consensus_labels(read_observers(ann_dir, ann_pattern), tr=2.0, mode=label_mode)
        if classes is None and annotations_dir is None:
            classes = DEFAULT_CLASSES
        elif classes is None:
            classes = tuple(sorted(select_classes(labels, n_per_class=None)["label"].unique()))
        classes = tuple(classes)

        # space
        affine = affine_for(shape)
        mask = brain_mask(shape)
        regions, centres = plant_regions(mask, classes, region_radius, rng)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine),
                 tmp / "truth" / "brain_mask.nii.gz")
        for c, region in regions.items():
            nib.save(nib.Nifti1Image(region.astype(np.uint8), affine),
                     tmp / "truth" / f"region-{c}_mask.nii.gz")

        # BIDS metadata
        bids = tmp / "ds000113"
        bids.mkdir()
        subjects = STUDYFORREST_SUBJECTS[:n_subjects]
        (bids / "dataset_description.json").write_text(json.dumps({
            "Name": "Generated StudyForrest-shaped data (emolib.synthetic)",
            "BIDSVersion": "1.8.0", "DatasetType": "raw",
            "GeneratedBy": [{"Name": "emolib.synthetic.generate_studyforrest"}],
        }, indent=2))
        (bids / "participants.tsv").write_text(
            "participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
        (bids / "task-movie_bold.json").write_text(json.dumps(
            {"TaskName": "movie", "RepetitionTime": timing.tr}, indent=2))

        # signal
        inside = np.flatnonzero(mask.ravel())
        n_in = inside.size
        region_w = np.stack([regions[c].ravel()[inside] for c in classes]).astype(np.float32)
        phys_w = rng.normal(0, 1, (2, n_in)).astype(np.float32)
        # one HRF-convolved regressor per class and run, scaled so that the largest response is 1
        run_regs = [
            _class_regressors(labels, classes, start + timing.tr * np.arange(n_vol), 2.0)
            for start, n_vol in zip(timing.starts, timing.n_volumes, strict=True)
        ]
        peak = max(float(r.max()) for r in run_regs) or 1.0
        run_regs = [(r / peak).astype(np.float32) for r in run_regs]
        total = n_subjects * timing.n_runs
        bar = tqdm(total=total, desc="generating BOLD runs", unit="run", disable=not progress)
        for sub in subjects:
            base = np.full(n_in, 900.0, dtype=np.float32) * (
                1 + 0.1 * rng.standard_normal(n_in).astype(np.float32))
            gain = 0.0 if null else effect_size * float(rng.uniform(0.8, 1.2))
            for run, start, n_vol, reg in zip(timing.runs, timing.starts, timing.n_volumes,
                                              run_regs, strict=True):
                t = start + timing.tr * np.arange(n_vol)
                drift = np.cumsum(rng.normal(0, 0.0008, n_vol)).astype(np.float32)
                drift += (0.003 * np.cos(np.pi * np.arange(n_vol) / n_vol)).astype(np.float32)
                phys = np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
                                 for f in (0.11, 0.23)]).astype(np.float32) * 0.004
                ar = np.empty((n_vol, n_in), dtype=np.float32)
                eps = rng.standard_normal((n_vol, n_in), dtype=np.float32) * np.float32(noise)
                ar[0] = eps[0]
                for k in range(1, n_vol):
                    ar[k] = 0.3 * ar[k - 1] + eps[k]
                frac = 1 + gain * reg.T @ region_w + drift[:, None] + phys.T @ phys_w + ar
                vols = np.zeros((n_vol, *shape), dtype=np.int16)
                flat = vols.reshape(n_vol, -1)
                flat[:, inside] = np.clip(np.rint(base * frac), 1, 32767).astype(np.int16)
                outside = np.setdiff1d(np.arange(flat.shape[1]), inside)
                flat[:, outside] = rng.integers(0, 20, (n_vol, outside.size), dtype=np.int16)
                img = nib.Nifti1Image(np.moveaxis(vols, 0, -1), affine)
                img.header.set_xyzt_units("mm", "sec")
                img.header["pixdim"][4] = timing.tr
                img.header.set_data_dtype(np.int16)
                path = bold_path(bids, sub, run)
                path.parent.mkdir(parents=True, exist_ok=True)
                nib.save(img, path)
                bar.update()
        bar.close()
        truth = {
            "parameters": params, "classes": list(classes), "subjects": list(subjects),
            "region_centres": centres, "affine": affine.tolist(),
            "annotations": str(out_dir / "annotations") if annotations_dir is None
            else str(ann_dir),
            "note": "Each class drives an HRF-convolved (Glover) response of effect_size x "
                    "baseline in its region, from the consensus labels of the annotations "
                    f"({label_mode} mode); null=True plants nothing.",
        }
        (tmp / "truth" / "generation.json").write_text(json.dumps(truth, indent=2))
    return out_dir


def read_truth(out_dir: str | os.PathLike) -> dict:
    """Read the truth written beside a generated dataset: parameters and region masks.

    Returns
    -------
    dict
        The contents of ``truth/generation.json`` plus ``regions`` (class -> boolean array),
        ``brain_mask`` (boolean array) and ``timing`` (:class:`RunTiming`).
    """
    out_dir = Path(out_dir)
    truth = json.loads((out_dir / "truth" / "generation.json").read_text())
    truth["brain_mask"] = np.asanyarray(
        nib.load(out_dir / "truth" / "brain_mask.nii.gz").dataobj).astype(bool)
    truth["regions"] = {
        c: np.asanyarray(nib.load(out_dir / "truth" / f"region-{c}_mask.nii.gz").dataobj)
        .astype(bool) for c in truth["classes"]
    }
    tm = truth["parameters"]["timing"]
    truth["timing"] = RunTiming(tuple(tm["starts"]), tuple(tm["n_volumes"]), tm["tr"])
    return truth


def find_truth(bids_dir: str | os.PathLike | None, shape=None) -> dict | None:
    """The truth of the generated dataset a BIDS tree belongs to, or ``None`` for real data.

    Parameters
    ----------
    bids_dir : str or path-like, optional
        The BIDS folder the data were prepared from (``prepared.manifest["parameters"]
        ["bids_dir"]``); a generated dataset keeps ``truth/generation.json`` in its parent.
    shape : sequence of int, optional
        The data's grid; a truth on another grid raises ``ValueError``.

    Returns
    -------
    dict or None
        :func:`read_truth` of the dataset, ``None`` when there is no truth.
    """
    if not bids_dir:
        return None
    folder = Path(bids_dir).parent
    if not (folder / "truth" / "generation.json").is_file():
        return None
    truth = read_truth(folder)
    if shape is not None and tuple(truth["brain_mask"].shape) != tuple(shape):
        raise ValueError(f"the truth in {folder} has grid {truth['brain_mask'].shape}, the "
                         f"data {tuple(shape)}")
    return truth
