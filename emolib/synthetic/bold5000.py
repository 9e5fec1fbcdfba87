"""BOLD5000-shaped RDM files with a planted layer/ROI correspondence.

Latent "layer" features form a hierarchy (each ResNet-50 stage a noisy rotation of the
previous one); every ROI's voxel patterns mix the layers with planted weights (EarlyVis
peaks at conv1, LOC at layer2, OPA at layer3, PPA and RSC at layer4), plus a component
shared by all subjects that no layer explains and subject-specific noise. RDMs are
correlation distances of those patterns. Each file holds the images in its own random
order, so nothing works unless patterns are aligned by image id.

The truth (weights, best layer per ROI, parameters) is written as ``truth.json`` next to the
files, never inside them. ``null=True`` plants no correspondence: ROI patterns share a
structure across subjects that is independent of every layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike
from rsatoolbox.rdm import RDMs

from emolib.io.bold5000 import LAYERS, ROI_AREAS, ROIS, SUBJECTS, SYSTEMS, roi_area, save_rdms
from emolib.manifest import write_json
from emolib.rsa import PATTERN_KEY, calc_rdms_from_patterns

__all__ = [
    "DEFAULT_N_IMAGES", "LAYER_FILE", "PLANTED_WEIGHTS", "SimulatedBold5000",
    "TRUTH_FILE", "generate_bold5000", "make_image_ids", "read_bold5000_truth",
    "simulate_bold5000_rdms", "subject_file",
]

#: Default number of images (small; BOLD5000 has 4916).
DEFAULT_N_IMAGES = 60
#: Planted mixing weights of the layers (conv1, layer1..layer4) per ROI area.
PLANTED_WEIGHTS: dict[str, tuple[float, ...]] = {
    "EarlyVis": (0.55, 0.30, 0.10, 0.05, 0.00),
    "LOC": (0.00, 0.15, 0.55, 0.25, 0.05),
    "OPA": (0.00, 0.05, 0.25, 0.55, 0.15),
    "PPA": (0.00, 0.00, 0.10, 0.30, 0.60),
    "RSC": (0.00, 0.00, 0.05, 0.25, 0.70),
}
TRUTH_FILE = "truth.json"
LAYER_FILE = "resnet50_layers.h5"

# A few ImageNet synsets and SUN scene categories, for realistic image names.
_SYNSETS = (
    "n01440764", "n01443537", "n01530575", "n01614925", "n01644373", "n01669191",
    "n01774750", "n02085620", "n02123045", "n02504458", "n02690373", "n02814533",
    "n03028079", "n03417042", "n03584829", "n03773504", "n04037443", "n04285008",
)
_SCENES = (
    "airplanecabin", "alley", "amusementpark", "bedroom", "boathouse", "bookstore",
    "bridge", "campsite", "castle", "church", "diningroom", "forest", "kitchen",
    "library", "lighthouse", "livingroom", "mountain", "office", "playground", "stadium",
)


def subject_file(subject: str) -> str:
    """File name of a subject's ROI RDMs (e.g. ``CSI1_rois.h5``)."""
    return f"{subject}_rois.h5"


def make_image_ids(n_images: int, *, seed: int = 0) -> list[str]:
    """Unique BOLD5000-like image names: COCO, ImageNet and scene images (about 2:2:1).

    Parameters
    ----------
    n_images : int
        Number of names.
    seed : int, default=0
        Seed.

    Returns
    -------
    list of str
        E.g. ``COCO_train2014_000000123456.jpg``, ``n01440764_10026.JPEG``,
        ``kitchen3.jpg``, in a seeded random order.
    """
    rng = np.random.default_rng(seed)
    n_coco = int(round(n_images * 2000 / 4916))
    n_scene = int(round(n_images * 1000 / 4916))
    n_imnet = n_images - n_coco - n_scene
    coco = rng.choice(600_000, size=n_coco, replace=False)
    names = [f"COCO_train2014_{k:012d}.jpg" for k in coco]
    imnet = rng.choice(len(_SYNSETS) * 20_000, size=n_imnet, replace=False)
    names += [f"{_SYNSETS[k % len(_SYNSETS)]}_{k // len(_SYNSETS) + 1}.JPEG" for k in imnet]
    scene = rng.choice(len(_SCENES) * 1000, size=n_scene, replace=False)
    names += [f"{_SCENES[k % len(_SCENES)]}{k // len(_SCENES) + 1}.jpg" for k in scene]
    return [names[k] for k in rng.permutation(len(names))]


def _unit_columns(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=0, keepdims=True) * np.sqrt(x.shape[0])


@dataclass
class SimulatedBold5000:
    """In-memory BOLD5000-shaped RDMs (what :func:`generate_bold5000` writes).

    Attributes
    ----------
    layers : rsatoolbox.rdm.RDMs
        Layer RDMs in their own pattern order.
    rois : dict of str to rsatoolbox.rdm.RDMs
        Per subject, the 10 ROI RDMs, each subject in its own pattern order.
    truth : dict
        The planted truth (JSON-serialisable).
    """

    layers: RDMs
    rois: dict[str, RDMs]
    truth: dict


def simulate_bold5000_rdms(
    n_images: int = DEFAULT_N_IMAGES,
    *,
    seed: int = 0,
    null: bool = False,
    subjects: tuple[str, ...] = SUBJECTS,
    noise: float = 0.7,
    unexplained: float = 0.5,
    n_features: int = 32,
    n_voxels: int = 100,
    layer_correlation: float = 0.6,
    pattern_key: str = PATTERN_KEY,
    dtype: DTypeLike = np.float32,
) -> SimulatedBold5000:
    """Simulate layer and ROI RDMs with a planted layer/ROI correspondence.

    Parameters
    ----------
    n_images : int, default=60
        Number of images (BOLD5000: 4916).
    seed : int, default=0
        Seed of everything.
    null : bool, default=False
        Plant no correspondence (ROI patterns independent of the layers).
    subjects : tuple of str, default=("CSI1", "CSI2", "CSI3")
        Subjects.
    noise : float, default=0.7
        Standard deviation of the subject-specific voxel noise (signal variance is 1).
    unexplained : float, default=0.5
        Share of the ROI signal variance that no layer explains (shared by subjects).
    n_features : int, default=32
        Latent features per layer.
    n_voxels : int, default=100
        Voxels per ROI.
    layer_correlation : float, default=0.6
        How much of each layer's latent features carries over from the previous layer.
    pattern_key : str, default="id"
        Pattern descriptor for the image ids.
    dtype : dtype, default=float32
        dtype of the dissimilarities.

    Returns
    -------
    SimulatedBold5000
    """
    rng = np.random.default_rng(seed)
    ids = np.array(make_image_ids(n_images, seed=seed))
    feats = [_unit_columns(rng.standard_normal((n_images, n_features)))]
    for _ in LAYERS[1:]:
        q, _r = np.linalg.qr(rng.standard_normal((n_features, n_features)))
        fresh = rng.standard_normal((n_images, n_features))
        nxt = layer_correlation * feats[-1] @ q + np.sqrt(1 - layer_correlation**2) * fresh
        feats.append(_unit_columns(nxt))
    # structure shared by all subjects that no layer explains, per area
    shared = {a: _unit_columns(rng.standard_normal((n_images, n_features))) for a in ROI_AREAS}

    order = rng.permutation(n_images)
    layers = calc_rdms_from_patterns(
        {name: f[order] for name, f in zip(LAYERS, feats, strict=True)}, ids[order],
        pattern_key=pattern_key, descriptor="layer", rdm_descriptors={"model": "resnet50"},
        dtype=dtype,
    )
    rois: dict[str, RDMs] = {}
    for subject in subjects:
        patterns = {}
        for roi in ROIS:
            area = roi_area(roi)
            if null:
                signal = shared[area] @ rng.standard_normal((n_features, n_voxels))
            else:
                w = np.asarray(PLANTED_WEIGHTS[area])
                model = sum(
                    np.sqrt(wl) * f @ rng.standard_normal((n_features, n_voxels))
                    for wl, f in zip(w, feats, strict=True) if wl > 0
                )
                other = shared[area] @ rng.standard_normal((n_features, n_voxels))
                signal = np.sqrt(1 - unexplained) * model + np.sqrt(unexplained) * other
            signal /= np.sqrt(n_features)
            patterns[roi] = signal + noise * rng.standard_normal((n_images, n_voxels))
        order = rng.permutation(n_images)
        rois[subject] = calc_rdms_from_patterns(
            {roi: p[order] for roi, p in patterns.items()}, ids[order],
            pattern_key=pattern_key, descriptor="roi", rdm_descriptors={"subject": subject},
            dtype=dtype,
        )
    weights = {
        roi: {layer: (0.0 if null else float(PLANTED_WEIGHTS[roi_area(roi)][k]))
              for k, layer in enumerate(LAYERS)}
        for roi in ROIS
    }
    truth = {
        "null": bool(null),
        "seed": int(seed),
        "n_images": int(n_images),
        "subjects": list(subjects),
        "layers": list(LAYERS),
        "rois": list(ROIS),
        "systems": {k: list(v) for k, v in SYSTEMS.items()},
        "noise": float(noise),
        "unexplained": float(unexplained),
        "weights": weights,
        "best_layer": {
            roi: None if null else LAYERS[int(np.argmax(PLANTED_WEIGHTS[roi_area(roi)]))]
            for roi in ROIS
        },
        "pattern_key": pattern_key,
    }
    return SimulatedBold5000(layers, rois, truth)


def generate_bold5000(
    out_dir: str | os.PathLike,
    *,
    n_images: int = DEFAULT_N_IMAGES,
    seed: int = 0,
    null: bool = False,
    layout: str = "plain",
    subjects: tuple[str, ...] = SUBJECTS,
    noise: float = 0.7,
    condensed: bool = True,
    overwrite: bool = False,
    pattern_key: str = PATTERN_KEY,
    dtype: DTypeLike = np.float32,
) -> dict[str, Path]:
    """Write BOLD5000-shaped RDM files and the planted truth.

    Files: ``resnet50_layers.h5`` (layer RDMs), ``<subject>_rois.h5`` per subject (the 10
    ROI RDMs, with the subject as attribute/descriptor) and ``truth.json`` beside them.
    Every file has its own image order.

    Parameters
    ----------
    out_dir : str or path-like
        Output folder (created).
    n_images, seed, null, subjects, noise, pattern_key, dtype
        See :func:`simulate_bold5000_rdms`.
    layout : {"plain", "rsatoolbox"}, default="plain"
        File layout (see :mod:`emolib.bold5000`).
    condensed : bool, default=True
        Plain layout: condensed vectors, else square matrices.
    overwrite : bool, default=False
        Replace existing files.

    Returns
    -------
    dict of str to pathlib.Path
        ``"layers"``, each subject and ``"truth"``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sim = simulate_bold5000_rdms(
        n_images, seed=seed, null=null, subjects=subjects, noise=noise,
        pattern_key=pattern_key, dtype=dtype,
    )
    paths = {
        "layers": save_rdms(
            sim.layers, out_dir / LAYER_FILE, layout=layout, pattern_key=pattern_key,
            condensed=condensed, overwrite=overwrite,
        )
    }
    for subject, rdms in sim.rois.items():
        paths[subject] = save_rdms(
            rdms, out_dir / subject_file(subject), layout=layout, pattern_key=pattern_key,
            condensed=condensed, overwrite=overwrite,
        )
    truth = dict(sim.truth, layout=layout, files={k: p.name for k, p in paths.items()})
    truth_path = out_dir / TRUTH_FILE
    if truth_path.exists() and not overwrite:
        raise FileExistsError(f"{truth_path} exists (pass overwrite=True)")
    write_json(truth_path, truth, indent=2)  # last, and atomic: it marks the files complete
    paths["truth"] = truth_path
    return paths


def read_bold5000_truth(folder: str | os.PathLike) -> dict:
    """Read the planted truth (``truth.json``) written beside generated BOLD5000 files.

    Parameters
    ----------
    folder : str or path-like
        Folder passed to :func:`generate_bold5000`.

    Returns
    -------
    dict
        Parameters, planted weights and ``best_layer`` per ROI (None everywhere for null).
    """
    path = Path(folder) / TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a generated BOLD5000 folder")
    return json.loads(path.read_text())
