"""A BOLD5000 Release 1.0 in its real on-disk layout, with a planted layer/ROI hierarchy.

:func:`generate_bold5000_release` writes what a user unpacks from the release's ROI and
stimulus archives, so that :func:`emolib.io.load_roi_rdms` and the chapter run on it as on
the real data::

    <out_dir>/BOLD5000/ROIs/CSI{n}/h5/CSI{n}_ROIs_TR{1,2,3,4,5,34}.h5   (n_trials, n_voxels)
    <out_dir>/BOLD5000/ROIs/CSI{n}/mat/CSI{n}_ROIs_TR{...}.mat         (MATLAB 5)
    <out_dir>/BOLD5000/ROIs/stim_lists/CSI0{n}_stim_lists.txt
    <out_dir>/BOLD5000/BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/{COCO,ImageNet,Scene}/
    <out_dir>/truth.json                                  (beside the release, never inside)

How the truth is planted. The images are generated first (multi-scale textures, one random
amplitude per scale and image) and handed to the caller's ``layer_rdms`` callable, which
returns one RDM per network layer (the chapter passes ResNet-50, so the planted hierarchy
refers to the very network it analyses). Per ROI area a target dissimilarity matrix mixes
the layer RDMs (each scaled to unit standard deviation) with the weights of
:data:`emolib.synthetic.bold5000.PLANTED_WEIGHTS` (EarlyVis mostly the first layer, LOC the
third, OPA the fourth, PPA and RSC the last), plus a share of structure common to all
subjects that no layer explains. Classical MDS (the top 64 eigenvectors of the double-centred
matrix) turns it into image coordinates, which random weights mix into each ROI's voxels. Each
subject adds its own stable image-specific component and voxel offset; each trial adds
independent noise (so averaging the repeats helps), scaled per TR by a haemodynamic profile;
TR34 is the mean of TR3 and TR4. ``null=True`` plants no layer at all: the targets are the
shared structure alone.

Like the real lists, each subject's stimulus list has its own order; repeated images carry
``rep_`` on all showings but one, the bare one not always first; a few images are not shown
to every subject, so that only the intersection of images can be compared.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image
from rsatoolbox.rdm import RDMs
from scipy.spatial.distance import squareform
from tqdm.auto import tqdm

from emolib.io.bold5000 import ROI_AREAS, ROIS, SUBJECTS, roi_area
from emolib.io.bold5000_release import (
    IMAGE_CATEGORIES,
    RELEASE_TRS,
    REP_PREFIX,
    image_category,
    roi_file,
    stim_list_file,
    stimulus_path,
)
from emolib.paths import atomic_output_dir
from emolib.rsa import PATTERN_KEY, get_pattern_ids, reorder_patterns
from emolib.synthetic.bold5000 import PLANTED_WEIGHTS, TRUTH_FILE, make_image_ids

__all__ = [
    "AREA_VOXEL_SCALE", "HRF_PROFILE", "RELEASE_DIR", "generate_bold5000_release",
    "layer_sketch", "make_release_images", "make_release_names",
    "read_bold5000_release_truth", "same_sketch",
]

#: Folder of the release below ``out_dir`` (``truth.json`` sits beside it).
RELEASE_DIR = "BOLD5000"
#: Response amplitude at TR1..TR5 after the image onset (peaks at TR3-TR4).
HRF_PROFILE = (0.15, 0.5, 0.95, 1.0, 0.6)
#: Relative voxel counts of the ROI areas (EarlyVis largest, RSC smallest).
AREA_VOXEL_SCALE = {"EarlyVis": 1.6, "LOC": 1.4, "OPA": 0.9, "PPA": 1.0, "RSC": 0.6}

LayerRdms = Callable[[list[Path]], RDMs]


def make_release_names(n_images: int, *, seed: int = 0) -> list[str]:
    """Image names of the three kinds, as in the release's stimulus lists.

    Built on :func:`emolib.synthetic.bold5000.make_image_ids` (``COCO_train2014_*.jpg``,
    ``n<synset>_<k>.JPEG``, ``<scene><k>.jpg``); one Scene image becomes ``.jpeg`` and one
    loses its digits (``kitchen.jpg``), as some real ones do.

    Parameters
    ----------
    n_images : int
        Number of distinct images.
    seed : int, default=0
        Seed.

    Returns
    -------
    list of str
    """
    names = make_image_ids(n_images, seed=seed)
    scene = [k for k, n in enumerate(names) if image_category(n) == "Scene"]
    if scene:
        names[scene[0]] = names[scene[0]].rsplit(".", 1)[0] + ".jpeg"
    if len(scene) > 1:
        names[scene[1]] = re.sub(r"\d+", "", names[scene[1]])
    assert len(set(names)) == len(names)
    return names


def make_release_images(
    n_images: int, *, size: int = 64, n_scales: int = 5, seed: int = 0
) -> np.ndarray:
    """Multi-scale texture images: each scale's content and amplitude random per image.

    Parameters
    ----------
    n_images : int
        Number of images.
    size : int, default=64
        Width and height in pixels.
    n_scales : int, default=5
        Octave bands, from 2 cycles per image up to the Nyquist frequency.
    seed : int, default=0
        Seed.

    Returns
    -------
    numpy.ndarray
        uint8 array (n_images, size, size, 3).
    """
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    centres = 0.5 / 2.0 ** np.arange(n_scales)
    with np.errstate(divide="ignore"):
        logr = np.log2(radius)
    out = np.zeros((n_images, size, size, 3))
    for c in centres:
        band = np.exp(-0.5 * ((logr - np.log2(c)) / 0.5) ** 2)
        noise = rng.standard_normal((n_images, 3, size, size))
        img = np.fft.ifft2(np.fft.fft2(noise) * band).real
        img /= img.std()
        amp = rng.lognormal(0.0, 0.5, size=(n_images, 1, 1, 1))
        out += amp * img.transpose(0, 2, 3, 1)
    out += rng.normal(0, 0.5, size=(n_images, 1, 1, 3))  # a colour cast per image
    out = 128 + 40 * out / out.std()
    return np.clip(out, 0, 255).astype(np.uint8)


def _scaled_square(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    sd = v.std()
    if not np.isfinite(sd) or sd == 0:
        raise ValueError("a layer RDM is constant or not finite")
    return squareform(v / sd, checks=False)


def _mds(d: np.ndarray, max_dims: int = 64) -> np.ndarray:
    """Classical MDS: coordinates whose squared distances approximate ``d``."""
    n = d.shape[0]
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ d @ j
    w, v = np.linalg.eigh((b + b.T) / 2)
    keep = np.argsort(w)[::-1][:max_dims]
    keep = keep[w[keep] > 1e-9 * max(w.max(), 1e-12)]
    return v[:, keep] * np.sqrt(w[keep])


def layer_sketch(rdms: RDMs, n: int = 64) -> dict:
    """A small, order-free summary of layer RDMs that tells two networks apart: per layer,
    ``n`` dissimilarities at fixed positions of the RDM with the patterns sorted by id.

    A generated release records the sketch of the layer RDMs its hierarchy was planted on;
    :func:`emolib.datasets.obtain_bold5000_release` reuses the release only while the
    network's RDMs of its images give the same sketch (:func:`same_sketch`)."""
    ids = sorted(map(str, get_pattern_ids(rdms, PATTERN_KEY).tolist()))
    d = reorder_patterns(rdms, ids).dissimilarities
    take = np.unique(np.linspace(0, d.shape[1] - 1, min(n, d.shape[1])).astype(int))
    return {"layers": [str(v) for v in rdms.rdm_descriptors["layer"]],
            "values": d[:, take].round(9).tolist()}


def same_sketch(a: dict | None, b: dict | None, rtol: float = 1e-2, atol: float = 1e-4
                ) -> bool:
    """Whether two :func:`layer_sketch` results describe the same network: equal layers, and
    values equal to ``rtol``/``atol``. The tolerance lets the same network's RDMs through
    when recomputed on another device, with TF32 or from float16 stored activations (errors
    around 1e-3), and tells other weights, layers or image transforms apart (they move
    dissimilarities by tenths)."""
    if not a or not b or a.get("layers") != b.get("layers"):
        return False
    va, vb = np.asarray(a["values"], float), np.asarray(b["values"], float)
    return va.shape == vb.shape and bool(np.allclose(va, vb, rtol=rtol, atol=atol))


def _layer_squares(
    layer_rdms: LayerRdms, paths: list[Path], names: list[str], n_weights: int
) -> tuple[list[str], list[np.ndarray], dict]:
    rdms = layer_rdms(list(paths))
    if not isinstance(rdms, RDMs) or "layer" not in rdms.rdm_descriptors:
        raise ValueError("layer_rdms must return rsatoolbox RDMs with an rdm descriptor 'layer'")
    ids = get_pattern_ids(rdms, PATTERN_KEY).tolist()
    if sorted(map(str, ids)) != sorted(names):
        raise ValueError("the pattern ids of layer_rdms(...) must be the image file names")
    if rdms.n_rdm != n_weights:
        raise ValueError(f"layer_rdms returned {rdms.n_rdm} RDMs; the planted weights have "
                         f"{n_weights} per area (pass weights= to change them)")
    sketch = layer_sketch(rdms)
    rdms = reorder_patterns(rdms, names)
    layers = [str(v) for v in rdms.rdm_descriptors["layer"]]
    return layers, [_scaled_square(v) for v in rdms.dissimilarities], sketch


def _random_square(rng: np.random.Generator, n: int, n_features: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, n_features))
    x -= x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return _scaled_square(squareform(1 - x @ x.T, checks=False))


def _stim_list(
    rng: np.random.Generator, shown: list[str], showings: Mapping[str, int], force_late: str
) -> list[str]:
    trials = [n for n in shown for _ in range(showings.get(n, 1))]
    trials = [trials[k] for k in rng.permutation(len(trials))]
    out = list(trials)
    for name, count in showings.items():
        idx = [k for k, t in enumerate(trials) if t == name]
        bare = idx[-1] if name == force_late else idx[int(rng.integers(count))]
        for k in idx:
            out[k] = name if k == bare else REP_PREFIX + name
    return out


def generate_bold5000_release(
    out_dir: str | os.PathLike,
    *,
    layer_rdms: LayerRdms,
    n_images: int = 60,
    n_repeated: int | None = None,
    n_unshared: int | None = None,
    subjects: Sequence[str] = SUBJECTS,
    seed: int = 0,
    null: bool = False,
    noise: float = 1.0,
    subject_noise: float = 0.3,
    unexplained: float = 0.4,
    offset: float = 0.5,
    n_voxels: int = 80,
    weights: Mapping[str, Sequence[float]] = PLANTED_WEIGHTS,
    image_size: int = 64,
    trs: Sequence[str] = RELEASE_TRS,
    formats: Sequence[str] = ("h5", "mat"),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a BOLD5000 Release 1.0 (ROI files, stimulus lists, images) with a planted truth.

    Parameters
    ----------
    out_dir : str or path-like
        Output folder: the release goes to ``out_dir/BOLD5000``, the truth to
        ``out_dir/truth.json``. Written all at once (nothing half-written is left).
    layer_rdms : callable
        ``layer_rdms(image_paths) -> rsatoolbox.rdm.RDMs``: one RDM per layer (rdm descriptor
        ``layer``, in hierarchy order), pattern ids the image file names. Called once, after
        the images are written.
    n_images : int, default=60
        Distinct images (BOLD5000: 4916).
    n_repeated : int, optional
        Images shown several times (4, the last one 3), default ``max(3, n_images // 10)``.
    n_unshared : int, optional
        Images each left out of one subject, default ``n_images // 20`` (0 for one subject).
    subjects : sequence of str, default=("CSI1", "CSI2", "CSI3")
        Subjects.
    seed : int, default=0
        Seed of everything.
    null : bool, default=False
        Plant no layer: ROI structure is shared by subjects but unrelated to every layer.
    noise : float, default=1.0
        Standard deviation of the per-trial, per-TR voxel noise (signal: about 1).
    subject_noise : float, default=0.3
        Standard deviation of each subject's stable image-specific component.
    unexplained : float, default=0.4
        Weight of the shared structure that no layer explains (layers: ``1 - unexplained``).
    offset : float, default=0.5
        Standard deviation of each subject's voxel offset (the same for all trials).
    n_voxels : int, default=80
        Typical voxels per ROI (scaled by :data:`AREA_VOXEL_SCALE`, jittered per subject).
    weights : mapping of str to sequence of float, default=PLANTED_WEIGHTS
        Per ROI area, the weight of each layer (as many as ``layer_rdms`` returns).
    image_size : int, default=64
        Image width and height.
    trs : sequence of str, default=RELEASE_TRS
        TR files written (TR34 is the mean of TR3 and TR4 whether or not they are written).
    formats : sequence of {"h5", "mat"}, default=("h5", "mat")
        ROI file formats written.
    overwrite : bool, default=False
        Replace an existing ``out_dir``.
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The release root (``out_dir/BOLD5000``), what :func:`emolib.io.load_roi_rdms` reads.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite=True)")
    unknown = sorted(set(trs) - set(RELEASE_TRS)) + sorted(set(formats) - {"h5", "mat"})
    if unknown:
        raise ValueError(f"unknown TRs or formats: {unknown}")
    subjects = list(subjects)
    rng = np.random.default_rng(seed)
    names = make_release_names(n_images, seed=seed)
    n_repeated = max(3, n_images // 10) if n_repeated is None else int(n_repeated)
    if n_unshared is None:
        n_unshared = n_images // 20 if len(subjects) > 1 else 0
    if n_repeated + n_unshared > n_images:
        raise ValueError("n_repeated + n_unshared exceeds n_images")
    pick = rng.permutation(n_images)
    repeated = [names[k] for k in pick[:n_repeated]]
    showings = {n: (3 if k == n_repeated - 1 else 4) for k, n in enumerate(repeated)}
    unshared = [names[k] for k in pick[n_repeated:n_repeated + n_unshared]]
    left_out = {s: [n for k, n in enumerate(unshared) if k % len(subjects) == i]
                for i, s in enumerate(subjects)}

    row_of = {n: k for k, n in enumerate(names)}

    with atomic_output_dir(out_dir) as tmp:
        root = tmp / RELEASE_DIR
        pixels = make_release_images(n_images, size=image_size, seed=seed)
        paths = [stimulus_path(root, n) for n in names]
        for p, img in zip(paths, pixels, strict=True):
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p, format="JPEG", quality=95)
        layers, squares, sketch = _layer_squares(layer_rdms, paths, names,
                                         len(next(iter(weights.values()))))
        shared = {a: _random_square(rng, n_images) for a in ROI_AREAS}
        coords, target_corr = {}, {}
        for area in ROI_AREAS:
            target = unexplained * shared[area]
            if not null:
                w = np.asarray(weights[area], dtype=np.float64)
                target = target + (1 - unexplained) * sum(
                    wl * sq for wl, sq in zip(w / w.sum(), squares, strict=True))
            x = _mds(target)
            coords[area] = x / np.sqrt((x**2).sum(axis=1).mean())
            v = squareform(target, checks=False)
            target_corr[area] = [float(np.corrcoef(v, squareform(sq, checks=False))[0, 1])
                                 for sq in squares]

        truth_subjects = {}
        bar = tqdm(total=len(subjects) * len(trs) * len(formats), desc="writing BOLD5000 ROIs",
                   unit="file", disable=not progress)
        for subject in subjects:
            shown = [n for n in names if n not in left_out[subject]]
            trials = _stim_list(rng, shown, showings, repeated[0])
            stim = stim_list_file(root, subject)
            stim.parent.mkdir(parents=True, exist_ok=True)
            stim.write_text("\n".join(trials) + "\n")
            rows = np.array([row_of[t.removeprefix(REP_PREFIX)] for t in trials])
            per_tr: dict[str, dict[str, np.ndarray]] = {tr: {} for tr in RELEASE_TRS}
            n_vox = {}
            for roi in ROIS:
                area = roi_area(roi)
                nv = max(8, int(round(n_voxels * AREA_VOXEL_SCALE[area]
                                      * rng.uniform(0.7, 1.3))))
                n_vox[roi] = nv
                x = coords[area]
                signal = x @ rng.standard_normal((x.shape[1], nv))
                signal += subject_noise * rng.standard_normal((n_images, nv))
                signal /= signal.std()
                base = offset * rng.standard_normal(nv)
                for t, h in enumerate(HRF_PROFILE):
                    tr = f"TR{t + 1}"
                    trial = h * signal[rows] + base + noise * rng.standard_normal(
                        (len(rows), nv))
                    per_tr[tr][roi] = trial.astype(np.float32)
                per_tr["TR34"][roi] = ((per_tr["TR3"][roi].astype(np.float64)
                                        + per_tr["TR4"][roi]) / 2).astype(np.float32)
            for tr in trs:
                for fmt in formats:
                    path = roi_file(root, subject, tr, fmt)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if fmt == "h5":
                        with h5py.File(path, "w") as f:
                            for roi in ROIS:
                                f.create_dataset(roi, data=per_tr[tr][roi])
                    else:
                        scipy.io.savemat(path, per_tr[tr], format="5", do_compression=True)
                    bar.update()
            truth_subjects[subject] = {
                "n_trials": len(trials), "n_images": len(shown),
                "not_shown": left_out[subject], "n_voxels": n_vox,
                "bare_showing": {n: next(k for k, t in enumerate(trials) if t == n)
                                 for n in repeated},
            }
        bar.close()
        best = {roi: None if null else layers[int(np.argmax(weights[roi_area(roi)]))]
                for roi in ROIS}
        truth = {
            "null": bool(null), "seed": int(seed), "n_images": int(n_images),
            "subjects": subjects, "trs": list(trs), "formats": list(formats),
            "noise": float(noise), "subject_noise": float(subject_noise),
            "unexplained": float(unexplained), "offset": float(offset),
            "n_voxels": int(n_voxels), "image_size": int(image_size),
            "hrf_profile": dict(zip(RELEASE_TRS[:5], HRF_PROFILE, strict=True)),
            "tr34": "mean of TR3 and TR4", "release_dir": RELEASE_DIR,
            "layers": layers, "layer_sketch": sketch,
            "weights": {roi: {layer: 0.0 if null else float(w) for layer, w in
                              zip(layers, weights[roi_area(roi)], strict=True)} for roi in ROIS},
            "best_layer": best,
            "target_corr": {roi: dict(zip(layers, target_corr[roi_area(roi)], strict=True))
                            for roi in ROIS},
            "best_layer_noise_free": {
                roi: None if null else layers[int(np.argmax(target_corr[roi_area(roi)]))]
                for roi in ROIS},
            "images": {n: image_category(n) for n in names},
            "categories": {c: sum(image_category(n) == c for n in names)
                           for c in IMAGE_CATEGORIES},
            "repeated": showings,
            "common_images": n_images - n_unshared,
            "per_subject": truth_subjects,
        }
        (tmp / TRUTH_FILE).write_text(json.dumps(truth, indent=2))
    return out_dir / RELEASE_DIR


def read_bold5000_release_truth(path: str | os.PathLike) -> dict:
    """Read the truth written beside a generated release.

    Parameters
    ----------
    path : str or path-like
        The ``out_dir`` given to :func:`generate_bold5000_release`, or the release root it
        returned (the truth is looked up beside it).

    Returns
    -------
    dict
        Parameters; per ROI the planted ``weights`` and ``best_layer`` (their argmax; None
        everywhere for null), ``target_corr`` (corr of the noise-free target with each layer
        RDM) and ``best_layer_noise_free`` (its argmax, which can differ from ``best_layer``
        when the layer RDMs are strongly correlated); the images, repeats and, per subject,
        trials, images not shown and voxel counts.
    """
    path = Path(path)
    for candidate in (path / TRUTH_FILE, path.parent / TRUTH_FILE):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise FileNotFoundError(f"no {TRUTH_FILE} in {path} or beside it: not a generated release")
