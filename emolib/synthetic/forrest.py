"""Generated StudyForrest-shaped data with a planted ground truth.

:func:`generate_studyforrest` writes a dataset in exactly the ds000113 ``ses-movie`` layout
(BIDS names, gzipped int16 NIfTI, TR in the header and, by BIDS inheritance, in the top-level
sidecar, dcmstack JSONs, events and deface masks beside each run, a subject without the movie
session, 3 x 3 x 3.3 mm voxels), each subject in its own native scanner space
(:mod:`emolib.synthetic.native`), in which each emotion class drives an HRF-convolved response
in its own region of a brain-shaped mask, on top of a stimulus-locked **scene** signal that
every subject shares and that knows nothing of the emotions (:mod:`emolib.synthetic.scenes`:
what makes a random split of volumes leak, as in real movie fMRI), a global signal, slow drift,
physiological-like oscillations and AR(1) noise. With ``layout="aligned"`` it writes the
StudyForrest aligned derivative's layout instead. The truth (region masks, brain mask,
generating parameters) is written *next to* the data, never inside them::

    <out_dir>/ds000113/              BIDS tree (what a reader of real data would get), or
    <out_dir>/studyforrest-data-aligned/   for layout="aligned"
    <out_dir>/annotations/           generated annotation CSVs (only when none are given)
    <out_dir>/truth/generation.json  parameters, classes, timing, region centres
    <out_dir>/truth/scenes.tsv, truth/scene_envelope.nii.gz   the scene signal's scenes and reach
    <out_dir>/truth/brain_mask.nii.gz, truth/region-<CLASS>_mask.nii.gz   template grid
    <out_dir>/truth/sub-XX/brain_mask.nii.gz, .../region-<CLASS>_mask.nii.gz   subject grid

The labels that drive the signal are the consensus labels (:func:`emolib.forrest.consensus_labels`)
of the annotation files: the real Labs et al. files when given, otherwise generated files in
the same CSV format (:func:`generate_annotations`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.glm.first_level import compute_regressor
from tqdm.auto import tqdm

from emolib.forrest.labels import consensus_labels, select_classes
from emolib.forrest.timing import STUDYFORREST, RunTiming
from emolib.io.annotations import COLUMNS, read_observers
from emolib.io.bids import BIDS_LAYOUTS, STUDYFORREST_SUBJECTS, bold_path
from emolib.manifest import sha256_file
from emolib.paths import atomic_output_dir
from emolib.synthetic.native import (
    brain_mask,
    subject_affines,
    template_index,
    write_run_sidecars,
    write_top_sidecar,
)
from emolib.synthetic.scenes import (
    SCENE_FEATURES,
    SCENE_LOG_SD,
    SCENE_MEAN_DURATION,
    scene_envelope,
    scene_model,
)

__all__ = [
    "DEFAULT_CLASSES", "VOXEL_SIZE", "affine_for", "brain_mask", "class_regressors",
    "dataset_folder", "generate_annotations", "generate_studyforrest", "plant_regions",
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
    emotion (as in the real files). Every observer annotates at least one episode (the last
    one when chance skipped all the others).

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
    if not episodes:
        raise ValueError(f"a movie of {duration:g} s is too short for an annotated episode "
                         "(at least 18 s)")
    paths = []
    for o in range(1, n_observers + 1):
        path = out_dir / f"{prefix}{o:02d}.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(COLUMNS)
            n_rows = 0
            for k, (start, end, emo) in enumerate(episodes):
                # every observer annotates one episode at least (the reader refuses header-only)
                if rng.random() > 0.85 and (n_rows or k + 1 < len(episodes)):
                    continue
                n_rows += 1
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


def class_regressors(labels, classes, frame_times: np.ndarray, tr: float) -> np.ndarray:
    """HRF-convolved (Glover) boxcars of each class's labelled steps, at ``frame_times``.

    ``frame_times`` are the movie times of one run's volumes; ``tr`` is the length of a label
    step. Only the steps shown in that run (at least partly after its first frame) drive it.
    A moment shown before the run started was seen in the previous run, before the break; it
    evokes nothing here (and the labelling gives the run's first volumes no label,
    :meth:`emolib.forrest.RunTiming.volume_table`).
    """
    out = np.zeros((len(classes), len(frame_times)))
    for i, c in enumerate(classes):
        onsets = labels.loc[(labels["label"] == c).fillna(False), "onset"].to_numpy(float)
        # a step drives the run when part of it was on screen during the run
        onsets = onsets[(onsets + tr > frame_times[0] + 1e-9) & (onsets <= frame_times[-1])]
        if onsets.size == 0:
            continue
        cond = np.vstack([onsets, np.full(onsets.size, tr), np.ones(onsets.size)])
        reg, _ = compute_regressor(cond, "glover", frame_times, oversampling=4,
                                   min_onset=-(tr + 1.0))  # relative to frame_times[0]
        out[i] = reg[:, 0]
    return out


def class_responses(labels, classes, timing: RunTiming) -> list[np.ndarray]:
    """The planted response of each class in each run: one HRF-convolved regressor per class
    (:func:`class_regressors`) at the run's volumes, all scaled so that the largest response
    of any class in any run is 1; a ``(n_classes, n_volumes)`` float32 array per run. The
    generator multiplies them by ``effect_size`` and plants them in the classes' regions."""
    run_regs = [
        class_regressors(labels, classes, start + timing.tr * np.arange(n_vol), 2.0)
        for start, n_vol in zip(timing.starts, timing.n_volumes, strict=True)
    ]
    peak = max(float(r.max()) for r in run_regs) or 1.0
    return [(r / peak).astype(np.float32) for r in run_regs]


def dataset_folder(layout: str = "bids") -> str:
    """Name of the data folder inside a generated dataset: ``ds000113`` (raw BIDS) or
    ``studyforrest-data-aligned`` (the aligned derivative)."""
    return "studyforrest-data-aligned" if layout == "aligned" else "ds000113"


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
    scene_size: float = 0.01,
    native_space: bool = True,
    max_rotation: float = 3.0,
    max_shift: float | None = None,
    break_shift: float = 0.5,
    layout: str = "bids",
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
        Plant nothing: the data then carry no information about the labels (the scene signal,
        which carries none either, is still there).
    scene_size : float, default=0.01
        Size of the stimulus-locked **scene** signal, shared by all subjects and independent
        of the emotion labels: the standard deviation, over scenes, of the sustained response
        of the most stimulus-driven voxels, as a fraction of the baseline
        (:func:`emolib.synthetic.scenes.scene_model`: the movie is cut into scenes of
        lognormal length, mean 12 s, each with its own random pattern over the whole brain,
        strongest in "visual" and "auditory" cortex, HRF-convolved and sampled at each run's
        frames in movie time, so that the same movie moment evokes the same pattern in every
        subject and, once the response has risen after the break, in both runs of an overlap;
        each subject samples it in its own grid, exactly as the planted regions). Real movie
        fMRI is largely such a signal: inter-subject correlation reaches ~0.3-0.5 in sensory
        cortex (Hasson et al. 2004, Science 303:1634). With the default ``noise`` that is what
        1 % gives (measured on detrended, unsmoothed voxels: 0.49 where the envelope is 1, 0.06
        where it is 0.25; 2 % gives 0.79 and 0.21): a sustained-response sd of 1 %, i.e.
        scene-to-scene changes of 1-3 %, the size of visual responses and of the 2 % emotion
        effect. It is what a split that puts the same movie moment on both sides (the original
        random split of volumes) can recognise; 0 leaves it out (the data are then exactly
        those of a generator without it).
    native_space : bool, default=True
        Every subject in its own scanner space, as ds000113's raw data: its head rotated by
        up to ``max_rotation`` degrees and shifted by up to ``max_shift`` mm about each axis
        relative to the template the brain is planted in, the brain sampled anew in its
        grid (so voxel indices do not correspond across subjects), and runs 5-8 moved by
        ``break_shift`` mm more (repositioning after the break). ``False``: one grid for all.
    max_rotation, max_shift, break_shift : float
        See ``native_space`` (degrees, mm, mm). ``max_shift=None`` scales with the grid as
        the planted regions do: 4 mm on the real 80 x 80 x 35 grid, ``4 * min(shape) / 35``
        mm on smaller ones (so that a tiny demo grid is not harder than the real one).
    layout : {"bids", "aligned"}, default="bids"
        ``"bids"``: ds000113 as published (``ds000113/``: top-level ``task-movie_bold.json``,
        per-run dcmstack JSONs without ``RepetitionTime``, ``_events.tsv``,
        ``_defacemask.nii.gz``, and a subject without ``ses-movie``). ``"aligned"``: the
        StudyForrest aligned derivative (``studyforrest-data-aligned/sub-XX/in_bold3Tp2/
        sub-XX_task-avmovie_run-R_bold.nii.gz``; every run of a subject in that subject's
        template, no sidecars).
    seed : int, default=0
        Seed of everything random.
    overwrite : bool or "changed", default=False
        ``True`` replaces an existing ``out_dir``. Otherwise an existing complete dataset with
        the same parameters (for given annotation files, the same file contents too: their
        SHA-256 is one of the parameters) is reused; one with other parameters is an error,
        or, with ``"changed"``, is replaced (for folders the pipeline owns).
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    if layout not in BIDS_LAYOUTS:
        raise ValueError(f"layout must be one of {BIDS_LAYOUTS}, got {layout!r}")
    if not 1 <= n_subjects <= len(STUDYFORREST_SUBJECTS):
        raise ValueError(f"n_subjects must be in 1..{len(STUDYFORREST_SUBJECTS)}")
    shape = tuple(int(s) for s in shape)
    if region_radius is None:
        region_radius = max(1.5, min(shape) / 10)
    if max_shift is None:
        max_shift = round(4.0 * min(1.0, min(shape) / 35), 3)
    params = {
        "n_subjects": n_subjects, "shape": list(shape), "voxel_size": list(VOXEL_SIZE),
        "timing": {"starts": list(timing.starts), "n_volumes": list(timing.n_volumes),
                   "tr": timing.tr},
        "annotations_dir": None if annotations_dir is None else str(Path(annotations_dir)),
        "annotation_pattern": annotation_pattern, "label_mode": label_mode,
        "annotation_files": None if annotations_dir is None else {  # their contents as well
            f.name: sha256_file(f) for f in sorted(Path(annotations_dir).glob(annotation_pattern))},
        "classes": None if classes is None else list(classes), "effect_size": effect_size,
        "noise": noise, "region_radius": region_radius, "null": null,
        "scene_size": scene_size,
        "scene_model": {"mean_duration": SCENE_MEAN_DURATION, "log_sd": SCENE_LOG_SD,
                        "n_features": SCENE_FEATURES, "version": 1}, "seed": seed,
        "native_space": native_space, "max_rotation": max_rotation, "max_shift": max_shift,
        "break_shift": break_shift, "layout": layout,
    }
    truth_file = out_dir / "truth" / "generation.json"
    if out_dir.exists() and overwrite is not True:  # replaced atomically below, if at all
        if truth_file.is_file():
            done = json.loads(truth_file.read_text())
            if done.get("parameters") == params:
                return out_dir
            if overwrite != "changed":
                raise FileExistsError(f"{out_dir} holds a dataset generated with other "
                                      "parameters; pass overwrite=True or choose another folder")
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
        aligned = layout == "aligned"
        bids = tmp / dataset_folder(layout)
        bids.mkdir()
        subjects = STUDYFORREST_SUBJECTS[:n_subjects]
        (bids / "dataset_description.json").write_text(json.dumps({
            "Name": "Generated StudyForrest-shaped data (emolib.synthetic)",
            "BIDSVersion": "1.8.0", "DatasetType": "derivative" if aligned else "raw",
            "GeneratedBy": [{"Name": "emolib.synthetic.generate_studyforrest"}],
        }, indent=2))
        if not aligned:
            (bids / "participants.tsv").write_text(
                "participant_id\n" + "".join(f"sub-{s}\n" for s in (*subjects, "07")))
            write_top_sidecar(bids, timing.tr)
            # ds000113 also holds subjects without the movie session
            anat = bids / "sub-07" / "ses-forrestgump" / "anat"
            anat.mkdir(parents=True)
            nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), affine),
                     anat / "sub-07_ses-forrestgump_T1w.nii.gz")

        # signal
        phys_t = rng.normal(0, 1, (2, mask.size)).astype(np.float32)  # template space
        region_t = np.stack([regions[c].ravel() for c in classes]).astype(np.float32)
        run_regs = class_responses(labels, classes, timing)
        # the stimulus-locked scene signal: one template-space time course per run, the same
        # in every subject (its own random streams: scene_size=0 leaves the rest unchanged)
        scenes = scene_model(shape, timing, seed)
        scene_maps_t = scenes["maps"]
        scene_tcs = [(scene_size * tc).astype(np.float32) for tc in scenes["timecourses"]]
        scenes["scenes"].to_csv(tmp / "truth" / "scenes.tsv", sep="\t", index=False,
                                float_format="%.3f")
        nib.save(nib.Nifti1Image(scene_envelope(shape).astype(np.float32), affine),
                 tmp / "truth" / "scene_envelope.nii.gz")
        total = n_subjects * timing.n_runs
        bar = tqdm(total=total, desc="generating BOLD runs", unit="run", disable=not progress)
        by_subject = {}
        for sub in subjects:
            base_t = np.full(mask.size, 900.0, dtype=np.float32) * (
                1 + 0.1 * rng.standard_normal(mask.size).astype(np.float32))
            gain = 0.0 if null else effect_size * float(rng.uniform(0.8, 1.2))
            if native_space:
                run_affines = subject_affines(
                    affine, timing.n_runs, rng, max_rotation=max_rotation, max_shift=max_shift,
                    break_shift=0.0 if aligned else break_shift)
            else:
                run_affines = [affine] * timing.n_runs
            maps_cache: dict[bytes, tuple] = {}
            for run, start, n_vol, reg, scene_tc, run_aff in zip(
                    timing.runs, timing.starts, timing.n_volumes, run_regs, scene_tcs,
                    run_affines, strict=True):
                key = run_aff.tobytes()
                if key not in maps_cache:  # the brain sampled in this run's grid
                    idx = template_index(run_aff, affine, shape)
                    inside = np.flatnonzero((idx >= 0) & mask.ravel()[np.maximum(idx, 0)])
                    src = idx[inside]
                    maps_cache[key] = (inside, src, np.setdiff1d(np.arange(idx.size), inside))
                inside, src, outside = maps_cache[key]
                if run == 1:
                    by_subject[sub] = (run_aff, inside, src)
                n_in = inside.size
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
                frac = (1 + gain * reg.T @ region_t[:, src] + drift[:, None]
                        + phys.T @ phys_t[:, src] + ar)
                if scene_size:  # sampled in this run's grid exactly as the regions are
                    frac += scene_tc @ scene_maps_t[:, src]
                vols = np.zeros((n_vol, *shape), dtype=np.int16)
                flat = vols.reshape(n_vol, -1)
                flat[:, inside] = np.clip(np.rint(base_t[src] * frac), 1, 32767).astype(np.int16)
                flat[:, outside] = rng.integers(0, 20, (n_vol, outside.size), dtype=np.int16)
                img = nib.Nifti1Image(np.moveaxis(vols, 0, -1), run_aff)
                img.header.set_xyzt_units("mm", "sec")
                img.header["pixdim"][4] = timing.tr
                img.header.set_data_dtype(np.int16)
                if aligned:
                    path = bold_path(bids, sub, run, task="avmovie", layout="aligned")
                else:
                    path = bold_path(bids, sub, run)
                path.parent.mkdir(parents=True, exist_ok=True)
                nib.save(img, path)
                if not aligned:
                    write_run_sidecars(path, run_aff, (*shape, n_vol), timing.tr, start, rng)
                bar.update()
        bar.close()
        # the truth in each subject's own grid (that of its runs 1-4)
        for sub, (run_aff, inside, src) in by_subject.items():
            folder = tmp / "truth" / f"sub-{sub}"
            folder.mkdir()
            sub_brain = np.zeros(mask.size, np.uint8)
            sub_brain[inside] = 1
            nib.save(nib.Nifti1Image(sub_brain.reshape(shape), run_aff),
                     folder / "brain_mask.nii.gz")
            for k, c in enumerate(classes):
                sub_region = np.zeros(mask.size, np.uint8)
                sub_region[inside] = region_t[k, src] > 0
                nib.save(nib.Nifti1Image(sub_region.reshape(shape), run_aff),
                         folder / f"region-{c}_mask.nii.gz")
        truth = {
            "parameters": params, "classes": list(classes), "subjects": list(subjects),
            "region_centres": centres, "affine": affine.tolist(), "layout": layout,
            "bids_folder": dataset_folder(layout),
            "annotations": str(out_dir / "annotations") if annotations_dir is None
            else str(ann_dir),
            "n_scenes": len(scenes["scenes"]),
            "note": "Each class drives an HRF-convolved (Glover) response of effect_size x "
                    "baseline in its region, from the consensus labels of the annotations "
                    f"({label_mode} mode); null=True plants nothing. On top, in every "
                    "subject, a stimulus-locked scene signal independent of the labels "
                    "(scenes.tsv: lognormal scenes of mean "
                    f"{SCENE_MEAN_DURATION:g} s in movie time, each a random pattern of "
                    f"{SCENE_FEATURES} smooth feature maps weighted by scene_envelope, "
                    "HRF-convolved) of scene_size x baseline (sd over scenes where the "
                    "envelope is 1); present also with null=True, absent with scene_size=0.",
        }
        (tmp / "truth" / "generation.json").write_text(json.dumps(truth, indent=2))
    return out_dir
