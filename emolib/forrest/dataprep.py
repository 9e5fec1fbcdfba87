"""Data preparation: labelled sample table, z-scored volume cache and manifest.

:func:`prepare_dataset` turns a ds000113-shaped BIDS tree and a folder of annotation files
into one output folder that later stages read fast::

    samples.csv      one row per cached volume: subject, run, volume, movie time, label ...
    volumes.npy      float32 (n_samples, x, y, z), standardised (``standardize``): each volume
                     z-scored by its own mean and std (the original), or each voxel's time
                     series detrended and z-scored within its run; inside the subject's mask
                     when one is used; open with mmap_mode="r"
    labels.csv       the consensus label of every step of the movie-time grid
    mask_sub-XX.nii.gz   each subject's z-scoring mask (all ones without a mask), its affine
    mask.nii.gz      their union on the voxel grid (voxels inside any subject's mask)
    mean_sub-XX.nii.gz   mean EPI image of each subject (raw intensities), its affine
    manifest.json    parameters, input hashes, versions, counts, per-subject affines, notes
    inputs.json      what the folder was made from: the parameters and the SHA-256 of every
                     input file (BOLD runs, sidecars, annotations, masks)
    input_files.json the size and modification time each input file had when hashed

**Native space.** Raw ds000113 has every subject in its own scanner space: one grid (shape,
voxel size) for all, checked, but affines that differ between subjects. Nothing here
resamples: the volumes are cached as acquired and the network sees unaligned native space,
as the original project's did; voxel ``(i, j, k)`` is a different piece of brain in each
subject. The aligned derivative (``layout="aligned"``) aligns each subject's runs to that
subject's own template, still not subjects to each other.

Everything is written into ``<out_dir>.partial``, renamed into place at the end: a failure
or a kill leaves no half-written output. An error deletes the partial folder; a kill or an
interrupt (Ctrl-C) leaves it, with a record of each subject it finished, and a rerun with the
same parameters resumes there, redoing only the subjects not finished (or whose run files
changed size or modification time since). A folder made from
the same parameters and input contents is reused (:attr:`PreparedData.reuse` says so); a
file whose size and modification time are unchanged is not read again to tell
(:func:`emolib.manifest.file_digests`).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from emolib.errors import InputDataError
from emolib.forrest.labels import LABEL_STEP_S, consensus_labels, select_classes
from emolib.forrest.standardize import zscore_volumes, zscore_voxels
from emolib.forrest.timing import STUDYFORREST, RunTiming, label_volumes
from emolib.forrest.windows import as_offsets, window_support
from emolib.io.annotations import read_observers
from emolib.io.bids import (
    affine_shift_mm,
    check_grids,
    decode_bold,
    read_run_info,
    read_subject_mask,
    scan_runs,
)
from emolib.manifest import (
    FILES_FILE,
    INPUTS_FILE,
    file_digests,
    fingerprint,
    package_versions,
    read_manifest,
    reuse_status,
    sha256_bytes,
    write_inputs,
    write_json,
    write_manifest,
)
from emolib.paths import atomic_output_dir

STAGE = "01_dataprep"
KEEP = ("selected", "labelled", "all")
STANDARDIZE = ("volume", "run")


@dataclass
class PreparedData:
    """What :func:`prepare_dataset` wrote, opened for reading.

    Attributes
    ----------
    folder : pathlib.Path
        The output folder.
    samples : pandas.DataFrame
        One row per cached volume (row ``i`` describes ``volumes[i]``): ``subject``, ``run``,
        ``volume``, ``movie_time``, ``stim_time``, ``label_tr``, ``overlap_run``, ``label``
        (missing for unlabelled volumes when ``keep`` was not ``"selected"``), ``selected``
        and ``y`` (class index into ``classes``, -1 when not selected).
    volumes : numpy.ndarray
        Memory-mapped float32 array ``(n_samples, x, y, z)``.
    classes : list of str
        The selected classes, sorted; ``y`` indexes this list.
    affine : numpy.ndarray
        Affine of the first subject (every subject's: ``affines``).
    mask : numpy.ndarray
        Union of the subjects' z-scoring masks (voxels inside any subject's mask).
    affines : dict of str to numpy.ndarray
        Each subject's affine (that of its first run): subjects differ in native space.
    labels : pandas.DataFrame
        Consensus labels of the movie-time grid.
    manifest : dict
        The stage's manifest.
    reuse : tuple of (str, str) or None
        ``(status, reason)`` of the :func:`prepare_dataset` call that returned this:
        ``"reuse"`` (the folder was made from the same parameters and input contents),
        ``"new"`` or ``"stale"`` (recomputed; the reason names what changed, see
        :func:`emolib.manifest.reuse_status`), ``"resume"`` (an interrupted run's finished
        subjects were kept, the others computed). None from :func:`load_prepared`.
    """

    folder: Path
    samples: pd.DataFrame
    volumes: np.ndarray
    classes: list[str]
    affine: np.ndarray
    mask: np.ndarray
    labels: pd.DataFrame
    manifest: dict
    affines: dict[str, np.ndarray]
    reuse: tuple[str, str] | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of what made these outputs: the stage's parameters, the hashes of its
        input files and the counts it recorded (preparation is deterministic given those,
        so a later stage may reuse its results while this stays the same)."""
        m = self.manifest
        return fingerprint({"parameters": m.get("parameters"), "inputs": m.get("inputs"),
                            "n_samples": m.get("outputs", {}).get("n_samples"),
                            "classes": self.classes})

    @property
    def tr(self) -> float:
        """Seconds between volumes: the repetition time the data were prepared with (the
        manifest's ``parameters.timing.tr``)."""
        try:
            return float(self.manifest["parameters"]["timing"]["tr"])
        except (KeyError, TypeError):
            raise ValueError(f"{self.folder / 'manifest.json'} records no repetition time "
                             "(parameters.timing.tr): prepare the data again") from None

    def subject_mask(self, subject: str) -> np.ndarray:
        """The z-scoring mask of one subject (boolean, on its own grid)."""
        return np.asanyarray(nib.load(self.folder / f"mask_sub-{subject}.nii.gz").dataobj
                             ).astype(bool)

    def mean_image(self, subject: str) -> nib.Nifti1Image:
        """Mean EPI image of one subject."""
        return nib.load(self.folder / f"mean_sub-{subject}.nii.gz")

    @property
    def y(self) -> np.ndarray:
        """Class index of every sample (-1 where not selected)."""
        return self.samples["y"].to_numpy()


def _read_raw(path: Path) -> tuple[bytes, dict]:
    st = os.stat(path)
    raw = path.read_bytes()
    return raw, {"sha256": sha256_bytes(raw), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


#: Record of the finished subjects in ``<out_dir>.partial`` (removed before the rename).
_PROGRESS = "progress.json"
#: Runs read and inflated ahead on threads (about 200 MB each at the real size): two use 2 cores.
_READERS = max(1, min(2, os.cpu_count() or 1))


def _finished_subjects(tmp: Path, key: str, infos: dict, n_rows: int, shape) -> dict:
    """Subjects an interrupted run finished in the partial folder ``tmp`` (for the same
    ``key``), with the records of their run files; those whose files changed are left out."""
    try:
        state = json.loads((tmp / _PROGRESS).read_text())
        vol = np.load(tmp / "volumes.npy", mmap_mode="r")
        same = state.get("key") == key and vol.shape == (n_rows, *shape)
        del vol
    except (OSError, ValueError):
        return {}
    done = {}
    for sub, records in state.get("subjects", {}).items() if same else ():
        paths = [str(i.path) for i in infos.get(sub, [])]
        stats = [os.stat(p) if os.path.exists(p) else None for p in paths]
        if sorted(records) == sorted(paths) and all(
            st is not None and (records[p]["size"], records[p]["mtime_ns"]) ==
            (st.st_size, st.st_mtime_ns) for p, st in zip(paths, stats, strict=True)
        ) and all((tmp / f"{kind}_sub-{sub}.nii.gz").is_file() for kind in ("mean", "mask")):
            done[sub] = records
    return done


def _check_reuse(out_dir: Path, params: dict, files: list[Path], reuse: bool
                 ) -> tuple[str, str, dict]:
    """``(status, reason, digests)`` of an earlier output in ``out_dir`` against these
    inputs (digests only where there was an earlier output to compare with)."""
    if not (out_dir / INPUTS_FILE).is_file():
        status, reason = reuse_status(out_dir, {})
        return status, reason, {}
    try:
        known = json.loads((out_dir / FILES_FILE).read_text())
    except (OSError, ValueError):
        known = {}
    digests = file_digests(files, known)
    inputs = {"parameters": params, "files": {p: d["sha256"] for p, d in digests.items()}}
    status, reason = reuse_status(out_dir, inputs, done="manifest.json")
    if status == "resume":  # a finished folder always has its manifest: this one is damaged
        status, reason = "stale", "manifest.json is missing"
    if status == "reuse" and not reuse:
        status, reason = "stale", "reuse=False"
    elif status == "reuse" and digests != known:  # touched, same contents: remember the stats
        write_json(out_dir / FILES_FILE, digests, indent=1)
    return status, reason, digests


def prepare_dataset(
    bids_dir: str | os.PathLike,
    annotations_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    annotation_pattern: str = "av1o*.csv",
    subjects: list[str] | None = None,
    timing: RunTiming = STUDYFORREST,
    label_mode: str = "seed",
    min_observers: int | None = None,
    hrf_lag: float = 4.0,
    min_count: int = 70,
    n_per_class: int | None = 70,
    classes: list[str] | None = None,
    keep: str = "selected",
    window: tuple[int, ...] | None = None,
    mask: str | os.PathLike | None = None,
    standardize: str = "volume",
    smoothing_fwhm: float | None = None,
    high_pass: float | None = None,
    expected_tr: float = 2.0,
    layout: str = "bids",
    entities: dict[str, str] | None = None,
    affine_tolerance: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    reuse: bool = True,
) -> PreparedData:
    """Prepare labelled, z-scored BOLD volumes of a ds000113-shaped dataset.

    Parameters
    ----------
    bids_dir : str or path-like
        Root of the BIDS tree (real ds000113 or generated).
    annotations_dir : str or path-like
        Folder of the annotation CSVs.
    out_dir : str or path-like
        Output folder; reused if it was made from the same parameters and input contents,
        else replaced (atomically, at the end).
    annotation_pattern : str, default="av1o*.csv"
        Glob of the annotation files (``"ao1o*.csv"`` for the audio-only observers).
    subjects : list of str, optional
        Subjects to use (labels without ``sub-``); default every subject with the movie
        session (the others are skipped with a note in the manifest).
    timing : RunTiming, default=STUDYFORREST
        Movie-time position of each run; every run must have the number of volumes it says.
    label_mode : {"seed", "category"}, default="seed"
        Consensus rule, see :func:`emolib.forrest.labels.consensus_labels`.
    min_observers : int, optional
        Agreement threshold; default half the observers, rounded up.
    hrf_lag : float, default=4.0
        Hemodynamic lag (s) between what is on screen and the volume that shows it.
    min_count, n_per_class, classes, seed
        Class selection and balancing on the label grid, see
        :func:`emolib.forrest.labels.select_classes` (the original: 70 and 70).
    keep : {"selected", "labelled", "all"}, default="selected"
        Which volumes go into the cache: those of selected steps (what training uses), all
        labelled ones, or every volume.
    window : sequence of int, optional
        Also cache what windows of these volume offsets around every selected volume need
        (e.g. ``range(-2, 4)``, :func:`emolib.forrest.window_samples`): its neighbours in the
        same run, unselected and unlabelled ones included (``selected`` False, ``y`` -1).
    mask : None, "epi" or path-like, default=None
        Z-score inside a brain mask: ``"epi"`` computes one per subject with
        :func:`nilearn.masking.compute_epi_mask` from that subject's first run; a path reads
        a mask NIfTI on the data's grid, and a path holding ``{subject}`` one mask per
        subject (needed in native space, where one mask fits one subject only). ``None``
        z-scores whole volumes (the original).
    standardize : {"volume", "run"}, default="volume"
        ``"volume"``: each volume z-scored by its own mean and std over its voxels
        (:func:`~emolib.forrest.zscore_volumes`, the original project's). ``"run"``: each
        voxel's time series linearly detrended and z-scored over all volumes of its run
        (:func:`~emolib.forrest.zscore_voxels`,
        as :func:`nilearn.signal.clean` with ``runs`` does), which removes each run's mean
        image, drift and gain: what decoding studies usually do. It uses no labels and no
        other run, so it cannot leak across a run split.
    high_pass : float, optional
        With ``standardize="run"``, also remove the cosine drifts below this frequency (Hz;
        SPM's and nilearn's 1/128 is the usual choice) from every voxel's time series.
    smoothing_fwhm : float, optional
        Full width at half maximum (mm) of a Gaussian spatial smoothing of every volume
        before standardisation (:func:`nilearn.image.smooth_img`, which computes it); None
        (the original) does not smooth. The mean images and EPI masks come from the
        unsmoothed data.
    expected_tr : float, default=2.0
        TR every run must have: by BIDS inheritance (top-level ``task-movie_bold.json``),
        checked against the header's, or the header's where no sidecar gives one.
    layout : {"bids", "aligned"}, default="bids"
        Raw ds000113 (native space) or the StudyForrest aligned derivative, see
        :func:`emolib.io.bids.scan_runs`.
    entities : dict, optional
        Further BIDS entities the runs must carry (e.g. ``{"acq": "x"}``).
    affine_tolerance : float, default=1.0
        Millimetres by which a run's grid may sit away from its subject's first run before a
        warning (:func:`emolib.io.bids.check_grids`); between subjects affines may differ.
    progress : bool, default=True
        Show a progress bar over runs, and say whether earlier outputs were reused.
    reuse : bool, default=True
        Reuse ``out_dir`` when it was made from the same parameters and input contents;
        ``False`` recomputes it whatever it holds.

    Returns
    -------
    PreparedData
        The opened outputs (see :func:`load_prepared`), with :attr:`PreparedData.reuse`.

    Raises
    ------
    InputDataError
        For any bad input file (see :mod:`emolib.io.bids` and :mod:`emolib.io.annotations`), or a
        run whose number of volumes differs from ``timing``.
    """
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
    if standardize not in STANDARDIZE:
        raise ValueError(f"standardize must be one of {STANDARDIZE}, got {standardize!r}")
    if smoothing_fwhm is not None and not smoothing_fwhm > 0:
        raise ValueError(f"smoothing_fwhm must be a positive number of mm or None, got "
                         f"{smoothing_fwhm!r}")
    if high_pass is not None and (standardize != "run" or not high_pass > 0):
        raise ValueError(f"high_pass must be a positive frequency (Hz) and needs "
                         f"standardize='run', got {high_pass!r} with {standardize!r}")
    bids_dir, annotations_dir, out_dir = Path(bids_dir), Path(annotations_dir), Path(out_dir)
    params = {
        "bids_dir": bids_dir, "annotations_dir": annotations_dir,
        "annotation_pattern": annotation_pattern, "subjects": subjects,
        "timing": {"starts": timing.starts, "n_volumes": timing.n_volumes, "tr": timing.tr},
        "label_mode": label_mode, "min_observers": min_observers, "hrf_lag": hrf_lag,
        "min_count": min_count, "n_per_class": n_per_class, "classes": classes, "keep": keep,
        "window": None if window is None else list(as_offsets(window)),
        "mask": None if mask is None else str(mask), "standardize": standardize,
        "smoothing_fwhm": smoothing_fwhm, "high_pass": high_pass, "expected_tr": expected_tr,
        "layout": layout, "entities": entities, "affine_tolerance": affine_tolerance,
        "seed": seed,
    }

    # 1. labels on the movie-time grid
    annotations = read_observers(annotations_dir, annotation_pattern)
    labels = consensus_labels(annotations, tr=LABEL_STEP_S, min_observers=min_observers,
                              mode=label_mode)
    selected = select_classes(labels, min_count=min_count, n_per_class=n_per_class,
                              classes=classes, seed=seed)
    class_list = sorted(selected["label"].unique())

    # 2. inputs: headers first, so that a bad file fails before any heavy work
    scan = scan_runs(bids_dir, subjects=subjects, runs=list(timing.runs), layout=layout,
                     entities=entities)
    for note in scan.notes:
        warnings.warn(note, stacklevel=2)
    runs = scan.runs
    infos = {}
    sidecar_root = bids_dir if layout == "bids" else None
    for sub, grp in runs.groupby("subject", sort=True):
        sub_infos = [read_run_info(p, expected_tr, bids_root=sidecar_root)
                     for p in grp["path"]]
        for info, run in zip(sub_infos, grp["run"], strict=True):
            if info.shape[3] != timing.n_volumes[run - 1]:
                raise InputDataError(info.path, f"has {info.shape[3]} volumes; run {run} of "
                                                f"the timing has {timing.n_volumes[run - 1]}")
        infos[sub] = sub_infos
    grid_notes = check_grids(infos, affine_tolerance=affine_tolerance)
    ref = next(iter(infos.values()))[0]
    shape, affine = ref.shape[:3], ref.affine
    affines = {sub: sub_infos[0].affine for sub, sub_infos in infos.items()}
    mask_arrs = {sub: read_subject_mask(mask, sub, shape, affines[sub], affine_tolerance)
                 for sub in infos} if mask is not None and str(mask) != "epi" else {}

    # 3. sample table
    vt = label_volumes(timing, labels, selected, hrf_lag=hrf_lag, label_step=LABEL_STEP_S)
    kept = {"selected": vt["selected"], "labelled": vt["label"].notna(), "all": True}[keep]
    if window is not None:  # the neighbours that windows of the selected volumes read
        kept = kept | window_support(vt, vt["selected"].to_numpy(bool), window)
    vt_keep = vt[np.broadcast_to(kept, len(vt))]
    subs = sorted(infos)
    samples = pd.concat([vt_keep.assign(subject=s) for s in subs], ignore_index=True)
    samples = samples[["subject", "run", "volume", "movie_time", "stim_time", "label_tr",
                       "overlap_run", "label", "selected"]]
    cls_index = {c: i for i, c in enumerate(class_list)}
    samples["y"] = [cls_index[lab] if sel else -1
                    for lab, sel in zip(samples["label"], samples["selected"], strict=True)]
    if samples.empty:
        raise InputDataError(bids_dir, "no volume falls on a selected label step: check the "
                                       "timing and the annotations")

    # 4. an earlier output made from the same inputs is reused
    small_files = sorted({Path(i.tr_source) for sub in subs for i in infos[sub]
                          if i.tr_source != "header"})
    small_files += sorted(annotations_dir.glob(annotation_pattern))
    if mask is not None and str(mask) != "epi":
        small_files += sorted({Path(str(mask).replace("{subject}", sub)) for sub in subs})
    input_files = [info.path for sub in subs for info in infos[sub]] + small_files
    status, reason, digests = _check_reuse(out_dir, params, input_files, reuse)
    # the small files were read above; the runs are hashed below as they are read
    small = file_digests(small_files, digests)
    if progress:
        print(f"{out_dir.name}: " + ("reused (same parameters and input contents)"
                                if status == "reuse" else f"preparing ({status}: {reason})"),
              flush=True)
    if status == "reuse":
        prepared = load_prepared(out_dir)
        prepared.reuse = (status, reason)
        return prepared

    with atomic_output_dir(out_dir, keep_partial=reuse) as tmp:
        # an interrupted run of the same job left finished subjects: resume after them
        key = fingerprint({"format": 1, "parameters": params, "shape": shape,
                           "samples": sha256_bytes(samples.to_csv(index=False).encode()),
                           "files": {p: d["sha256"] for p, d in small.items()},
                           "versions": package_versions()})
        done = _finished_subjects(tmp, key, infos, len(samples), shape)
        if not done:
            shutil.rmtree(tmp)
            tmp.mkdir()
        else:
            status, reason = "resume", f"{len(done)} of {len(subs)} subjects were done"
            if progress:
                print(f"resuming an interrupted preparation: {reason.replace('were', 'already')}",
                      flush=True)
        state = {"key": key, "subjects": done}
        digests = dict(small)
        # masks: one per subject (native space), from a file or from its first run below
        if mask is None:
            mask_arrs = {sub: None for sub in infos}
        for sub, records in done.items():
            digests.update(records)
            if sub not in mask_arrs:  # "epi", computed by the interrupted run
                mask_arrs[sub] = np.asanyarray(nib.load(tmp / f"mask_sub-{sub}.nii.gz").dataobj
                                               ).astype(bool)

        # 5. volumes: read runs r+1.. (I/O, inflate) while z-scoring run r
        volumes = np.lib.format.open_memmap(tmp / "volumes.npy", mode="r+" if done else "w+",
                                            dtype=np.float32, shape=(len(samples), *shape))
        rows = samples.groupby(["subject", "run"]).indices
        jobs = [(sub, run, info) for sub in subs
                for run, info in zip(runs.loc[runs["subject"] == sub, "run"], infos[sub],
                                     strict=True)]
        todo = [job for job in jobs if job[0] not in done]
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="preparing runs",
                   unit="run", disable=not progress)

        def load(job):
            sub, run, info = job
            raw, digest = _read_raw(info.path)
            return decode_bold(info.path, raw, info), digest

        # _READERS runs read and inflated ahead (hashing, inflating release the GIL), in order
        with ThreadPoolExecutor(max_workers=_READERS) as pool:
            ahead = deque(pool.submit(load, job) for job in todo[:_READERS])
            mean_acc = None
            for j, (sub, run, info) in enumerate(todo):
                data, digest = ahead.popleft().result()
                if j + _READERS < len(todo):
                    ahead.append(pool.submit(load, todo[j + _READERS]))
                digests[str(info.path)] = digest
                if sub not in mask_arrs:  # "epi": from the subject's first run
                    from nilearn.masking import compute_epi_mask

                    epi = compute_epi_mask(nib.Nifti1Image(data, info.affine))
                    mask_arrs[sub] = np.asanyarray(epi.dataobj).astype(bool)
                mask_arr = mask_arrs[sub]
                idx = rows.get((sub, run))
                run_sum = data.sum(axis=3, dtype=np.float64)
                mean_acc = run_sum if mean_acc is None else mean_acc + run_sum
                if idx is not None:
                    vols = samples["volume"].to_numpy()[idx]
                    if smoothing_fwhm is not None:
                        from nilearn.image import smooth_img

                        data = smooth_img(nib.Nifti1Image(data, info.affine), smoothing_fwhm
                                          ).get_fdata(dtype=np.float32)
                    if standardize == "run":
                        volumes[idx] = zscore_voxels(data, vols, mask_arr, high_pass=high_pass,
                                                     tr=info.tr)
                    else:
                        for a in range(0, len(idx), 64):
                            volumes[idx[a:a + 64]] = zscore_volumes(data[..., vols[a:a + 64]],
                                                                    mask_arr)
                if j + 1 == len(todo) or todo[j + 1][0] != sub:  # the subject is finished
                    n_vol = sum(i.shape[3] for i in infos[sub])
                    mean_img = nib.Nifti1Image((mean_acc / n_vol).astype(np.float32),
                                               affines[sub])
                    nib.save(mean_img, tmp / f"mean_sub-{sub}.nii.gz")
                    sub_mask = np.ones(shape, bool) if mask_arr is None else mask_arr
                    nib.save(nib.Nifti1Image(sub_mask.astype(np.uint8), affines[sub]),
                             tmp / f"mask_sub-{sub}.nii.gz")
                    mean_acc = None
                    volumes.flush()  # its rows on disk before the record says so
                    state["subjects"][sub] = {str(i.path): digests[str(i.path)]
                                              for i in infos[sub]}
                    write_json(tmp / _PROGRESS, state)
                del data
                bar.update()
        bar.close()
        volumes.flush()
        del volumes
        union = np.zeros(shape, bool)
        for sub in subs:
            union |= np.ones(shape, bool) if mask_arrs[sub] is None else mask_arrs[sub]
        nib.save(nib.Nifti1Image(union.astype(np.uint8), affine), tmp / "mask.nii.gz")

        # 6. tables and manifest
        samples.to_csv(tmp / "samples.csv", index=False)
        labels.to_csv(tmp / "labels.csv", index=False)
        digests = {str(p): digests[str(p)] for p in input_files}  # each hashed as it was read
        hashes = {p: d["sha256"] for p, d in digests.items()}
        counts = samples[samples["selected"]].groupby("label").size().to_dict()
        run_rows = [{"subject": sub, "run": run, "file": info.path.name,
                     "grid": "x".join(map(str, info.shape[:3])), "volumes": info.shape[3],
                     "tr_s": info.tr, "tr_from": Path(info.tr_source).name,
                     "dtype": str(info.dtype),
                     "voxel_mm": "x".join(f"{z:g}" for z in
                                          np.sqrt((info.affine[:3, :3] ** 2).sum(axis=0)))}
                    for sub, run, info in jobs]
        shifts = {sub: affine_shift_mm(affines[sub], affine, shape) for sub in subs}
        write_manifest(tmp, STAGE, params, inputs=hashes, outputs={
            "runs": run_rows,
            "n_samples": len(samples), "shape": list(shape), "affine": affine,
            "affines": {sub: affines[sub] for sub in subs},
            "space": ("aligned within subject (per-subject template)" if layout == "aligned"
                      else "native (each subject's scanner space)"),
            "subject_shift_mm": shifts,
            "skipped_subjects": scan.skipped,
            "notes": scan.notes + grid_notes,
            "classes": class_list, "subjects": subs, "samples_per_class": counts,
            "kept_steps": int(labels["label"].notna().sum()),
            "selected_steps": len(selected),
        })
        write_inputs(tmp, {"parameters": params, "files": hashes})
        write_json(tmp / FILES_FILE, digests, indent=1)
        (tmp / _PROGRESS).unlink(missing_ok=True)
    prepared = load_prepared(out_dir)
    prepared.reuse = (status, reason)
    return prepared


def load_prepared(folder: str | os.PathLike) -> PreparedData:
    """Open the outputs of :func:`prepare_dataset` (volumes memory-mapped, read-only)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    samples = pd.read_csv(folder / "samples.csv", dtype={"subject": str, "label": "string"})
    labels = pd.read_csv(folder / "labels.csv", dtype={"label": "string"})
    volumes = np.load(folder / "volumes.npy", mmap_mode="r")
    if len(volumes) != len(samples):
        raise InputDataError(folder, f"volumes.npy has {len(volumes)} volumes but samples.csv "
                                     f"{len(samples)} rows: the folder is inconsistent")
    mask = np.asanyarray(nib.load(folder / "mask.nii.gz").dataobj).astype(bool)
    out = manifest["outputs"]
    affine = np.asarray(out["affine"])
    affines = {sub: np.asarray(a) for sub, a in out.get("affines", {}).items()}
    for sub in out.get("subjects", []):
        affines.setdefault(sub, affine)
    return PreparedData(folder, samples, volumes, list(out["classes"]), affine, mask, labels,
                        manifest, affines)


def summarize_inputs(prepared: PreparedData) -> pd.DataFrame:
    """One row per BOLD run of a prepared dataset: what its header said, and its hash.

    Every run listed passed the checks of :mod:`emolib.io.bids` (readable, 4D, TR by BIDS
    inheritance agreeing with the header, one grid and voxel size for all runs, run length as
    the timing says, finite values); affines differ between subjects in native space.
    """
    runs = pd.DataFrame(prepared.manifest["outputs"]["runs"])
    digests = {Path(p).name: h for p, h in prepared.manifest["inputs"].items()}
    runs["sha256"] = runs["file"].map(lambda f: digests[f][:12])
    return runs


__all__ = [
    "PreparedData", "load_prepared", "prepare_dataset", "summarize_inputs",
]
